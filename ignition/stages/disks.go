package stages

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/coreos/ignition/v2/config/validate"
)

// Disks applies the storage section's block-device parts, in upstream
// Ignition's order: partitions (every disk, in config order), then RAID
// arrays, then LUKS volumes, then filesystems (made concurrently). A
// storage section without disks, raid, luks and filesystems does nothing.
//
// In plan mode it reads the partition tables and probes the filesystems
// that exist, records each action in env.Plan and changes nothing; a
// config that would fail fails the same way.
func Disks(ctx context.Context, env *Env, s types.Storage) error {
	if len(s.Disks) == 0 && len(s.Raid) == 0 && len(s.Luks) == 0 && len(s.Filesystems) == 0 {
		return nil
	}
	if err := validateBlockStorage(env, s); err != nil {
		return err
	}
	r := &diskRun{env: env, planned: map[string]blockRef{}}
	for _, d := range s.Disks {
		if err := r.partitionDisk(ctx, d); err != nil {
			return err
		}
	}
	for _, md := range s.Raid {
		if err := r.createRaid(ctx, md); err != nil {
			return err
		}
	}
	for _, l := range s.Luks {
		if err := r.createLuks(ctx, l); err != nil {
			return err
		}
	}
	return r.createFilesystems(ctx, s.Filesystems)
}

// validateBlockStorage checks the disks, raid, luks and filesystems
// sections as upstream's validator does, so a config that bypassed the
// parser fails before anything is touched. Warnings are logged.
func validateBlockStorage(env *Env, s types.Storage) error {
	cfg := types.Config{
		Ignition: types.Ignition{Version: types.MaxVersion.String()},
		Storage: types.Storage{
			Disks:       s.Disks,
			Raid:        s.Raid,
			Luks:        s.Luks,
			Filesystems: s.Filesystems,
		},
	}
	rep := validate.ValidateWithContext(cfg, nil)
	for _, e := range rep.Entries {
		env.Logger().Warn("storage config", "entry", e.String())
	}
	if rep.IsFatal() {
		return Failf("validating the storage config", "%s", strings.TrimSpace(rep.String()))
	}
	return nil
}

// diskRun is the state of one Disks call.
type diskRun struct {
	env *Env
	// planned maps the device paths that this run would create (new or
	// recreated partitions, arrays, LUKS mappings; by kernel name and by
	// the aliases a config may use) to where their contents can be read
	// before they exist. Plan mode only.
	planned map[string]blockRef
}

// blockRef is a block device as later steps see it.
type blockRef struct {
	// Path is the /dev node. For a partition that only a plan creates, it
	// is the disk, and Offset and Size (bytes) locate the partition in it;
	// for another planned device (array, mapping) it is "".
	Path         string
	Offset, Size int64
	// Planned says what creates the device in this run (plan mode), or "".
	Planned string
	// Unknown marks a planned device whose contents a plan cannot read
	// (a reused LUKS volume, before it is opened).
	Unknown bool
}

// devWait bounds how long a device named in the config may take to appear.
var devWait = 30 * time.Second

// device resolves a device path of the config, waiting up to devWait for
// it to appear. In plan mode, a device this run would create resolves to
// its planned reference.
func (r *diskRun) device(ctx context.Context, path string) (blockRef, error) {
	if ref, ok := r.planned[path]; ok {
		return ref, nil
	}
	deadline := time.Now().Add(devWait)
	settled := false
	added := map[string]bool{}
	for {
		dev, err := resolveDevice(ctx, r.env, path)
		if err == nil {
			if ref, ok := r.planned[dev]; ok {
				return ref, nil
			}
			return blockRef{Path: dev}, nil
		}
		var nk *partitionNotInKernelError
		if errors.As(err, &nk) && r.env.Planning() {
			// Read it where it lies on the disk, without touching the kernel.
			if t, terr := readDiskTable(nk.disk, nil); terr == nil {
				if p, ok := t.partition(nk.number); ok {
					return blockRef{Path: nk.disk, Offset: p.Start * t.SectorSize, Size: p.Size * t.SectorSize}, nil
				}
			}
		}
		if errors.As(err, &nk) && !r.env.Planning() && !added[nk.Error()] {
			// The table has the partition and the kernel does not know it:
			// tell the kernel, as a rescan would.
			added[nk.Error()] = true
			r.env.Logger().Info("adding partition to the kernel", "disk", nk.disk, "partition", nk.number)
			if _, perr := r.env.Command(ctx, nil, "partx", "--add", "--nr", strconv.Itoa(nk.number), nk.disk); perr != nil {
				r.env.Logger().Warn("partx", "err", perr)
			}
			continue
		}
		if !settled {
			settled = true
			settleUdev(ctx, r.env, "")
			continue
		}
		if time.Now().After(deadline) {
			return blockRef{}, fmt.Errorf("waiting %s for %s: %w", devWait, path, err)
		}
		select {
		case <-ctx.Done():
			return blockRef{}, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// plan records that paths are created by this run (plan mode).
func (r *diskRun) plan(ref blockRef, paths ...string) {
	for _, p := range paths {
		if p != "" {
			r.planned[p] = ref
		}
	}
}

// ResolveDevice returns the /dev node a device path of the config names.
// A path that exists is resolved through its symlinks (udev's
// /dev/disk/by-* links when udev runs). Without udev, these are resolved
// by reading the devices themselves: /dev/disk/by-partlabel/L and
// /dev/disk/by-partuuid/G (GPT entries of every disk), /dev/disk/by-label/L
// and /dev/disk/by-uuid/U (blkid), /dev/mapper/N and
// /dev/disk/by-id/dm-name-N (device-mapper names in sysfs), /dev/md/N
// (mdadm), /dev/disk/by-id/virtio-S (virtio serials). Names in by-* paths
// may use udev's \xNN escapes. A name that matches more than one device
// (ignoring devices that others hold, like RAID members) is an error.
func ResolveDevice(path string) (string, error) {
	return resolveDevice(context.Background(), &Env{}, path)
}

// ProbeDevice is ResolveDevice for a device that may hold data: a
// partition the disk's table has and the kernel does not know yet is added
// to the kernel first (partx), without waiting for devices to appear. A
// device that is not there is an error wrapping os.ErrNotExist.
func ProbeDevice(ctx context.Context, env *Env, path string) (string, error) {
	dev, err := resolveDevice(ctx, env, path)
	var nk *partitionNotInKernelError
	if errors.As(err, &nk) {
		if _, perr := env.Command(ctx, nil, "partx", "--add", "--nr", strconv.Itoa(nk.number), nk.disk); perr != nil {
			return "", fmt.Errorf("%w (adding it: %v)", err, perr)
		}
		dev, err = resolveDevice(ctx, env, path)
	}
	return dev, err
}

// partitionNotInKernelError reports a partition that the disk's table has
// and the kernel does not.
type partitionNotInKernelError struct {
	path   string
	disk   string
	number int
}

func (e *partitionNotInKernelError) Error() string {
	return fmt.Sprintf("%s is partition %d of %s, which the kernel does not know yet", e.path, e.number, e.disk)
}

func resolveDevice(ctx context.Context, env *Env, path string) (string, error) {
	if !filepath.IsAbs(path) || filepath.Clean(path) != path {
		return "", fmt.Errorf("device %q is not an absolute, clean path", path)
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		st, err := os.Stat(real)
		if err != nil {
			return "", err
		}
		if st.Mode()&os.ModeDevice == 0 || st.Mode()&os.ModeCharDevice != 0 {
			return "", fmt.Errorf("%s (%s) is not a block device", path, real)
		}
		return real, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	dir, name := filepath.Split(path)
	name = unescapeUdev(name)
	var cands []string
	var err error
	switch dir {
	case "/dev/disk/by-partlabel/", "/dev/disk/by-partuuid/":
		return resolvePartition(path, dir == "/dev/disk/by-partlabel/", name)
	case "/dev/disk/by-label/", "/dev/disk/by-uuid/":
		cands, err = blkidMatches(ctx, env, dir == "/dev/disk/by-label/", name)
	case "/dev/mapper/":
		cands, err = sysfsMatches("dm/name", name, "dm-")
	case "/dev/md/":
		cands, err = mdMatches(ctx, env, name)
	case "/dev/disk/by-id/":
		switch {
		case strings.HasPrefix(name, "dm-name-"):
			cands, err = sysfsMatches("dm/name", strings.TrimPrefix(name, "dm-name-"), "dm-")
		case strings.HasPrefix(name, "virtio-"):
			cands, err = sysfsMatches("serial", strings.TrimPrefix(name, "virtio-"), "vd")
		default:
			return "", fmt.Errorf("%s does not exist (without udev, /dev/disk/by-id/ resolves only dm-name-* and virtio-*; use a /dev/disk/by-partlabel/, by-label/ or kernel device path)", path)
		}
	case "/dev/":
		if disk, n, ok := splitPartitionName(name); ok {
			if t, err := readDiskTable("/dev/"+disk, nil); err == nil {
				if _, ok := t.partition(n); ok {
					return "", &partitionNotInKernelError{path: path, disk: "/dev/" + disk, number: n}
				}
			}
		}
		return "", fmt.Errorf("%s does not exist: %w", path, os.ErrNotExist)
	default:
		return "", fmt.Errorf("%s does not exist: %w", path, os.ErrNotExist)
	}
	if err != nil {
		return "", err
	}
	return pickDevice(path, cands)
}

// splitPartitionName splits a kernel partition name into its whole disk,
// which must exist, and number: sda3 → sda 3, nvme0n1p2 → nvme0n1 2,
// loop4p1 → loop4 1.
func splitPartitionName(name string) (string, int, bool) {
	i := len(name)
	for i > 0 && '0' <= name[i-1] && name[i-1] <= '9' {
		i--
	}
	if i == len(name) || i == 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(name[i:])
	if err != nil || n == 0 {
		return "", 0, false
	}
	disk := name[:i]
	if c := disk[len(disk)-1]; c == 'p' && len(disk) > 1 && '0' <= disk[len(disk)-2] && disk[len(disk)-2] <= '9' {
		disk = disk[:len(disk)-1]
	}
	if _, err := os.Stat("/sys/block/" + disk); err != nil {
		return "", 0, false
	}
	return disk, n, true
}

// pickDevice returns the one candidate, preferring devices nothing holds.
func pickDevice(path string, cands []string) (string, error) {
	if len(cands) > 1 {
		var free []string
		for _, c := range cands {
			if !blockHeld(c) {
				free = append(free, c)
			}
		}
		if len(free) > 0 {
			cands = free
		}
	}
	switch len(cands) {
	case 0:
		return "", fmt.Errorf("%s does not exist: %w", path, os.ErrNotExist)
	case 1:
		return cands[0], nil
	default:
		return "", fmt.Errorf("%s is ambiguous: it matches %s", path, strings.Join(cands, ", "))
	}
}

// unescapeUdev decodes the \xNN escapes udev uses in by-* link names.
func unescapeUdev(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// wholeDisks lists the kernel names of the whole block devices with a
// non-zero size.
func wholeDisks() ([]string, error) {
	ents, err := os.ReadDir("/sys/block")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if size, _ := readSysInt("/sys/block/" + e.Name() + "/size"); size > 0 {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// resolvePartition finds the partition whose GPT name (byLabel) or unique
// GUID is want, reading the table of every disk.
func resolvePartition(path string, byLabel bool, want string) (string, error) {
	disks, err := wholeDisks()
	if err != nil {
		return "", err
	}
	type hit struct {
		disk string
		num  int
	}
	var hits []hit
	for _, d := range disks {
		t, err := readDiskTable("/dev/"+d, nil)
		if err != nil {
			continue // unreadable or not partitioned: not a candidate
		}
		for _, p := range t.Partitions {
			if (byLabel && p.Label == want) || (!byLabel && strings.EqualFold(p.GUID, want)) {
				hits = append(hits, hit{d, p.Number})
			}
		}
	}
	if len(hits) == 1 {
		name, ok := kernelPartitionName(hits[0].disk, hits[0].num)
		if !ok {
			return "", &partitionNotInKernelError{path: path, disk: "/dev/" + hits[0].disk, number: hits[0].num}
		}
		return "/dev/" + name, nil
	}
	var cands []string
	for _, h := range hits {
		cands = append(cands, partitionDevPath(h.disk, h.num))
	}
	return pickDevice(path, cands)
}

// kernelPartitionName returns the kernel name of partition n of disk, if
// the kernel knows it.
func kernelPartitionName(disk string, n int) (string, bool) {
	ents, err := os.ReadDir("/sys/class/block/" + disk)
	if err != nil {
		return "", false
	}
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), disk) {
			continue
		}
		if v, err := readSysInt("/sys/class/block/" + disk + "/" + e.Name() + "/partition"); err == nil && int(v) == n {
			return e.Name(), true
		}
	}
	return "", false
}

// partitionDevPath returns the /dev path partition n of disk has or will
// have.
func partitionDevPath(disk string, n int) string {
	if name, ok := kernelPartitionName(disk, n); ok {
		return "/dev/" + name
	}
	if c := disk[len(disk)-1]; '0' <= c && c <= '9' {
		return fmt.Sprintf("/dev/%sp%d", disk, n)
	}
	return fmt.Sprintf("/dev/%s%d", disk, n)
}

// kernelPartitions returns the partitions the kernel knows on disk: number
// → start and size in 512-byte sectors.
func kernelPartitions(disk string) map[int][2]int64 {
	out := map[int][2]int64{}
	ents, _ := os.ReadDir("/sys/class/block/" + disk)
	for _, e := range ents {
		dir := "/sys/class/block/" + disk + "/" + e.Name()
		n, err := readSysInt(dir + "/partition")
		if err != nil || !strings.HasPrefix(e.Name(), disk) {
			continue
		}
		start, err1 := readSysInt(dir + "/start")
		size, err2 := readSysInt(dir + "/size")
		if err1 == nil && err2 == nil {
			out[int(n)] = [2]int64{start, size}
		}
	}
	return out
}

func readSysInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}

// blkidMatches lists the devices whose filesystem label (or UUID, compared
// without case) is want, probing every device the kernel lists.
func blkidMatches(ctx context.Context, env *Env, byLabel bool, want string) ([]string, error) {
	out, err := env.Command(ctx, nil, "blkid", "-c", "/dev/null", "-d", "-o", "export")
	if err != nil {
		if cmdExitCode(err) == 2 {
			return nil, nil // no device has any tag
		}
		return nil, err
	}
	var cands []string
	for _, block := range strings.Split(string(out), "\n\n") {
		kv := parseBlkidExport(block)
		if byLabel && kv["LABEL"] == want || !byLabel && kv["UUID"] != "" && strings.EqualFold(kv["UUID"], want) {
			cands = append(cands, kv["DEVNAME"])
		}
	}
	return cands, nil
}

// parseBlkidExport parses blkid's "-o export" KEY=value lines.
func parseBlkidExport(s string) map[string]string {
	kv := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			kv[k] = v
		}
	}
	return kv
}

// sysfsMatches lists /dev/<name> for the block devices whose sysfs
// attribute attr (relative to /sys/block/<name>) equals want.
func sysfsMatches(attr, want, prefix string) ([]string, error) {
	disks, err := wholeDisks()
	if err != nil {
		return nil, err
	}
	var cands []string
	for _, d := range disks {
		if !strings.HasPrefix(d, prefix) {
			continue
		}
		b, err := os.ReadFile("/sys/block/" + d + "/" + attr)
		if err == nil && strings.TrimSpace(string(b)) == want {
			cands = append(cands, "/dev/"+d)
		}
	}
	return cands, nil
}

// mdMatches lists the md arrays whose name is want.
func mdMatches(ctx context.Context, env *Env, want string) ([]string, error) {
	disks, err := wholeDisks()
	if err != nil {
		return nil, err
	}
	var cands []string
	for _, d := range disks {
		if !strings.HasPrefix(d, "md") {
			continue
		}
		out, err := env.Command(ctx, nil, "mdadm", "--detail", "--export", "/dev/"+d)
		if err != nil {
			continue
		}
		kv := parseBlkidExport(string(out))
		name := kv["MD_DEVNAME"]
		if name == "" {
			_, name, _ = strings.Cut(kv["MD_NAME"], ":")
		}
		if name == want {
			cands = append(cands, "/dev/"+d)
		}
	}
	return cands, nil
}

// blockHeld reports whether another device holds dev (a RAID member, a
// LUKS container, an LVM PV).
func blockHeld(dev string) bool {
	ents, err := os.ReadDir("/sys/class/block/" + filepath.Base(dev) + "/holders")
	return err == nil && len(ents) > 0
}

// blockUse says why dev is in use (mounted, swap, held), or "".
func blockUse(dev string) string {
	if blockHeld(dev) {
		ents, _ := os.ReadDir("/sys/class/block/" + filepath.Base(dev) + "/holders")
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return "held by " + strings.Join(names, ", ")
	}
	for _, src := range mountSources() {
		if src.dev == dev {
			return "mounted at " + src.at
		}
	}
	if f, err := os.Open("/proc/swaps"); err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 0 && strings.HasPrefix(fields[0], "/") {
				if real, err := filepath.EvalSymlinks(fields[0]); err == nil && real == dev {
					return "used as swap"
				}
			}
		}
	}
	return ""
}

type mountSource struct{ dev, at string }

// mountSources lists the block devices mounted somewhere, from
// /proc/self/mountinfo.
func mountSources() []mountSource {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mountSource
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, qf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(qf) < 2 || !strings.HasPrefix(qf[1], "/dev/") {
			continue
		}
		if real, err := filepath.EvalSymlinks(qf[1]); err == nil {
			out = append(out, mountSource{dev: real, at: pf[4]})
		}
	}
	return out
}

// diskInUse reports whether disk (a /dev path) is in use itself, and
// which of its partitions are.
func diskInUse(disk string) (self string, parts map[int]string) {
	self = blockUse(disk)
	parts = map[int]string{}
	name := filepath.Base(disk)
	ents, _ := os.ReadDir("/sys/class/block/" + name)
	for _, e := range ents {
		n, err := readSysInt("/sys/class/block/" + name + "/" + e.Name() + "/partition")
		if err != nil || !strings.HasPrefix(e.Name(), name) {
			continue
		}
		if why := blockUse("/dev/" + e.Name()); why != "" {
			parts[int(n)] = why
		}
	}
	return self, parts
}

// udevRunning reports whether udevd is running (its control socket
// exists).
func udevRunning() bool {
	_, err := os.Stat("/run/udev/control")
	return err == nil
}

// settleUdev waits for udev to process the events of dev (or all queued
// events when dev is ""), when udevd runs; without it there is nothing to
// wait for.
func settleUdev(ctx context.Context, env *Env, dev string) {
	if !udevRunning() {
		return
	}
	if dev != "" {
		if _, err := env.Command(ctx, nil, "udevadm", "trigger", "--settle", dev); err == nil {
			return
		}
	}
	if _, err := env.Command(ctx, nil, "udevadm", "settle", "--timeout=30"); err != nil {
		env.Logger().Warn("waiting for udev", "err", err)
	}
}

// sortedNumbers returns the keys of m in order.
func sortedNumbers[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	return keys
}
