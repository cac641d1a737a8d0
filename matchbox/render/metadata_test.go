package render_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kindlingboot/kindling/matchbox/render"
)

// decode parses JSON the way the catalog parses group metadata: numbers
// stay json.Number.
func decode(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding %s: %v", s, err)
	}
	return m
}

// metadataCases are the variables both MetadataEnv and MetadataJSON are
// tested with.
func metadataCases(t *testing.T) []struct {
	name string
	vars map[string]any
} {
	return []struct {
		name string
		vars map[string]any
	}{
		{"empty", map[string]any{}},
		{"scalars", decode(t, `{
			"hostname": "node1.example.com",
			"count": 3,
			"ratio": 0.25,
			"big": 12345678901234567890,
			"enabled": true,
			"disabled": false,
			"nothing": null
		}`)},
		{"nested", decode(t, `{
			"etcd": {"name": "node1", "peer": {"port": 2380, "tls": true}},
			"empty_object": {}
		}`)},
		{"lists", decode(t, `{
			"ssh_authorized_keys": ["ssh-ed25519 AAAA key1", "ssh-ed25519 BBBB key2"],
			"ports": [80, 443],
			"flags": [true, false, null],
			"none": [],
			"disks": [{"device": "/dev/sda", "wipe": true}, {"device": "/dev/sdb", "labels": ["a", "b"]}],
			"matrix": [["a", "b"], ["c"]]
		}`)},
		{"odd-keys", decode(t, `{
			"kebab-case": "k",
			"dotted.key": "d",
			"with space": "s",
			"MixedCase": "m",
			"ünïcode": "u",
			"nested": {"sub-key": {"x.y": "deep"}}
		}`)},
		{"quoting", decode(t, `{
			"empty": "",
			"space": "two words",
			"single": "it's",
			"double": "say \"hi\"",
			"dollar": "$HOME and `+"`id`"+`",
			"newline": "line1\nline2",
			"safe": "a=b,c:d/e.f@g%h+i-j"
		}`)},
		// What the catalog hands over: metadata, selectors, and request.
		{"machine", map[string]any{
			"mac":      "52:54:00:a1:9c:ae",
			"os":       "installed",
			"hostname": "node1",
			"ntp":      map[string]any{"servers": []any{"0.pool.example", "1.pool.example"}},
			"request": map[string]any{
				"query":     map[string]any{"mac": "52:54:00:a1:9c:ae", "os": "installed"},
				"raw_query": "mac=52-54-00-a1-9c-ae&os=installed",
				"host":      "kindling.test:8080",
			},
		}},
		// Go values that are not from JSON.
		{"go-values", map[string]any{
			"float":   float64(1.5),
			"integer": float64(42),
			"int":     7,
			"strings": []string{"a", "b c"},
			"labels":  map[string]string{"zone": "us-1", "rack": "r 2"},
			"nil":     nil,
			"bool":    true,
		}},
	}
}

func TestMetadataEnv(t *testing.T) {
	for _, tt := range metadataCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			got := render.MetadataEnv(tt.vars)
			call := fmt.Sprintf("MetadataEnv(%v)", tt.vars)
			checkEnvShape(t, call, got)
			golden(t, "metadata-env-"+tt.name, call, got)
		})
	}
}

// checkEnvShape checks what every env file must be: KEY=value records,
// sorted, keys of letters, digits and '_' only, not starting with a digit.
func checkEnvShape(t *testing.T, call string, got []byte) {
	t.Helper()
	if len(got) == 0 {
		return
	}
	if !bytes.HasSuffix(got, []byte("\n")) {
		t.Errorf("%s = %q, want a trailing newline", call, got)
	}
	var keys []string
	for _, rec := range envRecords(string(got)) {
		k, _, ok := strings.Cut(rec, "=")
		if !ok {
			t.Errorf("%s: record %q is not KEY=value", call, rec)
			continue
		}
		if k == "" || strings.Trim(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") != "" || strings.IndexAny(k[:1], "0123456789") == 0 {
			t.Errorf("%s: key %q is not a shell variable name in upper case", call, k)
		}
		keys = append(keys, k)
	}
	if !sort.StringsAreSorted(keys) {
		t.Errorf("%s: keys %q are not sorted", call, keys)
	}
}

// envRecords splits an env file at the newlines that are not inside
// single quotes (ShellQuote's only quoting).
func envRecords(s string) []string {
	var recs []string
	var cur strings.Builder
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			if c == '\'' {
				inQuote = false
			}
		case c == '\\' && i+1 < len(s):
			cur.WriteByte(c)
			i++
			c = s[i]
		case c == '\'':
			inQuote = true
		case c == '\n':
			recs = append(recs, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(c)
	}
	if cur.Len() > 0 {
		recs = append(recs, cur.String())
	}
	return recs
}

func TestMetadataEnvValues(t *testing.T) {
	// Table of single leaves: the exact line each becomes.
	tests := []struct {
		vars map[string]any
		want string
	}{
		{map[string]any{"a": "b"}, "A=b\n"},
		{map[string]any{"a": ""}, "A=''\n"},
		{map[string]any{"a": nil}, "A=''\n"},
		{map[string]any{"a": true}, "A=true\n"},
		{map[string]any{"a": false}, "A=false\n"},
		{map[string]any{"a": json.Number("1.50")}, "A=1.50\n"},
		{map[string]any{"a": float64(3)}, "A=3\n"},
		{map[string]any{"a": float64(0.1)}, "A=0.1\n"},
		{map[string]any{"a": float64(1e21)}, "A=1000000000000000000000\n"},
		{map[string]any{"a": []any{"x", "y z"}}, "A='x y z'\n"},
		{map[string]any{"a": []any{json.Number("1"), true, nil}}, "A='1 true '\n"},
		{map[string]any{"a": []any{}}, "A=''\n"},
		{map[string]any{"a": []any{map[string]any{"b": "c"}, "d"}}, "A_0_B=c\nA_1=d\n"},
		{map[string]any{"a": map[string]any{"b": map[string]any{"c": "d"}}}, "A_B_C=d\n"},
		{map[string]any{"a": map[string]any{}}, ""},
		{map[string]any{"a-b.c d": "x"}, "A_B_C_D=x\n"},
		{map[string]any{"camelCase": "x"}, "CAMELCASE=x\n"},
		{map[string]any{"a": "it's"}, `A='it'\''s'` + "\n"},
		{map[string]any{"a": `"q"`}, `A='"q"'` + "\n"},
	}
	for _, tt := range tests {
		if got := string(render.MetadataEnv(tt.vars)); got != tt.want {
			t.Errorf("MetadataEnv(%v) = %q, want %q", tt.vars, got, tt.want)
		}
	}
}

// TestMetadataEnvSourced runs the env file through a real POSIX shell: each
// value must come back exactly as written.
func TestMetadataEnvSourced(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh on PATH: cannot check the env file is sourceable")
	}
	values := map[string]string{
		"EMPTY":   "",
		"SPACE":   "two words",
		"SINGLE":  "it's",
		"DOUBLE":  `say "hi"`,
		"DOLLAR":  "$HOME `id` $(id)",
		"NEWLINE": "line1\nline2",
		"GLOB":    "*",
		"SAFE":    "a=b,c:d/e.f@g%h+i-j",
	}
	vars := make(map[string]any, len(values))
	var script strings.Builder
	for k, v := range values {
		vars[strings.ToLower(k)] = v
	}
	env := render.MetadataEnv(vars)
	script.Write(env)
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&script, "printf '%%s\\0' \"$%s\"\n", k)
	}
	cmd := exec.Command(sh, "-c", script.String())
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sh -c <MetadataEnv output> failed: %v\nscript:\n%s", err, script.String())
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	want := make([]string, len(keys))
	for i, k := range keys {
		want[i] = values[k]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sourcing MetadataEnv(%v) = %q; values differ (-want +got):\n%s", vars, env, diff)
	}
}

func TestMetadataJSON(t *testing.T) {
	for _, tt := range metadataCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			got, err := render.MetadataJSON(tt.vars)
			call := fmt.Sprintf("MetadataJSON(%v)", tt.vars)
			if err != nil {
				t.Fatalf("%s error: %v", call, err)
			}
			// It must be JSON that decodes back to the same values.
			back := decode(t, string(got))
			if diff := cmp.Diff(normalize(t, tt.vars), back); diff != "" {
				t.Errorf("%s does not round-trip (-want +got):\n%s", call, diff)
			}
			golden(t, "metadata-json-"+tt.name, call, got)
		})
	}
}

// normalize turns Go values into what JSON decoding with UseNumber gives.
func normalize(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, string(b))
}

func TestMetadataJSONError(t *testing.T) {
	vars := map[string]any{"f": func() {}}
	if got, err := render.MetadataJSON(vars); err == nil {
		t.Errorf("MetadataJSON(%v) = %q, nil; want an error for a value JSON cannot hold", vars, got)
	}
}

// TestMetadataEnvKeys checks keys that flatten to the same or to invalid
// shell names: the output must stay deterministic and sourceable.
func TestMetadataEnvKeys(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]any
	}{
		{"distinct", map[string]any{"a": "1", "b": map[string]any{"c": "2"}}},
		{"nested and flat clash", map[string]any{"a_b": "flat", "a": map[string]any{"b": "nested"}}},
		{"case clash", map[string]any{"foo": "lower", "Foo": "upper"}},
		{"empty key", map[string]any{"": "x"}},
		{"leading digit", map[string]any{"1st": "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := render.MetadataEnv(tt.vars)
			call := fmt.Sprintf("MetadataEnv(%v)", tt.vars)
			for i := 0; i < 50; i++ {
				if got := render.MetadataEnv(tt.vars); !bytes.Equal(got, first) {
					t.Fatalf("%s = %q, then %q: want the same output every time", call, first, got)
				}
			}
			checkEnvShape(t, call, first)
			if sh, err := exec.LookPath("sh"); err == nil {
				cmd := exec.Command(sh, "-e", "-c", string(first))
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Errorf("sh -c %q = %v: %s; want it sourceable", first, err, out)
				}
			}
		})
	}
}
