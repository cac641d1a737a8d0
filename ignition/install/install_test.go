package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func need(t *testing.T, tools ...string) {
	t.Helper()
	pkgs := map[string]string{"sgdisk": "gdisk", "mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs", "mkfs.btrfs": "btrfs-progs", "mkfs.fat": "dosfstools", "losetup": "mount", "partx": "util-linux"}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian package %s)", tool, pkgs[tool])
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// diskImage makes a 48 MiB GPT disk image: 1 "bios" (1 MiB, no
// filesystem), 2 "system" with an ext4 labelled "root", 3 "data" with a
// FAT labelled "DATA".
func diskImage(t *testing.T) []byte {
	t.Helper()
	need(t, "sgdisk", "mkfs.ext4", "mkfs.fat")
	p := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 48<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "sgdisk", "-o", "-n", "1:2048:+1M", "-t", "1:EF02", "-c", "1:bios",
		"-n", "2:0:+24M", "-t", "2:8304", "-c", "2:system", "-n", "3:0:0", "-c", "3:data", p)
	parts, err := readFile(p)
	if err != nil || len(parts) != 3 {
		t.Fatalf("ReadPartitions(%s) = %v, %v; want 3 partitions", p, parts, err)
	}
	run(t, "mkfs.ext4", "-q", "-L", "root", "-E", "offset="+strconv.FormatInt(parts[1].Start, 10), p, strconv.FormatInt(parts[1].Size>>10, 10))
	// mkfs.fat writes at an offset into an image of its own; copy it in.
	fat := filepath.Join(t.TempDir(), "fat.img")
	run(t, "mkfs.fat", "-n", "DATA", "-C", fat, strconv.FormatInt(parts[2].Size>>10, 10))
	fb, _ := os.ReadFile(fat)
	img, _ := os.ReadFile(p)
	copy(img[parts[2].Start:], fb)
	// Some payload past the ext4 superblock, so compression has work.
	copy(img[parts[1].Start+8<<20:], bytes.Repeat([]byte("kindling "), 100000))
	return img
}

func readFile(p string) ([]Partition, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadPartitions(f, 0)
}

func TestReadPartitions(t *testing.T) {
	img := diskImage(t)
	parts, err := ReadPartitions(bytes.NewReader(img), 0)
	if err != nil {
		t.Fatalf("ReadPartitions() = %v", err)
	}
	want := []Partition{
		{Number: 1, Name: "bios", Type: "21686148-6449-6E6F-744E-656564454649", Start: 1 << 20, Size: 1 << 20},
		{Number: 2, Name: "system", Type: "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709", Start: 2 << 20, Size: 24 << 20},
	}
	for i, w := range want {
		if parts[i] != w {
			t.Errorf("ReadPartitions()[%d] = %+v, want %+v", i, parts[i], w)
		}
	}
	labels := map[int][2]string{1: {"", ""}, 2: {"ext4", "root"}, 3: {"vfat", "DATA"}}
	for _, p := range parts {
		fstype, label, err := fsLabel(bytes.NewReader(img[p.Start : p.Start+p.Size]))
		if err != nil || fstype != labels[p.Number][0] || label != labels[p.Number][1] {
			t.Errorf("fsLabel(partition %d) = %q, %q, %v; want %q", p.Number, fstype, label, err, labels[p.Number])
		}
	}

	// A corrupt header is an error, not an empty disk.
	bad := append([]byte{}, img...)
	bad[512+100] ^= 1
	bad[512+24] ^= 1
	if _, err := ReadPartitions(bytes.NewReader(bad), 0); err == nil || !strings.Contains(err.Error(), "CRC") {
		t.Errorf("ReadPartitions(corrupt header) = %v, want a CRC error", err)
	}
	if _, err := ReadPartitions(bytes.NewReader(make([]byte, 1<<20)), 0); !errors.Is(err, errNoTable) {
		t.Errorf("ReadPartitions(zeros) = %v, want errNoTable", err)
	}

	// An MBR with one Linux partition at 1 MiB.
	mbr := make([]byte, 1<<20)
	e := mbr[446+16:]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], 2048)
	binary.LittleEndian.PutUint32(e[12:], 4096)
	mbr[510], mbr[511] = 0x55, 0xAA
	parts, err = ReadPartitions(bytes.NewReader(mbr), 0)
	if err != nil || len(parts) != 1 || parts[0] != (Partition{Number: 2, Type: "0x83", Start: 1 << 20, Size: 2 << 20}) {
		t.Errorf("ReadPartitions(MBR) = %+v, %v", parts, err)
	}
}

func TestFSLabels(t *testing.T) {
	tests := []struct {
		tool  string
		args  []string
		size  int64
		label string
	}{
		{"mkfs.ext4", []string{"-q", "-L", "root"}, 16 << 20, "root"},
		{"mkfs.xfs", []string{"-q", "-L", "rootxfs"}, 320 << 20, "rootxfs"},
		{"mkfs.btrfs", []string{"-q", "-L", "rootbtrfs"}, 128 << 20, "rootbtrfs"},
		{"mkfs.fat", []string{"-n", "EFI"}, 64 << 20, "EFI"},
	}
	for _, tt := range tests {
		t.Run(tt.tool, func(t *testing.T) {
			need(t, tt.tool)
			p := filepath.Join(t.TempDir(), "fs.img")
			os.WriteFile(p, nil, 0o644)
			os.Truncate(p, tt.size)
			run(t, tt.tool, append(tt.args, p)...)
			_, label, err := FSLabel(p)
			if err != nil || label != tt.label {
				t.Errorf("FSLabel(%s image) = %q, %v; want %q", tt.tool, label, err, tt.label)
			}
		})
	}
}

func TestPartitionPath(t *testing.T) {
	for _, tt := range [][3]string{{"/dev/vda", "3", "/dev/vda3"}, {"/dev/nvme0n1", "1", "/dev/nvme0n1p1"}, {"/dev/loop7", "2", "/dev/loop7p2"}, {"/dev/sda", "12", "/dev/sda12"}} {
		n, _ := strconv.Atoi(tt[1])
		if got := PartitionPath(tt[0], n); got != tt[2] {
			t.Errorf("PartitionPath(%s, %d) = %s, want %s", tt[0], n, got, tt[2])
		}
	}
}

func compress(t *testing.T, format string, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	switch format {
	case "raw":
		return b
	case "gzip":
		w := gzip.NewWriter(&out)
		w.Write(b)
		w.Close()
	case "xz":
		w, err := xz.NewWriter(&out)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
		w.Close()
	case "zstd":
		w, _ := zstd.NewWriter(&out)
		w.Write(b)
		w.Close()
	}
	return out.Bytes()
}

func serve(t *testing.T, files map[string][]byte) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func hexHash(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// loopDevice attaches a sparse file of size bytes as a loop device with
// partition scanning.
func loopDevice(t *testing.T, size int64) (dev, file string) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("loop devices need root")
	}
	need(t, "losetup", "partx")
	file = filepath.Join(t.TempDir(), "target.raw")
	os.WriteFile(file, nil, 0o644)
	if err := os.Truncate(file, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", "-P", file).CombinedOutput()
	if err != nil {
		t.Skipf("losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		exec.Command("partx", "-d", dev).Run()
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev, file
}

// TestImage installs the disk image, in every format, onto a real loop
// device and finds its root.
func TestImage(t *testing.T) {
	img := diskImage(t)
	files := map[string][]byte{}
	for _, f := range []string{"raw", "gzip", "xz", "zstd"} {
		files["/disk."+f] = compress(t, f, img)
	}
	srv := serve(t, files)
	for _, format := range []string{"raw", "gzip", "xz", "zstd"} {
		t.Run(format, func(t *testing.T) {
			dev, file := loopDevice(t, 64<<20)
			// Old data where the image has zeros must be overwritten.
			f, _ := os.OpenFile(file, os.O_WRONLY, 0)
			f.WriteAt(bytes.Repeat([]byte{0xAB}, 4<<20), 40<<20)
			f.Close()
			served := files["/disk."+format]
			res, err := Image(t.Context(), Options{Device: dev, URL: srv.URL + "/disk." + format, SHA256: strings.ToUpper(hexHash(served))})
			if err != nil {
				t.Fatalf("Image(%s) = %v", format, err)
			}
			if res.Format != format || res.Written != int64(len(img)) || res.Downloaded != int64(len(served)) || res.SHA256 != hexHash(served) {
				t.Errorf("Image(%s) = %+v; want format %s, written %d, downloaded %d", format, res, format, len(img), len(served))
			}
			if want := []string{dev + "p1", dev + "p2", dev + "p3"}; strings.Join(res.Partitions, " ") != strings.Join(want, " ") {
				t.Errorf("Image(%s).Partitions = %v, want %v", format, res.Partitions, want)
			}
			got, _ := os.ReadFile(file)
			if !bytes.Equal(got[:len(img)], img) {
				t.Errorf("Image(%s): the disk differs from the image", format)
			}
			root, err := FindRoot(t.Context(), dev, "")
			if err != nil || root != dev+"p2" {
				t.Errorf("FindRoot(%s, \"\") = %q, %v; want %sp2 (ext4 label root)", dev, root, err, dev)
			}
			if root, err := FindRoot(t.Context(), dev, "data"); err != nil || root != dev+"p3" {
				t.Errorf("FindRoot(%s, data) = %q, %v; want %sp3 (partition name)", dev, root, err, dev)
			}
			if _, err := FindRoot(t.Context(), dev, "nope"); err == nil || !strings.Contains(err.Error(), `named or labelled "nope"`) || !strings.Contains(err.Error(), `ext4 label "root"`) {
				t.Errorf("FindRoot(%s, nope) = %v, want an error listing what was found", dev, err)
			}
		})
	}

	t.Run("bad hash", func(t *testing.T) {
		dev, file := loopDevice(t, 64<<20)
		wrong := strings.Repeat("ab", 32)
		_, err := Image(t.Context(), Options{Device: dev, URL: srv.URL + "/disk.zstd", SHA256: wrong})
		if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), wrong) || !strings.Contains(err.Error(), hexHash(files["/disk.zstd"])) {
			t.Fatalf("Image(wrong hash) = %v, want ErrHashMismatch naming both hashes", err)
		}
		got, _ := os.ReadFile(file)
		if !bytes.Equal(got[:1<<20], make([]byte, 1<<20)) {
			t.Errorf("after a hash mismatch the disk's first MiB is not zeroed")
		}
		if _, err := ReadPartitions(bytes.NewReader(got), 0); !errors.Is(err, errNoTable) {
			t.Errorf("after a hash mismatch ReadPartitions = %v, want no table", err)
		}
	})

	t.Run("too large", func(t *testing.T) {
		dev, _ := loopDevice(t, 32<<20)
		_, err := Image(t.Context(), Options{Device: dev, URL: srv.URL + "/disk.gzip"})
		if err == nil || !strings.Contains(err.Error(), "larger than "+dev) {
			t.Errorf("Image(48 MiB gzip onto 32 MiB) = %v, want a size error", err)
		}
		// A raw image's size is known before anything is written.
		_, err = Image(t.Context(), Options{Device: dev, URL: srv.URL + "/disk.raw"})
		if err == nil || !strings.Contains(err.Error(), "nothing was written") {
			t.Errorf("Image(48 MiB raw onto 32 MiB) = %v, want a size error before writing", err)
		}
	})
}

func TestImageErrors(t *testing.T) {
	srv := serve(t, map[string][]byte{"/x": []byte("data")})
	file := filepath.Join(t.TempDir(), "out")
	os.WriteFile(file, nil, 0o644)
	tests := []struct {
		name string
		o    Options
		want string
	}{
		{"no device", Options{URL: srv.URL + "/x"}, "no device"},
		{"bad url", Options{Device: file, URL: "ftp://x/y"}, "want http:// or https://"},
		{"bad hash", Options{Device: file, URL: srv.URL + "/x", SHA256: "abc"}, "want 64 hex digits"},
		{"missing device", Options{Device: "/nonexistent/disk", URL: srv.URL + "/x"}, "no such file"},
		{"char device", Options{Device: "/dev/null", URL: srv.URL + "/x"}, "not a block device"},
		{"404", Options{Device: file, URL: srv.URL + "/missing"}, "404 Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Image(context.Background(), tt.o); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Image(%+v) = %v, want an error containing %q", tt.o, err, tt.want)
			}
		})
	}
	// A regular file is a valid target: the image is copied as is.
	res, err := Image(context.Background(), Options{Device: file, URL: srv.URL + "/x", SHA256: hexHash([]byte("data"))})
	if got, _ := os.ReadFile(file); err != nil || string(got) != "data" || res.Format != "raw" {
		t.Errorf("Image(to a file) = %+v, %v; file %q", res, err, got)
	}
}
