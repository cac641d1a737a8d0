package stages

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// gptImage partitions a 64 MiB image file with sgdisk (no root needed).
func gptImage(t *testing.T, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("sgdisk"); err != nil {
		t.Skipf("needs sgdisk (Debian package gdisk): %v", err)
	}
	img := filepath.Join(t.TempDir(), "gpt.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sgdisk", append(args, img)...).CombinedOutput(); err != nil {
		t.Fatalf("sgdisk %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return img
}

func TestReadGPT(t *testing.T) {
	img := gptImage(t,
		"--new=1:2048:+8192", "--change-name=1:EFI System", "--typecode=1:"+typeESP, "--partition-guid=1:"+guid1,
		"--new=3:0:+4096", "--change-name=3:données", "--partition-guid=3:"+strings.ToLower(guid3))
	want := []gptPartition{
		{Number: 1, Start: 2048, Size: 8192, TypeGUID: typeESP, GUID: guid1, Label: "EFI System"},
		{Number: 3, Start: 10240, Size: 4096, TypeGUID: typeLinux, GUID: guid3, Label: "données"},
	}
	tbl, err := readDiskTable(img, nil)
	if err != nil {
		t.Fatalf("readDiskTable(%s) = %v", img, err)
	}
	if !tbl.Found || tbl.SectorSize != 512 || tbl.Sectors != 131072 {
		t.Errorf("readDiskTable(%s) = found %v, %d-byte sectors, %d sectors; want a GPT, 512, 131072", img, tbl.Found, tbl.SectorSize, tbl.Sectors)
	}
	if diff := cmp.Diff(want, tbl.Partitions); diff != "" {
		t.Errorf("partitions (-want +got):\n%s", diff)
	}

	// With the primary header destroyed, the backup is read.
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 512), 512); err != nil {
		t.Fatal(err)
	}
	f.Close()
	tbl, err = readDiskTable(img, nil)
	if err != nil || !cmp.Equal(want, tbl.Partitions) {
		t.Errorf("readDiskTable with the backup only = %+v, %v; want %+v", tbl.Partitions, err, want)
	}
}

func TestReadGPTEmpty(t *testing.T) {
	img := filepath.Join(t.TempDir(), "blank.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tbl, err := readDiskTable(img, func(string) (string, error) { return "", nil })
	if err != nil || tbl.Found || len(tbl.Partitions) != 0 {
		t.Errorf("readDiskTable(blank) = %+v, %v; want an empty table", tbl, err)
	}
	_, err = readDiskTable(img, func(string) (string, error) { return "dos", nil })
	if err == nil || !strings.Contains(err.Error(), `partition table of type "dos", not GPT (set wipeTable to replace it)`) {
		t.Errorf("readDiskTable(MBR) = %v, want a not-GPT error", err)
	}
}

func TestParsePretend(t *testing.T) {
	out := `Creating new GPT entries in memory.
Partition GUID code: 0FC63DAF-8483-4772-8E79-3D69D8477DE4 (Linux filesystem)
Partition unique GUID: CE0E1B90-ED83-4CEC-ACA6-46E1661CA123
First sector: 2048 (at 1024.0 KiB)
Last sector: 67583 (at 33.0 MiB)
Partition size: 65536 sectors (32.0 MiB)
Partition name: ''
Partition GUID code: 0FC63DAF-8483-4772-8E79-3D69D8477DE4 (Linux filesystem)
First sector: 67584 (at 33.0 MiB)
Last sector: 524254 (at 256.0 MiB)
`
	got, err := parsePretend(out, []int{1, 4})
	want := map[int][2]int64{1: {2048, 65536}, 4: {67584, 456671}}
	if err != nil || !cmp.Equal(got, want) {
		t.Errorf("parsePretend() = %v, %v; want %v", got, err, want)
	}
	if _, err := parsePretend(out, []int{1, 2, 3}); err == nil {
		t.Errorf("parsePretend() with a missing partition = nil error")
	}
}

func TestSgdiskArgs(t *testing.T) {
	start, size := int64(2048), int64(4096)
	label, typ, guid := "root", typeESP, guid1
	got := sgdiskArgs([]int{2, 3}, []partSpec{{number: 1, start: &start, size: &size, label: &label, typeGUID: &typ, guid: &guid}, {number: 4}})
	want := []string{"--delete=2", "--delete=3", "--new=1:2048:+4096", "--change-name=1:root", "--typecode=1:" + typeESP, "--partition-guid=1:" + guid1, "--new=4:0:+0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sgdiskArgs() (-want +got):\n%s", diff)
	}
}

func TestSmallHelpers(t *testing.T) {
	for in, want := range map[string]string{`my\x20label`: "my label", `a\x2fb`: "a/b", `plain`: "plain", `bad\x2`: `bad\x2`, `\xzz`: `\xzz`} {
		if got := unescapeUdev(in); got != want {
			t.Errorf("unescapeUdev(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]int{"/": 0, "/var": 1, "/var/lib/": 2, "//a//b/c": 3} {
		if got := mountDepth(in); got != want {
			t.Errorf("mountDepth(%q) = %d, want %d", in, got, want)
		}
	}
	for _, tt := range []struct{ format, in, want string }{{"vfat", "A1B2-C3D4", "a1b2c3d4"}, {"vfat", "a1b2c3d4", "a1b2c3d4"}, {"ext4", "AB-CD", "ab-cd"}} {
		if got := canonicalFSUUID(tt.format, tt.in); got != tt.want {
			t.Errorf("canonicalFSUUID(%s, %s) = %s, want %s", tt.format, tt.in, got, tt.want)
		}
	}
	if got := mibText(65536, 512); got != "32 MiB" {
		t.Errorf("mibText(65536, 512) = %q", got)
	}
	if got := mibText(3, 512); got != "0.001 MiB" {
		t.Errorf("mibText(3, 512) = %q", got)
	}
}
