package web_test

import (
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kindlingboot/kindling/examples"
	"github.com/kindlingboot/kindling/matchbox"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/render"
	"github.com/kindlingboot/kindling/matchbox/web"
)

// chain is the query /boot.ipxe makes a machine send, less its mac.
const chain = "&domain=&hostname=&serial=&arch=x86_64"

// exampleMachine is a machine booting against an example data directory.
type exampleMachine struct {
	name  string
	query string
	// codes is the status per endpoint; endpoints not listed must be 200.
	codes map[string]int
	// contains are strings each endpoint's body must hold.
	contains map[string][]string
}

var exampleMachines = map[string][]exampleMachine{
	"debian-install": {
		{name: "node1", query: "uuid=&mac=52-54-00-a1-9c-ae" + chain,
			codes: map[string]int{"generic": http.StatusNotFound},
			contains: map[string][]string{
				"ipxe":     {"kindling.install.dev=/dev/vda", "initrd --name kindling-initramfs.img /assets/kindling-initramfs.img", "kindling.report.url=http://"},
				"ignition": {"ssh-ed25519"},
			}},
	},
	// Only the computed bootstrap here: the discovery variant creates a
	// token in the data directory on first use (test/ covers it on a copy).
	"etcd3": {
		{name: "node2-static", query: "uuid=&mac=52-54-00-e7-cd-02" + chain,
			codes: map[string]int{"generic": http.StatusNotFound},
			contains: map[string][]string{
				"ipxe":     {"coreos.inst.install_dev=/dev/vda", "ignition?mac=${mac:hexhyp}"},
				"ignition": {"node1=http://10.77.0.21:2380,node2=http://10.77.0.22:2380,node3=http://10.77.0.23:2380"},
				"metadata": {"CLUSTER=etcd3", "IP=10.77.0.22"},
			}},
	},
	"default": {
		{name: "any", query: "uuid=11111111-2222-3333-4444-555555555555&mac=52-54-00-12-34-56" + chain,
			contains: map[string][]string{
				"ipxe":     {"fedora-coreos-live-kernel.x86_64", "ignition.firstboot", "http://" + testHost + "/ignition?uuid=${uuid}&mac=${mac:hexhyp}", "initrd --name main /assets/fedora-coreos/"},
				"grub":     {"fedora-coreos-live-kernel.x86_64", "initrdefi /assets/fedora-coreos/fedora-coreos-live-initramfs.x86_64.img\n"},
				"ignition": {`"version":"3.5.0"`, "/etc/motd.d/kindling.motd", "kindling-example"},
				"generic":  {"mac=52:54:00:12:34:56"},
				"metadata": {"MAC=52:54:00:12:34:56", "SSH_AUTHORIZED_KEYS="},
			}},
		{name: "node1", query: "uuid=11111111-2222-3333-4444-555555555555&mac=52-54-00-A1-9C-AE" + chain,
			contains: map[string][]string{
				"ipxe":     {"coreos.inst.install_dev=/dev/vda", "coreos.inst.ignition_url=http://" + testHost + "/ignition?"},
				"grub":     {"coreos.inst.install_dev=/dev/vda"},
				"ignition": {`"version":"3.5.0"`, "/etc/hostname", "data:,node1"},
				"generic":  {"mac=52:54:00:a1:9c:ae"},
				"metadata": {"HOSTNAME=node1", "MAC=52:54:00:a1:9c:ae"},
			}},
		// What the installer's kernel arguments ask, after the install.
		{name: "node1-ignition-url", query: "uuid=11111111-2222-3333-4444-555555555555&mac=52-54-00-a1-9c-ae",
			contains: map[string][]string{"ignition": {"data:,node1"}}},
	},
	"flatcar-install": {
		{name: "node1-install", query: "uuid=&mac=52-54-00-a1-9c-ae" + chain,
			codes: map[string]int{"generic": http.StatusNotFound},
			contains: map[string][]string{
				"ipxe":     {"flatcar_production_pxe.vmlinuz", "flatcar.first_boot=yes", "flatcar.config.url=http://" + testHost + "/ignition?"},
				"grub":     {"initrdefi /assets/flatcar/current/flatcar_production_pxe_image.cpio.gz\n"},
				"ignition": {`"version":"3.4.0"`, "installer.service", `http://` + testHost + `/ignition?mac=52:54:00:a1:9c:ae\u0026os=installed`},
				"generic":  {"no generic_id"},
			}},
		{name: "node3-install", query: "uuid=&mac=52-54-00-c3-61-77" + chain,
			codes: map[string]int{"generic": http.StatusNotFound},
			contains: map[string][]string{
				"ignition": {"mac=52:54:00:c3:61:77"},
			}},
		{name: "node1-installed", query: "mac=52:54:00:a1:9c:ae&os=installed",
			codes: map[string]int{"ipxe": http.StatusNotFound, "grub": http.StatusNotFound, "generic": http.StatusNotFound},
			contains: map[string][]string{
				"ipxe":     {`profile "flatcar" has no boot section`},
				"ignition": {`"version":"3.4.0"`, "data:,node1.example.com", "/etc/etcd/initial-cluster"},
				"metadata": {"ETCD_NAME=node1", "ETCD_INITIAL_CLUSTER=node1=http://node1.example.com:2380", "OS=installed"},
			}},
		{name: "node2-installed", query: "mac=52:54:00:b2:2f:86&os=installed",
			codes: map[string]int{"ipxe": http.StatusNotFound, "grub": http.StatusNotFound, "generic": http.StatusNotFound},
			contains: map[string][]string{
				"ignition": {"data:,node2.example.com", "data:,node2"},
			}},
		// Not in the rack: no default group, so nothing is served.
		{name: "stranger", query: "uuid=&mac=52-54-00-ff-ff-ff" + chain,
			codes:    map[string]int{"ipxe": 404, "grub": 404, "ignition": 404, "generic": 404, "metadata": 404},
			contains: map[string][]string{"ipxe": {"no group matches", "mac=52:54:00:ff:ff:ff"}}},
	},
	"custom-scripts": {
		{name: "worker1", query: "uuid=8a4b3c1e-0000-4000-8000-000000000001&mac=52-54-00-00-00-01" + chain,
			codes: map[string]int{"generic": http.StatusNotFound},
			contains: map[string][]string{
				"ipxe":     {"# worker boot for 8a4b3c1e-0000-4000-8000-000000000001", "kernel /assets/debian/amd64/vmlinuz console=ttyS0,115200n8 kindling.role=worker ignition.config.url=http://" + testHost + "/ignition?uuid=8a4b3c1e-0000-4000-8000-000000000001 || goto failed", "initrd /assets/debian/amd64/initrd.img || goto failed"},
				"grub":     {`menuentry "Debian live (worker)"`, `initrd "/assets/debian/amd64/initrd.img"`},
				"metadata": {"NTP_SERVERS='0.pool.example 1.pool.example'", "ROLE=worker"},
			}},
		{name: "worker2-arm64", query: "uuid=8A4B3C1E-0000-4000-8000-000000000002&mac=52-54-00-00-00-02&domain=&hostname=&serial=&arch=arm64",
			codes: map[string]int{"generic": http.StatusNotFound},
			contains: map[string][]string{
				"ipxe": {"kernel /assets/debian/arm64/vmlinuz console=ttyAMA0 kindling.role=worker || goto failed"},
				"grub": {`menuentry 'Debian live (arm64) (EFI)'`, `linux /assets/debian/arm64/vmlinuz console=ttyAMA0`},
			}},
		{name: "stranger", query: "uuid=8a4b3c1e-0000-4000-8000-000000000003&mac=52-54-00-00-00-03" + chain,
			codes: map[string]int{"ipxe": 404, "grub": 404, "ignition": 404, "generic": 404, "metadata": 404}},
	},
}

// exampleSources are the ways an example directory gets served: loaded
// into a catalog for web.NewHandler, and through the whole server.
func exampleSources(t *testing.T, name string) map[string]*server {
	t.Helper()
	dir := filepath.Join("..", "..", "examples", name)
	c := load(t, os.DirFS(dir))
	srcs := map[string]*server{
		"catalog": start(t, web.Config{Catalog: func() *catalog.Catalog { return c }}),
	}
	s, err := matchbox.New(matchbox.Config{DataPath: dir})
	if err != nil {
		t.Fatalf("matchbox.New(DataPath: %s): %v", dir, err)
	}
	srcs["matchbox.New"] = startHandler(t, s.Handler())
	if name == "default" {
		// The embedded copy must be the same data.
		e := load(t, examples.Default)
		srcs["embedded"] = start(t, web.Config{Catalog: func() *catalog.Catalog { return e }})
	}
	return srcs
}

func TestExamples(t *testing.T) {
	ents, err := os.ReadDir(filepath.Join("..", "..", "examples"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		// Only data directories (with groups/) are served; examples/terraform
		// and examples/libvirt are not.
		if _, err := os.Stat(filepath.Join("..", "..", "examples", e.Name(), "groups")); e.IsDir() && err == nil {
			if _, ok := exampleMachines[e.Name()]; !ok {
				t.Errorf("examples/%s has no machines in exampleMachines: add some so its responses are tested", e.Name())
			}
		}
	}
	for name, machines := range exampleMachines {
		t.Run(name, func(t *testing.T) {
			for src, s := range exampleSources(t, name) {
				s.get("/boot.ipxe").want(t, src+": GET /boot.ipxe", http.StatusOK, web.BootIPXE)
				for _, m := range machines {
					for _, endpoint := range []string{"ipxe", "grub", "ignition", "generic", "metadata"} {
						target := "/" + endpoint + "?" + m.query
						call := src + ": GET " + target
						code := http.StatusOK
						if c, ok := m.codes[endpoint]; ok {
							code = c
						}
						r := s.get(target)
						r.want(t, call, code, m.contains[endpoint]...)
						if r.code != http.StatusOK {
							continue
						}
						checkSane(t, call, endpoint, r)
						golden(t, "examples/"+name+"/"+m.name+"."+endpoint, call, r.body)
					}
				}
			}
		})
	}
}

// checkSane checks what every 200 of an endpoint must look like.
func checkSane(t *testing.T, call, endpoint string, r response) {
	t.Helper()
	if strings.Contains(r.body, "<no value>") {
		t.Errorf("%s = %q, want no <no value> (a template printed a missing key)", call, r.body)
	}
	switch endpoint {
	case "ipxe":
		if !strings.HasPrefix(r.body, "#!ipxe\n") || !strings.Contains(r.body, "\nkernel ") || !strings.Contains(r.body, "\nboot\n") {
			t.Errorf("%s = %q, want an iPXE script with kernel and boot", call, r.body)
		}
	case "grub":
		if !strings.Contains(r.body, "menuentry ") || !strings.Contains(r.body, "\tlinux") {
			t.Errorf("%s = %q, want a GRUB menu entry loading a kernel", call, r.body)
		}
	case "ignition":
		if _, err := render.CheckIgnition([]byte(r.body)); err != nil {
			t.Errorf("CheckIgnition(%s) = %v, want a valid config", call, err)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s Content-Type = %q, want application/json", call, ct)
		}
	case "metadata":
		if !strings.Contains(r.body, "REQUEST_HOST="+testHost+"\n") {
			t.Errorf("%s = %q, want REQUEST_HOST=%s", call, r.body, testHost)
		}
	case "generic":
		if r.body == "" {
			t.Errorf("%s = empty, want the rendered template", call)
		}
	}
}

// TestExampleRawIgnition checks custom-scripts' raw Ignition is served
// exactly as the file holds it.
func TestExampleRawIgnition(t *testing.T) {
	const dir = "../../examples/custom-scripts"
	want, err := fs.ReadFile(os.DirFS(dir), "ignition/worker.ign")
	if err != nil {
		t.Fatal(err)
	}
	s := exampleSources(t, "custom-scripts")["catalog"]
	for _, q := range []string{"uuid=8a4b3c1e-0000-4000-8000-000000000001", "uuid=8a4b3c1e-0000-4000-8000-000000000002&arch=arm64"} {
		r := s.get("/ignition?" + q)
		if r.code != http.StatusOK || r.body != string(want) {
			t.Errorf("GET /ignition?%s = %d %q, want 200 and ignition/worker.ign byte for byte (%q)", q, r.code, r.body, want)
		}
		if v, err := render.CheckIgnition([]byte(r.body)); err != nil || v != "3.6.0" {
			t.Errorf("CheckIgnition(GET /ignition?%s) = %q, %v; want 3.6.0 (its own version, not upgraded)", q, v, err)
		}
	}
}

// TestExampleHealthz checks the whole server reports the example it loaded.
func TestExampleHealthz(t *testing.T) {
	s := exampleSources(t, "flatcar-install")["matchbox.New"]
	s.get("/healthz").want(t, "GET /healthz", http.StatusOK, "ok\n", ": 3 groups, 2 profiles\n")
	s.metrics().want(t, "GET /metrics", http.StatusOK, "kindling_catalog_groups 3", "kindling_catalog_healthy 1")
}
