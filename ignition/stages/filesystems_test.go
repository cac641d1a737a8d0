package stages

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/google/go-cmp/cmp"
)

// blkidProbe returns TYPE, LABEL and UUID of dev as blkid -p reports them.
func blkidProbe(t *testing.T, dev string) fsInfo {
	t.Helper()
	out, err := exec.Command("blkid", "-p", "-d", "-o", "export", dev).Output()
	if err != nil && cmdExitCode(err) != 2 {
		t.Fatalf("blkid -p %s: %v", dev, err)
	}
	kv := parseBlkidExport(string(out))
	return fsInfo{Type: kv["TYPE"], Label: kv["LABEL"], UUID: kv["UUID"]}
}

func TestFilesystemFormats(t *testing.T) {
	needDiskTools(t, "mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "mkfs.fat", "mkswap", "dumpe2fs")
	dev, _ := loopDisk(t, 1024)
	p := dev + partSuffix(dev)
	vars := map[string]string{"disk": dev, "p": p}
	ctx := context.Background()
	env := diskEnv(t)
	// Partition 6 holds an ext4 that format none with wipeFilesystem wipes.
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","partitions":[
		{"number":1,"sizeMiB":64},{"number":2,"sizeMiB":320},{"number":3,"sizeMiB":160},
		{"number":4,"sizeMiB":64},{"number":5,"sizeMiB":32},{"number":6,"sizeMiB":16}]}],
		"filesystems":[{"device":"$p6","format":"ext4"}]}`, vars)
	if err := Disks(ctx, env, cfg); err != nil {
		t.Fatalf("setup: %v", err)
	}
	cfg = parseStorage(t, `{"filesystems":[
		{"device":"$p1","format":"ext4","label":"root","uuid":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","options":["-m","0"]},
		{"device":"$p2","format":"xfs","label":"var","uuid":"2C4E28BA-2FA1-11D2-883F-0016D3CCA427"},
		{"device":"$p3","format":"btrfs","label":"home","uuid":"3d4e28ba-2fa1-11d2-883f-0016d3cca427"},
		{"device":"$p4","format":"vfat","label":"EFI","uuid":"A1B2-C3D4"},
		{"device":"$p5","format":"swap","label":"swap","uuid":"5f4e28ba-2fa1-11d2-883f-0016d3cca427"},
		{"device":"$p6","format":"none","wipeFilesystem":true}]}`, vars)
	if err := Disks(ctx, env, cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	want := []fsInfo{
		{Type: "ext4", Label: "root", UUID: "1b4e28ba-2fa1-11d2-883f-0016d3cca427"},
		{Type: "xfs", Label: "var", UUID: "2c4e28ba-2fa1-11d2-883f-0016d3cca427"},
		{Type: "btrfs", Label: "home", UUID: "3d4e28ba-2fa1-11d2-883f-0016d3cca427"},
		{Type: "vfat", Label: "EFI", UUID: "A1B2-C3D4"},
		{Type: "swap", Label: "swap", UUID: "5f4e28ba-2fa1-11d2-883f-0016d3cca427"},
		{},
	}
	for i, w := range want {
		part := partitionDevPath(filepath.Base(dev), i+1)
		if got := blkidProbe(t, part); got != w {
			t.Errorf("blkid -p %s = %+v, want %+v", part, got, w)
		}
	}
	if out := mustRun(t, "dumpe2fs", "-h", partitionDevPath(filepath.Base(dev), 1)); !strings.Contains(out, "Reserved block count:     0\n") {
		t.Errorf("ext4 options -m 0 not applied: %s", out)
	}
	// A rerun reuses every filesystem, the vfat id given without its dash
	// included; format none with wipeFilesystem wipes again.
	cfg.Filesystems[3].UUID = ptrTo("a1b2c3d4")
	env.Plan = &Plan{}
	if err := Disks(ctx, env, cfg); err != nil {
		t.Fatalf("plan rerun: %v", err)
	}
	var verbs []string
	for _, a := range env.Plan.Actions {
		verbs = append(verbs, a.Verb)
	}
	if diff := cmp.Diff([]string{"reuse", "reuse", "reuse", "reuse", "reuse", "wipe"}, verbs); diff != "" {
		t.Errorf("rerun plan verbs (-want +got):\n%s", diff)
	}
}

func ptrTo[T any](v T) *T { return &v }

func TestFilesystemReuseKeepsData(t *testing.T) {
	needDiskTools(t, "mkfs.ext4", "mount")
	dev, _ := loopDisk(t, 128)
	label := uniqLabel("data")
	vars := map[string]string{"disk": dev, "label": label}
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"$label"}]}],
		"filesystems":[{"device":"/dev/disk/by-partlabel/$label","format":"ext4","label":"data"}]}`, vars)
	ctx := context.Background()
	if err := Disks(ctx, diskEnv(t), cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	part := partitionDevPath(filepath.Base(dev), 1)
	mnt := t.TempDir()
	mustRun(t, "mount", part, mnt)
	if err := os.WriteFile(filepath.Join(mnt, "kept"), []byte("still here"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "umount", mnt)
	uuid := blkidProbe(t, part).UUID
	if err := Disks(ctx, diskEnv(t), cfg); err != nil {
		t.Fatalf("rerun Disks() = %v", err)
	}
	if got := blkidProbe(t, part).UUID; got != uuid {
		t.Errorf("uuid after rerun = %s, want %s (reused)", got, uuid)
	}
	mustRun(t, "mount", part, mnt)
	defer mustRun(t, "umount", mnt)
	if b, err := os.ReadFile(filepath.Join(mnt, "kept")); err != nil || string(b) != "still here" {
		t.Errorf("file after reuse = %q, %v, want %q", b, err, "still here")
	}
}

func TestFilesystemMismatch(t *testing.T) {
	needDiskTools(t, "mkfs.ext4", "mkfs.xfs", "mkfs.fat")
	dev, img := loopDisk(t, 64)
	p1 := dev + partSuffix(dev) + "1"
	vars := map[string]string{"disk": dev, "p1": p1}
	ctx := context.Background()
	if err := Disks(ctx, diskEnv(t), parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1}]}],
		"filesystems":[{"device":"$p1","format":"ext4","label":"old","uuid":"1b4e28ba-2fa1-11d2-883f-0016d3cca427"}]}`, vars)); err != nil {
		t.Fatalf("setup: %v", err)
	}
	mustRun(t, "sync")
	tests := []struct {
		name string
		fs   string
		want string
	}{
		{"other format", `{"device":"$p1","format":"xfs"}`, `creating xfs filesystem on $p1: $p1 holds ext4 labelled "old" with uuid 1b4e28ba-2fa1-11d2-883f-0016d3cca427, the config wants xfs, and wipeFilesystem is false`},
		{"other label", `{"device":"$p1","format":"ext4","label":"new"}`, `the config wants ext4 labelled "new"`},
		{"other uuid", `{"device":"$p1","format":"ext4","uuid":"9b4e28ba-2fa1-11d2-883f-0016d3cca427"}`, `wants ext4 with uuid 9b4e28ba-2fa1-11d2-883f-0016d3cca427`},
		{"format none", `{"device":"$p1","format":"none"}`, `the config wants no filesystem`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum := imageSum(t, img)
			err := Disks(ctx, diskEnv(t), parseStorage(t, `{"filesystems":[`+tt.fs+`]}`, vars))
			if want := strings.ReplaceAll(tt.want, "$p1", p1); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Disks(%s) = %v, want an error containing %q", tt.fs, err, want)
			}
			if imageSum(t, img) != sum {
				t.Errorf("a failed Disks(%s) changed the disk", tt.fs)
			}
		})
	}
	// With wipeFilesystem the filesystem is replaced.
	if err := Disks(ctx, diskEnv(t), parseStorage(t, `{"filesystems":[{"device":"$p1","format":"vfat","label":"NEW","wipeFilesystem":true}]}`, vars)); err != nil {
		t.Fatalf("Disks() with wipeFilesystem = %v", err)
	}
	if got := blkidProbe(t, p1); got.Type != "vfat" || got.Label != "NEW" {
		t.Errorf("blkid after wipe = %+v, want vfat labelled NEW", got)
	}
}

// TestFilesystemErrorsJoined checks that every failing filesystem of a
// concurrent run is reported.
func TestFilesystemErrorsJoined(t *testing.T) {
	needDiskTools(t, "mkfs.ext4")
	dev, _ := loopDisk(t, 64)
	p := dev + partSuffix(dev)
	vars := map[string]string{"disk": dev, "p": p}
	ctx := context.Background()
	if err := Disks(ctx, diskEnv(t), parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1,"sizeMiB":16},{"number":2,"sizeMiB":16}]}],
		"filesystems":[{"device":"$p1","format":"ext4"},{"device":"$p2","format":"ext4"}]}`, vars)); err != nil {
		t.Fatalf("setup: %v", err)
	}
	err := Disks(ctx, diskEnv(t), parseStorage(t, `{"filesystems":[{"device":"$p1","format":"swap"},{"device":"$p2","format":"btrfs"}]}`, vars))
	if err == nil || !strings.Contains(err.Error(), "creating swap filesystem on "+p+"1") || !strings.Contains(err.Error(), "creating btrfs filesystem on "+p+"2") {
		t.Errorf("Disks() = %v, want both failures", err)
	}
}

func TestMkfsCommand(t *testing.T) {
	tests := []struct {
		fs       types.Filesystem
		tool     string
		wantArgs []string
	}{
		{types.Filesystem{Format: ptrTo("ext4"), Label: ptrTo("root"), UUID: ptrTo("AB-CD"), Options: []types.FilesystemOption{"-m", "0"}}, "mkfs.ext4", []string{"-m", "0", "-F", "-U", "ab-cd", "-L", "root"}},
		{types.Filesystem{Format: ptrTo("btrfs"), Label: ptrTo("b")}, "mkfs.btrfs", []string{"--force", "-L", "b"}},
		{types.Filesystem{Format: ptrTo("xfs"), UUID: ptrTo("X")}, "mkfs.xfs", []string{"-f", "-m", "uuid=x"}},
		{types.Filesystem{Format: ptrTo("swap")}, "mkswap", []string{"-f"}},
		{types.Filesystem{Format: ptrTo("vfat"), UUID: ptrTo("A1B2-C3D4"), Label: ptrTo("EFI")}, "mkfs.fat", []string{"-i", "a1b2c3d4", "-n", "EFI"}},
	}
	for _, tt := range tests {
		tool, args, err := mkfsCommand(tt.fs)
		if err != nil || tool != tt.tool || !cmp.Equal(args, tt.wantArgs) {
			t.Errorf("mkfsCommand(%s) = %s %q, %v, want %s %q", *tt.fs.Format, tool, args, err, tt.tool, tt.wantArgs)
		}
	}
	if _, _, err := mkfsCommand(types.Filesystem{Format: ptrTo("zfs")}); err == nil {
		t.Errorf("mkfsCommand(zfs) = nil error, want unsupported")
	}
}
