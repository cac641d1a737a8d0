package install

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strings"
	"unicode/utf16"
)

// Partition is one entry of a disk's partition table.
type Partition struct {
	Number int    // 1-based, as in the device name (vda3)
	Name   string // GPT partition name; "" on MBR
	Type   string // GPT type GUID (upper case) or MBR type ("0x83")
	Start  int64  // first byte
	Size   int64  // bytes
}

// errNoTable is returned for a disk with neither a GPT nor an MBR.
var errNoTable = errors.New("no GPT or MBR partition table")

// ReadPartitions reads a GPT (primary header, checked by CRC) or, failing
// that, an MBR's primary partitions from r. sectorSize is the device's
// logical block size; 0 tries 512 and then 4096.
func ReadPartitions(r io.ReaderAt, sectorSize int) ([]Partition, error) {
	sizes := []int{sectorSize}
	if sectorSize == 0 {
		sizes = []int{512, 4096}
	}
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return nil, fmt.Errorf("reading the MBR: %w", err)
	}
	var gptErr error
	for _, ss := range sizes {
		parts, err := readGPT(r, ss)
		if err == nil {
			return parts, nil
		}
		if !errors.Is(err, errNoTable) {
			gptErr = err
		}
	}
	if gptErr != nil {
		return nil, gptErr
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, errNoTable
	}
	var parts []Partition
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i : 446+16*(i+1)]
		typ := e[4]
		start := int64(binary.LittleEndian.Uint32(e[8:]))
		n := int64(binary.LittleEndian.Uint32(e[12:]))
		if typ == 0 || n == 0 || typ == 0x05 || typ == 0x0F || typ == 0x85 {
			continue // empty, or extended (logical partitions are not read)
		}
		parts = append(parts, Partition{Number: i + 1, Type: fmt.Sprintf("0x%02x", typ), Start: start * 512, Size: n * 512})
	}
	return parts, nil
}

func readGPT(r io.ReaderAt, ss int) ([]Partition, error) {
	h := make([]byte, ss)
	if _, err := r.ReadAt(h, int64(ss)); err != nil {
		return nil, errNoTable
	}
	if string(h[:8]) != "EFI PART" {
		return nil, errNoTable
	}
	hsize := binary.LittleEndian.Uint32(h[12:])
	if hsize < 92 || int(hsize) > ss {
		return nil, fmt.Errorf("GPT header: size %d out of range", hsize)
	}
	want := binary.LittleEndian.Uint32(h[16:])
	hc := append([]byte{}, h[:hsize]...)
	binary.LittleEndian.PutUint32(hc[16:], 0)
	if crc32.ChecksumIEEE(hc) != want {
		return nil, errors.New("GPT header: CRC mismatch (corrupt or half-written table)")
	}
	entLBA := int64(binary.LittleEndian.Uint64(h[72:]))
	count := binary.LittleEndian.Uint32(h[80:])
	esize := binary.LittleEndian.Uint32(h[84:])
	if esize < 128 || count > 1024 {
		return nil, fmt.Errorf("GPT header: %d entries of %d bytes: out of range", count, esize)
	}
	ents := make([]byte, int(count)*int(esize))
	if _, err := r.ReadAt(ents, entLBA*int64(ss)); err != nil {
		return nil, fmt.Errorf("reading GPT entries: %w", err)
	}
	if crc32.ChecksumIEEE(ents) != binary.LittleEndian.Uint32(h[88:]) {
		return nil, errors.New("GPT entries: CRC mismatch (corrupt or half-written table)")
	}
	var parts []Partition
	for i := 0; i < int(count); i++ {
		e := ents[i*int(esize) : (i+1)*int(esize)]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		first := int64(binary.LittleEndian.Uint64(e[32:]))
		last := int64(binary.LittleEndian.Uint64(e[40:]))
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		name := string(utf16.Decode(u))
		if k := strings.IndexRune(name, 0); k >= 0 {
			name = name[:k]
		}
		parts = append(parts, Partition{
			Number: i + 1, Name: name, Type: guidString(e[:16]),
			Start: first * int64(ss), Size: (last - first + 1) * int64(ss),
		})
	}
	return parts, nil
}

// guidString formats a GPT GUID (mixed-endian on disk).
func guidString(b []byte) string {
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X",
		binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint16(b[4:]), binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

// PartitionPath is the device node of partition n of disk: vda → vda3,
// nvme0n1 → nvme0n1p3, loop0 → loop0p3.
func PartitionPath(disk string, n int) string {
	if disk != "" && disk[len(disk)-1] >= '0' && disk[len(disk)-1] <= '9' {
		return fmt.Sprintf("%sp%d", disk, n)
	}
	return fmt.Sprintf("%s%d", disk, n)
}

// FSLabel reads the type and label of the filesystem on a device or
// image: ext2/3/4, XFS, Btrfs or FAT. An unknown filesystem gives "", "".
func FSLabel(dev string) (fstype, label string, err error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	return fsLabel(f)
}

func fsLabel(r io.ReaderAt) (string, string, error) {
	b := make([]byte, 0x10000+4096)
	n, err := r.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", "", err
	}
	b = b[:n]
	cstr := func(p []byte) string {
		if i := bytes.IndexByte(p, 0); i >= 0 {
			p = p[:i]
		}
		return string(p)
	}
	switch {
	case len(b) >= 1024+136 && binary.LittleEndian.Uint16(b[1024+56:]) == 0xEF53:
		return "ext4", cstr(b[1024+120 : 1024+136]), nil
	case len(b) >= 120 && string(b[:4]) == "XFSB":
		return "xfs", cstr(b[108:120]), nil
	case len(b) >= 0x10000+0x12b+256 && string(b[0x10040:0x10048]) == "_BHRfS_M":
		return "btrfs", cstr(b[0x1012b : 0x1012b+256]), nil
	case len(b) >= 512 && b[510] == 0x55 && b[511] == 0xAA && string(b[82:87]) == "FAT32":
		return "vfat", fatLabel(b[71:82]), nil
	case len(b) >= 512 && b[510] == 0x55 && b[511] == 0xAA && string(b[54:57]) == "FAT":
		return "vfat", fatLabel(b[43:54]), nil
	}
	return "", "", nil
}

func fatLabel(b []byte) string {
	s := strings.TrimRight(string(b), " \x00")
	if s == "NO NAME" {
		return ""
	}
	return s
}
