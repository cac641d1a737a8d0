package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/kindlingboot/kindling/groups"
)

// summary is what a catalog holds, comparable between one built by Load
// and one built by Apply.
func summary(t *testing.T, c *Catalog) string {
	t.Helper()
	var b strings.Builder
	for _, g := range c.Groups() {
		j, _ := json.Marshal(g)
		fmt.Fprintf(&b, "group %s\n", j)
	}
	for _, p := range c.Profiles() {
		j, _ := json.Marshal(p.Profile)
		fmt.Fprintf(&b, "profile %s uses %v\n", j, p.uses)
	}
	for _, dir := range []string{"ignition", "generic", "templates"} {
		for _, n := range c.Files(dir) {
			f, _ := c.File(dir, n)
			fmt.Fprintf(&b, "file %s/%s %q\n", dir, n, f)
		}
	}
	for mac, r := range c.reserved {
		fmt.Fprintf(&b, "reserved %s %s %s %s\n", mac, r.IP, r.Hostname, r.Group)
	}
	return b.String()
}

// applyBoth makes ch with Apply and on a copy of fsys, and checks that a
// successful Apply gives what Load gives, and that Load refuses what Apply
// refuses — Apply checks at least what Load checks.
func applyBoth(t *testing.T, c *Catalog, fsys fstest.MapFS, ch Change, opts Options) (*Catalog, fstest.MapFS, error) {
	t.Helper()
	next := maps.Clone(fsys)
	if ch.Data == nil {
		delete(next, ch.File)
	} else {
		next[ch.File] = &fstest.MapFile{Data: ch.Data}
	}
	before := summary(t, c)
	got, err := c.Apply(ch)
	if after := summary(t, c); after != before {
		t.Errorf("Apply(%s) modified the catalog it was called on", ch.File)
	}
	loaded, lerr := Load(next, opts)
	switch {
	case err == nil && lerr != nil:
		t.Errorf("Apply(%s) succeeded, but Load of the result fails: %v", ch.File, lerr)
	case err == nil:
		if a, l := summary(t, got), summary(t, loaded); a != l {
			t.Errorf("Apply(%s) and Load differ:\nApply:\n%s\nLoad:\n%s", ch.File, a, l)
		}
	}
	return got, next, err
}

func TestApply(t *testing.T) {
	const prof2 = `{"id":"p2","boot":{"kernel":"/k2","args":["h={{.request.host}}"]},"generic_id":"g.txt"}`
	tests := []struct {
		name    string
		opts    Options
		changes []Change // applied in order; only the last may fail
		want    string   // substring of the last Apply's error; "" means success
	}{
		{"add group", Options{}, []Change{{"groups/node.json", []byte(`{"id":"node","profile":"live","selector":{"mac":"52-54-00-00-00-01"},"metadata":{"hostname":"n"}}`)}}, ""},
		{"replace group", Options{}, []Change{{"groups/default.json", []byte(`{"id":"default","profile":"live","metadata":{"hostname":"other"}}`)}}, ""},
		{"delete group", Options{}, []Change{{"groups/default.json", nil}}, ""},
		{"delete missing group", Options{}, []Change{{"groups/nope.json", nil}}, ""},
		{"bad mac", Options{}, []Change{{"groups/x.json", []byte(`{"id":"x","profile":"live","selector":{"mac":"zz"}}`)}}, `groups/x.json: field "selector.mac"`},
		{"unknown field", Options{}, []Change{{"groups/x.json", []byte(`{"id":"x","profile":"live","selectors":{}}`)}}, `unknown field "selectors"`},
		{"duplicate id", Options{}, []Change{{"groups/x.json", []byte(`{"id":"default","profile":"live"}`)}}, `"default" is the id of another group too (groups/default.json)`},
		{"missing profile", Options{}, []Change{{"groups/x.json", []byte(`{"id":"x","profile":"nope"}`)}}, `field "profile": no profile "nope"`},
		{"missing profile allowed", Options{AllowDangling: true}, []Change{{"groups/x.json", []byte(`{"id":"x","profile":"nope","selector":{"os":"a"}}`)}}, ""},
		{"group breaks its template", Options{}, []Change{{"groups/x.json", []byte(`{"id":"x","profile":"live","selector":{"os":"a"},"metadata":{"hostname":"h: [broken"}}`)}},
			`groups/x.json: rendering ignition/live.yaml`},
		{"first group of a template breaks it", Options{}, []Change{{"groups/a.json", []byte(`{"id":"a","profile":"live","selector":{"os":"a"},"metadata":{"hostname":"h: [x"}}`)}},
			`groups/a.json: rendering`},
		{"ip clash", Options{}, []Change{
			{"groups/a.json", []byte(`{"id":"a","profile":"live","selector":{"mac":"52:54:00:00:00:01"},"metadata":{"ip":"10.0.0.1","hostname":"a"}}`)},
			{"groups/b.json", []byte(`{"id":"b","profile":"live","selector":{"mac":"52:54:00:00:00:02"},"metadata":{"ip":"10.0.0.1","hostname":"b"}}`)},
		}, `groups/b.json: field "metadata.ip": 10.0.0.1 is already reserved for mac 52:54:00:00:00:01`},
		{"ip freed by removal", Options{}, []Change{
			{"groups/a.json", []byte(`{"id":"a","profile":"live","selector":{"mac":"52:54:00:00:00:01"},"metadata":{"ip":"10.0.0.1","hostname":"a"}}`)},
			{"groups/a2.json", []byte(`{"id":"a2","profile":"live","selector":{"mac":"52:54:00:00:00:01","os":"installed"},"metadata":{"ip":"10.0.0.1","hostname":"a"}}`)},
			{"groups/a.json", nil},
			{"groups/a2.json", nil},
			{"groups/b.json", []byte(`{"id":"b","profile":"live","selector":{"mac":"52:54:00:00:00:02"},"metadata":{"ip":"10.0.0.1","hostname":"b"}}`)},
		}, ""},
		{"ip null", Options{}, []Change{{"groups/a.json", []byte(`{"id":"a","profile":"live","selector":{"mac":"52:54:00:00:00:01"},"metadata":{"ip":null,"hostname":"a"}}`)}},
			`field "metadata.ip": <nil> is not an IPv4 address`},
		{"add profile and its files", Options{}, []Change{
			{"generic/g.txt", []byte("host {{.request.host}}\n")},
			{"profiles/p2.json", []byte(prof2)},
			{"groups/g2.json", []byte(`{"id":"g2","profile":"p2","selector":{"os":"two"}}`)},
		}, ""},
		{"profile before its file", Options{AllowDangling: true}, []Change{
			{"profiles/p2.json", []byte(prof2)},
			{"generic/g.txt", []byte("host {{.request.host}}\n")},
		}, ""},
		{"profile naming a missing file", Options{}, []Change{{"profiles/p2.json", []byte(prof2)}}, `profiles/p2.json: field "generic_id": generic/g.txt does not exist`},
		{"delete a profile in use", Options{}, []Change{{"profiles/live.json", nil}}, `groups/default.json: field "profile": no profile "live"`},
		{"delete a profile in use, allowed", Options{AllowDangling: true}, []Change{{"profiles/live.json", nil}}, ""},
		{"delete a config in use", Options{}, []Change{{"ignition/live.yaml", nil}}, `profiles/live.json: field "ignition_id": ignition/live.yaml does not exist`},
		{"delete a config in use, allowed", Options{AllowDangling: true}, []Change{{"ignition/live.yaml", nil}}, ""},
		{"profile without kernel", Options{}, []Change{{"profiles/p.json", []byte(`{"id":"p","boot":{"args":["x"]}}`)}}, `field "boot.kernel": missing`},
		{"bad raw ignition", Options{}, []Change{{"ignition/x.ign", []byte(`{"ignition":{"version":"2.2.0"}}`)}}, `ignition/x.ign: invalid config`},
		{"config breaks for its first group", Options{}, []Change{{"ignition/live.yaml", []byte("variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: {{.hostname}}\n")}},
			`groups/default.json: rendering ignition/live.yaml`},
		{"template does not parse", Options{}, []Change{{"generic/x", []byte("{{if}}")}}, `generic/x: template does not parse`},
		{"unknown directory", Options{}, []Change{{"assets/x", []byte("x")}}, `unknown directory "assets"`},
		{"escaping name", Options{}, []Change{{"groups/../x.json", []byte("{}")}}, "not a data-directory file"},
		{"dot file", Options{}, []Change{{"groups/.x.json", []byte("{}")}}, "not a data-directory file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fsys := baseFS()
			c, err := Load(fsys, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			for i, ch := range tt.changes {
				next, nfs, err := applyBoth(t, c, fsys, ch, tt.opts)
				last := i == len(tt.changes)-1
				switch {
				case err != nil && (!last || tt.want == ""):
					t.Fatalf("Apply(%s) = %v, want success", ch.File, err)
				case err == nil && last && tt.want != "":
					t.Fatalf("Apply(%s) succeeded, want an error with %q", ch.File, tt.want)
				case err != nil:
					var le *LoadError
					if !errors.As(err, &le) || !strings.Contains(err.Error(), tt.want) {
						t.Fatalf("Apply(%s) = %v, want a *LoadError with %q", ch.File, err, tt.want)
					}
					return
				}
				c, fsys = next, nfs
			}
		})
	}
}

// TestApplyServes: the catalog Apply returns selects, renders and lists
// cluster members with the change in it.
func TestApplyServes(t *testing.T) {
	c, err := Load(clusterFS(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	c, err = c.Apply(Change{"groups/node4.json", []byte(`{"id":"node4","profile":"etcd","selector":{"mac":"52:54:00:00:00:04"},"metadata":{"cluster":"prod-etcd","name":"etcd4","ip":"10.0.0.24","place":{"zone":"d"}}}`)})
	if err != nil {
		t.Fatalf("Apply(node4): %v", err)
	}
	l := groups.Labels{"mac": "52:54:00:00:00:04"}
	m, err := c.Select(l)
	if err != nil || m.Group.ID != "node4" {
		t.Fatalf("Select(%v) = %v, %v; want node4", l, m.Group, err)
	}
	out, _, err := c.Render(Generic, m, Request{Labels: l})
	if err != nil || !strings.Contains(string(out), "PEERS=node1 node2 node3 node4") {
		t.Errorf("Render(Generic) for node4 = %q, %v; want node4 among the members", out, err)
	}
	// Members come from the catalog the template is rendered by.
	c2, err := c.Apply(Change{"groups/node4.json", nil})
	if err != nil {
		t.Fatal(err)
	}
	m1, _ := c2.Select(groups.Labels{"mac": "52:54:00:00:00:01"})
	out, _, err = c2.Render(Generic, m1, Request{Labels: groups.Labels{"mac": "52:54:00:00:00:01"}})
	if err != nil || !strings.Contains(string(out), "PEERS=node1 node2 node3\n") {
		t.Errorf("after removing node4, Render(Generic) for node1 = %q, %v", out, err)
	}
	out, _, _ = c.Render(Generic, m, Request{Labels: l})
	if !strings.Contains(string(out), "node4") {
		t.Errorf("the older catalog changed: %q", out)
	}
	// Removing every member of a cluster breaks the members template for
	// the group Load would check first: refused.
	for _, id := range []string{"node1", "node2", "node3"} {
		c2, err = c2.Apply(Change{"groups/" + id + ".json", nil})
		if id != "node3" && err != nil {
			t.Fatalf("Apply(remove %s): %v", id, err)
		}
	}
	if err == nil || !strings.Contains(err.Error(), `members "cluster=prod-etcd": no group`) {
		t.Errorf("removing the last member: err = %v, want the members template to fail for worker", err)
	}
}

// TestApplyRenamedFile: a group loaded from a file not named after its id
// is replaced and removed in that file.
func TestApplyRenamedFile(t *testing.T) {
	fsys := baseFS()
	fsys["groups/other-name.json"] = file(`{"id":"named","profile":"live","selector":{"os":"x"}}`)
	c, err := Load(fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if f := c.GroupFile("named"); f != "groups/other-name.json" {
		t.Fatalf("GroupFile(named) = %q, want groups/other-name.json", f)
	}
	if f := c.GroupFile("fresh"); f != "groups/fresh.json" {
		t.Errorf("GroupFile(fresh) = %q, want groups/fresh.json", f)
	}
	c2, _, err := applyBoth(t, c, fsys, Change{"groups/other-name.json", []byte(`{"id":"named","profile":"live","selector":{"os":"y"}}`)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if g, ok := c2.Group("named"); !ok || g.Selector["os"][0] != "y" {
		t.Errorf("after replacing, Group(named) = %v, %v", g, ok)
	}
	c3, _, err := applyBoth(t, c2, fsys, Change{"groups/other-name.json", nil}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c3.Group("named"); ok {
		t.Error("after removing its file, group named still exists")
	}
	if f := c3.GroupFile("named"); f != "groups/named.json" {
		t.Errorf("after removing, GroupFile(named) = %q, want groups/named.json", f)
	}
}

// TestApplyNameTaken: writing group a, when groups/a.json holds group b,
// goes to another file and leaves b alone.
func TestApplyNameTaken(t *testing.T) {
	fsys := baseFS()
	fsys["groups/a.json"] = file(`{"id":"b","profile":"live","selector":{"os":"b"}}`)
	fsys["groups/a.2.json"] = file(`{"id":"a.2","profile":"live","selector":{"os":"a2"}}`)
	c, err := Load(fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	f := c.GroupFile("a")
	if f == "groups/a.json" {
		t.Fatalf("GroupFile(a) = %q, the file of group b", f)
	}
	c2, _, err := applyBoth(t, c, fsys, Change{f, []byte(`{"id":"a","profile":"live","selector":{"os":"a"}}`)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "a.2"} {
		if _, ok := c2.Group(id); !ok {
			t.Errorf("after writing group a to %s, group %s is gone", f, id)
		}
	}
}

// TestDanglingServes: a group naming a missing profile selects, but
// renders 404 (ErrNotConfigured), never another group.
func TestDanglingServes(t *testing.T) {
	fsys := baseFS()
	fsys["groups/x.json"] = file(`{"id":"x","profile":"gone","selector":{"os":"a"}}`)
	fsys["profiles/half.json"] = file(`{"id":"half","ignition_id":"none.ign","generic_id":"none","ipxe_template":"none.ipxe","boot":{"kernel":"/k"}}`)
	fsys["groups/y.json"] = file(`{"id":"y","profile":"half","selector":{"os":"b"}}`)
	if _, err := Load(fsys, Options{}); err == nil {
		t.Fatal("Load without AllowDangling accepted dangling references")
	}
	c, err := Load(fsys, Options{AllowDangling: true})
	if err != nil {
		t.Fatalf("Load(AllowDangling): %v", err)
	}
	if len(c.Warnings) < 4 {
		t.Errorf("Load(AllowDangling) warnings = %v, want one per dangling reference", c.Warnings)
	}
	for _, tt := range []struct {
		labels groups.Labels
		kind   Kind
		want   string
	}{
		{groups.Labels{"os": "a"}, IPXE, `group "x" names profile "gone", which does not exist`},
		{groups.Labels{"os": "a"}, MetadataEnv, `profile "gone"`},
		{groups.Labels{"os": "b"}, Ignition, "ignition/none.ign, which does not exist"},
		{groups.Labels{"os": "b"}, Generic, "generic/none, which does not exist"},
		{groups.Labels{"os": "b"}, IPXE, "templates/none.ipxe, which does not exist"},
	} {
		m, err := c.Select(tt.labels)
		if err != nil {
			t.Fatalf("Select(%v): %v", tt.labels, err)
		}
		_, _, err = c.Render(tt.kind, m, Request{Labels: tt.labels})
		if !errors.Is(err, ErrNotConfigured) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Render(%v, %v) = %v, want ErrNotConfigured with %q", tt.kind, tt.labels, err, tt.want)
		}
	}
	if _, err := c.Boot(Match{Group: &groups.Group{ID: "x"}, Profile: &Profile{missing: true}}, Request{}); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("Boot for a missing profile = %v, want ErrNotConfigured", err)
	}
}

func tenThousandGroups() fstest.MapFS {
	fsys := baseFS()
	for i := range 10_000 {
		fsys[fmt.Sprintf("groups/n%05d.json", i)] = file(fmt.Sprintf(`{"id":"n%05d","profile":"live","selector":{"mac":"52:54:00:%02x:%02x:%02x"},"metadata":{"hostname":"n%d"}}`, i, i>>16&0xff, i>>8&0xff, i&0xff, i))
	}
	return fsys
}

// BenchmarkLoad10k is what a write would cost if it reloaded the whole
// catalog (from memory here; from disk it is slower).
func BenchmarkLoad10k(b *testing.B) {
	fsys := tenThousandGroups()
	for b.Loop() {
		if _, err := Load(fsys, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApplyGroup measures one group write (validate, index, check)
// in a catalog of 10,000 groups: the in-memory part of a control-plane
// write.
func BenchmarkApplyGroup(b *testing.B) {
	c, err := Load(tenThousandGroups(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		data := fmt.Appendf(nil, `{"id":"n%05d","profile":"live","selector":{"mac":"52:54:00:%02x:%02x:%02x"},"metadata":{"hostname":"w%d"}}`, i%10_000, i%10_000>>16&0xff, i%10_000>>8&0xff, i%10_000&0xff, i)
		next, err := c.Apply(Change{fmt.Sprintf("groups/n%05d.json", i%10_000), data})
		if err != nil {
			b.Fatal(err)
		}
		c = next
	}
}

// BenchmarkApplyGroupProfiles is BenchmarkApplyGroup with a profile per
// group whose kernel arguments are a template (every profile's templates
// are rebound per write).
func BenchmarkApplyGroupProfiles(b *testing.B) {
	fsys := baseFS()
	for i := range 10_000 {
		fsys[fmt.Sprintf("profiles/p%05d.json", i)] = file(fmt.Sprintf(`{"id":"p%05d","boot":{"kernel":"/k","args":["url=http://{{.request.host}}/ignition?mac=${mac:hexhyp}","n=%d"]}}`, i, i))
		fsys[fmt.Sprintf("groups/n%05d.json", i)] = file(fmt.Sprintf(`{"id":"n%05d","profile":"p%05d","selector":{"mac":"52:54:00:%02x:%02x:%02x"}}`, i, i, i>>16&0xff, i>>8&0xff, i&0xff))
	}
	c, err := Load(fsys, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := range b.N {
		n := i % 10_000
		data := fmt.Appendf(nil, `{"id":"n%05d","profile":"p%05d","selector":{"mac":"52:54:00:%02x:%02x:%02x"},"metadata":{"w":%d}}`, n, n, n>>16&0xff, n>>8&0xff, n&0xff, i)
		next, err := c.Apply(Change{fmt.Sprintf("groups/n%05d.json", n), data})
		if err != nil {
			b.Fatal(err)
		}
		c = next
	}
}

// TestButaneWarnings: a misplaced key in a Butane config is a warning
// naming it, at load for a static file and in Check for a template.
func TestButaneWarnings(t *testing.T) {
	fsys := baseFS()
	fsys["profiles/w.json"] = file(`{"id":"w","boot":{"kernel":"/k"},"ignition_id":"w.yaml"}`)
	fsys["profiles/t.json"] = file(`{"id":"t","boot":{"kernel":"/k"},"ignition_id":"t.yaml"}`)
	fsys["groups/w.json"] = file(`{"id":"w","profile":"w","selector":{"os":"w"}}`)
	fsys["groups/t.json"] = file(`{"id":"t","profile":"t","selector":{"os":"t"}}`)
	fsys["ignition/w.yaml"] = file("variant: fcos\nversion: 1.5.0\npasswd:\n  groups:\n    - name: g\n      ssh_authorized_keys: [x]\n")
	fsys["ignition/t.yaml"] = file("variant: fcos\nversion: 1.5.0\npasswd:\n  groups:\n    - name: g{{.os}}\n      ssh_authorized_keys: [x]\n")
	c, err := Load(fsys, Options{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, w := range c.Warnings {
		if w.File == "ignition/w.yaml" && strings.Contains(w.Err.Error(), "unused key ssh_authorized_keys") {
			found = true
		}
	}
	if !found {
		t.Errorf("load warnings = %v, want ignition/w.yaml's unused key", c.Warnings)
	}
	_, warnings := c.Check()
	found = false
	for _, w := range warnings {
		if w.File == "groups/t.json" && strings.Contains(w.Err.Error(), "unused key ssh_authorized_keys") {
			found = true
		}
	}
	if !found {
		t.Errorf("Check warnings = %v, want group t's rendering of t.yaml to warn of the unused key", warnings)
	}
}
