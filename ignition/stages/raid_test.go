package stages

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// needMD skips unless the kernel has the md driver.
func needMD(t *testing.T) {
	t.Helper()
	needDiskTools(t, "mdadm")
	if _, err := os.Stat("/proc/mdstat"); err != nil {
		t.Skipf("the kernel has no md driver (no /proc/mdstat; modprobe md_mod raid1): %v", err)
	}
}

func TestRaid1(t *testing.T) {
	needMD(t)
	needDiskTools(t, "mkfs.ext4")
	dev1, _ := loopDisk(t, 64)
	dev2, _ := loopDisk(t, 64)
	a, b, name := uniqLabel("ra"), uniqLabel("rb"), uniqLabel("md")
	t.Cleanup(func() { exec.Command("mdadm", "--stop", "/dev/md/"+name).Run() })
	vars := map[string]string{"d1": dev1, "d2": dev2, "a": a, "b": b, "name": name}
	cfg := parseStorage(t, `{"disks":[
		{"device":"$d1","partitions":[{"number":1,"label":"$a","typeGuid":"A19D880F-05FC-4D3B-A006-743F0F84911E"}]},
		{"device":"$d2","partitions":[{"number":1,"label":"$b","typeGuid":"A19D880F-05FC-4D3B-A006-743F0F84911E"}]}],
		"raid":[{"name":"$name","level":"raid1","devices":["/dev/disk/by-partlabel/$a","/dev/disk/by-partlabel/$b"],"options":["--metadata=1.2"]}],
		"filesystems":[{"device":"/dev/md/$name","format":"ext4","label":"mirror"}]}`, vars)
	ctx := context.Background()
	if err := Disks(ctx, diskEnv(t), cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	md, err := ResolveDevice("/dev/md/" + name)
	if err != nil {
		t.Fatalf("ResolveDevice(/dev/md/%s) = %v", name, err)
	}
	detail := mustRun(t, "mdadm", "--detail", md)
	for _, want := range []string{"Raid Level : raid1", "Raid Devices : 2", "Active Devices : 2"} {
		if !strings.Contains(detail, want) {
			t.Errorf("mdadm --detail %s lacks %q:\n%s", md, want, detail)
		}
	}
	if got := blkidProbe(t, md); got.Type != "ext4" || got.Label != "mirror" {
		t.Errorf("blkid %s = %+v, want ext4 labelled mirror", md, got)
	}
}

func TestRaidValidation(t *testing.T) {
	tests := []struct {
		raid string
		want string
	}{
		{`{"name":"x","level":"raid0","devices":["/dev/vdy","/dev/vdz"],"spares":1}`, "raid.0.level"},
		{`{"name":"x","level":"raid7","devices":["/dev/vdy"]}`, "raid.0.level"},
		{`{"name":"x","level":"raid1"}`, "raid.0.devices"},
	}
	for _, tt := range tests {
		err := Disks(context.Background(), diskEnv(t), parseStorage(t, `{"raid":[`+tt.raid+`]}`, nil))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Disks(raid %s) = %v, want an error naming %s", tt.raid, err, tt.want)
		}
	}
}
