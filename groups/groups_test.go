package groups

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustGroup(t testing.TB, js string) *Group {
	t.Helper()
	var g Group
	if err := json.Unmarshal([]byte(js), &g); err != nil {
		t.Fatalf("unmarshal %s: %v", js, err)
	}
	if err := g.Normalize(); err != nil {
		t.Fatalf("normalize %s: %v", js, err)
	}
	return &g
}

func TestFromQuery(t *testing.T) {
	tests := []struct {
		name    string
		query   string
		want    Labels
		wantErr bool
	}{
		{"mac hyphens", "mac=52-54-00-A1-9C-AE", Labels{"mac": "52:54:00:a1:9c:ae"}, false},
		{"mac colons upper", "MAC=52:54:00:A1:9C:AE", Labels{"mac": "52:54:00:a1:9c:ae"}, false},
		{"uuid case", "UUID=ABCD-1", Labels{"uuid": "abcd-1"}, false},
		{"other values keep case", "Hostname=Node1", Labels{"hostname": "Node1"}, false},
		{"empty value kept", "hostname=&serial=", Labels{"hostname": "", "serial": ""}, false},
		{"first value wins", "a=1&a=2", Labels{"a": "1"}, false},
		{"bad mac", "mac=bad", nil, true},
		{"empty mac", "mac=", nil, true},
		{"conflicting spellings", "os=a&OS=b", nil, true},
		{"agreeing spellings", "os=a&OS=a", Labels{"os": "a"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, _ := url.ParseQuery(tt.query)
			got, err := FromQuery(q)
			if tt.wantErr {
				if !errors.Is(err, ErrBadLabel) {
					t.Fatalf("FromQuery(%q) error = %v, want ErrBadLabel", tt.query, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromQuery(%q) error = %v", tt.query, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("FromQuery(%q) diff (-want +got):\n%s", tt.query, diff)
			}
		})
	}
}

func TestNormalizeErrors(t *testing.T) {
	tests := []struct {
		name, js, wantSub string
	}{
		{"no id", `{"profile":"p"}`, `"id": missing`},
		{"bad id", `{"id":"../x","profile":"p"}`, `"../x" is not a valid id`},
		{"no profile", `{"id":"g"}`, `"profile": missing`},
		{"bad mac", `{"id":"g","profile":"p","selector":{"mac":"zz"}}`, `selector.mac`},
		{"dup key", `{"id":"g","profile":"p","selector":{"os":"a","OS":"b"}}`, `appears twice`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g Group
			if err := json.Unmarshal([]byte(tt.js), &g); err != nil {
				t.Fatal(err)
			}
			err := g.Normalize()
			if err == nil || !strings.Contains(err.Error(), tt.wantSub) {
				t.Errorf("Normalize(%s) = %v, want error containing %q", tt.js, err, tt.wantSub)
			}
		})
	}
}

func TestSelectorJSON(t *testing.T) {
	var bad Group
	if err := json.Unmarshal([]byte(`{"selector":{"mac":[]}}`), &bad); err == nil {
		t.Error("empty selector list accepted, want error")
	}
	if err := json.Unmarshal([]byte(`{"selector":{"mac":3}}`), &bad); err == nil {
		t.Error("numeric selector accepted, want error")
	}
	g := mustGroup(t, `{"id":"g","profile":"p","selector":{"os":"installed","mac":["52:54:00:00:00:02","52-54-00-00-00-01"]}}`)
	b, err := json.Marshal(g.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"mac":["52:54:00:00:00:01","52:54:00:00:00:02"],"os":"installed"}`; got != want {
		t.Errorf("Marshal(selector) = %s, want %s", got, want)
	}
}

func TestSelect(t *testing.T) {
	gs := []*Group{
		mustGroup(t, `{"id":"default","profile":"live"}`),
		mustGroup(t, `{"id":"zz-default","profile":"live"}`),
		mustGroup(t, `{"id":"node1","profile":"install","selector":{"mac":"52:54:00:a1:9c:ae"}}`),
		mustGroup(t, `{"id":"node1-installed","profile":"final","selector":{"mac":"52:54:00:a1:9c:ae","os":"installed"}}`),
		mustGroup(t, `{"id":"rack","profile":"install","selector":{"mac":["52:54:00:00:00:01","52:54:00:00:00:02"]}}`),
		mustGroup(t, `{"id":"by-uuid","profile":"install","selector":{"uuid":"ABCD-1234"}}`),
		mustGroup(t, `{"id":"a-tie","profile":"x","selector":{"a":"1"}}`),
		mustGroup(t, `{"id":"b-tie","profile":"x","selector":{"b":"1"}}`),
		mustGroup(t, `{"id":"empty-host","profile":"x","selector":{"hostname":""}}`),
	}
	ix := NewIndex(gs)
	tests := []struct {
		query string
		want  string
	}{
		{"", "default"},
		{"mac=52-54-00-a1-9c-ae", "node1"},
		{"mac=52:54:00:A1:9C:AE&os=installed", "node1-installed"},
		{"mac=52:54:00:a1:9c:ae&os=other", "node1"},
		{"mac=52:54:00:00:00:02", "rack"},
		{"mac=52:54:00:00:00:01", "rack"},
		{"mac=52:54:00:00:00:03", "default"},
		{"uuid=abcd-1234", "by-uuid"},
		{"UUID=AbCd-1234", "by-uuid"},
		{"a=1&b=1", "a-tie"},
		{"b=1", "b-tie"},
		{"hostname=", "empty-host"},
		{"hostname=x", "default"},
	}
	for _, tt := range tests {
		q, _ := url.ParseQuery(tt.query)
		l, err := FromQuery(q)
		if err != nil {
			t.Fatalf("FromQuery(%q): %v", tt.query, err)
		}
		for name, sel := range map[string]func(Labels) *Group{
			"Select":       func(l Labels) *Group { return Select(gs, l) },
			"Index.Select": ix.Select,
		} {
			got := sel(l)
			if got == nil || got.ID != tt.want {
				t.Errorf("%s(%q) = %v, want %q", name, tt.query, got, tt.want)
			}
		}
	}
	if g := NewIndex(gs[2:4]).Select(Labels{"os": "installed"}); g != nil {
		t.Errorf("Select without defaults = %q, want nil", g.ID)
	}
}

// TestIndexAgreesWithScan checks the index against the plain scan over
// random group sets and label sets.
func TestIndexAgreesWithScan(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	keys := []string{"mac", "os", "zone", "arch"}
	vals := []string{"a", "b", "c", ""}
	for round := 0; round < 200; round++ {
		var gs []*Group
		for i := 0; i < 30; i++ {
			g := &Group{ID: fmt.Sprintf("g%02d", (i*7)%30), Profile: "p", Selector: Selector{}}
			for _, k := range keys[1:] {
				if r.Intn(3) == 0 {
					n := 1 + r.Intn(2)
					for j := 0; j < n; j++ {
						g.Selector[k] = append(g.Selector[k], vals[r.Intn(len(vals))])
					}
				}
			}
			if err := g.Normalize(); err != nil {
				t.Fatal(err)
			}
			gs = append(gs, g)
		}
		ix := NewIndex(gs)
		for i := 0; i < 50; i++ {
			l := Labels{}
			for _, k := range keys[1:] {
				if r.Intn(2) == 0 {
					l[k] = vals[r.Intn(len(vals))]
				}
			}
			want, got := Select(gs, l), ix.Select(l)
			if want != got {
				t.Fatalf("round %d: Index.Select(%v) = %v, scan says %v", round, l, got, want)
			}
		}
	}
}

func TestExplain(t *testing.T) {
	gs := []*Group{
		mustGroup(t, `{"id":"default","profile":"live"}`),
		mustGroup(t, `{"id":"node1","profile":"install","selector":{"mac":"52:54:00:a1:9c:ae"}}`),
		mustGroup(t, `{"id":"node1-installed","profile":"final","selector":{"mac":"52:54:00:a1:9c:ae","os":"installed"}}`),
	}
	vs := Explain(gs, Labels{"mac": "52:54:00:a1:9c:ae"})
	var got []string
	for _, v := range vs {
		got = append(got, fmt.Sprintf("%s %v %s", v.Group.ID, v.Matched, v.Reason))
	}
	want := []string{
		"node1 true ",
		`default true matched, but "node1" wins: it has more selectors (1 > 0)`,
		`node1-installed false selector os=installed: label "os" is absent`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Explain diff (-want +got):\n%s", diff)
	}
}

func BenchmarkIndexSelect(b *testing.B) {
	var gs []*Group
	for i := 0; i < 10000; i++ {
		gs = append(gs, mustGroup(b, fmt.Sprintf(`{"id":"m%05d","profile":"p","selector":{"mac":"52:54:00:00:%02x:%02x"}}`, i, i/256, i%256)))
	}
	gs = append(gs, mustGroup(b, `{"id":"default","profile":"p"}`))
	ix := NewIndex(gs)
	l := Labels{"mac": "52:54:00:00:10:10", "uuid": "x", "hostname": "", "domain": "", "serial": "", "arch": "x86_64"}
	b.ReportAllocs()
	for b.Loop() {
		if ix.Select(l) == nil {
			b.Fatal("no group")
		}
	}
}
