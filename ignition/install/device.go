package install

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// blkZeroOut zeroes a byte range of a block device (BLKZEROOUT), which
// the kernel turns into a WRITE ZEROES or discard where the device can.
func blkZeroOut(f *os.File, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0])))
	if e != 0 {
		return e
	}
	return nil
}

// invalidate zeroes the first and last MiB of a disk (the partition
// tables and boot code) after a failed install.
func invalidate(f *os.File, size int64) error {
	z := make([]byte, 1<<20)
	if _, err := f.WriteAt(z, 0); err != nil {
		return err
	}
	if size < 1<<40*1024 && size > 2<<20 {
		if _, err := f.WriteAt(z, size-1<<20); err != nil {
			return err
		}
	}
	return f.Sync()
}

func isBlock(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}

// rescan makes the kernel read the new partition table and waits for the
// partitions' device nodes. Where the kernel cannot read the table
// itself, it adds the partitions one by one (BLKPG).
func rescan(ctx context.Context, log *slog.Logger, dev string) ([]string, error) {
	if !isBlock(dev) {
		return nil, nil
	}
	f, err := os.Open(dev)
	if err != nil {
		return nil, fmt.Errorf("re-reading the partition table of %s: %w", dev, err)
	}
	defer f.Close()
	fd := int(f.Fd())
	for i := 0; ; i++ {
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKRRPART, 0)
		if e == 0 {
			break
		}
		if e == unix.EBUSY && i < 10 {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		// A loop device without partition scanning says EINVAL; the
		// partitions are then added one by one below.
		log.Info("re-reading the partition table", "device", dev, "err", e)
		break
	}
	ss, err := unix.IoctlGetInt(fd, unix.BLKSSZGET)
	if err != nil {
		ss = 0
	}
	parts, err := ReadPartitions(f, ss)
	if errors.Is(err, errNoTable) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the partition table of %s: %w", dev, err)
	}
	nodes := make([]string, len(parts))
	for i, p := range parts {
		nodes[i] = PartitionPath(dev, p.Number)
	}
	if waitNodes(ctx, nodes, 2*time.Second) {
		return nodes, nil
	}
	for _, p := range parts {
		if isBlock(PartitionPath(dev, p.Number)) {
			continue
		}
		if err := blkpgAdd(fd, p); err != nil && !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("adding partition %d of %s: %w", p.Number, dev, err)
		}
	}
	if !waitNodes(ctx, nodes, 10*time.Second) {
		var missing []string
		for _, n := range nodes {
			if !isBlock(n) {
				missing = append(missing, n)
			}
		}
		return nil, fmt.Errorf("partitions %s did not appear (is /dev a devtmpfs?)", strings.Join(missing, ", "))
	}
	return nodes, nil
}

func blkpgAdd(fd int, p Partition) error {
	part := unix.BlkpgPartition{Start: p.Start, Length: p.Size, Pno: int32(p.Number)}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_ADD_PARTITION, Datalen: int32(unsafe.Sizeof(part)), Data: (*byte)(unsafe.Pointer(&part))}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKPG, uintptr(unsafe.Pointer(&arg)))
	if e != 0 {
		return e
	}
	return nil
}

// waitNodes waits until every path is a block device.
func waitNodes(ctx context.Context, nodes []string, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		ok := true
		for _, n := range nodes {
			if !isBlock(n) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// DefaultRootLabel is the root partition's name or label when none is
// given.
const DefaultRootLabel = "root"

// FindRoot returns the device node of the partition of device whose GPT
// partition name is label or, failing that, whose filesystem label is
// label (ext4, XFS, Btrfs, FAT). An empty label means "root". It waits,
// until ctx ends, for the node to appear.
func FindRoot(ctx context.Context, device, label string) (string, error) {
	if label == "" {
		label = DefaultRootLabel
	}
	f, err := os.Open(device)
	if err != nil {
		return "", fmt.Errorf("finding the root partition: %w", err)
	}
	ss := 0
	if isBlock(device) {
		if v, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET); err == nil {
			ss = v
		}
	}
	parts, err := ReadPartitions(f, ss)
	f.Close()
	if err != nil {
		return "", fmt.Errorf("finding the root partition on %s: %w", device, err)
	}
	var found []string
	for _, p := range parts {
		if p.Name == label {
			return waitNode(ctx, PartitionPath(device, p.Number))
		}
	}
	for _, p := range parts {
		node := PartitionPath(device, p.Number)
		if _, err := waitNode(ctx, node); err != nil {
			return "", err
		}
		fstype, fslabel, err := FSLabel(node)
		if err != nil {
			return "", fmt.Errorf("finding the root partition: reading %s: %w", node, err)
		}
		if fslabel == label {
			return node, nil
		}
		found = append(found, fmt.Sprintf("%s (name %q, %s label %q)", filepath.Base(node), p.Name, orNone(fstype), fslabel))
	}
	if len(found) == 0 {
		found = []string{"no partitions"}
	}
	return "", fmt.Errorf("finding the root partition: no partition of %s is named or labelled %q (kindling.install.root); found %s", device, label, strings.Join(found, ", "))
}

func orNone(s string) string {
	if s == "" {
		return "no filesystem"
	}
	return s
}

func waitNode(ctx context.Context, node string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for !isBlock(node) {
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("finding the root partition: %s did not appear", node)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return node, nil
}
