package boot_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/kindlingboot/kindling/assets/initramfs"
	"github.com/klauspost/compress/zstd"
)

// testKernel finds a kernel with its modules: KINDLING_TEST_KERNEL (a
// vmlinuz whose modules are in /lib/modules/VERSION, VERSION taken from
// the file name), else the newest /boot/vmlinuz-VERSION that has them.
func testKernel(t *testing.T) (vmlinuz, version string) {
	t.Helper()
	cands := []string{os.Getenv("KINDLING_TEST_KERNEL")}
	if cands[0] == "" {
		cands, _ = filepath.Glob("/boot/vmlinuz-*")
		sort.Sort(sort.Reverse(sort.StringSlice(cands)))
	}
	for _, k := range cands {
		v := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err == nil {
			if f, err := os.Open(k); err == nil { // vmlinuz is often root-only
				f.Close()
				return k, v
			}
		}
	}
	t.Skip("no readable /boot/vmlinuz-VERSION with /lib/modules/VERSION/modules.dep (Debian package linux-image-amd64)")
	return "", ""
}

func buildTestInit(t *testing.T, dir string) string {
	t.Helper()
	out := filepath.Join(dir, "testinit")
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-trimpath", "-o", out, "./testdata/testinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./testdata/testinit: %v\n%s", err, b)
	}
	return out
}

// TestQEMUBoot boots Debian's kernel with a Kindling initramfs whose /init
// calls Setup and Finish: once with DHCP (QEMU's user network) ending in
// poweroff; once with a static ip= ending in a switch to a root on a
// virtio disk, whose /sbin/init reports and powers off; once installing a
// GPT image from the test's HTTP server onto the virtio disk with
// install.Image and writing into the root install.FindRoot finds.
func TestQEMUBoot(t *testing.T) {
	if testing.Short() {
		t.Skip("boots a VM (about 10 s each under TCG)")
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("qemu-system-x86_64 not installed (Debian package qemu-system-x86)")
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		t.Skip("mkfs.ext4 not installed (Debian package e2fsprogs)")
	}
	vmlinuz, kver := testKernel(t)
	dir := t.TempDir()
	init := buildTestInit(t, dir)

	// The root to switch into: the same binary as /sbin/init.
	root := filepath.Join(dir, "root")
	os.MkdirAll(filepath.Join(root, "sbin"), 0o755)
	b, _ := os.ReadFile(init)
	os.WriteFile(filepath.Join(root, "sbin", "init"), b, 0o755)
	os.WriteFile(filepath.Join(root, "kindling-test-root"), nil, 0o644)
	disk := filepath.Join(dir, "disk.raw")
	if out, err := exec.Command(mkfs, "-q", "-d", root, disk, "64M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d: %v\n%s", err, out)
	}

	// The image the install boot writes: GPT, partition 2 named "root"
	// with an ext4 filesystem, served as zstd through QEMU's guestfwd.
	imageURL, imageHash := serveImage(t, dir)

	boots := []struct {
		name, compression, args string
		disk                    string // virtio disk: a file, or "" for none
		want                    []string
	}{
		{"dhcp-poweroff", "gzip", "BOOTIF=01-52-54-00-12-34-56 kindling.finish=poweroff", "", []string{
			`msg=mounted`, `msg="modules loaded"`, `msg="interface up" iface=eth0 mac=52:54:00:12:34:56`,
			`msg="DHCP lease" iface=eth0 ip=10.0.2.15/24`, "KINDLING-TEST lease iface=eth0 ip=10.0.2.15/24", `msg=finishing action=poweroff`,
			"reboot: Power down",
		}},
		{"static-switchroot", "zstd", "ip=10.0.2.15::10.0.2.2:255.255.255.0:node1:eth0:off:10.0.2.3 kindling.test=switchroot kindling.finish=switchroot", disk, []string{
			`msg="static address" iface=eth0 ip=10.0.2.15/24 router=10.0.2.2 dns=10.0.2.3`, `msg=finishing action=switchroot`,
			`msg="switched root" init=/sbin/init`, "KINDLING-TEST switched root: proc=true marker=true", "reboot: Power down",
		}},
		{"install", "zstd", "kindling.test=install kindling.install.dev=/dev/vda kindling.install.image=" + imageURL + " kindling.install.sha256=" + imageHash, filepath.Join(dir, "target.raw"), []string{
			`msg=installed device=/dev/vda format=zstd`, `partitions="/dev/vda1 /dev/vda2"`, "KINDLING-TEST root /dev/vda2 marker written", "reboot: Power down",
		}},
	}
	for _, bt := range boots {
		t.Run(bt.name, func(t *testing.T) {
			if bt.name == "install" && imageURL == "" {
				t.Skip("busybox not installed (Debian package busybox-static): QEMU's guestfwd runs busybox nc to reach the test's HTTP server")
			}
			if bt.name == "install" {
				f, _ := os.Create(bt.disk)
				f.Truncate(128 << 20)
				f.Close()
			}
			img := filepath.Join(dir, bt.name+".img")
			f, err := os.Create(img)
			if err != nil {
				t.Fatal(err)
			}
			res, err := initramfs.Build(context.Background(), f, initramfs.Options{Init: init, KernelVersion: kver, Tools: []string{}, Compression: bt.compression})
			f.Close()
			if err != nil {
				t.Fatalf("initramfs.Build() = %v", err)
			}
			netdev := "user,id=n0,restrict=on"
			if bt.name == "install" {
				// Only the forwarded address is reachable: the image server.
				netdev += ",guestfwd=tcp:10.0.2.100:80-cmd:" + imageFwd
			}
			args := []string{"-machine", "q35,graphics=off", "-accel", "tcg", "-m", "512", "-smp", "1",
				"-display", "none", "-no-reboot", "-serial", "stdio", "-monitor", "none",
				"-kernel", vmlinuz, "-initrd", img, "-append", "console=ttyS0 panic=1 " + bt.args,
				"-netdev", netdev, "-device", "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
				"-device", "virtio-rng-pci"}
			if bt.disk != "" {
				args = append(args, "-drive", "file="+bt.disk+",format=raw,if=virtio")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, qemu, args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			start := time.Now()
			err = cmd.Run()
			took := time.Since(start)
			serial := out.String()
			if err != nil {
				t.Errorf("qemu (%s, %d modules) = %v after %s, want a clean poweroff", bt.name, len(res.Modules), err, took.Round(time.Millisecond))
			}
			for _, w := range bt.want {
				if !strings.Contains(serial, w) {
					t.Errorf("serial output lacks %q", w)
				}
			}
			if t.Failed() {
				lines := strings.Split(serial, "\n")
				t.Logf("serial output (last 60 lines):\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
			}
			if bt.name == "install" {
				checkInstalled(t, bt.disk)
			}
			t.Logf("%s: QEMU start to poweroff %s (initramfs %d KiB %s, %d modules)", bt.name, took.Round(time.Millisecond), res.Compressed>>10, bt.compression, len(res.Modules))
		})
	}
}

// imageFwd is the guestfwd command that connects the guest to the image
// server; serveImage sets it.
var imageFwd string

// serveImage builds a small GPT disk image (2 "root": ext4), serves it
// zstd-compressed on 127.0.0.1 and returns the URL the guest uses and the
// hash of the served file. The URL is "" without busybox.
func serveImage(t *testing.T, dir string) (url, hash string) {
	t.Helper()
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		return "", ""
	}
	sgdisk, err := exec.LookPath("sgdisk")
	if err != nil {
		return "", ""
	}
	raw := filepath.Join(dir, "image.raw")
	f, _ := os.Create(raw)
	f.Truncate(40 << 20)
	f.Close()
	for _, c := range [][]string{
		{sgdisk, "-o", "-n", "1:2048:+1M", "-c", "1:bios", "-t", "1:EF02", "-n", "2:0:0", "-c", "2:root", raw},
		{"mkfs.ext4", "-q", "-L", "root", "-E", "offset=2097152", raw, "36864"},
	} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
	}
	b, _ := os.ReadFile(raw)
	enc, _ := zstd.NewWriter(nil)
	z := enc.EncodeAll(b, nil)
	sum := sha256.Sum256(z)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(z) }))
	t.Cleanup(srv.Close)
	imageFwd = busybox + " nc 127.0.0.1 " + srv.Listener.Addr().(*net.TCPAddr).AddrPort().String()[len("127.0.0.1:"):]
	return "http://10.0.2.100/image.raw.zst", hex.EncodeToString(sum[:])
}

// checkInstalled reads the marker the guest wrote into the installed root.
func checkInstalled(t *testing.T, disk string) {
	t.Helper()
	debugfs, err := exec.LookPath("debugfs")
	if err != nil {
		return
	}
	out, err := exec.Command(debugfs, "-R", "cat /kindling-installed", disk+"?offset=2097152").Output()
	if err != nil || string(out) != "ok\n" {
		t.Errorf("debugfs cat /kindling-installed on the installed disk = %q, %v; want \"ok\\n\"", out, err)
	}
}
