package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/render"
	"github.com/kindlingboot/kindling/matchbox/web"
)

// machineEndpoints are the endpoints that select a group.
var machineEndpoints = []string{"/ipxe", "/grub", "/ignition", "/generic", "/metadata"}

func TestBootIPXE(t *testing.T) {
	s := startCatalog(t, files(map[string]string{
		"profiles/p.json": `{"id": "p", "boot": {"kernel": "/k"}}`,
		"groups/g.json":   `{"id": "g", "profile": "p"}`,
	}))
	var first string
	for _, path := range []string{"/boot.ipxe", "/boot.ipxe.0"} {
		r := s.get(path)
		call := "GET " + path
		r.want(t, call, http.StatusOK, "#!ipxe\n", "chain ipxe?", "uuid=${uuid}", "mac=${mac:hexhyp}", "arch=${buildarch:uristring}")
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("%s Content-Type = %q, want text/plain", call, ct)
		}
		if r.body != web.BootIPXE {
			t.Errorf("%s = %q, want web.BootIPXE %q", call, r.body, web.BootIPXE)
		}
		if first == "" {
			first = r.body
		} else if r.body != first {
			t.Errorf("%s = %q, want the same script as /boot.ipxe (%q)", call, r.body, first)
		}
		golden(t, "boot.ipxe", call, r.body)
		// The chainload script needs no labels and ignores the query.
		if q := s.get(path + "?mac=bad"); q.code != http.StatusOK || q.body != web.BootIPXE {
			t.Errorf("%s?mac=bad = %d %q, want 200 and the chainload script", path, q.code, q.body)
		}
		if h := s.do(http.MethodHead, path); h.code != http.StatusOK || h.body != "" {
			t.Errorf("HEAD %s = %d %q, want 200 and no body", path, h.code, h.body)
		}
	}
}

// selectData has one profile whose kernel arguments say which group
// served the machine (who={{.who}} from group metadata).
var selectData = map[string]string{
	"profiles/p.json":     `{"id": "p", "name": "P", "boot": {"kernel": "/assets/vmlinuz", "args": ["who={{.who}}"]}}`,
	"groups/default.json": `{"id": "default", "profile": "p", "metadata": {"who": "default"}}`,
	"groups/node1.json": `{"id": "node1", "profile": "p", "selector": {"mac": "52:54:00:a1:9c:ae"},
		"metadata": {"who": "node1"}}`,
	"groups/node1-installed.json": `{"id": "node1-installed", "profile": "p",
		"selector": {"mac": "52:54:00:A1:9C:AE", "os": "installed"}, "metadata": {"who": "node1-installed"}}`,
	"groups/rack.json": `{"id": "rack", "profile": "p",
		"selector": {"mac": ["52:54:00:00:00:01", "52-54-00-00-00-02"]}, "metadata": {"who": "rack"}}`,
	"groups/by-uuid.json": `{"id": "by-uuid", "profile": "p",
		"selector": {"uuid": "8A4B3C1E-0000-4000-8000-00000000000A"}, "metadata": {"who": "by-uuid"}}`,
	"groups/zone.json": `{"id": "zone", "profile": "p", "selector": {"Zone": "eu-1"}, "metadata": {"who": "zone"}}`,
	"groups/no-hostname.json": `{"id": "no-hostname", "profile": "p", "selector": {"hostname": ""},
		"metadata": {"who": "no-hostname"}}`,
	"groups/tie-a.json": `{"id": "tie-a", "profile": "p", "selector": {"tie_a": "1"}, "metadata": {"who": "tie-a"}}`,
	"groups/tie-b.json": `{"id": "tie-b", "profile": "p", "selector": {"tie_b": "1"}, "metadata": {"who": "tie-b"}}`,
}

func TestSelect(t *testing.T) {
	s := startCatalog(t, files(selectData))
	tests := []struct {
		query string
		want  string // the group that must serve the machine
	}{
		{"", "default"},
		{"mac=52:54:00:a1:9c:ae", "node1"},
		// The most specific group wins: mac+os over mac alone.
		{"mac=52:54:00:a1:9c:ae&os=installed", "node1-installed"},
		{"os=installed&mac=52:54:00:a1:9c:ae", "node1-installed"},
		{"mac=52:54:00:a1:9c:ae&os=live", "node1"},
		{"os=installed", "default"},
		// Extra labels never hurt.
		{"mac=52:54:00:a1:9c:ae&os=installed&serial=XYZ&arch=x86_64", "node1-installed"},
		// MAC in hyphen form, upper case, and label keys in any case.
		{"mac=52-54-00-A1-9C-AE", "node1"},
		{"MAC=52:54:00:a1:9c:ae", "node1"},
		{"Mac=52-54-00-a1-9c-ae&OS=installed", "node1-installed"},
		{"mac=52%3A54%3A00%3Aa1%3A9c%3Aae", "node1"},
		// List selectors: any of the MACs.
		{"mac=52:54:00:00:00:01", "rack"},
		{"mac=52:54:00:00:00:02", "rack"},
		{"mac=52-54-00-00-00-02", "rack"},
		{"mac=52:54:00:00:00:03", "default"},
		// UUIDs compare case-insensitively.
		{"uuid=8a4b3c1e-0000-4000-8000-00000000000a", "by-uuid"},
		{"uuid=8A4B3C1E-0000-4000-8000-00000000000A", "by-uuid"},
		{"UUID=8a4B3c1E-0000-4000-8000-00000000000A", "by-uuid"},
		{"uuid=8a4b3c1e-0000-4000-8000-00000000000b", "default"},
		// Selector keys are case-insensitive too; other values are not.
		{"zone=eu-1", "zone"},
		{"ZONE=eu-1", "zone"},
		{"zone=EU-1", "default"},
		// A "" selector matches a present, empty label only.
		{"hostname=", "no-hostname"},
		{"hostname=&mac=52:54:00:00:00:03", "no-hostname"},
		{"hostname=node9", "default"},
		{"domain=", "default"},
		// Equal specificity: the group whose id sorts first wins.
		{"tie_a=1&tie_b=1", "tie-a"},
		{"tie_b=1&tie_a=1", "tie-a"},
		{"tie_b=1", "tie-b"},
	}
	for _, tt := range tests {
		for _, endpoint := range []string{"/ipxe", "/metadata"} {
			target := endpoint + "?" + tt.query
			r := s.get(target)
			want := "who=" + tt.want
			if endpoint == "/metadata" {
				want = "WHO=" + tt.want + "\n"
			}
			r.want(t, "GET "+target, http.StatusOK, want)
		}
	}
}

func TestSelectMetrics(t *testing.T) {
	s := startCatalog(t, files(selectData))
	for _, q := range []string{"mac=52:54:00:a1:9c:ae", "MAC=52-54-00-A1-9C-AE", "mac=52:54:00:00:00:01"} {
		s.get("/ipxe?"+q).want(t, "GET /ipxe?"+q, http.StatusOK)
	}
	m := s.metrics()
	m.want(t, "GET /metrics", http.StatusOK,
		`kindling_selections_total{group="node1"} 2`,
		`kindling_selections_total{group="rack"} 1`)
}

func TestBadMAC(t *testing.T) {
	// The default group installs to disk: a machine that sent a MAC we
	// cannot read must never land there.
	s := startCatalog(t, files(map[string]string{
		"profiles/install.json": `{"id": "install", "boot": {"kernel": "/assets/INSTALLER"}, "ignition_id": "install.ign", "generic_id": "g.txt"}`,
		"ignition/install.ign":  `{"ignition": {"version": "3.4.0"}, "storage": {"disks": [{"device": "/dev/sda", "wipeTable": true}]}}`,
		"generic/g.txt":         "INSTALLER generic\n",
		"groups/default.json":   `{"id": "default", "profile": "install", "metadata": {"marker": "INSTALLER"}}`,
	}))
	tests := []struct {
		query string
		why   []string
	}{
		{"mac=bad", []string{"400", `mac "bad" is not a MAC address`, "52:54:00:a1:9c:ae"}},
		{"mac=52:54:00:a1:9c", []string{`"52:54:00:a1:9c"`, "not a MAC address"}},
		{"mac=", []string{`mac ""`, "not a MAC address"}},
		{"MAC=zz-zz-zz-zz-zz-zz", []string{"zz-zz-zz-zz-zz-zz"}},
		{"uuid=x&mac=52:54:00:a1:9c:ae:ff:ff:ff", []string{"not a MAC address"}},
		// One label spelt twice with different values.
		{"mac=52:54:00:a1:9c:ae&MAC=52:54:00:a1:9c:af", []string{`label "mac" given twice`, "52:54:00:a1:9c:ae", "52:54:00:a1:9c:af"}},
	}
	for _, tt := range tests {
		for _, endpoint := range machineEndpoints {
			target := endpoint + "?" + tt.query
			r := s.get(target)
			r.want(t, "GET "+target, http.StatusBadRequest, tt.why...)
			r.wantNot(t, "GET "+target, "INSTALLER", "wipeTable", "#!ipxe")
		}
	}
	// The same MAC spelt twice the same way is fine.
	s.get("/ipxe?mac=52:54:00:a1:9c:ae&MAC=52-54-00-A1-9C-AE").want(t, "GET /ipxe?mac=…&MAC=…", http.StatusOK, "INSTALLER")
	m := s.metrics()
	m.want(t, "GET /metrics", http.StatusOK, `kindling_http_requests_total{code="400",endpoint="ipxe"} 6`)
	m.wantNot(t, "GET /metrics", `kindling_selections_total{group="default"} 2`)
}

func TestNoGroup(t *testing.T) {
	s := startCatalog(t, files(map[string]string{
		"profiles/p.json":   `{"id": "p", "boot": {"kernel": "/k"}}`,
		"groups/node1.json": `{"id": "node1", "profile": "p", "selector": {"mac": "52:54:00:a1:9c:ae"}}`,
	}))
	tests := []struct {
		query string
		why   []string
	}{
		{"", []string{"no group matches a request without labels"}},
		{"mac=52-54-00-00-00-09&uuid=ABC-1", []string{"no group matches", "mac=52:54:00:00:00:09", "uuid=abc-1", "kindling select"}},
		{"hostname=my%20host&rack=r1&row=7", []string{"hostname='my host'", "rack=r1", "row=7"}},
		// Reserved labels first, in boot.ipxe's order, then the rest sorted.
		{"zone=3&rack=1&arch=x86_64&row=2&mac=52:54:00:00:00:09&os=x", []string{
			"404 not found: no group matches labels mac=52:54:00:00:00:09 arch=x86_64 os=x rack=1 row=2 zone=3 (kindling select mac=52:54:00:00:00:09 arch=x86_64 os=x rack=1 row=2 zone=3 explains why)\n"}},
	}
	for _, tt := range tests {
		for _, endpoint := range machineEndpoints {
			target := endpoint + "?" + tt.query
			s.get(target).want(t, "GET "+target, http.StatusNotFound, tt.why...)
		}
	}
}

func TestNotConfigured(t *testing.T) {
	s := startCatalog(t, files(map[string]string{
		"profiles/configs-only.json": `{"id": "configs-only", "ignition_id": "c.ign", "generic_id": "g.txt"}`,
		"profiles/boot-only.json":    `{"id": "boot-only", "boot": {"kernel": "/k"}}`,
		"ignition/c.ign":             `{"ignition": {"version": "3.6.0"}}`,
		"generic/g.txt":              "generic\n",
		"groups/a.json":              `{"id": "a", "profile": "configs-only", "selector": {"role": "a"}}`,
		"groups/b.json":              `{"id": "b", "profile": "boot-only", "selector": {"role": "b"}}`,
	}))
	tests := []struct {
		target string
		code   int
		want   string
	}{
		{"/ipxe?role=a", http.StatusNotFound, `profile "configs-only" has no boot section`},
		{"/grub?role=a", http.StatusNotFound, `profile "configs-only" has no boot section`},
		{"/ignition?role=a", http.StatusOK, `"version": "3.6.0"`},
		{"/generic?role=a", http.StatusOK, "generic\n"},
		{"/metadata?role=a", http.StatusOK, "ROLE=a\n"},
		{"/ipxe?role=b", http.StatusOK, "kernel /k"},
		{"/grub?role=b", http.StatusOK, "linux /k\n"},
		{"/ignition?role=b", http.StatusNotFound, `profile "boot-only" has no ignition_id`},
		{"/generic?role=b", http.StatusNotFound, `profile "boot-only" has no generic_id`},
		{"/metadata?role=b", http.StatusOK, "ROLE=b\n"},
	}
	for _, tt := range tests {
		s.get(tt.target).want(t, "GET "+tt.target, tt.code, tt.want)
	}
}

// renderErrorData holds templates that load (the first group renders
// fine) but fail for some machines.
var renderErrorData = map[string]string{
	"profiles/p.json": `{"id": "p", "boot": {"kernel": "/k", "args": ["console={{.console}}"]},
		"ignition_id": "node.yaml", "generic_id": "g.txt"}`,
	"profiles/q.json":     `{"id": "q", "ignition_id": "query.yaml"}`,
	"ignition/node.yaml":  "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: {{.path}}\n      contents:\n        inline: {{.note}}\n",
	"ignition/query.yaml": "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/note\n      contents:\n        inline: {{.request.query.note}}\n",
	"generic/g.txt":       "console={{.console}} extra={{.extra}}\n",
	"groups/a-good.json": `{"id": "a-good", "profile": "p", "selector": {"node": "good"},
		"metadata": {"path": "/etc/note", "note": "fine", "console": "ttyS0", "extra": "x"}}`,
	// A value that breaks the YAML the template makes.
	"groups/b-yaml.json": `{"id": "b-yaml", "profile": "p", "selector": {"node": "yaml"},
		"metadata": {"path": "/etc/note", "note": "key: value: other", "console": "ttyS0", "extra": "x"}}`,
	// YAML that parses into a config Ignition rejects.
	"groups/c-relative.json": `{"id": "c-relative", "profile": "p", "selector": {"node": "relative"},
		"metadata": {"path": "etc/note", "note": "fine", "console": "ttyS0", "extra": "x"}}`,
	// Keys the templates need are missing.
	"groups/d-missing.json": `{"id": "d-missing", "profile": "p", "selector": {"node": "missing"},
		"metadata": {"path": "/etc/note"}}`,
	"groups/e-query.json": `{"id": "e-query", "profile": "q", "selector": {"node": "query"}}`,
}

func TestRenderErrors(t *testing.T) {
	s := startCatalog(t, files(renderErrorData))
	tests := []struct {
		target string
		why    []string
	}{
		{"/ignition?node=yaml", []string{"500", "ignition/node.yaml", "b-yaml", "yaml", "mapping values are not allowed"}},
		{"/ignition?node=relative", []string{"500", "ignition/node.yaml", "c-relative", "path not absolute"}},
		{"/ignition?node=missing", []string{"500", "ignition/node.yaml", `map has no entry for key "note"`}},
		{"/ipxe?node=missing", []string{"500", `profile "p"`, "boot.args[0]", `map has no entry for key "console"`}},
		{"/grub?node=missing", []string{"500", `map has no entry for key "console"`}},
		{"/generic?node=missing", []string{"500", "generic/g.txt", `map has no entry for key "console"`}},
		// A query parameter the template reads is missing, or breaks YAML.
		{"/ignition?node=query", []string{"500", "ignition/query.yaml", `map has no entry for key "note"`}},
		{"/ignition?node=query&note=a:%20b:%20c", []string{"500", "mapping values are not allowed"}},
	}
	for _, tt := range tests {
		// Twice: an error is never cached as an empty success.
		for i := 0; i < 2; i++ {
			r := s.get(tt.target)
			call := "GET " + tt.target
			r.want(t, call, http.StatusInternalServerError, tt.why...)
			r.wantNot(t, call, `"ignition"`, "#!ipxe")
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("%s Content-Type = %q, want text/plain for an error", call, ct)
			}
		}
	}
	// The machines the templates work for are served.
	for _, target := range []string{"/ignition?node=good", "/ignition?node=query&note=hello", "/ipxe?node=good", "/generic?node=good"} {
		r := s.get(target)
		r.want(t, "GET "+target, http.StatusOK)
		if strings.HasPrefix(target, "/ignition") {
			if v, err := render.CheckIgnition([]byte(r.body)); err != nil || v != "3.5.0" {
				t.Errorf("CheckIgnition(GET %s = %q) = %q, %v; want 3.5.0, nil", target, r.body, v, err)
			}
		}
	}
	m := s.metrics()
	m.want(t, "GET /metrics", http.StatusOK, `kindling_http_requests_total{code="500",endpoint="ignition"} 10`)
}

func TestIgnition(t *testing.T) {
	// Raw Ignition is served byte for byte, in its own spec version, with
	// its own spacing and key order.
	raw30 := "{\"storage\": {\"files\": [{\"path\": \"/etc/hostname\", \"contents\": {\"source\": \"data:,raw%0A\"}, \"mode\": 420}]},\n   \"ignition\": {\"version\": \"3.0.0\"}}\n"
	raw36 := `{"ignition":{"version":"3.6.0"}}`
	s := startCatalog(t, files(map[string]string{
		"ignition/raw30.ign":      raw30,
		"ignition/raw36.ignition": raw36,
		"ignition/fcos16.yaml":    "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/hostname\n      mode: 0644\n      contents:\n        inline: {{.hostname}}\n",
		"ignition/fcos17.bu":      "variant: fcos\nversion: 1.7.0\npasswd:\n  users:\n    - name: core\n",
		"ignition/flatcar.yaml":   "variant: flatcar\nversion: 1.1.0\nsystemd:\n  units:\n    - name: hello.service\n      enabled: true\n      contents: |\n        [Service]\n        ExecStart=/bin/echo {{.mac}}\n        [Install]\n        WantedBy=multi-user.target\n",
		"profiles/raw30.json":     `{"id": "raw30", "ignition_id": "raw30.ign"}`,
		"profiles/raw36.json":     `{"id": "raw36", "ignition_id": "raw36.ignition"}`,
		"profiles/fcos16.json":    `{"id": "fcos16", "ignition_id": "fcos16.yaml"}`,
		"profiles/fcos17.json":    `{"id": "fcos17", "ignition_id": "fcos17.bu"}`,
		"profiles/flatcar.json":   `{"id": "flatcar", "ignition_id": "flatcar.yaml"}`,
		"groups/raw30.json":       `{"id": "raw30", "profile": "raw30", "selector": {"p": "raw30"}}`,
		"groups/raw36.json":       `{"id": "raw36", "profile": "raw36", "selector": {"p": "raw36"}}`,
		"groups/fcos16.json":      `{"id": "fcos16", "profile": "fcos16", "selector": {"p": "fcos16"}, "metadata": {"hostname": "node1"}}`,
		"groups/fcos17.json":      `{"id": "fcos17", "profile": "fcos17", "selector": {"p": "fcos17"}}`,
		"groups/flatcar.json":     `{"id": "flatcar", "profile": "flatcar", "selector": {"p": "flatcar", "mac": "52:54:00:a1:9c:ae"}}`,
	}))
	tests := []struct {
		query   string
		version string
		exact   string // when set, the body must be exactly this
		golden  string
	}{
		{"p=raw30", "3.0.0", raw30, "ignition-raw30"},
		{"p=raw36", "3.6.0", raw36, "ignition-raw36"},
		{"p=fcos16", "3.5.0", "", "ignition-fcos16"},
		{"p=fcos17", "3.6.0", "", "ignition-fcos17"},
		{"p=flatcar&mac=52-54-00-A1-9C-AE", "3.4.0", "", "ignition-flatcar"},
	}
	for _, tt := range tests {
		target := "/ignition?" + tt.query
		call := "GET " + target
		r := s.get(target)
		r.want(t, call, http.StatusOK)
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s Content-Type = %q, want application/json", call, ct)
		}
		if tt.exact != "" && r.body != tt.exact {
			t.Errorf("%s = %q, want the file byte for byte: %q", call, r.body, tt.exact)
		}
		if v, err := render.CheckIgnition([]byte(r.body)); err != nil || v != tt.version {
			t.Errorf("CheckIgnition(%s = %q) = %q, %v; want %q, nil", call, r.body, v, err, tt.version)
		}
		golden(t, tt.golden, call, r.body)
		if h := s.do(http.MethodHead, target); h.code != http.StatusOK || h.body != "" || h.header.Get("Content-Length") != r.header.Get("Content-Length") {
			t.Errorf("HEAD %s = %d, Content-Length %q, body %q; want 200, Content-Length %q, no body", target, h.code, h.header.Get("Content-Length"), h.body, r.header.Get("Content-Length"))
		}
	}
	s.get("/ignition?p=fcos16").want(t, "GET /ignition?p=fcos16", http.StatusOK, "data:,node1")
	s.get("/ignition?p=flatcar&mac=52-54-00-A1-9C-AE").want(t, "GET /ignition?p=flatcar", http.StatusOK, `/bin/echo 52:54:00:a1:9c:ae`)
}

// varsData exercises every template variable a machine's configs see.
var varsData = map[string]string{
	"profiles/p.json": `{"id": "p", "name": "Vars", "generic_id": "vars.txt", "ignition_id": "vars.yaml",
		"boot": {"kernel": "/assets/{{.os}}/vmlinuz", "initrd": ["--name main /assets/{{.os}}/initrd.img"],
			"args": ["initrd=main", "hostname={{.hostname}}", "url=http://{{.request.host}}/ignition?mac={{.mac}}&os={{.os}}", "uuid=${uuid}"]}}`,
	"generic/vars.txt": `mac={{.mac}}
os={{.os}}
hostname={{.hostname}}
etcd.name={{.etcd.name}}
etcd.peers={{range $i, $p := .etcd.peers}}{{if $i}},{{end}}{{$p}}{{end}}
port={{.etcd.port}}
enabled={{.enabled}}
query.mac={{.request.query.mac}}
query.x={{.request.query.x}}
query.present={{if index .request.query "absent"}}yes{{else}}no{{end}}
raw_query={{.request.raw_query}}
host={{.request.host}}
request.keys={{range $k, $v := .request}}{{$k}} {{end}}
`,
	"ignition/vars.yaml": "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/hostname\n      mode: 0644\n      contents:\n        inline: {{.hostname}}\n    - path: /etc/kindling-server\n      mode: 0644\n      contents:\n        inline: {{.request.host}}\n",
	"groups/node1.json": `{"id": "node1", "profile": "p", "selector": {"mac": "52:54:00:a1:9c:ae", "os": "installed"},
		"metadata": {
			"hostname": "node1.example.com",
			"os": "metadata loses to the selector",
			"request": "metadata loses to the request",
			"etcd": {"name": "node1", "peers": ["node1=http://10.0.0.1:2380", "node2=http://10.0.0.2:2380"], "port": 2379},
			"enabled": true}}`,
}

func TestTemplateVariables(t *testing.T) {
	s := startCatalog(t, files(varsData))
	const query = "mac=52-54-00-A1-9C-AE&os=installed&x=hello%20world"
	tests := []struct {
		target string
		golden string
	}{
		{"/generic?" + query, "vars-generic"},
		{"/ipxe?" + query, "vars-ipxe"},
		{"/grub?" + query, "vars-grub"},
		{"/ignition?" + query, "vars-ignition"},
	}
	for _, tt := range tests {
		r := s.get(tt.target)
		r.want(t, "GET "+tt.target, http.StatusOK, "node1")
		golden(t, tt.golden, "GET "+tt.target, r.body)
	}
	r := s.get("/generic?" + query)
	r.want(t, "GET /generic?"+query, http.StatusOK,
		"mac=52:54:00:a1:9c:ae\n", "os=installed\n", "etcd.name=node1\n", "port=2379\n", "enabled=true\n",
		"etcd.peers=node1=http://10.0.0.1:2380,node2=http://10.0.0.2:2380\n",
		"query.x=hello world\n", "query.present=no\n",
		"raw_query="+query+"\n", "host="+testHost+"\n", "request.keys=host query raw_query \n")
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /generic Content-Type = %q, want text/plain (sniffed)", ct)
	}
	// The Host the machine used, whatever it is.
	for _, host := range []string{s.Addr, "10.0.0.5:8080", "boot.example.com"} {
		target := "/generic?" + query
		s.get(target, "Host", host).want(t, "GET "+target+" (Host: "+host+")", http.StatusOK, "host="+host+"\n")
		target = "/ipxe?" + query
		s.get(target, "Host", host).want(t, "GET "+target+" (Host: "+host+")", http.StatusOK, "url=http://"+host+"/ignition?mac=52:54:00:a1:9c:ae&os=installed ")
	}
	// A query parameter a template reads, present or not.
	s.get("/generic?mac=52:54:00:a1:9c:ae&os=installed").want(t, "GET /generic without x", http.StatusInternalServerError, `map has no entry for key "x"`)
}

func TestBootTemplates(t *testing.T) {
	s := startCatalog(t, files(map[string]string{
		"profiles/custom.json": `{"id": "custom", "name": "Custom \"quoted\"",
			"boot": {"kernel": "/assets/{{.arch}}/vmlinuz", "initrd": ["--name main /assets/{{.arch}}/initrd.img", "/assets/extra.img"],
				"args": ["initrd=main", "console={{.console}}", "role={{.role}}", "mac=${mac:hexhyp}"]},
			"ipxe_template": "retry.ipxe", "grub_template": "menu.grub"}`,
		"profiles/builtin.json": `{"id": "builtin", "name": "Built-in \"quoted\"",
			"boot": {"kernel": "/assets/{{.arch}}/vmlinuz", "initrd": ["--name main /assets/{{.arch}}/initrd.img", "/assets/extra.img"],
				"args": ["initrd=main", "console={{.console}}", "role={{.role}}", "mac=${mac:hexhyp}"]}}`,
		"templates/retry.ipxe": "#!ipxe\n# {{.role}} on {{.mac}}\n:retry\nkernel {{.boot.kernel}}{{range .boot.args}} {{.}}{{end}} || goto retry\n{{- range .boot.initrd}}\ninitrd {{.}} || goto retry\n{{- end}}\nboot\n",
		"templates/menu.grub":  "set timeout=3\nmenuentry \"{{.role}}\" {\n\tlinux {{.boot.kernel}}{{range .boot.args}} {{.}}{{end}}\n{{- range .boot.initrd}}\n\tinitrd {{.}}\n{{- end}}\n}\n",
		"groups/custom.json": `{"id": "custom", "profile": "custom", "selector": {"mac": "52:54:00:a1:9c:ae", "arch": "arm64"},
			"metadata": {"role": "worker", "console": "ttyAMA0"}}`,
		"groups/builtin.json": `{"id": "builtin", "profile": "builtin", "selector": {"mac": "52:54:00:a1:9c:ae", "arch": "x86_64"},
			"metadata": {"role": "worker", "console": "ttyS0,115200n8"}}`,
	}))
	tests := []struct {
		target string
		golden string
		want   []string
	}{
		{"/ipxe?mac=52:54:00:a1:9c:ae&arch=arm64", "boot-custom-ipxe", []string{
			"# worker on 52:54:00:a1:9c:ae\n", "kernel /assets/arm64/vmlinuz initrd=main console=ttyAMA0 role=worker mac=${mac:hexhyp} || goto retry\n",
			"initrd --name main /assets/arm64/initrd.img || goto retry\ninitrd /assets/extra.img || goto retry\n"}},
		{"/grub?mac=52:54:00:a1:9c:ae&arch=arm64", "boot-custom-grub", []string{
			"menuentry \"worker\" {\n", "\tlinux /assets/arm64/vmlinuz initrd=main console=ttyAMA0"}},
		{"/ipxe?mac=52:54:00:a1:9c:ae&arch=x86_64", "boot-builtin-ipxe", []string{
			"#!ipxe\nkernel /assets/x86_64/vmlinuz initrd=main console=ttyS0,115200n8 role=worker mac=${mac:hexhyp}\n",
			"initrd --name main /assets/x86_64/initrd.img\ninitrd /assets/extra.img\nboot\n"}},
		{"/grub?mac=52:54:00:a1:9c:ae&arch=x86_64", "boot-builtin-grub", []string{
			`menuentry 'Built-in "quoted" (EFI)' {`, `menuentry 'Built-in "quoted" (BIOS)' {`,
			"linuxefi /assets/x86_64/vmlinuz console=ttyS0,115200n8 role=worker 'mac=${mac:hexhyp}'\n",
			"initrdefi /assets/x86_64/initrd.img /assets/extra.img\n"}},
	}
	for _, tt := range tests {
		r := s.get(tt.target)
		r.want(t, "GET "+tt.target, http.StatusOK, tt.want...)
		golden(t, tt.golden, "GET "+tt.target, r.body)
	}
}

func TestMetadata(t *testing.T) {
	s := startCatalog(t, files(map[string]string{
		"profiles/p.json": `{"id": "p"}`,
		"groups/node1.json": `{"id": "node1", "profile": "p", "selector": {"mac": "52:54:00:a1:9c:ae"},
			"metadata": {
				"hostname": "node1",
				"ssh_authorized_keys": ["ssh-ed25519 AAAA one", "ssh-ed25519 BBBB two"],
				"ntp_servers": ["0.pool.example", "1.pool.example"],
				"disks": [{"device": "/dev/sda", "wipe": true}],
				"etcd": {"name": "node1", "client-port": 2379},
				"motd": "it's \"quoted\" $HOME",
				"empty": "",
				"nothing": null,
				"ratio": 0.5}}`,
	}))
	const query = "mac=52-54-00-a1-9c-ae&x=a%20b"
	r := s.get("/metadata?" + query)
	call := "GET /metadata?" + query
	r.want(t, call, http.StatusOK,
		"HOSTNAME=node1\n", "SSH_AUTHORIZED_KEYS='ssh-ed25519 AAAA one ssh-ed25519 BBBB two'\n",
		"NTP_SERVERS='0.pool.example 1.pool.example'\n", "DISKS_0_DEVICE=/dev/sda\n", "DISKS_0_WIPE=true\n",
		"ETCD_CLIENT_PORT=2379\n", `MOTD='it'\''s "quoted" $HOME'`+"\n", "EMPTY=''\n", "NOTHING=''\n", "RATIO=0.5\n",
		"MAC=52:54:00:a1:9c:ae\n", "REQUEST_QUERY_MAC=52:54:00:a1:9c:ae\n", "REQUEST_QUERY_X='a b'\n",
		"REQUEST_RAW_QUERY='"+query+"'\n", "REQUEST_HOST="+testHost+"\n")
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("%s Content-Type = %q, want text/plain; charset=utf-8", call, ct)
	}
	var keys []string
	for _, line := range strings.Split(strings.TrimSuffix(r.body, "\n"), "\n") {
		k, _, _ := strings.Cut(line, "=")
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		if keys[i-1] >= keys[i] {
			t.Errorf("%s: key %q comes before %q, want sorted unique keys", call, keys[i-1], keys[i])
		}
	}
	golden(t, "metadata-env", call, r.body)

	r = s.get("/metadata?" + query + "&format=json")
	call = "GET /metadata?" + query + "&format=json"
	r.want(t, call, http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s Content-Type = %q, want application/json", call, ct)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("%s = %q: not JSON: %v", call, r.body, err)
	}
	if got["hostname"] != "node1" || got["mac"] != "52:54:00:a1:9c:ae" {
		t.Errorf("%s = %q, want hostname node1 and mac 52:54:00:a1:9c:ae", call, r.body)
	}
	if keys, ok := got["ssh_authorized_keys"].([]any); !ok || len(keys) != 2 {
		t.Errorf("%s ssh_authorized_keys = %v, want the list of 2 keys", call, got["ssh_authorized_keys"])
	}
	golden(t, "metadata-json", call, r.body)
}

func TestMethodNotAllowed(t *testing.T) {
	s := startCatalog(t, files(selectData))
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		for _, path := range []string{"/ipxe", "/boot.ipxe", "/ignition", "/metadata", "/assets/x", "/healthz"} {
			r := s.do(method, path)
			call := method + " " + path
			r.want(t, call, http.StatusMethodNotAllowed, "read-only")
			if allow := r.header.Get("Allow"); allow != "GET, HEAD" {
				t.Errorf("%s Allow = %q, want %q", call, allow, "GET, HEAD")
			}
		}
	}
}

func TestHomeAndUnknownPaths(t *testing.T) {
	s := startCatalog(t, files(selectData))
	s.get("/").want(t, "GET /", http.StatusOK, "kindling\n")
	for _, path := range []string{"/nope", "/ipxe/", "/ipxe/extra", "/boot.ipxe.1", "/cloud", "/ipxe.sig", "/IPXE", "/assets"} {
		r := s.get(path)
		r.want(t, "GET "+path, http.StatusNotFound, "404")
		r.wantNot(t, "GET "+path, "#!ipxe")
	}
	m := s.metrics()
	m.want(t, "GET /metrics", http.StatusOK, `kindling_http_requests_total{code="404",endpoint="other"}`)
}

func TestHealthz(t *testing.T) {
	c := load(t, files(selectData))
	loaded := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name   string
		health func() web.Health
		want   []string
	}{
		{"no health func", nil, []string{"ok\n"}},
		{"healthy", func() web.Health { return web.Health{LoadedAt: loaded, Groups: 10, Profiles: 1} }, []string{
			"ok\n", "catalog loaded 2026-01-02T03:04:05Z: 10 groups, 1 profiles\n"}},
		{"reload failed", func() web.Health {
			return web.Health{LoadedAt: loaded, Groups: 10, Profiles: 1, ReloadError: "groups/x.json: invalid JSON", ReloadFailedAt: loaded.Add(time.Hour)}
		}, []string{"degraded\n", "reload failed 2026-01-02T04:04:05Z", "groups/x.json: invalid JSON"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := start(t, web.Config{Catalog: func() *catalog.Catalog { return c }, Health: tt.health})
			r := s.get("/healthz")
			r.want(t, "GET /healthz", http.StatusOK, tt.want...)
			if tt.health == nil && r.body != "ok\n" {
				t.Errorf("GET /healthz = %q, want %q", r.body, "ok\n")
			}
		})
	}
}

func TestMetrics(t *testing.T) {
	s := startCatalog(t, files(selectData))
	s.get("/ipxe?mac=52:54:00:a1:9c:ae").want(t, "GET /ipxe", http.StatusOK)
	s.get("/ipxe?mac=52:54:00:a1:9c:ae").want(t, "GET /ipxe (again)", http.StatusOK)
	s.get("/ipxe?mac=52:54:00:a1:9c:ae&os=installed").want(t, "GET /ipxe (installed)", http.StatusOK)
	s.get("/grub?mac=52:54:00:a1:9c:ae").want(t, "GET /grub", http.StatusOK)
	s.get("/boot.ipxe").want(t, "GET /boot.ipxe", http.StatusOK)
	r := s.metrics()
	r.want(t, "GET /metrics", http.StatusOK,
		"# TYPE kindling_http_requests_total counter",
		`kindling_http_requests_total{code="200",endpoint="ipxe"} 3`,
		`kindling_http_requests_total{code="200",endpoint="grub"} 1`,
		`kindling_http_requests_total{code="200",endpoint="boot.ipxe"} 1`,
		`kindling_selections_total{group="node1"} 3`,
		`kindling_selections_total{group="node1-installed"} 1`,
		"# TYPE kindling_render_seconds histogram",
		`kindling_render_seconds_count{kind="ipxe"} 2`,
		`kindling_render_seconds_count{kind="grub"} 1`,
		`kindling_render_cache_hits_total{kind="ipxe"} 1`)
	if full := s.get("/metrics"); !strings.Contains(full.body, "\ngo_goroutines ") || !strings.Contains(full.body, "\nprocess_start_time_seconds ") {
		t.Errorf("GET /metrics: want the Go and process collectors' series (go_goroutines, process_start_time_seconds)")
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("GET /metrics Content-Type = %q, want the Prometheus text format", ct)
	}
	// /metrics counts itself.
	s.metrics().want(t, "GET /metrics (again)", http.StatusOK, `kindling_http_requests_total{code="200",endpoint="metrics"} 2`)
}

// TestMalformedQuery checks that a query string that does not decode is
// refused, never read as a request without the broken label (which would
// fall through to the default group).
func TestMalformedQuery(t *testing.T) {
	s := startCatalog(t, files(selectData))
	tests := []struct {
		query string
	}{
		{"mac=%zz"},
		{"mac=52:54:00:a1:9c:ae%"},
		{"mac=52:54:00:a1:9c:ae;os=installed"},
	}
	for _, tt := range tests {
		r := s.get("/ipxe?" + tt.query)
		r.want(t, "GET /ipxe?"+tt.query, http.StatusBadRequest)
		r.wantNot(t, "GET /ipxe?"+tt.query, "who=default")
	}
}

// TestMethodNotAllowedCounted checks 405s show in the request metrics.
func TestMethodNotAllowedCounted(t *testing.T) {
	s := startCatalog(t, files(selectData))
	s.do(http.MethodPost, "/ipxe").want(t, "POST /ipxe", http.StatusMethodNotAllowed)
	s.metrics().want(t, "GET /metrics", http.StatusOK, `code="405"`)
}

// TestMetricsHEAD checks /metrics answers HEAD like every other endpoint
// (the 405 for it says Allow: GET, HEAD).
func TestMetricsHEAD(t *testing.T) {
	s := startCatalog(t, files(selectData))
	if r := s.do(http.MethodHead, "/metrics"); r.code != http.StatusOK {
		t.Errorf("HEAD /metrics = %d (Allow: %q), want 200", r.code, r.header.Get("Allow"))
	}
}

// TestEmptySelectorValue checks a selector value "" without a default
// group to fall back on: it matches a present, empty label only.
func TestEmptySelectorValue(t *testing.T) {
	s := startCatalog(t, files(map[string]string{
		"profiles/p.json":         `{"id": "p", "boot": {"kernel": "/k", "args": ["hostname=[{{.hostname}}]"]}}`,
		"groups/no-hostname.json": `{"id": "no-hostname", "profile": "p", "selector": {"hostname": ""}}`,
	}))
	tests := []struct {
		query string
		code  int
		want  string
	}{
		{"hostname=", http.StatusOK, "hostname=[]"},
		{"HOSTNAME=&mac=52:54:00:a1:9c:ae", http.StatusOK, "hostname=[]"},
		{"mac=52:54:00:a1:9c:ae", http.StatusNotFound, "no group matches labels mac=52:54:00:a1:9c:ae"},
		{"", http.StatusNotFound, "no group matches a request without labels"},
		{"hostname=node1", http.StatusNotFound, "no group matches labels hostname=node1"},
	}
	for _, tt := range tests {
		s.get("/ipxe?"+tt.query).want(t, "GET /ipxe?"+tt.query, tt.code, tt.want)
	}
}

// TestRenderCachePerMachine checks the render cache never hands one
// machine's output to another: whatever a template reads of the request,
// even without naming .request, each machine gets its own.
func TestRenderCachePerMachine(t *testing.T) {
	s := startCatalog(t, files(map[string]string{
		"profiles/p.json": `{"id": "p", "generic_id": "all.txt", "ignition_id": "host.yaml",
			"boot": {"kernel": "/k", "args": ["url=http://{{.request.host}}/x", "{{with .request}}q={{.raw_query}}{{end}}"]}}`,
		// Every variable, without naming .request.
		"generic/all.txt":     "{{range $k, $v := .}}{{$k}}={{$v}}\n{{end}}",
		"ignition/host.yaml":  "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/server\n      contents:\n        inline: {{.request.host}}\n",
		"groups/default.json": `{"id": "default", "profile": "p"}`,
		"groups/rack.json":    `{"id": "rack", "profile": "p", "selector": {"mac": ["52:54:00:00:00:01", "52:54:00:00:00:02"]}}`,
	}))
	tests := []struct {
		target string
		header []string
		want   string
	}{
		{"/ipxe?mac=52:54:00:00:00:01", nil, "q=mac=52:54:00:00:00:01"},
		{"/ipxe?mac=52:54:00:00:00:02", nil, "q=mac=52:54:00:00:00:02"},
		{"/ipxe?mac=52:54:00:00:00:09", nil, "q=mac=52:54:00:00:00:09"},
		{"/ipxe?mac=52:54:00:00:00:0a", nil, "q=mac=52:54:00:00:00:0a"},
		{"/ipxe?mac=52:54:00:00:00:0a", []string{"Host", "other.test:8080"}, "url=http://other.test:8080/x"},
		{"/ignition?mac=52:54:00:00:00:0a", nil, "data:,kindling.test%3A8080"},
		{"/ignition?mac=52:54:00:00:00:0a", []string{"Host", "other.test:8080"}, "data:,other.test%3A8080"},
		{"/generic?mac=52:54:00:00:00:01", nil, "mac:52:54:00:00:00:01"},
		{"/generic?mac=52:54:00:00:00:02", nil, "mac:52:54:00:00:00:02"},
		{"/generic?mac=52:54:00:00:00:09", nil, "mac:52:54:00:00:00:09"},
		{"/generic?mac=52:54:00:00:00:0a", nil, "mac:52:54:00:00:00:0a"},
	}
	for _, tt := range tests {
		// Twice: a cache hit must give the same answer as the render.
		for i := 0; i < 2; i++ {
			s.get(tt.target, tt.header...).want(t, fmt.Sprintf("GET %s %q (%d)", tt.target, tt.header, i+1), http.StatusOK, tt.want)
		}
	}
}
