package test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kindlingboot/kindling/matchbox"
	"github.com/kindlingboot/kindling/matchbox/render"
)

// A data directory written the way matchbox users have them: snake_case
// fields, cloud_id, a .yaml.tmpl Butane template (the old Terraform name),
// raw Ignition 3.4, nested metadata, a generic template.
var matchboxData = map[string]string{
	"profiles/worker.json": `{
  "id": "worker", "name": "Worker", "cloud_id": "",
  "boot": {
    "kernel": "/assets/fedora-coreos/kernel",
    "initrd": ["--name main /assets/fedora-coreos/initramfs.img"],
    "args": ["initrd=main", "ignition.firstboot", "ignition.platform.id=metal",
             "ignition.config.url=http://{{.request.host}}/ignition?uuid=${uuid}&mac=${mac:hexhyp}"]
  },
  "ignition_id": "worker.yaml.tmpl",
  "generic_id": "env.tmpl"
}`,
	"profiles/raw.json": `{"id": "raw", "boot": {"kernel": "/assets/k", "args": ["ignition.config.url=http://{{.request.host}}/ignition?mac=${mac:hexhyp}"]}, "ignition_id": "raw.ign"}`,
	"groups/node1.json": `{"id": "node1", "name": "node1", "profile": "worker",
  "selector": {"mac": "52:54:00:a1:9c:ae"},
  "metadata": {"hostname": "node1.example.com", "k8s": {"role": "worker", "labels": ["a", "b"]}}}`,
	"groups/default.json": `{"id": "default", "profile": "raw"}`,
	"ignition/worker.yaml.tmpl": `variant: fcos
version: 1.5.0
storage:
  files:
    - path: /etc/hostname
      mode: 0644
      contents:
        inline: {{.hostname}}
    - path: /etc/role
      contents:
        inline: {{.k8s.role}} {{range .k8s.labels}}{{.}}{{end}} {{.request.query.serial}}
`,
	"ignition/raw.ign": `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"/etc/raw","contents":{"source":"data:,raw"}}]}}`,
	"generic/env.tmpl": "HOSTNAME={{.hostname}}\nMAC={{.mac}}\n",
}

// machine is what iPXE knows about itself.
type machine struct {
	uuid, mac, hostname, serial, arch string
}

// expand substitutes iPXE settings the way iPXE would before fetching.
func (m machine) expand(s string) string {
	hexhyp := strings.ReplaceAll(m.mac, ":", "-")
	return strings.NewReplacer(
		"${uuid}", m.uuid,
		"${mac:hexhyp}", hexhyp,
		"${domain:uristring}", "",
		"${hostname:uristring}", url.QueryEscape(m.hostname),
		"${serial:uristring}", url.QueryEscape(m.serial),
		"${buildarch:uristring}", m.arch,
	).Replace(s)
}

func serveDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- matchbox.Run(ctx, matchbox.Config{Listener: ln, DataPath: dir}) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("server did not stop")
		}
	})
	return "http://" + ln.Addr().String()
}

func fetch(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s = %d %s", u, resp.StatusCode, b)
	}
	return string(b)
}

// TestIPXEChain follows what a PXE-booted machine does: fetch /boot.ipxe,
// follow its chain line with iPXE's variables filled in, read the kernel
// line of the boot script, and fetch the Ignition URL from the kernel
// arguments, which must be a valid config for this machine.
func TestIPXEChain(t *testing.T) {
	base := serveDir(t, matchboxData)
	tests := []struct {
		m          machine
		wantKernel string
		wantInIgn  []string
	}{
		{machine{"4C4C4544-0000-1000-8000-B7C04F4C4B31", "52:54:00:A1:9C:AE", "", "SN 1&2", "x86_64"},
			"/assets/fedora-coreos/kernel", []string{`node1.example.com`, `data:,worker%20ab%20SN%201%262`}},
		{machine{"4c4c4544-0000-1000-8000-b7c04f4c4b32", "52:54:00:00:00:02", "other", "", "x86_64"},
			"/assets/k", []string{`"version":"3.4.0"`, `data:,raw`}},
	}
	for _, tt := range tests {
		t.Run(tt.m.mac, func(t *testing.T) {
			script := fetch(t, base+"/boot.ipxe")
			var chain string
			for _, line := range strings.Split(script, "\n") {
				if strings.HasPrefix(line, "chain ") {
					chain = strings.TrimPrefix(line, "chain ")
				}
			}
			if chain == "" {
				t.Fatalf("/boot.ipxe has no chain line:\n%s", script)
			}
			ref, err := url.Parse(tt.m.expand(chain))
			if err != nil {
				t.Fatalf("chain URL %q: %v", chain, err)
			}
			bootURL, _ := url.Parse(base + "/boot.ipxe")
			boot := fetch(t, bootURL.ResolveReference(ref).String())
			var kernel []string
			for _, line := range strings.Split(boot, "\n") {
				if strings.HasPrefix(line, "kernel ") {
					kernel = strings.Fields(line)[1:]
				}
			}
			if len(kernel) == 0 || kernel[0] != tt.wantKernel {
				t.Fatalf("boot script kernel line = %v, want kernel %s:\n%s", kernel, tt.wantKernel, boot)
			}
			var ignURL string
			for _, a := range kernel[1:] {
				if v, ok := strings.CutPrefix(a, "ignition.config.url="); ok {
					ignURL = tt.m.expand(v)
				}
			}
			if ignURL == "" {
				t.Fatalf("no ignition.config.url in kernel args %v", kernel)
			}
			// The kernel line has no serial; a real install passes more
			// labels. Add the serial the way an installer would.
			if tt.m.serial != "" {
				ignURL += "&serial=" + url.QueryEscape(tt.m.serial)
			}
			ign := fetch(t, ignURL)
			if _, err := render.CheckIgnition([]byte(ign)); err != nil {
				t.Fatalf("GET %s: not a valid Ignition config: %v\n%s", ignURL, err, ign)
			}
			var parsed map[string]any
			if err := json.Unmarshal([]byte(ign), &parsed); err != nil {
				t.Fatal(err)
			}
			for _, want := range tt.wantInIgn {
				if !strings.Contains(ign, want) {
					t.Errorf("Ignition for %s lacks %q:\n%s", tt.m.mac, want, ign)
				}
			}
		})
	}
	if env := fetch(t, base+"/generic?mac=52-54-00-a1-9c-ae"); env != "HOSTNAME=node1.example.com\nMAC=52:54:00:a1:9c:ae\n" {
		t.Errorf("/generic = %q", env)
	}
}
