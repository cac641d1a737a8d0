package stages

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/unix"
)

// This file reads GUID partition tables (UEFI 2.10 §5.3) in Go: the disks
// stage compares what exists with the config, and device resolution maps
// partition labels and GUIDs to kernel devices without udev. Writing stays
// with sgdisk.

// gptTable is what a disk holds, in the disk's logical sectors.
type gptTable struct {
	SectorSize int64 // logical sector size in bytes
	Sectors    int64 // size of the disk in logical sectors
	// Found reports whether a valid GPT header was read; false means the
	// disk has no partition table (Partitions is empty).
	Found      bool
	Partitions []gptPartition // by number
}

// gptPartition is one used entry of the partition array.
type gptPartition struct {
	Number   int    // 1-based index in the entry array
	Start    int64  // first logical sector
	Size     int64  // in logical sectors
	TypeGUID string // upper case, 8-4-4-4-12
	GUID     string // upper case, 8-4-4-4-12
	Label    string // the partition name (GPT PARTLABEL)
}

// partition returns partition n of the table.
func (t gptTable) partition(n int) (gptPartition, bool) {
	for _, p := range t.Partitions {
		if p.Number == n {
			return p, true
		}
	}
	return gptPartition{}, false
}

var errNoGPT = errors.New("no GPT header")

// readGPT parses the GPT of a disk of size bytes with the given logical
// sector size: the primary header at LBA 1, or the backup header in the
// last sector when the primary one is damaged. It returns errNoGPT when
// neither is valid.
func readGPT(r io.ReaderAt, sectorSize, size int64) (gptTable, error) {
	t := gptTable{SectorSize: sectorSize, Sectors: size / sectorSize}
	if t.Sectors < 3 {
		return t, errNoGPT
	}
	var firstErr error
	for _, lba := range []int64{1, t.Sectors - 1} {
		parts, err := readGPTAt(r, sectorSize, lba, t.Sectors)
		if err == nil {
			t.Found = true
			t.Partitions = parts
			return t, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if errors.Is(firstErr, errNoGPT) {
		return t, errNoGPT
	}
	return t, firstErr
}

// readGPTAt reads and checks the header at lba and its entry array.
func readGPTAt(r io.ReaderAt, sectorSize, lba, sectors int64) ([]gptPartition, error) {
	hdr := make([]byte, sectorSize)
	if _, err := r.ReadAt(hdr, lba*sectorSize); err != nil {
		return nil, fmt.Errorf("reading GPT header at LBA %d: %w", lba, err)
	}
	if string(hdr[0:8]) != "EFI PART" {
		return nil, errNoGPT
	}
	hdrSize := binary.LittleEndian.Uint32(hdr[12:16])
	if hdrSize < 92 || int64(hdrSize) > sectorSize {
		return nil, fmt.Errorf("%w: header size %d at LBA %d", errNoGPT, hdrSize, lba)
	}
	want := binary.LittleEndian.Uint32(hdr[16:20])
	check := bytes.Clone(hdr[:hdrSize])
	binary.LittleEndian.PutUint32(check[16:20], 0)
	if crc32.ChecksumIEEE(check) != want {
		return nil, fmt.Errorf("%w: header checksum mismatch at LBA %d", errNoGPT, lba)
	}
	entriesLBA := int64(binary.LittleEndian.Uint64(hdr[72:80]))
	count := int64(binary.LittleEndian.Uint32(hdr[80:84]))
	entrySize := int64(binary.LittleEndian.Uint32(hdr[84:88]))
	entriesCRC := binary.LittleEndian.Uint32(hdr[88:92])
	if entrySize < 128 || count > 4096 || entriesLBA <= 0 || entriesLBA >= sectors {
		return nil, fmt.Errorf("%w: implausible entry array (LBA %d, %d entries of %d bytes)", errNoGPT, entriesLBA, count, entrySize)
	}
	entries := make([]byte, count*entrySize)
	if _, err := r.ReadAt(entries, entriesLBA*sectorSize); err != nil {
		return nil, fmt.Errorf("reading GPT entries at LBA %d: %w", entriesLBA, err)
	}
	if crc32.ChecksumIEEE(entries) != entriesCRC {
		return nil, fmt.Errorf("%w: entry array checksum mismatch (header at LBA %d)", errNoGPT, lba)
	}
	var parts []gptPartition
	for i := int64(0); i < count; i++ {
		e := entries[i*entrySize : (i+1)*entrySize]
		if gptZero(e[0:16]) {
			continue
		}
		first := int64(binary.LittleEndian.Uint64(e[32:40]))
		last := int64(binary.LittleEndian.Uint64(e[40:48]))
		parts = append(parts, gptPartition{
			Number:   int(i) + 1,
			Start:    first,
			Size:     last - first + 1,
			TypeGUID: formatGUID(e[0:16]),
			GUID:     formatGUID(e[16:32]),
			Label:    decodeGPTName(e[56:128]),
		})
	}
	sort.Slice(parts, func(i, j int) bool { return parts[i].Number < parts[j].Number })
	return parts, nil
}

func gptZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// formatGUID renders a GUID stored in the mixed-endian on-disk layout
// (the first three fields little endian) as upper-case text.
func formatGUID(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(b[0:4]),
		binary.LittleEndian.Uint16(b[4:6]),
		binary.LittleEndian.Uint16(b[6:8]),
		b[8:10], b[10:16])
}

// decodeGPTName decodes the 36 UTF-16LE code units of a partition name,
// up to the first NUL.
func decodeGPTName(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

// readDiskTable reads the partition table of the block device dev. A disk
// with no partition table gives an empty table; a disk with another kind of
// table (an MBR, say) is an error, as the disks stage only writes GPT.
// pttype, when non-nil, names the table type of a disk without a GPT
// (blkid's PTTYPE), or "" when there is none.
func readDiskTable(dev string, pttype func(dev string) (string, error)) (gptTable, error) {
	f, err := os.Open(dev)
	if err != nil {
		return gptTable{}, err
	}
	defer f.Close()
	ss, err := logicalSectorSize(f)
	if err != nil {
		return gptTable{}, fmt.Errorf("reading the logical sector size of %s: %w", dev, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return gptTable{}, fmt.Errorf("reading the size of %s: %w", dev, err)
	}
	t, err := readGPT(f, ss, size)
	if err == nil {
		return t, nil
	}
	if !errors.Is(err, errNoGPT) {
		return t, fmt.Errorf("reading the partition table of %s: %w", dev, err)
	}
	if pttype != nil {
		pt, perr := pttype(dev)
		if perr != nil {
			return t, perr
		}
		if pt != "" && pt != "gpt" {
			return t, fmt.Errorf("%s has a partition table of type %q, not GPT (set wipeTable to replace it)", dev, pt)
		}
	}
	return t, nil
}

// zapTable destroys the partition table of dev the way sgdisk --zap-all
// does: it zeroes the MBR, the primary GPT header and entries and the
// backup GPT (for 512-byte sectors the first 34 and the last 33), and syncs. Partition
// data is untouched, as with sgdisk.
func zapTable(dev string) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	ss, err := logicalSectorSize(f)
	if err != nil {
		return fmt.Errorf("reading the logical sector size of %s: %w", dev, err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("reading the size of %s: %w", dev, err)
	}
	// MBR + header + a 16 KiB entry array at the start; entries + header
	// at the end (34 and 33 sectors of 512 bytes, 6 and 5 of 4096).
	ents := (128*128 + ss - 1) / ss
	head, tail := (2+ents)*ss, (1+ents)*ss
	if size < head+tail {
		return fmt.Errorf("%s is %d bytes, too small for a GPT", dev, size)
	}
	if _, err := f.WriteAt(make([]byte, head), 0); err != nil {
		return err
	}
	if _, err := f.WriteAt(make([]byte, tail), size-tail); err != nil {
		return err
	}
	return f.Sync()
}

// logicalSectorSize returns the logical sector size of a block device, or
// 512 for a regular file.
func logicalSectorSize(f *os.File) (int64, error) {
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Mode()&os.ModeDevice == 0 {
		return 512, nil
	}
	n, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKSSZGET)
	if err != nil {
		return 0, err
	}
	if n <= 0 || n%512 != 0 {
		return 0, fmt.Errorf("logical sector size %d is not a multiple of 512", n)
	}
	return int64(n), nil
}

// mibToSectors converts a size in MiB to logical sectors.
func mibToSectors(mib *int, sectorSize int64) *int64 {
	if mib == nil {
		return nil
	}
	v := int64(*mib) * (1 << 20 / sectorSize)
	return &v
}

// mibText renders n logical sectors in MiB, for messages.
func mibText(n, sectorSize int64) string {
	s := strconv.FormatFloat(float64(n*sectorSize)/(1<<20), 'f', 3, 64)
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".") + " MiB"
}
