package initramfs

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// staticInit builds testdata/hello with CGO_ENABLED=0.
func staticInit(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "hello")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-trimpath", "-o", out, "./testdata/hello")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/hello: %v\n%s", err, b)
	}
	return out
}

// fakeModules makes a modules directory: names → dependencies, files
// compressed by suffix.
func fakeModules(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	elf := func(name string) []byte { return []byte("\x7fELF fake module " + name) }
	write := func(rel string, data []byte) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var xzb bytes.Buffer
	xw, _ := xz.NewWriter(&xzb)
	xw.Write(elf("md-mod"))
	xw.Close()
	zb, _ := zstd.NewWriter(nil)
	var gzb bytes.Buffer
	gw := gzip.NewWriter(&gzb)
	gw.Write(elf("crc"))
	gw.Close()
	write("kernel/drivers/virtio/virtio.ko", elf("virtio"))
	write("kernel/drivers/virtio/virtio_ring.ko", elf("virtio_ring"))
	write("kernel/drivers/net/virtio_net.ko", elf("virtio_net"))
	write("kernel/drivers/md/md-mod.ko.xz", xzb.Bytes())
	write("kernel/drivers/md/raid1.ko.zst", zb.EncodeAll(elf("raid1"), nil))
	write("kernel/fs/ext4/ext4.ko", elf("ext4"))
	write("kernel/crypto/crc32c_generic.ko.gz", gzb.Bytes())
	write("modules.dep", []byte(`kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/md/md-mod.ko.xz:
kernel/drivers/md/raid1.ko.zst: kernel/drivers/md/md-mod.ko.xz
kernel/fs/ext4/ext4.ko:
kernel/crypto/crc32c_generic.ko.gz:
`))
	write("modules.builtin", []byte("kernel/net/packet/af_packet.ko\n"))
	write("modules.softdep", []byte("# soft\nsoftdep ext4 pre: crypto-crc32c post: nothing\n"))
	write("modules.alias", []byte("alias crypto-crc32c crc32c_generic\nalias crypto-crc32c crc32c_intel\n"))
	return dir
}

// unpack decompresses an initramfs and returns its files by name (data of
// regular files and symlinks).
func unpack(t *testing.T, img []byte) map[string]string {
	t.Helper()
	var r io.Reader = bytes.NewReader(img)
	switch {
	case bytes.HasPrefix(img, []byte{0x1f, 0x8b}):
		gr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		r = gr
	case bytes.HasPrefix(img, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for len(raw) >= 110 {
		h := string(raw[:110])
		if h[:6] != "070701" {
			t.Fatalf("entry magic %q, want 070701", h[:6])
		}
		field := func(i int) int {
			var v int
			for _, c := range h[6+8*i : 14+8*i] {
				v = v*16 + strings.IndexRune("0123456789ABCDEF", c)
			}
			return v
		}
		size, nameSize := field(6), field(11)
		name := string(raw[110 : 110+nameSize-1])
		off := 110 + nameSize
		off += (4 - off%4) % 4
		if name == "TRAILER!!!" {
			break
		}
		files[name] = string(raw[off : off+size])
		off += size
		off += (4 - off%4) % 4
		raw = raw[off:]
	}
	return files
}

func TestBuildModules(t *testing.T) {
	init := staticInit(t)
	dir := fakeModules(t)
	var b bytes.Buffer
	res, err := Build(context.Background(), &b, Options{
		Init: init, KernelVersion: "6.1.0-test", ModulesDir: dir, Tools: []string{},
		Modules: []string{"raid1", "virtio-net", "ext4", "af_packet", "nvme?"},
	})
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	wantOrder := []string{"md_mod", "raid1", "virtio_ring", "virtio", "virtio_net", "crc32c_generic", "ext4"}
	if strings.Join(res.Modules, " ") != strings.Join(wantOrder, " ") {
		t.Errorf("Build().Modules = %v, want %v", res.Modules, wantOrder)
	}
	if strings.Join(res.Builtin, " ") != "af_packet" || strings.Join(res.MissingModules, " ") != "nvme" {
		t.Errorf("Build() builtin %v, missing %v; want [af_packet], [nvme]", res.Builtin, res.MissingModules)
	}
	files := unpack(t, b.Bytes())
	list := files["etc/kindling/modules"]
	var paths []string
	for _, l := range strings.Split(list, "\n") {
		if strings.HasPrefix(l, "/") {
			paths = append(paths, l)
		}
	}
	wantPaths := []string{
		"/lib/modules/6.1.0-test/kernel/drivers/md/md-mod.ko",
		"/lib/modules/6.1.0-test/kernel/drivers/md/raid1.ko",
		"/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio_ring.ko",
		"/lib/modules/6.1.0-test/kernel/drivers/virtio/virtio.ko",
		"/lib/modules/6.1.0-test/kernel/drivers/net/virtio_net.ko",
		"/lib/modules/6.1.0-test/kernel/crypto/crc32c_generic.ko",
		"/lib/modules/6.1.0-test/kernel/fs/ext4/ext4.ko",
	}
	if strings.Join(paths, "\n") != strings.Join(wantPaths, "\n") {
		t.Errorf("/etc/kindling/modules = %q, want %q", paths, wantPaths)
	}
	for _, p := range wantPaths {
		name := strings.TrimSuffix(filepath.Base(p), ".ko")
		if got := files[p[1:]]; got != "\x7fELF fake module "+name && !(name == "crc32c_generic" && got == "\x7fELF fake module crc") {
			t.Errorf("%s = %q, want the decompressed module", p, got)
		}
	}
	if files["etc/kindling/kernel-version"] != "6.1.0-test\n" {
		t.Errorf("/etc/kindling/kernel-version = %q", files["etc/kindling/kernel-version"])
	}
	for _, n := range []string{"init", "dev/console", "proc", "sys", "sysroot", "run", "tmp"} {
		if _, ok := files[n]; !ok {
			t.Errorf("initramfs lacks /%s", n)
		}
	}

	_, err = Build(context.Background(), io.Discard, Options{Init: init, ModulesDir: dir, Tools: []string{}, Modules: []string{"nvme"}})
	if err == nil || !strings.Contains(err.Error(), "module nvme: not in") {
		t.Errorf("Build(required module missing) = %v, want an error naming nvme", err)
	}
	_, err = Build(context.Background(), io.Discard, Options{Init: init, ModulesDir: t.TempDir(), Tools: []string{}})
	if err == nil || !strings.Contains(err.Error(), "modules.dep") {
		t.Errorf("Build(no modules.dep) = %v, want an error about modules.dep", err)
	}
}

func TestBuildReproducible(t *testing.T) {
	init := staticInit(t)
	o := Options{Init: init, ModulesDir: fakeModules(t), Modules: []string{"raid1", "ext4"}, Tools: []string{"sgdisk?", "mount?"}}
	for _, comp := range []string{"gzip", "zstd", "none"} {
		o.Compression = comp
		var a, b bytes.Buffer
		ra, err := Build(context.Background(), &a, o)
		if err != nil {
			t.Fatalf("Build(%s) = %v", comp, err)
		}
		if _, err := Build(context.Background(), &b, o); err != nil {
			t.Fatalf("Build(%s) = %v", comp, err)
		}
		if !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("two Build(%s) differ: %d and %d bytes", comp, a.Len(), b.Len())
		}
		if ra.Compressed != int64(a.Len()) {
			t.Errorf("Build(%s).Compressed = %d, wrote %d", comp, ra.Compressed, a.Len())
		}
	}
}

func TestBuildErrors(t *testing.T) {
	init := staticInit(t)
	hide := func(name string) (string, error) { return "", errors.New("hidden") }
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no init", Options{}, "Options.Init is empty"},
		{"missing init", Options{Init: "/nonexistent/ignite"}, "no such file"},
		{"dynamic init", Options{Init: "/bin/sh", Tools: []string{}, Modules: []string{}}, "dynamically linked"},
		{"missing tool", Options{Init: init, Modules: []string{}, Tools: []string{"sgdisk"}, LookPath: hide}, "install the Debian package gdisk"},
		{"unknown tool", Options{Init: init, Modules: []string{}, Tools: []string{"frob"}, LookPath: hide}, "tool frob not found"},
		{"bad compression", Options{Init: init, Modules: []string{}, Tools: []string{}, Compression: "lz4"}, "want gzip, zstd or none"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(context.Background(), io.Discard, tt.o)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Build(%s) = %v, want an error containing %q", tt.name, err, tt.want)
			}
		})
	}
	res, err := Build(context.Background(), io.Discard, Options{Init: init, Modules: []string{}, Tools: []string{"frob?"}, LookPath: hide})
	if err != nil || strings.Join(res.MissingTools, " ") != "frob" {
		t.Errorf("Build(optional tool missing) = %v, missing %v; want no error, [frob]", err, res.MissingTools)
	}
}

// TestBuildToolsRun extracts an initramfs with the default tools and runs
// each tool in a chroot of it: the shared libraries and the ELF
// interpreter must all be there.
func TestBuildToolsRun(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("chroot needs root")
	}
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed (Debian package cpio)")
	}
	for _, tool := range DefaultTools {
		if _, err := hostLookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian package %s)", tool, toolPackages[tool])
		}
	}
	var b bytes.Buffer
	res, err := Build(context.Background(), &b, Options{Init: staticInit(t), Modules: []string{}, Compression: "none"})
	if err != nil {
		t.Fatalf("Build() = %v", err)
	}
	if len(res.Libraries) == 0 {
		t.Fatalf("Build() copied no libraries for %v", DefaultTools)
	}
	dir := t.TempDir()
	cmd := exec.Command(cpio, "-i", "-d", "--quiet")
	cmd.Dir, cmd.Stdin = dir, &b
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	versionArg := map[string]string{"sgdisk": "--version", "mkfs.ext4": "-V", "mkfs.xfs": "-V", "mkfs.btrfs": "--version",
		"mkfs.fat": "--help", "mdadm": "--version", "cryptsetup": "--version"}
	for tool, host := range res.Tools {
		arg := versionArg[tool]
		if arg == "" {
			arg = "--version"
		}
		out, err := exec.Command("chroot", dir, host, arg).CombinedOutput()
		if err != nil && tool != "mkfs.fat" { // mkfs.fat --help exits 1
			t.Errorf("chroot initramfs %s %s: %v\n%s", host, arg, err, out)
		}
		if strings.Contains(string(out), "error while loading shared libraries") || strings.Contains(string(out), "not found") {
			t.Errorf("chroot initramfs %s %s: %s", host, arg, out)
		}
	}
	if out, err := exec.Command("chroot", dir, "/init").CombinedOutput(); err != nil || !strings.Contains(string(out), "hello from the initramfs") {
		t.Errorf("chroot initramfs /init = %q, %v", out, err)
	}
}
