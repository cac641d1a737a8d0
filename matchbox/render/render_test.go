package render_test

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/kindlingboot/kindling/matchbox/render"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden with the current output")

// golden compares got with testdata/name.golden, or rewrites the file
// with -update. call describes what produced got, for the failure message.
func golden(t *testing.T, name, call string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: reading golden file: %v (run go test ./matchbox/render -update to create it)", call, err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs from %s (-want +got):\n%s", call, path, diff)
	}
}

func TestIPXE(t *testing.T) {
	tests := []struct {
		name string
		boot render.Boot
	}{
		{"kernel-only", render.Boot{Kernel: "/assets/vmlinuz"}},
		{"args", render.Boot{
			Kernel: "http://kindling.test:8080/assets/vmlinuz",
			Args:   []string{"console=tty0", "console=ttyS0,115200n8", "quiet"},
		}},
		{"initrd-options", render.Boot{
			Kernel: "/assets/fedora-coreos/kernel",
			Initrd: []string{"--name main /assets/fedora-coreos/initramfs.img"},
			Args:   []string{"initrd=main", "coreos.live.rootfs_url=http://kindling.test/assets/rootfs.img"},
		}},
		{"initrd-several", render.Boot{
			Kernel: "/k",
			Initrd: []string{"/assets/initrd.img", "--name extra /assets/extra.cpio.gz"},
		}},
		// iPXE's own ${var} settings pass through for the client to expand.
		{"ipxe-variables", render.Boot{
			Kernel: "/k",
			Args:   []string{"ignition.config.url=http://kindling.test/ignition?uuid=${uuid}&mac=${mac:hexhyp}"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := render.IPXE(tt.boot)
			call := fmt.Sprintf("IPXE(%+v)", tt.boot)
			if !strings.HasPrefix(string(got), "#!ipxe\n") || !strings.HasSuffix(string(got), "\nboot\n") {
				t.Errorf("%s = %q, want a script starting with #!ipxe and ending with boot", call, got)
			}
			golden(t, "ipxe-"+tt.name, call, got)
		})
	}
}

func TestGRUB(t *testing.T) {
	tests := []struct {
		name  string
		title string
		boot  render.Boot
		// initrd is the file list GRUB must load (options stripped).
		initrd string
	}{
		{"kernel-only", "Live", render.Boot{Kernel: "/assets/vmlinuz"}, ""},
		{"args", "Fedora CoreOS", render.Boot{
			Kernel: "/assets/vmlinuz",
			Initrd: []string{"/assets/initrd.img"},
			Args:   []string{"console=tty0", "console=ttyS0,115200n8"},
		}, ` /assets/initrd.img`},
		// iPXE options on an initrd mean nothing to GRUB: only the path stays.
		{"initrd-options", "Installer", render.Boot{
			Kernel: "/assets/kernel",
			Initrd: []string{"--name main /x.img", "--name=extra /assets/extra.img", "/plain.img"},
			Args:   []string{"initrd=main"},
		}, ` /x.img /assets/extra.img /plain.img`},
		{"title-quotes", `Debian "bookworm" \ live`, render.Boot{
			Kernel: `/assets/path with "quote"`,
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(render.GRUB(tt.title, tt.boot))
			call := fmt.Sprintf("GRUB(%q, %+v)", tt.title, tt.boot)
			for _, entry := range []struct{ suffix, initrd string }{{"EFI", "initrdefi"}, {"BIOS", "initrd"}} {
				if tt.initrd == "" {
					if strings.Contains(got, "\t"+entry.initrd) {
						t.Errorf("%s = %q, want no %s line without initrds", call, got, entry.initrd)
					}
					continue
				}
				if want := "\t" + entry.initrd + tt.initrd + "\n"; !strings.Contains(got, want) {
					t.Errorf("%s = %q, want the line %q", call, got, want)
				}
			}
			if strings.Contains(got, "--name") {
				t.Errorf("%s = %q, want iPXE --name options dropped", call, got)
			}
			golden(t, "grub-"+tt.name, call, []byte(got))
		})
	}
}

func TestGRUBTitleQuoting(t *testing.T) {
	tests := []struct {
		title string
		want  string // the first menuentry line
	}{
		{"Plain", `menuentry 'Plain (EFI)' {`},
		{`Say "hi"`, `menuentry 'Say "hi" (EFI)' {`},
		{`back\slash`, `menuentry 'back\slash (EFI)' {`},
		{"it's", `menuentry 'it'\''s (EFI)' {`},
		{"", `menuentry ' (EFI)' {`},
	}
	for _, tt := range tests {
		got := string(render.GRUB(tt.title, render.Boot{Kernel: "/k"}))
		if !strings.Contains(got, "\n"+tt.want+"\n") {
			t.Errorf("GRUB(%q, …) = %q, want the line %q", tt.title, got, tt.want)
		}
	}
}

func TestShellQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "''"},
		{"simple", "simple"},
		{"52:54:00:a1:9c:ae", "52:54:00:a1:9c:ae"},
		{"/assets/x.img", "/assets/x.img"},
		{"a=b,c+d@e%f", "a=b,c+d@e%f"},
		{"-flag", "-flag"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"'", `''\'''`},
		{`say "hi"`, `'say "hi"'`},
		{"$HOME", "'$HOME'"},
		{"`id`", "'`id`'"},
		{"a;b", "'a;b'"},
		{"a&b", "'a&b'"},
		{"line\nbreak", "'line\nbreak'"},
		{"tab\there", "'tab\there'"},
		{"*", "'*'"},
		{"~", "'~'"},
		{"é", "'é'"},
	}
	for _, tt := range tests {
		if got := render.ShellQuote(tt.in); got != tt.want {
			t.Errorf("ShellQuote(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestNewTemplateMissingKey(t *testing.T) {
	tests := []struct {
		text    string
		data    map[string]any
		want    string
		wantErr string // substring of the error; empty for none
	}{
		{"{{.a}}", map[string]any{"a": "x"}, "x", ""},
		{"{{.a.b}}", map[string]any{"a": map[string]any{"b": "nested"}}, "nested", ""},
		{"{{.missing}}", map[string]any{"a": "x"}, "", `map has no entry for key "missing"`},
		{"{{.a.missing}}", map[string]any{"a": map[string]any{}}, "", `map has no entry for key "missing"`},
		{`{{if index . "k"}}yes{{else}}no{{end}}`, map[string]any{}, "no", ""},
	}
	for _, tt := range tests {
		tmpl, err := render.NewTemplate("t.tmpl", tt.text)
		if err != nil {
			t.Fatalf("NewTemplate(%q) error: %v", tt.text, err)
		}
		got, err := render.Execute(tmpl, tt.data)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("Execute(%q, %v) error: %v", tt.text, tt.data, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "t.tmpl")):
			t.Errorf("Execute(%q, %v) = %q, %v; want an error naming t.tmpl and containing %q", tt.text, tt.data, got, err, tt.wantErr)
		case string(got) != tt.want:
			t.Errorf("Execute(%q, %v) = %q, want %q", tt.text, tt.data, got, tt.want)
		}
	}
	if _, err := render.NewTemplate("bad", "{{"); err == nil {
		t.Errorf(`NewTemplate("bad", "{{") = nil error, want a parse error`)
	}
}

// TestGRUBParses runs GRUB's own parser (grub-script-check, from Debian's
// grub-common) over GRUB's output.
func TestGRUBParses(t *testing.T) {
	check, err := exec.LookPath("grub-script-check")
	if err != nil {
		t.Skip("grub-script-check not found (Debian package grub-common): cannot run GRUB's parser over the configs")
	}
	tests := []struct {
		name  string
		title string
		boot  render.Boot
	}{
		{"kernel only", "Live", render.Boot{Kernel: "/k"}},
		{"args and initrds", "Fedora CoreOS", render.Boot{
			Kernel: "/assets/vmlinuz",
			Initrd: []string{"--name main /assets/initrd.img", "/assets/extra.img"},
			Args:   []string{"initrd=main", "console=tty0", "console=ttyS0,115200n8", "coreos.inst.install_dev=/dev/vda"},
		}},
		{"quotes and braces in title", `Say "hi" {now} \ later`, render.Boot{Kernel: "/k"}},
		{"semicolon and pipe in title", "a;b|c&d", render.Boot{Kernel: "/k"}},
		{"ampersand in args", "Live", render.Boot{Kernel: "/k",
			Args: []string{"ignition.config.url=http://kindling.test/ignition?uuid=x&mac=y"}}},
		{"iPXE variable in args", "Live", render.Boot{Kernel: "/k", Args: []string{"mac=${mac:hexhyp}"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := render.GRUB(tt.title, tt.boot)
			path := filepath.Join(t.TempDir(), "grub.cfg")
			if err := os.WriteFile(path, cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(check, path).CombinedOutput(); err != nil {
				t.Errorf("grub-script-check(GRUB(%q, %+v)) = %v: %s\nconfig:\n%s", tt.title, tt.boot, err, out, cfg)
			}
		})
	}
}
