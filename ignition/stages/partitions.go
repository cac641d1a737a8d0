package stages

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	cutil "github.com/coreos/ignition/v2/config/util"
	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// partSpec is a partition of the config with the values the run resolved.
type partSpec struct {
	cfg    types.Partition
	number int    // the resolved number (0 in the config: the next free slot)
	start  *int64 // first logical sector; nil: not given
	size   *int64 // logical sectors; nil: not given
	// For a partition created by a resize, the attributes kept from the
	// existing partition.
	guid, typeGUID, label *string
}

func (p partSpec) shouldExist() bool { return !cutil.IsFalse(p.cfg.ShouldExist) }
func (p partSpec) wipe() bool        { return cutil.IsTrue(p.cfg.WipePartitionEntry) }

// name names the partition in messages: `partition 1 ("root")`.
func (p partSpec) name(existing string) string {
	switch {
	case p.cfg.Label != nil:
		return fmt.Sprintf("partition %d (%q)", p.number, *p.cfg.Label)
	case existing != "":
		return fmt.Sprintf("partition %d (%q)", p.number, existing)
	}
	return fmt.Sprintf("partition %d", p.number)
}

// partitionDisk applies one disk of the config: wipeTable, then every
// partition by upstream Ignition's reuse rules (docs: "Partition Reuse
// Semantics"), in one sgdisk run; then it makes the kernel see the table.
func (r *diskRun) partitionDisk(ctx context.Context, d types.Disk) error {
	op := "partitioning " + d.Device
	ref, err := r.device(ctx, d.Device)
	if err != nil {
		return Fail(op, err)
	}
	if ref.Path == "" || ref.Offset != 0 || ref.Size != 0 {
		return Failf(op, "%s is not a whole device of its own yet; partitioning it is not supported", d.Device)
	}
	dev := ref.Path
	if dev != d.Device {
		op += " (" + dev + ")"
	}
	selfUse, partUse := diskInUse(dev)
	if selfUse != "" {
		return Failf(op, "refusing to partition %s: it is %s", dev, selfUse)
	}
	planning := r.env.Planning()
	if cutil.IsTrue(d.WipeTable) {
		if busy := sortedNumbers(partUse); len(busy) > 0 {
			return Failf(op, "refusing to wipe the partition table: partition %d is %s", busy[0], partUse[busy[0]])
		}
		r.env.Record("disks", "wipe", d.Device, "wipe the partition table (MBR and both GPT copies)")
		if !planning {
			r.env.Logger().Info("wiping the partition table", "device", d.Device)
			// What sgdisk --zap-all does, without the second each
			// sgdisk write costs (it pauses before re-reading the
			// table); the kernel is told below, after the new table.
			if err := zapTable(dev); err != nil {
				return Fail(op, fmt.Errorf("wiping the partition table: %w", err))
			}
		}
	}
	pttype := func(dev string) (string, error) { return r.ptType(ctx, dev) }
	if planning && cutil.IsTrue(d.WipeTable) {
		pttype = nil
	}
	table, err := readDiskTable(dev, pttype)
	if err != nil {
		return Fail(op, err)
	}
	if planning && cutil.IsTrue(d.WipeTable) {
		table.Partitions, table.Found = nil, false
	}
	specs, err := r.resolvePartitions(ctx, dev, d, table)
	if err != nil {
		return Fail(op, err)
	}

	ss := table.SectorSize
	var dels []int
	var creates []partSpec
	deleting := map[int]bool{}
	for _, p := range specs {
		ex, exists := table.partition(p.number)
		if exists && deleting[p.number] {
			// A number-0 partition took the slot of one deleted above.
			exists = false
		}
		pop := op + ": " + p.name(ex.Label)
		target := fmt.Sprintf("%s partition %d", d.Device, p.number)
		modify := false
		switch {
		case !exists && !p.shouldExist():
			r.env.Record("disks", "keep", target, "absent, as configured")
		case !exists:
			creates = append(creates, p)
			modify = true
			r.env.Record("disks", "create", target, describePart(p, ss))
		case !p.shouldExist() && !p.wipe():
			return Failf(pop, "partition %d exists (%s) but shouldExist is false and wipePartitionEntry is false; set wipePartitionEntry to delete it", p.number, describeExisting(ex, ss))
		case !p.shouldExist():
			dels = append(dels, p.number)
			deleting[p.number] = true
			modify = true
			r.env.Record("disks", "delete", target, describeExisting(ex, ss))
		default:
			mism := partMismatches(ex, p, ss, true)
			switch {
			case len(mism) == 0:
				r.env.Record("disks", "keep", target, describeExisting(ex, ss))
			case !p.wipe() && cutil.IsTrue(p.cfg.Resize) && len(partMismatches(ex, p, ss, false)) == 0:
				// Only the size differs: recreate it in place with the
				// same GUIDs and label.
				rp := p
				rp.start = &ex.Start
				rp.guid, rp.typeGUID, rp.label = &ex.GUID, &ex.TypeGUID, &ex.Label
				dels = append(dels, p.number)
				creates = append(creates, rp)
				modify = true
				r.env.Record("disks", "resize", target, fmt.Sprintf("size %d sectors (%s) → %d sectors (%s), start sector %d kept",
					ex.Size, mibText(ex.Size, ss), *p.size, mibText(*p.size, ss), ex.Start))
			case !p.wipe():
				return Failf(pop, "existing partition does not match the config and wipePartitionEntry is false: %s", strings.Join(mism, "; "))
			default:
				dels = append(dels, p.number)
				creates = append(creates, p)
				modify = true
				r.env.Record("disks", "recreate", target, fmt.Sprintf("does not match (%s); delete it and create %s", strings.Join(mism, "; "), describePart(p, ss)))
			}
		}
		if modify && partUse[p.number] != "" {
			return Failf(pop, "refusing to modify partition %d of %s: it is %s", p.number, dev, partUse[p.number])
		}
	}

	disk := filepath.Base(dev)
	if planning {
		for _, p := range creates {
			ref := blockRef{Path: dev, Offset: *p.start * ss, Size: *p.size * ss,
				Planned: fmt.Sprintf("partition %d of %s, created by this config", p.number, d.Device)}
			paths := []string{partitionDevPath(disk, p.number)}
			if l := partLabel(p); l != nil {
				paths = append(paths, "/dev/disk/by-partlabel/"+*l)
			}
			if g := partGUID(p); cutil.NotEmpty(g) {
				paths = append(paths, "/dev/disk/by-partuuid/"+strings.ToLower(*g), "/dev/disk/by-partuuid/"+strings.ToUpper(*g))
			}
			r.plan(ref, paths...)
		}
		return nil
	}

	if len(dels) > 0 || len(creates) > 0 {
		args := sgdiskArgs(dels, creates)
		r.env.Logger().Info("writing the partition table", "device", d.Device, "delete", len(dels), "create", len(creates))
		if _, err := r.env.Command(ctx, nil, "sgdisk", append(args, dev)...); err != nil {
			return Fail(op, fmt.Errorf("writing the partition table: %w", err))
		}
	}
	after, err := readDiskTable(dev, nil)
	if err != nil {
		return Fail(op, fmt.Errorf("reading the table back: %w", err))
	}
	for _, p := range creates {
		got, ok := after.partition(p.number)
		switch {
		case !ok:
			return Failf(op+": "+p.name(""), "the partition is not in the table sgdisk wrote")
		case got.Start != *p.start || got.Size != *p.size:
			return Failf(op+": "+p.name(""), "sgdisk wrote start sector %d and %d sectors, wanted start sector %d and %d sectors", got.Start, got.Size, *p.start, *p.size)
		}
	}
	for _, n := range dels {
		recreated := slices.ContainsFunc(creates, func(p partSpec) bool { return p.number == n })
		if _, ok := after.partition(n); ok && !recreated {
			return Failf(op, "partition %d is still in the table after sgdisk deleted it", n)
		}
	}
	if err := r.syncKernel(ctx, dev, after); err != nil {
		return Fail(op, err)
	}
	settleUdev(ctx, r.env, dev)
	return nil
}

// resolvePartitions orders the partitions (number 0 last, stably), gives
// number-0 partitions the next free numbers, converts MiB to sectors, and
// resolves a start or size that is 0 or (for a partition to be made anew)
// unset with `sgdisk --pretend`, as if every configured partition that
// exists were deleted and every one that should exist were created.
func (r *diskRun) resolvePartitions(ctx context.Context, dev string, d types.Disk, table gptTable) ([]partSpec, error) {
	ss := table.SectorSize
	specs := make([]partSpec, len(d.Partitions))
	for i, p := range d.Partitions {
		specs[i] = partSpec{cfg: p, number: p.Number}
	}
	sort.SliceStable(specs, func(i, j int) bool { return specs[i].cfg.Number != 0 && specs[j].cfg.Number == 0 })

	used := map[int]bool{}
	for _, p := range table.Partitions {
		used[p.Number] = true
	}
	var pretendDels []int
	for i := range specs {
		p := &specs[i]
		p.start = mibToSectors(p.cfg.StartMiB, ss)
		p.size = mibToSectors(p.cfg.SizeMiB, ss)
		if p.number == 0 {
			continue
		}
		if ex, ok := table.partition(p.number); ok {
			pretendDels = append(pretendDels, p.number)
			if p.start == nil && !p.wipe() {
				v := ex.Start
				p.start = &v
			}
			if p.size == nil && !p.wipe() {
				v := ex.Size
				p.size = &v
			}
		}
		used[p.number] = p.shouldExist()
	}
	free := 1
	var creates []partSpec
	var inspect []int
	for i := range specs {
		p := &specs[i]
		if !p.shouldExist() {
			continue
		}
		if p.number == 0 {
			for used[free] {
				free++
			}
			p.number = free
			used[free] = true
		}
		if p.number > 128 {
			return nil, fmt.Errorf("%s: no free partition slot for %s", dev, p.name(""))
		}
		q := *p
		q.label, q.cfg.Label = nil, nil // names stay out of sgdisk's output
		creates = append(creates, q)
		if p.start == nil || *p.start == 0 || p.size == nil || *p.size == 0 {
			inspect = append(inspect, p.number)
		}
	}
	if len(inspect) == 0 {
		return specs, nil
	}
	args := []string{"--pretend"}
	if r.env.Planning() && cutil.IsTrue(d.WipeTable) {
		args = append(args, "--clear")
	}
	args = append(args, sgdiskArgs(pretendDels, creates)...)
	for _, n := range inspect {
		args = append(args, "--info="+strconv.Itoa(n))
	}
	out, err := r.env.Command(ctx, nil, "sgdisk", append(args, dev)...)
	if err != nil {
		return nil, fmt.Errorf("resolving partition starts and sizes: %w", err)
	}
	dims, err := parsePretend(string(out), inspect)
	if err != nil {
		return nil, fmt.Errorf("resolving partition starts and sizes: %w", err)
	}
	for i := range specs {
		if dim, ok := dims[specs[i].number]; ok && specs[i].shouldExist() {
			start, size := dim[0], dim[1]
			specs[i].start, specs[i].size = &start, &size
		}
	}
	return specs, nil
}

var (
	firstSectorRE = regexp.MustCompile(`^First sector: (\d+) \(`)
	lastSectorRE  = regexp.MustCompile(`^Last sector: (\d+) \(`)
)

// parsePretend reads the "First sector"/"Last sector" pairs sgdisk --info
// printed, one per number in order, into number → {start, size}.
func parsePretend(out string, numbers []int) (map[int][2]int64, error) {
	dims := map[int][2]int64{}
	i := 0
	var start int64 = -1
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if m := firstSectorRE.FindStringSubmatch(line); m != nil {
			if i >= len(numbers) || start >= 0 {
				return nil, fmt.Errorf("unexpected sgdisk output line %q", line)
			}
			start, _ = strconv.ParseInt(m[1], 10, 64)
		} else if m := lastSectorRE.FindStringSubmatch(line); m != nil {
			if start < 0 {
				return nil, fmt.Errorf("unexpected sgdisk output line %q", line)
			}
			last, _ := strconv.ParseInt(m[1], 10, 64)
			dims[numbers[i]] = [2]int64{start, last - start + 1}
			i++
			start = -1
		}
	}
	if i != len(numbers) {
		return nil, fmt.Errorf("sgdisk printed %d of %d partitions: %q", i, len(numbers), out)
	}
	return dims, nil
}

// sgdiskArgs builds one sgdisk batch: deletions first, then creations in
// order, each with its name, type and GUID when given.
func sgdiskArgs(dels []int, creates []partSpec) []string {
	var args []string
	for _, n := range dels {
		args = append(args, "--delete="+strconv.Itoa(n))
	}
	for _, p := range creates {
		start, size := "0", "0"
		if p.start != nil {
			start = strconv.FormatInt(*p.start, 10)
		}
		if p.size != nil {
			size = strconv.FormatInt(*p.size, 10)
		}
		n := strconv.Itoa(p.number)
		args = append(args, "--new="+n+":"+start+":+"+size)
		if l := partLabel(p); l != nil {
			args = append(args, "--change-name="+n+":"+*l)
		}
		if t := partTypeGUID(p); cutil.NotEmpty(t) {
			args = append(args, "--typecode="+n+":"+*t)
		}
		if g := partGUID(p); cutil.NotEmpty(g) {
			args = append(args, "--partition-guid="+n+":"+*g)
		}
	}
	return args
}

func partLabel(p partSpec) *string {
	if p.label != nil {
		return p.label
	}
	return p.cfg.Label
}

func partGUID(p partSpec) *string {
	if p.guid != nil {
		return p.guid
	}
	return p.cfg.GUID
}

func partTypeGUID(p partSpec) *string {
	if p.typeGUID != nil {
		return p.typeGUID
	}
	return p.cfg.TypeGUID
}

// partMismatches lists how an existing partition differs from the config
// ("field: wanted X, found Y"); withSize false leaves the size out.
func partMismatches(ex gptPartition, p partSpec, ss int64, withSize bool) []string {
	var out []string
	if p.start != nil && *p.start != ex.Start {
		out = append(out, fmt.Sprintf("startMiB: wanted sector %d (%s), found sector %d (%s)", *p.start, mibText(*p.start, ss), ex.Start, mibText(ex.Start, ss)))
	}
	if withSize && p.size != nil && *p.size != ex.Size {
		out = append(out, fmt.Sprintf("sizeMiB: wanted %d sectors (%s), found %d sectors (%s)", *p.size, mibText(*p.size, ss), ex.Size, mibText(ex.Size, ss)))
	}
	if g := p.cfg.GUID; cutil.NotEmpty(g) && !strings.EqualFold(*g, ex.GUID) {
		out = append(out, fmt.Sprintf("guid: wanted %s, found %s", strings.ToUpper(*g), ex.GUID))
	}
	if t := p.cfg.TypeGUID; cutil.NotEmpty(t) && !strings.EqualFold(*t, ex.TypeGUID) {
		out = append(out, fmt.Sprintf("typeGuid: wanted %s, found %s", strings.ToUpper(*t), ex.TypeGUID))
	}
	if l := p.cfg.Label; l != nil && *l != ex.Label {
		out = append(out, fmt.Sprintf("label: wanted %q, found %q", *l, ex.Label))
	}
	return out
}

// describePart describes a partition to be created, for the plan.
func describePart(p partSpec, ss int64) string {
	var b strings.Builder
	if l := partLabel(p); l != nil {
		fmt.Fprintf(&b, "label %q, ", *l)
	}
	fmt.Fprintf(&b, "start sector %d (%s), size %d sectors (%s)", *p.start, mibText(*p.start, ss), *p.size, mibText(*p.size, ss))
	t := partTypeGUID(p)
	if cutil.NotEmpty(t) {
		fmt.Fprintf(&b, ", type %s", strings.ToUpper(*t))
	} else {
		b.WriteString(", type 0FC63DAF-8483-4772-8E79-3D69D8477DE4")
	}
	if g := partGUID(p); cutil.NotEmpty(g) {
		fmt.Fprintf(&b, ", guid %s", strings.ToUpper(*g))
	} else {
		b.WriteString(", random guid")
	}
	return b.String()
}

// describeExisting describes a partition in the table.
func describeExisting(p gptPartition, ss int64) string {
	return fmt.Sprintf("label %q, start sector %d (%s), size %d sectors (%s), type %s, guid %s",
		p.Label, p.Start, mibText(p.Start, ss), p.Size, mibText(p.Size, ss), p.TypeGUID, p.GUID)
}

// ptType returns the partition table type blkid finds on dev ("gpt",
// "dos", …), or "".
func (r *diskRun) ptType(ctx context.Context, dev string) (string, error) {
	out, err := r.env.Command(ctx, nil, "blkid", "-p", "-d", "-o", "export", dev)
	if err != nil {
		if cmdExitCode(err) == 2 {
			return "", nil
		}
		return "", fmt.Errorf("probing %s: %w", dev, err)
	}
	return parseBlkidExport(string(out))["PTTYPE"], nil
}

// syncKernel makes the kernel's partitions of dev match table t: partx
// deletes, updates and adds partitions one by one (sgdisk's reread fails
// on a disk with a busy partition, and some kernels do not parse GPT),
// then the /dev nodes are awaited. A mismatch that remains is an error.
func (r *diskRun) syncKernel(ctx context.Context, dev string, t gptTable) error {
	disk := filepath.Base(dev)
	f := t.SectorSize / 512
	want := map[int][2]int64{}
	for _, p := range t.Partitions {
		want[p.Number] = [2]int64{p.Start * f, p.Size * f}
	}
	partx := func(verb string, n int) {
		if _, err := r.env.Command(ctx, nil, "partx", "--"+verb, "--nr", strconv.Itoa(n), dev); err != nil {
			r.env.Logger().Debug("partx", "err", err)
		}
	}
	diff := func() []string {
		have := kernelPartitions(disk)
		var out []string
		for _, n := range sortedNumbers(have) {
			if _, ok := want[n]; !ok {
				out = append(out, fmt.Sprintf("the kernel has partition %d, the table does not", n))
			}
		}
		for _, n := range sortedNumbers(want) {
			h, ok := have[n]
			switch {
			case !ok:
				out = append(out, fmt.Sprintf("partition %d is not known to the kernel", n))
			case h != want[n]:
				out = append(out, fmt.Sprintf("the kernel has partition %d at start %d size %d (512-byte sectors), the table at start %d size %d", n, h[0], h[1], want[n][0], want[n][1]))
			default:
				if name, ok := kernelPartitionName(disk, n); ok {
					if _, err := os.Stat("/dev/" + name); err != nil {
						out = append(out, fmt.Sprintf("/dev/%s has not appeared", name))
					}
				}
			}
		}
		return out
	}
	wait := func(d time.Duration) []string {
		deadline := time.Now().Add(d)
		for {
			out := diff()
			if len(out) == 0 || time.Now().After(deadline) {
				return out
			}
			select {
			case <-ctx.Done():
				return append(out, ctx.Err().Error())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	if len(diff()) == 0 {
		return nil
	}
	have := kernelPartitions(disk)
	for _, n := range sortedNumbers(have) {
		if w, ok := want[n]; !ok || w != have[n] {
			partx("delete", n)
		}
	}
	have = kernelPartitions(disk)
	for _, n := range sortedNumbers(want) {
		if _, ok := have[n]; !ok {
			partx("add", n)
		}
	}
	if len(wait(5*time.Second)) == 0 {
		return nil
	}
	if _, err := r.env.Command(ctx, nil, "partx", "--update", dev); err != nil {
		r.env.Logger().Debug("partx", "err", err)
	}
	if rest := wait(5 * time.Second); len(rest) > 0 {
		return fmt.Errorf("the kernel does not see the new partition table of %s: %s", dev, strings.Join(rest, "; "))
	}
	return nil
}

// cmdExitCode returns the exit status of a failed command, or -1.
func cmdExitCode(err error) int {
	var ee interface{ ExitCode() int }
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}
