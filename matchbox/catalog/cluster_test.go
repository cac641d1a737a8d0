package catalog

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/render"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file: %v (run go test ./matchbox/catalog -update)", err)
	}
	if string(got) != string(want) {
		t.Errorf("%s differs from %s:\n got: %s\nwant: %s", name, path, got, want)
	}
}

// clusterFS is three etcd members (listed out of order on disk) and a
// worker that is not one.
func clusterFS() fstest.MapFS {
	return fstest.MapFS{
		"profiles/etcd.json": file(`{"id":"etcd","boot":{"kernel":"/k","args":[
			"etcd.initial-cluster={{ join \",\" (printEach \"%s=http://%s:2380\" \"name\" \"ip\" (members \"cluster=prod-etcd\")) }}"]},
			"generic_id":"etcd.env","ignition_id":"etcd.yaml"}`),
		"generic/etcd.env": file(`ETCD_NAME={{.name}}
ETCD_INITIAL_CLUSTER={{ join "," (printEach "%s=http://%s:2380" "name" "ip" (members "cluster=prod-etcd")) }}
ETCD_ENDPOINTS={{ join "," (printEach "http://%s:2379" "ip" (members "cluster=prod-etcd")) }}
PEERS={{ join " " (field "id" (members "cluster=prod-etcd")) }}
MACS={{ join " " (field "mac" (members "cluster=prod-etcd")) }}
ZONES={{ join " " (field "place.zone" (members "cluster=prod-etcd")) }}
`),
		"ignition/etcd.yaml": file(`variant: fcos
version: 1.5.0
storage:
  files:
    - path: /etc/etcd/initial-cluster
      contents:
        inline: {{ join "," (printEach "%s=http://%s:2380" "name" "ip" (members "cluster=prod-etcd")) }}
`),
		"groups/node3.json":  file(`{"id":"node3","profile":"etcd","selector":{"mac":"52:54:00:00:00:03"},"metadata":{"cluster":"prod-etcd","name":"etcd3","ip":"10.0.0.23","place":{"zone":"c"}}}`),
		"groups/node1.json":  file(`{"id":"node1","profile":"etcd","selector":{"mac":"52:54:00:00:00:01"},"metadata":{"cluster":"prod-etcd","name":"etcd1","ip":"10.0.0.21","place":{"zone":"a"}}}`),
		"groups/node2.json":  file(`{"id":"node2","profile":"etcd","selector":{"mac":"52:54:00:00:00:02"},"metadata":{"cluster":"prod-etcd","name":"etcd2","ip":"10.0.0.22","place":{"zone":"b"}}}`),
		"groups/worker.json": file(`{"id":"worker","profile":"etcd","selector":{"mac":"52:54:00:00:00:09"},"metadata":{"cluster":"other","name":"w","ip":"10.0.0.29","place":{"zone":"z"}}}`),
	}
}

func TestClusterHelpers(t *testing.T) {
	c, err := Load(clusterFS(), Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	l := groups.Labels{"mac": "52:54:00:00:00:02"}
	m, err := c.Select(l)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []Kind{Generic, IPXE, Ignition} {
		out, _, err := c.Render(k, m, Request{Labels: l})
		if err != nil {
			t.Fatalf("Render(%v) for node2: %v", k, err)
		}
		golden(t, "cluster-"+k.String(), out)
	}
}

func TestClusterHelperErrors(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(fstest.MapFS)
		wantErr string
	}{
		{"member lacks a field", func(f fstest.MapFS) {
			f["groups/node3.json"] = file(`{"id":"node3","profile":"etcd","selector":{"mac":"52:54:00:00:00:03"},"metadata":{"cluster":"prod-etcd","name":"etcd3","place":{"zone":"c"}}}`)
		}, `group "node3" has no "ip" in its metadata`},
		{"nobody in the cluster", func(f fstest.MapFS) {
			f["generic/etcd.env"] = file(`{{ join "," (field "ip" (members "cluster=prod-etdc")) }}`)
		}, `members "cluster=prod-etdc": no group has cluster=prod-etdc`},
		{"two-stage machine counted once", func(f fstest.MapFS) {
			// node1 also has an installed-stage group: still 3 members, so
			// a template demanding 4 fails naming what it found.
			f["groups/node1-installed.json"] = file(`{"id":"node1-installed","profile":"etcd","selector":{"mac":"52:54:00:00:00:01","os":"installed"},"metadata":{"cluster":"prod-etcd","name":"etcd1","ip":"10.0.0.21","place":{"zone":"a"}}}`)
			f["generic/etcd.env"] = file(`{{ if ne (len (members "cluster=prod-etcd")) 3 }}{{ members "wrong count=x" }}{{ end }}{{ members "bad" }}`)
		}, `members "bad": want key=value`},
		{"bad selector", func(f fstest.MapFS) {
			f["generic/etcd.env"] = file(`{{ members "prod-etcd" }}`)
		}, `members "prod-etcd": want key=value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := clusterFS()
			tt.edit(fsys)
			// The load-time check renders one group per template and
			// reports the failure there, naming the group.
			_, err := Load(fsys, Options{})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Load() = %v, want an error containing %q", err, tt.wantErr)
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Load() error %T, want *LoadError", err)
			}
			if !errors.Is(le.Problems[0].Err, render.ErrConfig) {
				t.Errorf("problem %v does not wrap ErrConfig", le.Problems[0])
			}
		})
	}
}
