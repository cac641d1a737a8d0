package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestInitramfsBuild(t *testing.T) {
	dir := t.TempDir()
	init := filepath.Join(dir, "hello")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", init, "../../assets/initramfs/testdata/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build hello: %v\n%s", err, out)
	}
	img := filepath.Join(dir, "out.img")
	out, errOut, code := kindling(t, nil, "", "initramfs", "build", "-o", img, "-ignite", init, "-modules", "none", "-tools", "none", "-compression", "zstd")
	if code != 0 {
		t.Fatalf("initramfs build: exit %d\n%s%s", code, out, errOut)
	}
	fi, err := os.Stat(img)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("initramfs build wrote %s: %v", img, err)
	}
	if want := "wrote " + img + ": "; !strings.Contains(out, want) || !strings.Contains(out, "init: "+init) {
		t.Errorf("initramfs build output = %q, want %q and the init path", out, want)
	}
	// From the environment, as every flag.
	env := map[string]string{"KINDLING_IGNITE": init, "KINDLING_MODULES": "none", "KINDLING_TOOLS": "none"}
	if out, errOut, code := kindling(t, env, "", "initramfs", "build", "-o", img); code != 0 {
		t.Errorf("initramfs build with KINDLING_ env: exit %d\n%s%s", code, out, errOut)
	}

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no subcommand", []string{"initramfs"}, 2, "want the subcommand build"},
		{"missing ignite", []string{"initramfs", "build", "-o", img, "-ignite", filepath.Join(dir, "nope")}, 1, "no such file"},
		{"dynamic ignite", []string{"initramfs", "build", "-o", img, "-ignite", "/bin/sh", "-modules", "none", "-tools", "none"}, 1, "CGO_ENABLED=0"},
		{"bad compression", []string{"initramfs", "build", "-o", img, "-ignite", init, "-modules", "none", "-tools", "none", "-compression", "lz4"}, 1, "want gzip, zstd or none"},
		{"extra args", []string{"initramfs", "build", "-o", img, "x"}, 2, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := kindling(t, nil, "", tt.args...)
			if code != tt.code || !strings.Contains(errOut, tt.want) {
				t.Errorf("kindling %v: exit %d, stderr %q; want exit %d and %q", tt.args, code, errOut, tt.code, tt.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "nope")); err == nil {
		t.Errorf("a failed build left a file behind")
	}
}

func TestFindIgniteMessage(t *testing.T) {
	if _, err := exec.LookPath("ignite"); err == nil {
		t.Skip("an ignite binary is on PATH")
	}
	exe, _ := os.Executable()
	if _, err := os.Stat(filepath.Join(filepath.Dir(exe), "ignite")); err == nil {
		t.Skip("an ignite binary is next to the test binary")
	}
	_, errOut, code := kindling(t, nil, "", "initramfs", "build", "-o", filepath.Join(t.TempDir(), "x.img"))
	if code != 1 || !strings.Contains(errOut, "build it with: CGO_ENABLED=0 go build -o ignite ./cmd/ignite") {
		t.Errorf("initramfs build without ignite: exit %d, stderr %q", code, errOut)
	}
}
