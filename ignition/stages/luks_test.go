package stages

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// diskFetchFunc adapts a function to Fetcher.
type diskFetchFunc func(ctx context.Context, r types.Resource) ([]byte, error)

func (f diskFetchFunc) Fetch(ctx context.Context, r types.Resource) ([]byte, error) { return f(ctx, r) }

// keyFetcher serves key for any source.
func keyFetcher(key string) Fetcher {
	return diskFetchFunc(func(context.Context, types.Resource) ([]byte, error) { return []byte(key), nil })
}

// needDM skips unless device-mapper works.
func needDM(t *testing.T) {
	t.Helper()
	needDiskTools(t, "cryptsetup")
	if misc, _ := os.ReadFile("/proc/misc"); !strings.Contains(string(misc), "device-mapper") {
		t.Skip("the kernel has no device-mapper (not in /proc/misc; modprobe dm_crypt)")
	}
}

// fastKDF keeps luksFormat and open quick in tests.
const fastKDF = `"options":["--pbkdf","pbkdf2","--pbkdf-force-iterations","1000"]`

func TestLuksKeyFile(t *testing.T) {
	needDM(t)
	needDiskTools(t, "mkfs.ext4", "mount")
	dev, _ := loopDisk(t, 64)
	name := uniqLabel("crypt")
	t.Cleanup(func() { exec.Command("cryptsetup", "close", name).Run() })
	vars := map[string]string{"disk": dev, "name": name, "p": dev + partSuffix(dev)}
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1}]}],
		"luks":[{"name":"$name","device":"$p1","keyFile":{"source":"data:,secret"},"label":"vault","uuid":"8d3b5a1c-2e4f-4a6b-9c8d-0e1f2a3b4c5d",`+fastKDF+`}],
		"filesystems":[{"device":"/dev/mapper/$name","format":"ext4","label":"inside","path":"/"}]}`, vars)
	ctx := context.Background()
	env := diskEnv(t)
	env.Fetch = keyFetcher("secret")
	if err := Disks(ctx, env, cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	if got := blkidProbe(t, dev+partSuffix(dev)+"1"); got.Type != "crypto_LUKS" || got.Label != "vault" || got.UUID != "8d3b5a1c-2e4f-4a6b-9c8d-0e1f2a3b4c5d" {
		t.Errorf("blkid on the volume = %+v, want crypto_LUKS labelled vault", got)
	}
	if got := blkidProbe(t, "/dev/mapper/"+name); got.Type != "ext4" || got.Label != "inside" {
		t.Errorf("blkid /dev/mapper/%s = %+v, want ext4 labelled inside", name, got)
	}
	unmount, err := Mount(ctx, env, cfg)
	if err != nil {
		unmount(ctx)
		t.Fatalf("Mount() = %v", err)
	}
	crypttab, _ := os.ReadFile(filepath.Join(env.Root, "etc/crypttab"))
	key, _ := os.ReadFile(filepath.Join(env.Root, "etc/luks", name))
	if err := unmount(ctx); err != nil {
		t.Fatalf("Unmount() = %v", err)
	}
	if want := name + " UUID=8d3b5a1c-2e4f-4a6b-9c8d-0e1f2a3b4c5d /etc/luks/" + name + " luks,x-initrd.attach\n"; string(crypttab) != want {
		t.Errorf("crypttab = %q, want %q", crypttab, want)
	}
	if string(key) != "secret" {
		t.Errorf("key file = %q, want the keyFile", key)
	}
	mustRun(t, "cryptsetup", "close", name)

	// A rerun reuses the volume (opening it with the key) and the
	// filesystem in it.
	cfg.Filesystems[0].Path = nil
	if err := Disks(ctx, env, cfg); err != nil {
		t.Fatalf("rerun Disks() = %v", err)
	}
	if got := blkidProbe(t, "/dev/mapper/"+name); got.Type != "ext4" || got.Label != "inside" {
		t.Errorf("after reuse blkid /dev/mapper/%s = %+v, want the same ext4", name, got)
	}
	mustRun(t, "cryptsetup", "close", name)
	takeLuks(env)

	// Another key cannot reuse it, and without wipeVolume nothing changes.
	env.Fetch = keyFetcher("wrong")
	err = Disks(ctx, env, cfg)
	if err == nil || !strings.Contains(err.Error(), "cannot be reused (the keyFile does not open it), and wipeVolume is false") {
		t.Errorf("Disks() with another key = %v, want a reuse failure", err)
	}
}

func TestLuksGeneratedKey(t *testing.T) {
	needDM(t)
	dev, _ := loopDisk(t, 64)
	name := uniqLabel("gen")
	t.Cleanup(func() { exec.Command("cryptsetup", "close", name).Run() })
	vars := map[string]string{"disk": dev, "name": name, "p": dev + partSuffix(dev)}
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1}]}],
		"luks":[{"name":"$name","device":"$p1","wipeVolume":true,"discard":true,`+fastKDF+`}]}`, vars)
	ctx := context.Background()
	env := diskEnv(t)
	if err := Disks(ctx, env, cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	unmount, err := Mount(ctx, env, cfg)
	if err != nil {
		t.Fatalf("Mount() = %v", err)
	}
	unmount(ctx)
	key, err := os.ReadFile(filepath.Join(env.Root, "etc/luks", name))
	if err != nil || len(key) != 8192 {
		t.Fatalf("generated key file: %d bytes, %v; want 8192 hex characters", len(key), err)
	}
	cmd := exec.Command("cryptsetup", "open", "--test-passphrase", "--key-file", "-", dev+partSuffix(dev)+"1")
	cmd.Stdin = bytes.NewReader(key)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("the written key does not open the volume: %v: %s", err, out)
	}
	if dump := mustRun(t, "cryptsetup", "luksDump", dev+partSuffix(dev)+"1"); !strings.Contains(dump, "allow-discards") {
		t.Errorf("discard not persisted in the header:\n%s", dump)
	}
}

// TestLuksRefusesExisting checks that a device holding a filesystem is not
// formatted without wipeVolume (no device-mapper needed: it fails first).
func TestLuksRefusesExisting(t *testing.T) {
	needDiskTools(t, "cryptsetup", "mkfs.ext4")
	dev, img := loopDisk(t, 64)
	p1 := dev + partSuffix(dev) + "1"
	vars := map[string]string{"disk": dev, "p1": p1}
	ctx := context.Background()
	if err := Disks(ctx, diskEnv(t), parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1}]}],"filesystems":[{"device":"$p1","format":"ext4"}]}`, vars)); err != nil {
		t.Fatalf("setup: %v", err)
	}
	mustRun(t, "sync")
	sum := imageSum(t, img)
	env := diskEnv(t)
	env.Fetch = keyFetcher("k")
	err := Disks(ctx, env, parseStorage(t, `{"luks":[{"name":"x","device":"$p1","keyFile":{"source":"data:,k"}}]}`, vars))
	if err == nil || !strings.Contains(err.Error(), "luks x on "+p1+": "+p1+" holds ext4") || !strings.Contains(err.Error(), "wipeVolume is false") {
		t.Errorf("Disks() = %v, want a refusal naming the ext4", err)
	}
	if imageSum(t, img) != sum {
		t.Errorf("the refused luks changed the disk")
	}
}

func TestLuksUnsupported(t *testing.T) {
	tests := []struct {
		luks string
		want string
	}{
		{`{"name":"data","device":"/dev/vdz","clevis":{"tpm2":true}}`, "luks data: clevis (tang/tpm2) is not supported by ignite"},
		{`{"name":"data","device":"/dev/vdz","clevis":{"tang":[{"url":"http://tang","thumbprint":"x"}]}}`, "luks data: clevis (tang/tpm2) is not supported by ignite"},
		{`{"name":"data","device":"/dev/vdz","cex":{"enabled":true}}`, "luks data: cex (IBM Crypto Express) is not supported by ignite"},
	}
	for _, tt := range tests {
		err := Disks(context.Background(), diskEnv(t), parseStorage(t, `{"luks":[`+tt.luks+`]}`, nil))
		if err == nil || err.Error() != tt.want {
			t.Errorf("Disks(luks %s) = %v, want %q", tt.luks, err, tt.want)
		}
	}
}
