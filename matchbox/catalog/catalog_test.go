package catalog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/render"
)

const (
	profileLive = `{"id":"live","boot":{"kernel":"/assets/k","initrd":["/assets/i"],"args":["a=1"]},"ignition_id":"live.yaml"}`
	butaneLive  = "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/hostname\n      contents:\n        inline: {{.hostname}}\n"
)

func file(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }

func baseFS() fstest.MapFS {
	return fstest.MapFS{
		"profiles/live.json":  file(profileLive),
		"ignition/live.yaml":  file(butaneLive),
		"groups/default.json": file(`{"id":"default","profile":"live","metadata":{"hostname":"h"}}`),
	}
}

func TestLoadExamples(t *testing.T) {
	dirs, err := filepath.Glob("../../examples/*/groups")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no example data directories found: %v", err)
	}
	for _, d := range dirs {
		dir := filepath.Dir(d)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			c, err := Load(os.DirFS(dir), Options{})
			if err != nil {
				t.Fatalf("Load(%s): %v", dir, err)
			}
			problems, _ := c.Check()
			for _, p := range problems {
				t.Errorf("Check(%s): %v", dir, p)
			}
		})
	}
}

// TestLoadProblems checks that every kind of mistake is reported with the
// file and field at fault, and that all of them are reported at once.
func TestLoadProblems(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings of the error
		n     int      // number of problems; 0 means len(want)
	}{
		{"bad json", map[string]string{"groups/x.json": "{\n  \"id\": \"x\",\n  oops\n}"},
			[]string{"groups/x.json: line 3, column 3: invalid JSON"}, 0},
		{"unknown field", map[string]string{"groups/x.json": `{"id":"x","profile":"live","selectors":{"mac":"52:54:00:00:00:01"}}`},
			[]string{`groups/x.json: unknown field "selectors" (valid fields: id, name, profile, selector, metadata)`}, 0},
		{"bad mac in selector", map[string]string{"groups/x.json": `{"id":"x","profile":"live","selector":{"mac":"52:54:00:zz"}}`},
			[]string{`groups/x.json: field "selector.mac"`, `"52:54:00:zz" is not a MAC address`}, 1},
		{"missing profile", map[string]string{"groups/x.json": `{"id":"x","profile":"nope"}`},
			[]string{`groups/x.json: field "profile": no profile "nope" (profiles: live)`}, 0},
		{"duplicate group id", map[string]string{"groups/y.json": `{"id":"default","profile":"live"}`},
			[]string{`groups/y.json: field "id": "default" is the id of another group too`}, 0},
		{"escaping id", map[string]string{"groups/x.json": `{"id":"../x","profile":"live"}`},
			[]string{`field "id": "../x" is not a valid id`}, 0},
		{"wrong type", map[string]string{"groups/x.json": `{"id":"x","profile":3}`},
			[]string{`groups/x.json: field "profile": number is not valid here (want string)`}, 0},
		{"empty file", map[string]string{"groups/x.json": ``},
			[]string{`groups/x.json: empty file`}, 0},
		{"profile without kernel", map[string]string{"profiles/p.json": `{"id":"p","boot":{"args":["x"]}}`},
			[]string{`profiles/p.json: field "boot.kernel": missing`}, 0},
		{"profile names missing ignition", map[string]string{"profiles/p.json": `{"id":"p","ignition_id":"none.ign"}`},
			[]string{`profiles/p.json: field "ignition_id": ignition/none.ign does not exist`}, 0},
		{"profile names missing template", map[string]string{"profiles/p.json": `{"id":"p","ipxe_template":"x.ipxe"}`},
			[]string{`profiles/p.json: field "ipxe_template": templates/x.ipxe does not exist`}, 0},
		{"bad boot template", map[string]string{"profiles/p.json": `{"id":"p","boot":{"kernel":"/k","args":["a={{.x"]}}`},
			[]string{`profiles/p.json: field "boot.args[0]": template "a={{.x" does not parse`}, 0},
		{"raw ignition too new", map[string]string{"ignition/a.ign": `{"ignition":{"version":"3.8.0"}}`},
			[]string{`ignition/a.ign: invalid config`}, 0},
		{"raw ignition spec 2", map[string]string{"ignition/a.ign": `{"ignition":{"version":"2.2.0"}}`},
			[]string{`ignition/a.ign: invalid config`}, 0},
		{"raw ignition truncated", map[string]string{"ignition/a.ignition": `{"ignition":{"version":"3.4.0"`},
			[]string{`ignition/a.ignition: invalid config`}, 0},
		{"static butane invalid", map[string]string{"ignition/b.yaml": "variant: fcos\nversion: 9.9.9\n"},
			[]string{`ignition/b.yaml: invalid config: butane`}, 0},
		{"butane template does not parse", map[string]string{"ignition/b.yaml": "variant: fcos\nversion: 1.5.0\n# {{.x\n"},
			[]string{`ignition/b.yaml: butane template does not parse`}, 0},
		{"butane template renders invalid", map[string]string{
			"ignition/live.yaml": "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: {{.hostname}}\n"},
			[]string{`groups/default.json: rendering ignition/live.yaml for this group (labels: none)`, `path not absolute`}, 1},
		{"generic does not parse", map[string]string{"generic/g.txt": "{{if}}"},
			[]string{`generic/g.txt: template does not parse`}, 0},
		{"two in one file", map[string]string{"groups/x.json": `{"id":"x","profile":"nope","selector":{"mac":"zz"}}`},
			[]string{`groups/x.json: field "selector.mac"`, `groups/x.json: field "profile": no profile "nope"`}, 0},
		{"several at once", map[string]string{
			"groups/a.json":  `{"id":"a"}`,
			"groups/b.json":  `{"id":"b","profile":"live","selector":{"mac":"x"}}`,
			"ignition/c.ign": `{}`,
		}, []string{`groups/a.json: field "profile": missing`, `groups/b.json: field "selector.mac"`, `ignition/c.ign: invalid config`}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := baseFS()
			for name, data := range tt.files {
				fsys[name] = file(data)
			}
			c, err := Load(fsys, Options{})
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("Load() = %v, %v; want a *LoadError", c, err)
			}
			n := tt.n
			if n == 0 {
				n = len(tt.want)
			}
			if len(le.Problems) != n {
				t.Errorf("Load() reported %d problems, want %d:\n%v", len(le.Problems), n, err)
			}
			msg := err.Error()
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("Load() error does not mention %q:\n%s", w, msg)
				}
			}
		})
	}
}

func TestLoadWarnings(t *testing.T) {
	fsys := baseFS()
	fsys["groups/README.md"] = file("hi")
	fsys["groups/scenario/a.json"] = file(`{"id":"a","profile":"live"}`)
	fsys["groups/.gitkeep"] = file("")
	fsys["groups/other-name.json"] = file(`{"id":"named","profile":"live","selector":{"os":"x"}}`)
	c, err := Load(fsys, Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var got []string
	for _, w := range c.Warnings {
		got = append(got, w.Error())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{
		"groups/README.md: ignored: group files end in .json",
		"groups/scenario: subdirectory ignored",
		`groups/other-name.json: group id "named" differs from its file name`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("warnings do not mention %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, ".gitkeep") {
		t.Errorf("warnings mention a dotfile:\n%s", all)
	}
	if _, err := c.Select(groups.Labels{"os": "x"}); err != nil {
		t.Errorf("group loaded under another file name is not selectable: %v", err)
	}
}

func TestRenderErrorsAndCache(t *testing.T) {
	fsys := baseFS()
	fsys["groups/node.json"] = file(`{"id":"node","profile":"live","selector":{"mac":"52:54:00:00:00:01"},"metadata":{"hostname":"h: [broken"}}`)
	c, err := Load(fsys, Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	l := groups.Labels{"mac": "52:54:00:00:00:01"}
	m, err := c.Select(l)
	if err != nil || m.Group.ID != "node" {
		t.Fatalf("Select(%v) = %v, %v; want group node", l, m.Group, err)
	}
	if _, _, err := c.Render(Ignition, m, Request{Labels: l}); !errors.Is(err, render.ErrConfig) {
		t.Errorf("Render(Ignition) for broken metadata: err = %v, want ErrConfig", err)
	}
	d, _ := c.Select(groups.Labels{})
	req := Request{Labels: groups.Labels{}, RawQuery: "a=1"}
	first, cached, err := c.Render(Ignition, d, req)
	if err != nil || cached {
		t.Fatalf("first Render(Ignition) = cached %v, err %v; want a fresh render", cached, err)
	}
	second, cached, err := c.Render(Ignition, d, req)
	if err != nil || !cached || string(first) != string(second) {
		t.Errorf("second Render(Ignition) = cached %v, err %v, same %v; want the cached bytes", cached, err, string(first) == string(second))
	}
	if _, _, err := c.Render(Generic, d, req); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("Render(Generic) without generic_id: err = %v, want ErrNotConfigured", err)
	}
}

func TestCacheBounded(t *testing.T) {
	c := newCache(2)
	for i, q := range []string{"a", "b", "c"} {
		c.put(cacheKey{query: q}, []byte{byte(i)})
	}
	if n := c.len(); n > 2 {
		t.Errorf("cache holds %d entries, bound is 2", n)
	}
	if _, ok := c.get(cacheKey{query: "c"}); !ok {
		t.Error("latest entry missing from cache")
	}
}

func TestVars(t *testing.T) {
	fsys := baseFS()
	fsys["groups/node.json"] = file(`{"id":"node","profile":"live","selector":{"mac":["52:54:00:00:00:01","52:54:00:00:00:02"]},"metadata":{"hostname":"h","mac":"shadowed","request":"shadowed"}}`)
	c, err := Load(fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	l := groups.Labels{"mac": "52:54:00:00:00:02", "x": "y"}
	m, _ := c.Select(l)
	v := Vars(m, Request{Labels: l, RawQuery: "mac=52-54-00-00-00-02&x=y", Host: "h:1"})
	if v["mac"] != "52:54:00:00:00:02" {
		t.Errorf("Vars: mac = %v, want the machine's own value from the selector list", v["mac"])
	}
	req := v["request"].(map[string]any)
	if req["raw_query"] != "mac=52-54-00-00-00-02&x=y" || req["host"] != "h:1" || req["query"].(map[string]any)["x"] != "y" {
		t.Errorf("Vars: request = %v", req)
	}
}

func TestBootLineInjection(t *testing.T) {
	fsys := baseFS()
	fsys["profiles/live.json"] = file(`{"id":"live","boot":{"kernel":"/k","initrd":["{{if .request.query.extra}}/x.img{{end}}","/i.img"],"args":["x={{.request.query.x}}"]}}`)
	fsys["ignition/live.yaml"] = nil
	delete(fsys, "ignition/live.yaml")
	c, err := Load(fsys, Options{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	m, _ := c.Select(groups.Labels{})
	l := groups.Labels{"x": "a\nshell", "extra": ""}
	if _, _, err := c.Render(IPXE, m, Request{Labels: l, RawQuery: "x=a%0Ashell&extra="}); !errors.Is(err, render.ErrConfig) || !strings.Contains(err.Error(), "line break") {
		t.Errorf("Render(IPXE) with a newline in a label = %v, want ErrConfig naming the line break", err)
	}
	l = groups.Labels{"x": "ok", "extra": ""}
	b, _, err := c.Render(IPXE, m, Request{Labels: l, RawQuery: "x=ok&extra="})
	if err != nil || string(b) != "#!ipxe\nkernel /k x=ok\ninitrd /i.img\nboot\n" {
		t.Errorf("Render(IPXE) with an initrd templated away = %q, %v; want it left out", b, err)
	}
	fsys["profiles/live.json"] = file(`{"id":"live","boot":{"kernel":"/k","initrd":[""]}}`)
	if _, err := Load(fsys, Options{}); err == nil || !strings.Contains(err.Error(), `field "boot.initrd[0]": empty`) {
		t.Errorf("Load with an empty initrd entry = %v, want an error naming boot.initrd[0]", err)
	}
}

func TestRequestUse(t *testing.T) {
	tests := []struct {
		src  string
		want requestUse
	}{
		{"plain {{.hostname}} {{range .list}}{{.}}{{end}}", requestUse{}},
		{"{{.request.host}}", requestUse{host: true}},
		{"{{range .list}}{{$.request.host}}{{end}}", requestUse{host: true}},
		{"{{.request.query.mac}}", all},
		{"{{with .request}}{{.host}}{{end}}", all},
		{"{{range $k, $v := .}}{{$k}}{{end}}", all},
		{"{{index . \"request\"}}", all},
		{"{{$}}", all},
		{"{{$r := .request}}", all},
		{"{{define \"x\"}}{{.}}{{end}}{{template \"x\" .hostname}}", all},
		{"{{if .a}}{{else}}{{.request.raw_query}}{{end}}", all},
	}
	for _, tt := range tests {
		tmpl, err := render.NewTemplate("t", tt.src)
		if err != nil {
			t.Fatal(err)
		}
		if got := usesOf(tmpl); got != tt.want {
			t.Errorf("usesOf(%q) = %+v, want %+v", tt.src, got, tt.want)
		}
	}
}

func TestReservations(t *testing.T) {
	fsys := baseFS()
	fsys["groups/a.json"] = file(`{"id":"a","profile":"live","selector":{"mac":"52:54:00:00:00:01"},"metadata":{"ip":"10.0.0.21","hostname":"a"}}`)
	fsys["groups/a2.json"] = file(`{"id":"a2","profile":"live","selector":{"mac":"52:54:00:00:00:01","os":"installed"},"metadata":{"ip":"10.0.0.21"}}`)
	c, err := Load(fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r, ok := c.Reserved("52:54:00:00:00:01")
	if !ok || r.IP.String() != "10.0.0.21" || r.Hostname != "a" {
		t.Errorf("Reserved(…:01) = %+v, %v; want 10.0.0.21 named a", r, ok)
	}
	if _, ok := c.Reserved("52:54:00:00:00:02"); ok {
		t.Error("Reserved for an unlisted MAC")
	}
	for name, bad := range map[string]string{
		"not an address": `{"id":"b","profile":"live","selector":{"mac":"52:54:00:00:00:02"},"metadata":{"ip":"10.0.0"}}`,
		"two macs":       `{"id":"b","profile":"live","selector":{"mac":["52:54:00:00:00:02","52:54:00:00:00:03"]},"metadata":{"ip":"10.0.0.22"}}`,
		"taken address":  `{"id":"b","profile":"live","selector":{"mac":"52:54:00:00:00:02"},"metadata":{"ip":"10.0.0.21"}}`,
		"second address": `{"id":"b","profile":"live","selector":{"mac":"52:54:00:00:00:01","x":"y"},"metadata":{"ip":"10.0.0.23"}}`,
	} {
		fsys["groups/b.json"] = file(bad)
		if _, err := Load(fsys, Options{}); err == nil || !strings.Contains(err.Error(), `groups/b.json: field "metadata.ip"`) {
			t.Errorf("%s: Load = %v, want a problem with groups/b.json metadata.ip", name, err)
		}
	}
}
