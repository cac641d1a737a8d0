package render_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kindlingboot/kindling/matchbox/render"
)

// ignitionFile is a valid config at version v with one file in it, valid
// at every 3.x spec.
func ignitionFile(v string) string {
	return `{"ignition":{"version":"` + v + `"},"storage":{"files":[{"path":"/etc/hostname","mode":420,"contents":{"source":"data:,node1%0A"}}]}}`
}

func TestCheckIgnitionAccepts(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{`{"ignition":{"version":"3.0.0"}}`, "3.0.0"},
		{ignitionFile("3.0.0"), "3.0.0"},
		{ignitionFile("3.1.0"), "3.1.0"},
		{ignitionFile("3.2.0"), "3.2.0"},
		{ignitionFile("3.3.0"), "3.3.0"},
		{ignitionFile("3.4.0"), "3.4.0"},
		{ignitionFile("3.5.0"), "3.5.0"},
		{ignitionFile("3.6.0"), "3.6.0"},
		{ignitionFile("3.7.0-experimental"), "3.7.0-experimental"},
		// Whitespace and indentation do not matter.
		{"{\n  \"ignition\": {\n    \"version\": \"3.4.0\"\n  }\n}\n", "3.4.0"},
	}
	for _, tt := range tests {
		got, err := render.CheckIgnition([]byte(tt.in))
		if err != nil || got != tt.want {
			t.Errorf("CheckIgnition(%s) = %q, %v; want %q, nil", tt.in, got, err, tt.want)
		}
	}
}

func TestCheckIgnitionRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		// why are substrings the error must contain: the reason, not just
		// "invalid".
		why []string
	}{
		{"spec 2.2.0", `{"ignition":{"version":"2.2.0"}}`, []string{"2.2.0", "unsupported"}},
		{"spec 3.8.0", `{"ignition":{"version":"3.8.0"}}`, []string{"3.8.0", "unsupported"}},
		{"other experimental", `{"ignition":{"version":"3.6.0-experimental"}}`, []string{"3.6.0-experimental", "not supported"}},
		{"empty version", `{"ignition":{"version":""}}`, []string{"version", "3.0.0 to 3.6.0"}},
		{"no version", `{}`, []string{"version"}},
		{"version not a string", `{"ignition":{"version":3}}`, []string{"Version"}},
		{"empty input", ``, []string{"empty"}},
		{"truncated JSON", ignitionFile("3.4.0")[:40], []string{"unexpected end of JSON input"}},
		{"not JSON", `variant: fcos`, []string{"invalid character"}},
		{"relative path", `{"ignition":{"version":"3.4.0"},"storage":{"files":[{"path":"etc/x"}]}}`, []string{"path not absolute", "storage.files.0.path"}},
		{"relative path 3.0.0", `{"ignition":{"version":"3.0.0"},"storage":{"files":[{"path":"etc/x"}]}}`, []string{"path not absolute"}},
		{"relative path experimental", `{"ignition":{"version":"3.7.0-experimental"},"storage":{"files":[{"path":"etc/x"}]}}`, []string{"path not absolute"}},
		{"duplicate file", `{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/x"},{"path":"/etc/x"}]}}`, []string{"duplicate entry"}},
		{"bad data URL", `{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"/etc/x","contents":{"source":"data:xx"}}]}}`, []string{"storage.files.0.contents.source"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := render.CheckIgnition([]byte(tt.in))
			if !errors.Is(err, render.ErrConfig) {
				t.Fatalf("CheckIgnition(%s) = %q, %v; want an error wrapping ErrConfig", tt.in, got, err)
			}
			if got != "" {
				t.Errorf("CheckIgnition(%s) version = %q, want \"\" with an error", tt.in, got)
			}
			for _, w := range tt.why {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CheckIgnition(%s) error = %q, want it to say %q", tt.in, err, w)
				}
			}
		})
	}
}

// fileYAML is a Butane storage section writing /etc/hostname.
const fileYAML = `storage:
  files:
    - path: /etc/hostname
      mode: 0644
      contents:
        inline: node1
`

func TestButaneVariants(t *testing.T) {
	tests := []struct {
		variant, version string
		extra            string // more YAML the variant needs
		want             string // Ignition spec version
	}{
		{"fcos", "1.0.0", "", "3.0.0"},
		{"fcos", "1.1.0", "", "3.1.0"},
		{"fcos", "1.2.0", "", "3.2.0"},
		{"fcos", "1.3.0", "", "3.2.0"},
		{"fcos", "1.4.0", "", "3.3.0"},
		{"fcos", "1.5.0", "", "3.4.0"},
		{"fcos", "1.6.0", "", "3.5.0"},
		{"fcos", "1.7.0", "", "3.6.0"},
		{"fcos", "1.8.0-experimental", "", "3.7.0-experimental"},
		{"flatcar", "1.0.0", "", "3.3.0"},
		{"flatcar", "1.1.0", "", "3.4.0"},
		{"openshift", "4.8.0", "metadata:\n  name: 99-worker-hostname\n  labels:\n    machineconfiguration.openshift.io/role: worker\n", "3.2.0"},
		{"r4e", "1.0.0", "", "3.3.0"},
		{"r4e", "1.1.0", "", "3.4.0"},
		{"fiot", "1.0.0", "", "3.4.0"},
	}
	for _, tt := range tests {
		name := tt.variant + "-" + tt.version
		t.Run(name, func(t *testing.T) {
			src := "variant: " + tt.variant + "\nversion: " + tt.version + "\n" + tt.extra + fileYAML
			call := fmt.Sprintf("Butane(%s %s)", tt.variant, tt.version)
			out, warnings, err := render.Butane([]byte(src), render.ButaneOptions{})
			if err != nil {
				t.Fatalf("%s error: %v", call, err)
			}
			if warnings != "" {
				t.Errorf("%s warnings = %q, want none", call, warnings)
			}
			got, err := render.CheckIgnition(out)
			if err != nil || got != tt.want {
				t.Errorf("CheckIgnition(%s) = %q, %v; want %q, nil", call, got, err, tt.want)
			}
			// The output is plain Ignition (no MachineConfig wrapper, even for
			// openshift) holding the file.
			var cfg struct {
				Ignition struct{ Version string }
				Storage  struct {
					Files []struct {
						Path     string
						Mode     int
						Contents struct{ Source string }
					}
				}
			}
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatalf("%s = %s: not JSON: %v", call, out, err)
			}
			if len(cfg.Storage.Files) != 1 || cfg.Storage.Files[0].Path != "/etc/hostname" || cfg.Storage.Files[0].Mode != 0o644 || cfg.Storage.Files[0].Contents.Source != "data:,node1" {
				t.Errorf("%s = %s, want one file /etc/hostname, mode 0644, contents data:,node1", call, out)
			}
			golden(t, "butane-"+name, call, out)
		})
	}
}

func TestButaneErrors(t *testing.T) {
	tests := []struct {
		name string
		src  string
		why  []string
	}{
		{"unknown variant", "variant: nope\nversion: 1.0.0\n", []string{"variant nope", "1.0.0"}},
		{"unknown version", "variant: fcos\nversion: 9.9.0\n", []string{"variant fcos", "9.9.0"}},
		{"flatcar experimental unknown", "variant: flatcar\nversion: 1.9.0\n", []string{"1.9.0"}},
		{"no variant", "version: 1.6.0\n", []string{"variant"}},
		{"no version", "variant: fcos\n", []string{"version"}},
		{"empty", "", []string{"variant"}},
		{"invalid YAML", "variant: fcos\nversion: 1.6.0\nstorage: [\n", []string{"yaml", "line 3"}},
		{"YAML list", "- a\n- b\n", []string{"yaml"}},
		{"tab indentation", "variant: fcos\nversion: 1.6.0\nstorage:\n\tfiles: []\n", []string{"yaml"}},
		{"relative path", "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: etc/x\n", []string{"path not absolute"}},
		{"duplicate file", "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/x\n    - path: /etc/x\n", []string{"duplicate"}},
		{"local without files dir", "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/x\n      contents:\n        local: a.txt\n", []string{"files-dir"}},
		{"openshift without metadata", "variant: openshift\nversion: 4.8.0\n", []string{"metadata.name"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, _, err := render.Butane([]byte(tt.src), render.ButaneOptions{})
			if !errors.Is(err, render.ErrConfig) {
				t.Fatalf("Butane(%q) = %s, %v; want an error wrapping ErrConfig", tt.src, out, err)
			}
			if out != nil {
				t.Errorf("Butane(%q) = %s with an error, want no output", tt.src, out)
			}
			for _, w := range tt.why {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Butane(%q) error = %q, want it to say %q", tt.src, err, w)
				}
			}
		})
	}
}

func TestButaneStrict(t *testing.T) {
	tests := []struct {
		name string
		src  string
		warn string // what Butane warns about
	}{
		// 644 decimal is 01204 octal: Butane suggests the leading zero.
		{"decimal mode", "variant: fcos\nversion: 1.7.0\nstorage:\n  files:\n    - path: /etc/x\n      mode: 644\n", "remember to add a leading zero"},
		{"unused key", "variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/x\n      bogus: 1\n", "unused key bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, warnings, err := render.Butane([]byte(tt.src), render.ButaneOptions{})
			if err != nil {
				t.Fatalf("Butane(%q, {}) error: %v", tt.src, err)
			}
			if !strings.Contains(warnings, tt.warn) {
				t.Errorf("Butane(%q, {}) warnings = %q, want %q", tt.src, warnings, tt.warn)
			}
			if _, err := render.CheckIgnition(out); err != nil {
				t.Errorf("Butane(%q, {}) = %s: CheckIgnition: %v", tt.src, out, err)
			}

			out, warnings, err = render.Butane([]byte(tt.src), render.ButaneOptions{Strict: true})
			if !errors.Is(err, render.ErrConfig) || !strings.Contains(err.Error(), tt.warn) || !strings.Contains(err.Error(), "strict") {
				t.Errorf("Butane(%q, {Strict}) = %s, %q, %v; want an ErrConfig naming strict mode and %q", tt.src, out, warnings, err, tt.warn)
			}
			if out != nil {
				t.Errorf("Butane(%q, {Strict}) = %s with an error, want no output", tt.src, out)
			}
		})
	}
	// A clean config passes strict mode.
	src := "variant: fcos\nversion: 1.7.0\n" + fileYAML
	if _, warnings, err := render.Butane([]byte(src), render.ButaneOptions{Strict: true}); err != nil || warnings != "" {
		t.Errorf("Butane(%q, {Strict}) = %q, %v; want no warnings, nil", src, warnings, err)
	}
}

func TestButanePretty(t *testing.T) {
	src := []byte("variant: fcos\nversion: 1.6.0\n" + fileYAML)
	compact, _, err := render.Butane(src, render.ButaneOptions{})
	if err != nil {
		t.Fatalf("Butane(…, {}) error: %v", err)
	}
	pretty, _, err := render.Butane(src, render.ButaneOptions{Pretty: true})
	if err != nil {
		t.Fatalf("Butane(…, {Pretty}) error: %v", err)
	}
	if bytes.Contains(compact, []byte("\n")) {
		t.Errorf("Butane(…, {}) = %s, want compact JSON on one line", compact)
	}
	if !bytes.Contains(pretty, []byte("\n  \"ignition\": {\n")) {
		t.Errorf("Butane(…, {Pretty}) = %s, want two-space indented JSON", pretty)
	}
	var a, b any
	if err := json.Unmarshal(compact, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(pretty, &b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("Butane(…, {Pretty}) and Butane(…, {}) differ in content (-compact +pretty):\n%s", diff)
	}
	golden(t, "butane-pretty", "Butane(…, {Pretty})", pretty)
}

func TestButaneFilesDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "motd"), []byte("hello from a file\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := []byte("variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/motd\n      contents:\n        local: motd\n")
	out, _, err := render.Butane(src, render.ButaneOptions{FilesDir: dir})
	if err != nil {
		t.Fatalf("Butane(local: motd, {FilesDir: %s}) error: %v", dir, err)
	}
	if !bytes.Contains(out, []byte("hello from a file")) && !bytes.Contains(out, []byte("hello%20from%20a%20file")) {
		t.Errorf("Butane(local: motd, {FilesDir}) = %s, want the file's contents embedded", out)
	}
	// Nothing outside the files directory.
	esc := []byte("variant: fcos\nversion: 1.6.0\nstorage:\n  files:\n    - path: /etc/motd\n      contents:\n        local: ../outside\n")
	if out, _, err := render.Butane(esc, render.ButaneOptions{FilesDir: dir}); !errors.Is(err, render.ErrConfig) {
		t.Errorf("Butane(local: ../outside, {FilesDir}) = %s, %v; want ErrConfig", out, err)
	}
}
