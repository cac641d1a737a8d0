package stages

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/google/go-cmp/cmp"
)

// Disk tests run as root on loop devices and skip otherwise. They never
// rely on udev: partition devices are found through the kernel (sysfs)
// and labels through the tables themselves.

// needDiskTools skips the test unless it runs as root with the tools on PATH.
func needDiskTools(t *testing.T, tools ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, partitioning, mkfs)")
	}
	for _, tool := range append([]string{"losetup", "sgdisk", "partx", "blkid", "wipefs"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			pkg := ToolPackage(tool)
			if pkg == "" {
				pkg = "util-linux"
			}
			t.Skipf("needs %s (Debian package %s): %v", tool, pkg, err)
		}
	}
}

// loopDisk makes a sparse image of size MiB and attaches it to a loop
// device, detached when the test ends. It returns the device and image.
func loopDisk(t *testing.T, mib int64, losetupArgs ...string) (dev, img string) {
	t.Helper()
	img = filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(mib << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("losetup", append(append([]string{"--find", "--show", "--partscan"}, losetupArgs...), img)...).CombinedOutput()
	if err != nil {
		t.Skipf("losetup --find --show --partscan %s: %v: %s", img, err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v: %s", dev, err, out)
		}
	})
	return dev, img
}

type diskLogWriter struct{ t *testing.T }

func (w diskLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func diskEnv(t *testing.T) *Env {
	return &Env{
		Root: t.TempDir(),
		Log:  slog.New(slog.NewTextHandler(diskLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// parseStorage parses a storage section, replacing $name placeholders.
func parseStorage(t *testing.T, js string, vars map[string]string) types.Storage {
	t.Helper()
	for k, v := range vars {
		js = strings.ReplaceAll(js, "$"+k, v)
	}
	var s types.Storage
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		t.Fatalf("parsing storage %s: %v", js, err)
	}
	return s
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func imageSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// gptPart is a partition as sgdisk -i reports it.
type gptPart struct {
	Number      int
	Label       string
	Start, Size int64
	TypeGUID    string
	GUID        string
}

// sgdiskParts reads partitions 1..8 of dev with sgdisk -i.
func sgdiskParts(t *testing.T, dev string) []gptPart {
	t.Helper()
	var parts []gptPart
	for n := 1; n <= 8; n++ {
		out := mustRun(t, "sgdisk", "-i", strconv.Itoa(n), dev)
		if strings.Contains(out, "does not exist") {
			continue
		}
		p := gptPart{Number: n}
		for _, line := range strings.Split(out, "\n") {
			k, v, _ := strings.Cut(line, ": ")
			switch k {
			case "Partition GUID code":
				p.TypeGUID, _, _ = strings.Cut(v, " ")
			case "Partition unique GUID":
				p.GUID = v
			case "First sector":
				s, _, _ := strings.Cut(v, " ")
				p.Start, _ = strconv.ParseInt(s, 10, 64)
			case "Partition size":
				s, _, _ := strings.Cut(v, " ")
				p.Size, _ = strconv.ParseInt(s, 10, 64)
			case "Partition name":
				p.Label = strings.TrimSuffix(strings.TrimPrefix(v, "'"), "'")
			}
		}
		parts = append(parts, p)
	}
	return parts
}

// checkKernelParts fails unless the kernel knows exactly the partitions of dev
// with their /dev nodes.
func checkKernelParts(t *testing.T, dev string, want []gptPart) {
	t.Helper()
	disk := filepath.Base(dev)
	have := kernelPartitions(disk)
	if len(have) != len(want) {
		t.Errorf("kernel partitions of %s = %v, want %d partitions", dev, have, len(want))
	}
	for _, p := range want {
		if have[p.Number] != [2]int64{p.Start, p.Size} {
			t.Errorf("kernel partition %d of %s = %v, want start %d size %d", p.Number, dev, have[p.Number], p.Start, p.Size)
		}
		if _, err := os.Stat(partitionDevPath(disk, p.Number)); err != nil {
			t.Errorf("partition node: %v", err)
		}
	}
}

// uniqLabel returns a label unique to this run, so tests on the same machine
// never share labels.
func uniqLabel(prefix string) string {
	return fmt.Sprintf("%s%06d", prefix, rand.IntN(1000000))
}

const (
	typeLinux = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
	typeESP   = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
	guid1     = "6A2B5D3E-9C44-4F7E-8E0B-3C6F2B1A0D11"
	guid2     = "1B7E4C2A-5D6F-4A8B-9C0D-2E3F4A5B6C22"
	guid3     = "2C8F5D3B-6E7A-4B9C-8D1E-3F4A5B6C7D33"
	// A 256 MiB disk has 524288 sectors; GPT leaves 2048..524254 usable.
	lastUsable = 524254
)

func TestPartitions(t *testing.T) {
	needDiskTools(t)
	tests := []struct {
		name    string
		setup   string // applied first, "" for a blank disk
		config  string
		want    []gptPart // nil with wantErr: the disk must be unchanged
		wantErr []string
	}{{
		name: "fresh disk",
		config: `{"disks":[{"device":"$disk","partitions":[
			{"number":1,"label":"esp","startMiB":1,"sizeMiB":32,"typeGuid":"` + typeESP + `","guid":"` + guid1 + `"},
			{"number":2,"label":"boot","sizeMiB":64,"guid":"` + guid2 + `"},
			{"number":3,"label":"root","startMiB":0,"sizeMiB":0,"guid":"` + guid3 + `"}]}]}`,
		want: []gptPart{
			{1, "esp", 2048, 65536, typeESP, guid1},
			{2, "boot", 67584, 131072, typeLinux, guid2},
			{3, "root", 198656, lastUsable - 198656 + 1, typeLinux, guid3},
		},
	}, {
		name:   "rerun keeps everything",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","sizeMiB":32,"guid":"` + guid1 + `"},{"number":2,"label":"b","guid":"` + guid2 + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","sizeMiB":32,"guid":"` + guid1 + `"},{"number":2,"label":"b","guid":"` + guid2 + `"}]}]}`,
		want:   []gptPart{{1, "a", 2048, 65536, typeLinux, guid1}, {2, "b", 67584, lastUsable - 67584 + 1, typeLinux, guid2}},
	}, {
		name:    "label mismatch without wipePartitionEntry fails",
		setup:   `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"old","sizeMiB":32}]}]}`,
		config:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"new","sizeMiB":32}]}]}`,
		wantErr: []string{`partitioning $disk: partition 1 ("new")`, `label: wanted "new", found "old"`, "wipePartitionEntry is false"},
	}, {
		name:    "size and type mismatch name every field",
		setup:   `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"x","sizeMiB":32}]}]}`,
		config:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"x","sizeMiB":64,"typeGuid":"` + typeESP + `"}]}]}`,
		wantErr: []string{`partition 1 ("x")`, "sizeMiB: wanted 131072 sectors (64 MiB), found 65536 sectors (32 MiB)", "typeGuid: wanted " + typeESP + ", found " + typeLinux},
	}, {
		name:   "wipePartitionEntry recreates",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"old","sizeMiB":32,"guid":"` + guid1 + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"new","sizeMiB":16,"guid":"` + guid2 + `","wipePartitionEntry":true}]}]}`,
		want:   []gptPart{{1, "new", 2048, 32768, typeLinux, guid2}},
	}, {
		name:   "shouldExist false deletes",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","sizeMiB":32,"guid":"` + guid1 + `"},{"number":2,"label":"b","sizeMiB":32,"guid":"` + guid2 + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"number":1,"shouldExist":false,"wipePartitionEntry":true}]}]}`,
		want:   []gptPart{{2, "b", 67584, 65536, typeLinux, guid2}},
	}, {
		name:    "shouldExist false without wipePartitionEntry fails",
		setup:   `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","sizeMiB":32}]}]}`,
		config:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"shouldExist":false}]}]}`,
		wantErr: []string{"partitioning $disk: partition 1 (\"a\")", "shouldExist is false and wipePartitionEntry is false"},
	}, {
		name:   "shouldExist false on an absent partition does nothing",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","sizeMiB":32,"guid":"` + guid1 + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"number":3,"shouldExist":false}]}]}`,
		want:   []gptPart{{1, "a", 2048, 65536, typeLinux, guid1}},
	}, {
		name:   "resize keeps start, GUIDs and label",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"r","sizeMiB":32,"guid":"` + guid1 + `","typeGuid":"` + typeESP + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"r","sizeMiB":64,"resize":true}]}]}`,
		want:   []gptPart{{1, "r", 2048, 131072, typeESP, guid1}},
	}, {
		name:    "a size change without resize fails",
		setup:   `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"r","sizeMiB":32}]}]}`,
		config:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"r","sizeMiB":64}]}]}`,
		wantErr: []string{"sizeMiB: wanted 131072 sectors (64 MiB), found 65536 sectors (32 MiB)"},
	}, {
		name:    "resize does not cover a label change",
		setup:   `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"r","sizeMiB":32}]}]}`,
		config:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"s","sizeMiB":64,"resize":true}]}]}`,
		wantErr: []string{`label: wanted "s", found "r"`},
	}, {
		name:   "number 0 takes the next free slot after the numbered ones",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"foobar","sizeMiB":32,"guid":"` + guid1 + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"label":"newpart","sizeMiB":32,"guid":"` + guid2 + `"},{"number":1,"label":"foobar"}]}]}`,
		want:   []gptPart{{1, "foobar", 2048, 65536, typeLinux, guid1}, {2, "newpart", 67584, 65536, typeLinux, guid2}},
	}, {
		name:  "number 0 reuses a slot deleted in the same run",
		setup: `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","sizeMiB":32},{"number":2,"label":"b","sizeMiB":32,"guid":"` + guid2 + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"number":1,"shouldExist":false,"wipePartitionEntry":true},
			{"label":"c","sizeMiB":16,"guid":"` + guid3 + `"}]}]}`,
		// The largest free block once 1 is gone starts after 2.
		want: []gptPart{{1, "c", 133120, 32768, typeLinux, guid3}, {2, "b", 67584, 65536, typeLinux, guid2}},
	}, {
		name:   "wipeTable starts from an empty table",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","sizeMiB":32},{"number":2,"label":"b","sizeMiB":32},{"number":5,"label":"e","sizeMiB":32}]}]}`,
		config: `{"disks":[{"device":"$disk","wipeTable":true,"partitions":[{"number":2,"label":"only","guid":"` + guid1 + `"}]}]}`,
		want:   []gptPart{{2, "only", 2048, lastUsable - 2048 + 1, typeLinux, guid1}},
	}, {
		name:   "start and size 0 match a partition filling the disk",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","sizeMiB":32,"guid":"` + guid1 + `"},{"number":2,"label":"root","startMiB":0,"sizeMiB":0,"guid":"` + guid2 + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"number":2,"label":"root","startMiB":0,"sizeMiB":0}]}]}`,
		want:   []gptPart{{1, "a", 2048, 65536, typeLinux, guid1}, {2, "root", 67584, lastUsable - 67584 + 1, typeLinux, guid2}},
	}, {
		name:   "start and size 0 with wipePartitionEntry grow into the freed space",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","sizeMiB":32,"guid":"` + guid1 + `"},{"number":2,"label":"root","sizeMiB":32,"guid":"` + guid2 + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"number":2,"label":"root","startMiB":0,"sizeMiB":0,"guid":"` + guid2 + `","wipePartitionEntry":true}]}]}`,
		want:   []gptPart{{1, "a", 2048, 65536, typeLinux, guid1}, {2, "root", 67584, lastUsable - 67584 + 1, typeLinux, guid2}},
	}, {
		name:   "unset start and size keep the existing ones",
		setup:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","startMiB":8,"sizeMiB":32,"guid":"` + guid1 + `"}]}]}`,
		config: `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"a","typeGuid":"` + typeLinux + `"}]}]}`,
		want:   []gptPart{{1, "a", 16384, 65536, typeLinux, guid1}},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev, img := loopDisk(t, 256)
			vars := map[string]string{"disk": dev}
			env := diskEnv(t)
			ctx := context.Background()
			if tt.setup != "" {
				if err := Disks(ctx, env, parseStorage(t, tt.setup, vars)); err != nil {
					t.Fatalf("setup: Disks() = %v", err)
				}
			}
			before := sgdiskParts(t, dev)
			sumBefore := imageSum(t, img)
			err := Disks(ctx, env, parseStorage(t, tt.config, vars))
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Disks(%s) = nil, want an error", tt.config)
				}
				var oe *OpError
				if !errors.As(err, &oe) {
					t.Errorf("Disks() error %T is not an *OpError", err)
				}
				for _, w := range tt.wantErr {
					if w = strings.ReplaceAll(w, "$disk", dev); !strings.Contains(err.Error(), w) {
						t.Errorf("Disks() = %q, want it to contain %q", err, w)
					}
				}
				if got := imageSum(t, img); got != sumBefore {
					t.Errorf("a failed Disks() changed the disk")
				}
				return
			}
			if err != nil {
				t.Fatalf("Disks(%s) = %v", tt.config, err)
			}
			got := sgdiskParts(t, dev)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("partitions after Disks (-want +got):\n%s\nbefore: %+v", diff, before)
			}
			checkKernelParts(t, dev, tt.want)
			if tt.setup == tt.config && imageSum(t, img) != sumBefore {
				t.Errorf("rerunning the same config changed the disk")
			}
		})
	}
}

// TestPartitionsNoGUIDGiven checks that a partition made without guid gets
// a random one, and that a rerun keeps it.
func TestPartitionsRandomGUIDKept(t *testing.T) {
	needDiskTools(t)
	dev, img := loopDisk(t, 64)
	env := diskEnv(t)
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"label":"data"}]}]}`, map[string]string{"disk": dev})
	if err := Disks(context.Background(), env, cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	first := sgdiskParts(t, dev)
	if len(first) != 1 || first[0].Number != 1 || first[0].Label != "data" || first[0].GUID == "" {
		t.Fatalf("partitions = %+v, want partition 1 labelled data", first)
	}
	sum := imageSum(t, img)
	// The same partition with its number pinned is kept.
	cfg = parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"data"}]}]}`, map[string]string{"disk": dev})
	if err := Disks(context.Background(), env, cfg); err != nil {
		t.Fatalf("rerun Disks() = %v", err)
	}
	if imageSum(t, img) != sum {
		t.Errorf("rerun changed the disk")
	}
}

// TestPartitionsMBRRefused checks that a disk with an MBR table is not
// partitioned without wipeTable, and is with it.
func TestPartitionsMBRRefused(t *testing.T) {
	needDiskTools(t)
	dev, img := loopDisk(t, 64)
	// One MBR partition of type 0x83 at sector 2048, 32 MiB.
	mbr := make([]byte, 512)
	e := mbr[446:]
	e[4] = 0x83
	putLE32(e[8:], 2048)
	putLE32(e[12:], 65536)
	mbr[510], mbr[511] = 0x55, 0xAA
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(mbr, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sum := imageSum(t, img)
	env := diskEnv(t)
	cfg := `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"x"}]}]}`
	err = Disks(context.Background(), env, parseStorage(t, cfg, map[string]string{"disk": dev}))
	if err == nil || !strings.Contains(err.Error(), `partition table of type "dos", not GPT`) {
		t.Fatalf("Disks() on an MBR disk = %v, want a not-GPT error", err)
	}
	if imageSum(t, img) != sum {
		t.Errorf("the refused run changed the disk")
	}
	cfg = `{"disks":[{"device":"$disk","wipeTable":true,"partitions":[{"number":1,"label":"x"}]}]}`
	if err := Disks(context.Background(), env, parseStorage(t, cfg, map[string]string{"disk": dev})); err != nil {
		t.Fatalf("Disks() with wipeTable = %v", err)
	}
	if got := sgdiskParts(t, dev); len(got) != 1 || got[0].Label != "x" {
		t.Errorf("partitions = %+v, want one labelled x", got)
	}
}

func putLE32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

// TestPartitionInUse checks that a mounted partition is never modified.
func TestPartitionInUse(t *testing.T) {
	needDiskTools(t, "mkfs.ext4", "mount")
	dev, img := loopDisk(t, 128)
	env := diskEnv(t)
	ctx := context.Background()
	vars := map[string]string{"disk": dev}
	if err := Disks(ctx, env, parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"busy","sizeMiB":32}]}],
		"filesystems":[{"device":"$disk`+partSuffix(dev)+`1","format":"ext4"}]}`, vars)); err != nil {
		t.Fatalf("setup: %v", err)
	}
	mnt := t.TempDir()
	mustRun(t, "mount", partitionDevPath(filepath.Base(dev), 1), mnt)
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	for _, cfg := range []string{
		`{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"other","wipePartitionEntry":true}]}]}`,
		`{"disks":[{"device":"$disk","wipeTable":true}]}`,
	} {
		mustRun(t, "sync")
		sum := imageSum(t, img)
		err := Disks(ctx, env, parseStorage(t, cfg, vars))
		if err == nil || !strings.Contains(err.Error(), "refusing to") || !strings.Contains(err.Error(), "mounted at "+mnt) {
			t.Errorf("Disks(%s) on a mounted partition = %v, want a refusal naming the mount", cfg, err)
		}
		if imageSum(t, img) != sum {
			t.Errorf("Disks(%s) changed a disk with a mounted partition", cfg)
		}
	}
	// Creating another partition next to the mounted one is allowed.
	if err := Disks(ctx, env, parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"number":2,"label":"more","sizeMiB":16}]}]}`, vars)); err != nil {
		t.Errorf("Disks() adding a partition beside a mounted one = %v", err)
	}
	if _, err := os.Stat(partitionDevPath(filepath.Base(dev), 2)); err != nil {
		t.Errorf("new partition node: %v", err)
	}
}

// partSuffix is what goes between a disk and a partition number.
func partSuffix(dev string) string {
	if c := dev[len(dev)-1]; '0' <= c && c <= '9' {
		return "p"
	}
	return ""
}

// TestPlanTouchesNothing checks that plan mode records the actions and
// leaves the disk byte-identical, across partitions, filesystems and a
// wiped table.
func TestPlanTouchesNothing(t *testing.T) {
	needDiskTools(t, "mkfs.ext4", "mkfs.xfs")
	dev, img := loopDisk(t, 1024)
	ctx := context.Background()
	keep, other := uniqLabel("keep"), uniqLabel("other")
	vars := map[string]string{"disk": dev, "keep": keep, "other": other, "p": dev + partSuffix(dev)}
	setup := `{"disks":[{"device":"$disk","partitions":[
		{"number":1,"label":"$keep","sizeMiB":32},
		{"number":2,"label":"$other","sizeMiB":320},
		{"number":3,"label":"gone","sizeMiB":16}]}],
		"filesystems":[{"device":"$p1","format":"ext4","label":"kept"},{"device":"$p2","format":"xfs","label":"old"}]}`
	if err := Disks(ctx, diskEnv(t), parseStorage(t, setup, vars)); err != nil {
		t.Fatalf("setup: %v", err)
	}
	mustRun(t, "sync")
	tests := []struct {
		name    string
		config  string
		want    []Action
		wantErr string
	}{{
		name: "partitions and filesystems",
		config: `{"disks":[{"device":"$disk","partitions":[
			{"number":1,"label":"$keep"},
			{"number":2,"label":"$other","sizeMiB":400,"resize":true},
			{"number":3,"shouldExist":false,"wipePartitionEntry":true},
			{"label":"new","sizeMiB":16}]}],
			"filesystems":[
			{"device":"/dev/disk/by-partlabel/$keep","format":"ext4","label":"kept"},
			{"device":"/dev/disk/by-partlabel/$other","format":"ext4","wipeFilesystem":true},
			{"device":"/dev/disk/by-partlabel/new","format":"vfat","label":"NEW"}]}`,
		want: []Action{
			{Stage: "disks", Verb: "keep", Target: dev + " partition 1"},
			{Stage: "disks", Verb: "resize", Target: dev + " partition 2"},
			{Stage: "disks", Verb: "delete", Target: dev + " partition 3"},
			// Number 0 takes the slot partition 3 frees.
			{Stage: "disks", Verb: "create", Target: dev + " partition 3"},
			{Stage: "filesystems", Verb: "reuse", Target: "/dev/disk/by-partlabel/" + keep},
			{Stage: "filesystems", Verb: "format", Target: "/dev/disk/by-partlabel/" + other},
			{Stage: "filesystems", Verb: "format", Target: "/dev/disk/by-partlabel/new"},
		},
	}, {
		name:   "wiped table",
		config: `{"disks":[{"device":"$disk","wipeTable":true,"partitions":[{"number":1,"label":"fresh","sizeMiB":32}]}],"filesystems":[{"device":"/dev/disk/by-partlabel/fresh","format":"ext4","label":"fresh"}]}`,
		// The new partition 1 starts where the old one did: its ext4 is
		// found there, labelled otherwise, so without wipeFilesystem the run
		// would fail.
		wantErr: `creating ext4 filesystem on /dev/disk/by-partlabel/fresh: /dev/disk/by-partlabel/fresh holds ext4 labelled "kept"`,
	}, {
		name:    "a mismatch fails the plan as it would fail the run",
		config:  `{"disks":[{"device":"$disk","partitions":[{"number":1,"label":"renamed"}]}]}`,
		wantErr: `label: wanted "renamed", found "` + keep + `"`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sum := imageSum(t, img)
			kernelBefore := kernelPartitions(filepath.Base(dev))
			env := diskEnv(t)
			env.Plan = &Plan{}
			err := Disks(ctx, env, parseStorage(t, tt.config, vars))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("plan Disks() = %v, want an error containing %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatalf("plan Disks() = %v", err)
			}
			for _, a := range env.Plan.Actions {
				t.Logf("plan: %s %s %s: %s", a.Stage, a.Verb, a.Target, a.Detail)
			}
			if tt.want != nil {
				got := env.Plan.Actions
				if diff := cmp.Diff(tt.want, got, cmpIgnoreDetail); diff != "" {
					t.Errorf("plan actions (-want +got):\n%s", diff)
				}
			}
			if imageSum(t, img) != sum {
				t.Errorf("plan mode changed the disk")
			}
			if diff := cmp.Diff(kernelBefore, kernelPartitions(filepath.Base(dev))); diff != "" {
				t.Errorf("plan mode changed the kernel's partitions:\n%s", diff)
			}
		})
	}
}

var cmpIgnoreDetail = cmp.Transformer("noDetail", func(a Action) Action { a.Detail = ""; return a })

// TestResolveDevice checks resolution without udev links.
func TestResolveDevice(t *testing.T) {
	needDiskTools(t, "mkfs.ext4")
	if udevRunning() {
		t.Log("udev runs: by-* links may exist and take precedence")
	}
	dev, _ := loopDisk(t, 64)
	label, fsLabel := uniqLabel("pl"), uniqLabel("fs")
	vars := map[string]string{"disk": dev, "label": label, "fslabel": fsLabel, "guid": guid3}
	cfg := `{"disks":[{"device":"$disk","partitions":[{"number":1,"sizeMiB":8},{"number":2,"label":"$label","sizeMiB":8,"guid":"$guid"}]}],
		"filesystems":[{"device":"/dev/disk/by-partlabel/$label","format":"ext4","label":"$fslabel","uuid":"0a6c3d5e-1f2a-4b3c-9d4e-5f6a7b8c9d0e"}]}`
	if err := Disks(context.Background(), diskEnv(t), parseStorage(t, cfg, vars)); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	want := partitionDevPath(filepath.Base(dev), 2)
	for _, path := range []string{
		want,
		"/dev/disk/by-partlabel/" + label,
		"/dev/disk/by-partuuid/" + strings.ToLower(guid3),
		"/dev/disk/by-label/" + fsLabel,
		"/dev/disk/by-uuid/0a6c3d5e-1f2a-4b3c-9d4e-5f6a7b8c9d0e",
	} {
		got, err := ResolveDevice(path)
		if err != nil || got != want {
			t.Errorf("ResolveDevice(%q) = %q, %v, want %q", path, got, err, want)
		}
	}
	for _, path := range []string{"/dev/disk/by-partlabel/" + uniqLabel("none"), "/dev/disk/by-path/pci-0000:00:01.0", "relative"} {
		if got, err := ResolveDevice(path); err == nil {
			t.Errorf("ResolveDevice(%q) = %q, want an error", path, got)
		}
	}
}

// TestTimingPartitionExt4 measures a typical disks stage: one partition
// filling a 1 GiB disk, formatted ext4.
func TestTimingPartitionExt4(t *testing.T) {
	needDiskTools(t, "mkfs.ext4")
	dev, _ := loopDisk(t, 1024)
	label := uniqLabel("root")
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","wipeTable":true,"partitions":[{"number":1,"label":"$label"}]}],
		"filesystems":[{"device":"/dev/disk/by-partlabel/$label","format":"ext4","label":"root","wipeFilesystem":true}]}`,
		map[string]string{"disk": dev, "label": label})
	start := time.Now()
	if err := Disks(context.Background(), diskEnv(t), cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	t.Logf("partition + ext4 on a 1 GiB loop disk: %v", time.Since(start).Round(time.Millisecond))
}

// TestPartitions4KSectors checks MiB conversion and table reading on a
// disk with 4096-byte logical sectors.
func TestPartitions4KSectors(t *testing.T) {
	needDiskTools(t)
	dev, _ := loopDisk(t, 128, "--sector-size", "4096")
	if ss, _ := readSysInt("/sys/block/" + filepath.Base(dev) + "/queue/logical_block_size"); ss != 4096 {
		t.Skipf("losetup --sector-size 4096 gave %d-byte sectors", ss)
	}
	env := diskEnv(t)
	cfg := parseStorage(t, `{"disks":[{"device":"$disk","partitions":[
		{"number":1,"label":"a","startMiB":1,"sizeMiB":32,"guid":"`+guid1+`"},
		{"number":2,"label":"b","guid":"`+guid2+`"}]}]}`, map[string]string{"disk": dev})
	if err := Disks(context.Background(), env, cfg); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	// 128 MiB is 32768 sectors of 4 KiB; GPT keeps the last 5 (4 of entries
	// and the backup header) and the first 6.
	want := []gptPart{{1, "a", 256, 8192, typeLinux, guid1}, {2, "b", 8448, 32762 - 8448 + 1, typeLinux, guid2}}
	if diff := cmp.Diff(want, sgdiskParts(t, dev)); diff != "" {
		t.Errorf("partitions (-want +got):\n%s", diff)
	}
	kwant := []gptPart{{Number: 1, Start: 256 * 8, Size: 8192 * 8}, {Number: 2, Start: 8448 * 8, Size: (32762 - 8448 + 1) * 8}}
	checkKernelParts(t, dev, kwant)
	if err := Disks(context.Background(), env, cfg); err != nil {
		t.Errorf("rerun Disks() = %v", err)
	}
}

// TestMissingTool checks that a missing tool names its Debian package.
func TestMissingTool(t *testing.T) {
	needDiskTools(t)
	dev, _ := loopDisk(t, 16)
	env := diskEnv(t)
	env.LookPath = func(name string) (string, error) {
		if name == "sgdisk" {
			return "", exec.ErrNotFound
		}
		return exec.LookPath(name)
	}
	err := Disks(context.Background(), env, parseStorage(t, `{"disks":[{"device":"$disk","partitions":[{"label":"x"}]}]}`, map[string]string{"disk": dev}))
	if err == nil || !strings.Contains(err.Error(), "partitioning "+dev) || !strings.Contains(err.Error(), "sgdisk not found on PATH (install the gdisk package)") {
		t.Errorf("Disks() without sgdisk = %v, want an error naming the gdisk package", err)
	}
}

// TestPartitionNotInKernel checks a partition that the table has and the
// kernel may not know (a kernel without GPT parsing, or a table written
// behind its back): a plan reads it in place, a run adds it with partx.
func TestPartitionNotInKernel(t *testing.T) {
	needDiskTools(t, "mkfs.ext4")
	dev, img := loopDisk(t, 64)
	label := uniqLabel("nk")
	mustRun(t, "sgdisk", "--new=1:0:+16M", "--change-name=1:"+label, dev)
	exec.Command("partx", "--delete", dev).Run() // forget what the kernel parsed, if anything
	disk := filepath.Base(dev)
	if len(kernelPartitions(disk)) != 0 {
		t.Fatalf("kernel partitions of %s = %v after partx --delete", dev, kernelPartitions(disk))
	}
	p1 := dev + partSuffix(dev) + "1"
	vars := map[string]string{"p1": p1, "label": label}
	for _, fs := range []string{`{"device":"$p1","format":"ext4","label":"k"}`, `{"device":"/dev/disk/by-partlabel/$label","format":"ext4","label":"k"}`} {
		sum := imageSum(t, img)
		env := diskEnv(t)
		env.Plan = &Plan{}
		if err := Disks(context.Background(), env, parseStorage(t, `{"filesystems":[`+fs+`]}`, vars)); err != nil {
			t.Fatalf("plan Disks(%s) = %v", fs, err)
		}
		if len(env.Plan.Actions) != 1 || env.Plan.Actions[0].Verb != "format" {
			t.Errorf("plan Disks(%s) = %+v, want one format", fs, env.Plan.Actions)
		}
		if imageSum(t, img) != sum || len(kernelPartitions(disk)) != 0 {
			t.Errorf("plan Disks(%s) changed the disk or the kernel's partitions", fs)
		}
	}
	if err := Disks(context.Background(), diskEnv(t), parseStorage(t, `{"filesystems":[{"device":"$p1","format":"ext4","label":"k"}]}`, vars)); err != nil {
		t.Fatalf("Disks() = %v", err)
	}
	if got := blkidProbe(t, p1); got.Type != "ext4" || got.Label != "k" {
		t.Errorf("blkid %s = %+v, want ext4 labelled k", p1, got)
	}
}
