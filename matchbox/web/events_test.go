package web_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kindlingboot/kindling/assets"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/events"
	"github.com/kindlingboot/kindling/matchbox/web"
)

func TestEvents(t *testing.T) {
	c, err := catalog.Load(fstest.MapFS{
		"profiles/p.json":     {Data: []byte(`{"id":"p","boot":{"kernel":"/assets/k"}}`)},
		"groups/default.json": {Data: []byte(`{"id":"default","profile":"p"}`)},
	}, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := events.NewLog(0, 0)
	srv := httptest.NewServer(web.NewHandler(web.Config{
		Catalog: func() *catalog.Catalog { return c },
		Events:  log,
		// The DHCP side knows this client: loopback is 52:54:00:00:00:07.
		MACFor: func(ip net.IP) string {
			if ip.IsLoopback() {
				return "52:54:00:00:00:07"
			}
			return ""
		},
	}))
	defer srv.Close()
	getJSON := func(path string, v any) int {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode == 200 {
			if err := json.Unmarshal(b, v); err != nil {
				t.Fatalf("GET %s: %v\n%s", path, err, b)
			}
		}
		return resp.StatusCode
	}
	for _, p := range []string{"/boot.ipxe", "/ipxe?mac=52-54-00-00-00-01", "/ipxe"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	var evs []events.Event
	if code := getJSON("/events?mac=52-54-00-00-00-01", &evs); code != 200 || len(evs) != 1 || evs[0].Step != "ipxe" || evs[0].Group != "default" {
		t.Errorf("GET /events?mac=…:01 = %d %+v, want one ipxe event in group default", code, evs)
	}
	evs = nil
	if code := getJSON("/events?mac=52:54:00:00:00:07", &evs); code != 200 || len(evs) != 2 || evs[0].Step != "boot.ipxe" || evs[1].Step != "ipxe" {
		t.Errorf("GET /events for the MAC known by IP = %d %+v, want boot.ipxe then ipxe", code, evs)
	}
	var list map[string][]string
	if code := getJSON("/events", &list); code != 200 || len(list["macs"]) != 2 {
		t.Errorf("GET /events = %d %v, want both MACs", code, list)
	}
	if code := getJSON("/events?mac=nope", &evs); code != 400 {
		t.Errorf("GET /events?mac=nope = %d, want 400", code)
	}
}

func TestIPXEBinariesOverHTTP(t *testing.T) {
	c, err := catalog.Load(fstest.MapFS{}, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assetsDir, ipxeDir := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(assetsDir, "ipxe"), 0o755)
	os.WriteFile(filepath.Join(assetsDir, "ipxe", "own.efi"), []byte("from assets"), 0o644)
	os.WriteFile(filepath.Join(assetsDir, "k"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(ipxeDir, "ipxe.efi"), []byte("from the tftp root"), 0o644)
	a, err := assets.Open(assetsDir)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := assets.OpenFollowingLinks(ipxeDir)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(web.NewHandler(web.Config{Catalog: func() *catalog.Catalog { return c }, Assets: a, IPXE: ix}))
	defer srv.Close()
	for path, want := range map[string]string{
		"/assets/ipxe/ipxe.efi": "from the tftp root",
		"/assets/ipxe/own.efi":  "from assets",
		"/assets/k":             "kernel",
		"/assets/ipxe/nope.efi": "404 not found: /assets/ipxe/nope.efi\n",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != want {
			t.Errorf("GET %s = %d %q, want %q", path, resp.StatusCode, b, want)
		}
	}
}

// TestFailedRequestsAreEvents: a machine request the server cannot answer
// (no group, a config that does not render) is in the machine's events
// with the reason, so an operator sees where its boot stopped.
func TestFailedRequestsAreEvents(t *testing.T) {
	c, err := catalog.Load(fstest.MapFS{
		"profiles/p.json":   {Data: []byte(`{"id":"p","boot":{"kernel":"/assets/k"},"ignition_id":"c.yaml"}`)},
		"groups/node1.json": {Data: []byte(`{"id":"node1","profile":"p","selector":{"mac":"52:54:00:00:00:01"}}`)},
		"ignition/c.yaml":   {Data: []byte("variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/x\n      contents:\n        inline: {{.request.query.missing}}\n")},
	}, catalog.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := events.NewLog(0, 0)
	srv := httptest.NewServer(web.NewHandler(web.Config{Catalog: func() *catalog.Catalog { return c }, Events: log}))
	defer srv.Close()
	for _, p := range []string{"/ignition?mac=52:54:00:00:00:01", "/ipxe?mac=52:54:00:00:00:02"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if evs := log.Events("52:54:00:00:00:01"); len(evs) != 1 || evs[0].Step != "ignition" || evs[0].Group != "node1" || !strings.HasPrefix(evs[0].Error, "500 ") {
		t.Errorf("events of a machine whose config fails to render = %+v, want one ignition event with the 500 reason", evs)
	}
	if evs := log.Events("52:54:00:00:00:02"); len(evs) != 1 || evs[0].Step != "ipxe" || !strings.Contains(evs[0].Error, "no group matches") {
		t.Errorf("events of a machine no group matches = %+v, want one ipxe event saying so", evs)
	}
}
