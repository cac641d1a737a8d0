package stages

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/google/go-cmp/cmp"
)

// mountedAt returns the filesystem type and options of the mount at
// target, or "" when nothing is mounted there.
func mountedAt(t *testing.T, target string) (fstype, opts string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if ok && len(pf) > 5 && len(qf) > 0 && mountinfoUnescape.Replace(pf[4]) == target {
			fstype, opts = qf[0], pf[5]
		}
	}
	return fstype, opts
}

func TestMountUnmount(t *testing.T) {
	needDiskTools(t, "mkfs.ext4", "mkswap", "mount")
	dev, _ := loopDisk(t, 128)
	p := dev + partSuffix(dev)
	vars := map[string]string{"disk": dev, "p": p}
	ctx := context.Background()
	env := diskEnv(t)
	// Deepest first in the config: Mount must sort.
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1,"sizeMiB":32},{"number":2,"sizeMiB":32},{"number":3,"sizeMiB":16}]}],
		"filesystems":[
		{"device":"$p2","format":"ext4","path":"/var/lib/data","mountOptions":["noatime"]},
		{"device":"$p3","format":"swap","path":"/swap"},
		{"device":"$p1","format":"ext4","path":"/"}]}`, vars)
	if err := Disks(ctx, env, cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	unmount, err := Mount(ctx, env, cfg)
	if err != nil {
		unmount(ctx)
		t.Fatalf("Mount() = %v", err)
	}
	t.Cleanup(func() { unmount(ctx) })
	root, _ := filepath.EvalSymlinks(env.Root)
	deep := filepath.Join(root, "var/lib/data")
	if fstype, _ := mountedAt(t, root); fstype != "ext4" {
		t.Errorf("mount at %s = %q, want ext4", root, fstype)
	}
	if fstype, opts := mountedAt(t, deep); fstype != "ext4" || !strings.Contains(opts, "noatime") {
		t.Errorf("mount at %s = %q %q, want ext4 with noatime", deep, fstype, opts)
	}
	if _, err := os.Stat(filepath.Join(root, "swap")); !os.IsNotExist(err) {
		t.Errorf("swap mount point made: %v", err)
	}
	// The mount points made inside the root filesystem are 0755.
	st, err := os.Stat(filepath.Join(root, "var"))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("mount point /var = %v, %v, want a 0755 directory", st, err)
	}
	if err := os.WriteFile(filepath.Join(deep, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unmount(ctx); err != nil {
		t.Fatalf("Unmount() = %v", err)
	}
	for _, target := range []string{root, deep} {
		if fstype, _ := mountedAt(t, target); fstype != "" {
			t.Errorf("%s still mounted (%s) after Unmount", target, fstype)
		}
	}
	if err := unmount(ctx); err != nil {
		t.Errorf("second Unmount() = %v, want nil", err)
	}
	// The file went to the second filesystem, under the first.
	if _, err := os.Stat(filepath.Join(root, "var/lib/data/f")); !os.IsNotExist(err) {
		t.Errorf("file visible without the mounts: %v", err)
	}
}

func TestMountRefusesNonDirectory(t *testing.T) {
	needDiskTools(t, "mkfs.ext4", "mount")
	dev, _ := loopDisk(t, 64)
	p := dev + partSuffix(dev)
	ctx := context.Background()
	env := diskEnv(t)
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1}]}],
		"filesystems":[{"device":"$p1","format":"ext4","path":"/var/lib"}]}`, map[string]string{"disk": dev, "p": p})
	if err := Disks(ctx, env, cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(env.Root, "var")); err != nil {
		t.Fatal(err)
	}
	unmount, err := Mount(ctx, env, cfg)
	if unmount == nil {
		t.Fatal("Mount() returned a nil Unmount")
	}
	defer unmount(ctx)
	if err == nil || !strings.Contains(err.Error(), "mounting "+p+"1 at /var/lib") || !strings.Contains(err.Error(), "/var is a symlink") {
		t.Errorf("Mount() through a symlink = %v, want a refusal naming /var", err)
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("Mount() wrote outside the root: %v", ents)
	}
	if fstype, _ := mountedAt(t, filepath.Join(outside, "lib")); fstype != "" {
		t.Errorf("mounted outside the root")
	}
}

// TestMountPartial checks that Unmount undoes a Mount that failed half way.
func TestMountPartial(t *testing.T) {
	needDiskTools(t, "mkfs.ext4", "mount")
	dev, _ := loopDisk(t, 64)
	p := dev + partSuffix(dev)
	vars := map[string]string{"disk": dev, "p": p}
	ctx := context.Background()
	env := diskEnv(t)
	if err := Disks(ctx, env, parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1,"sizeMiB":16},{"number":2,"sizeMiB":16}]}],
		"filesystems":[{"device":"$p1","format":"ext4"},{"device":"$p2","format":"ext4"}]}`, vars)); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	// The second mount names the wrong type and fails.
	cfg := parseStorage(t, `{"filesystems":[{"device":"$p1","format":"ext4","path":"/"},{"device":"$p2","format":"xfs","path":"/srv"}]}`, vars)
	unmount, err := Mount(ctx, env, cfg)
	if err == nil || !strings.Contains(err.Error(), "mounting "+p+"2 at /srv") {
		t.Errorf("Mount() = %v, want the /srv mount to fail", err)
	}
	root, _ := filepath.EvalSymlinks(env.Root)
	if fstype, _ := mountedAt(t, root); fstype != "ext4" {
		t.Errorf("first mount missing before Unmount")
	}
	if err := unmount(ctx); err != nil {
		t.Errorf("Unmount() after a partial Mount = %v", err)
	}
	if fstype, _ := mountedAt(t, root); fstype != "" {
		t.Errorf("%s still mounted after Unmount", root)
	}
}

func TestMountPlan(t *testing.T) {
	env := diskEnv(t)
	env.Plan = &Plan{}
	cfg := parseStorage(t, `{"filesystems":[{"device":"/dev/disk/by-label/var","format":"xfs","path":"/var","mountOptions":["ro","noatime"]},
		{"device":"/dev/disk/by-label/root","format":"ext4","path":"/"},{"device":"/dev/vdz","format":"swap","path":"/x"}]}`, nil)
	unmount, err := Mount(context.Background(), env, cfg)
	if err != nil {
		t.Fatalf("plan Mount() = %v", err)
	}
	want := []Action{
		{Stage: "mount", Verb: "mount", Target: "/", Detail: "ext4 filesystem on /dev/disk/by-label/root"},
		{Stage: "mount", Verb: "mount", Target: "/var", Detail: "xfs filesystem on /dev/disk/by-label/var, options ro,noatime"},
	}
	if diff := cmp.Diff(want, env.Plan.Actions); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	if err := unmount(context.Background()); err != nil {
		t.Errorf("plan Unmount() = %v", err)
	}
	if ents, _ := os.ReadDir(env.Root); len(ents) != 0 {
		t.Errorf("plan Mount() wrote into the root: %v", ents)
	}
}

// TestMountWritesLuksFiles checks the key files and crypttab Mount writes
// for the LUKS volumes Disks opened.
func TestMountWritesLuksFiles(t *testing.T) {
	env := diskEnv(t)
	if err := os.MkdirAll(filepath.Join(env.Root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(env.Root, "etc/crypttab"), []byte("swap /dev/sdb1 /dev/urandom swap"), 0o644); err != nil {
		t.Fatal(err)
	}
	rememberLuks(env, "root", luksVolume{uuid: "11111111-2222-3333-4444-555555555555", key: []byte("secret key")})
	rememberLuks(env, "data", luksVolume{uuid: "66666666-2222-3333-4444-555555555555", key: []byte("generated")})
	s := types.Storage{Luks: []types.Luks{{Name: "root", Device: ptrTo("/dev/vdz1")}, {Name: "data", Device: ptrTo("/dev/vdz2")}}}
	for i := 0; i < 2; i++ { // twice: lines are not repeated
		if i == 1 {
			rememberLuks(env, "root", luksVolume{uuid: "11111111-2222-3333-4444-555555555555", key: []byte("secret key")})
			rememberLuks(env, "data", luksVolume{uuid: "66666666-2222-3333-4444-555555555555", key: []byte("generated")})
		}
		unmount, err := Mount(context.Background(), env, s)
		if err != nil {
			t.Fatalf("Mount() = %v", err)
		}
		unmount(context.Background())
	}
	b, err := os.ReadFile(filepath.Join(env.Root, "etc/crypttab"))
	if err != nil {
		t.Fatal(err)
	}
	want := "swap /dev/sdb1 /dev/urandom swap\n" +
		"root UUID=11111111-2222-3333-4444-555555555555 /etc/luks/root luks,x-initrd.attach\n" +
		"data UUID=66666666-2222-3333-4444-555555555555 /etc/luks/data luks,x-initrd.attach\n"
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("crypttab (-want +got):\n%s", diff)
	}
	for path, mode := range map[string]os.FileMode{"etc/crypttab": 0o600, "etc/luks": 0o700 | os.ModeDir, "etc/luks/root": 0o600, "etc/luks/data": 0o600} {
		st, err := os.Lstat(filepath.Join(env.Root, path))
		if err != nil || st.Mode() != mode {
			t.Errorf("mode of /%s = %v, %v, want %v", path, st.Mode(), err, mode)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(env.Root, "etc/luks/root")); string(b) != "secret key" {
		t.Errorf("/etc/luks/root = %q, want the key", b)
	}
	// Without what Disks remembered, a generated key cannot be written.
	if _, err := Mount(context.Background(), env, s); err == nil || !strings.Contains(err.Error(), "did not open luks root") {
		t.Errorf("Mount() without Disks = %v, want an error", err)
	}
}

// TestMountVfat mounts an EFI system partition, where the kernel has vfat.
func TestMountVfat(t *testing.T) {
	needDiskTools(t, "mkfs.fat", "mount")
	if fss, _ := os.ReadFile("/proc/filesystems"); !strings.Contains(string(fss), "\tvfat\n") {
		t.Skip("the kernel has no vfat (not in /proc/filesystems; modprobe vfat)")
	}
	dev, _ := loopDisk(t, 64)
	ctx := context.Background()
	env := diskEnv(t)
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"esp","typeGuid":"`+typeESP+`"}]}],
		"filesystems":[{"device":"$p1","format":"vfat","label":"EFI","path":"/boot/efi","mountOptions":["umask=0077"]}]}`,
		map[string]string{"disk": dev, "p": dev + partSuffix(dev)})
	if err := Disks(ctx, env, cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	unmount, err := Mount(ctx, env, cfg)
	defer unmount(ctx)
	if err != nil {
		t.Fatalf("Mount() = %v", err)
	}
	root, _ := filepath.EvalSymlinks(env.Root)
	if fstype, _ := mountedAt(t, filepath.Join(root, "boot/efi")); fstype != "vfat" {
		t.Errorf("mount at /boot/efi = %q, want vfat", fstype)
	}
	if err := unmount(ctx); err != nil {
		t.Errorf("Unmount() = %v", err)
	}
}
