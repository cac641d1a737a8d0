package initramfs

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// File type bits of a cpio header's mode, as in stat(2).
const (
	ModeDir     = 0o040000
	ModeRegular = 0o100000
	ModeSymlink = 0o120000
	ModeCharDev = 0o020000
	ModeBlkDev  = 0o060000
	modeType    = 0o170000
)

// Header is one entry of a cpio "newc" archive.
type Header struct {
	// Name is the path inside the archive, without a leading slash
	// ("init", "usr/sbin/sgdisk"). The kernel creates entries in archive
	// order, so a directory must come before what it contains.
	Name string
	// Mode is the file type bits (ModeDir, ModeRegular, …) and the
	// permission bits.
	Mode uint32
	// UID and GID own the entry; zero is root.
	UID, GID uint32
	// ModTime is the modification time in seconds since the epoch.
	ModTime int64
	// Size is the length of the data that follows: the file's contents,
	// or a symlink's target. Zero for directories and devices.
	Size int64
	// DevMajor and DevMinor are the device number of a character or
	// block device entry.
	DevMajor, DevMinor uint32
}

// Writer writes a cpio archive in the "newc" format (magic 070701), the
// format the Linux kernel unpacks as an initramfs. It needs no cpio
// binary and no privileges: device nodes are only headers.
type Writer struct {
	w      io.Writer
	n      int64  // bytes written so far, for padding
	remain int64  // data bytes still owed to the current entry
	pad    int64  // padding owed after the current entry's data
	ino    uint32 // inode numbers are assigned in order, from 1
	closed bool
	err    error
}

// NewWriter returns a Writer that writes the archive to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// errTooLong is returned by Write past the size in the header.
var errTooLong = errors.New("cpio: write beyond the entry's size")

// WriteHeader starts a new entry. The previous entry must have received
// all of its Size bytes.
func (w *Writer) WriteHeader(h *Header) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errors.New("cpio: write after close")
	}
	if w.remain > 0 {
		return fmt.Errorf("cpio: entry before %q is %d bytes short", h.Name, w.remain)
	}
	if err := w.flushPad(); err != nil {
		return err
	}
	name := strings.TrimPrefix(h.Name, "/")
	if name == "" || strings.ContainsRune(name, 0) {
		return fmt.Errorf("cpio: entry name %q: want a non-empty path without NUL", h.Name)
	}
	if h.Size < 0 || h.Size > 0xFFFFFFFF {
		return fmt.Errorf("cpio: entry %s: size %d does not fit newc's 32-bit field", name, h.Size)
	}
	t := h.Mode & modeType
	if (t == ModeDir || t == ModeCharDev || t == ModeBlkDev) && h.Size != 0 {
		return fmt.Errorf("cpio: entry %s: a directory or device has no data, got size %d", name, h.Size)
	}
	w.ino++
	nlink := uint32(1)
	if t == ModeDir {
		nlink = 2
	}
	if err := w.header(w.ino, h.Mode, h.UID, h.GID, nlink, uint32(h.ModTime), uint32(h.Size), h.DevMajor, h.DevMinor, name); err != nil {
		return err
	}
	w.remain = h.Size
	w.pad = pad4(h.Size)
	return nil
}

func (w *Writer) header(ino, mode, uid, gid, nlink, mtime, size, rmaj, rmin uint32, name string) error {
	// 110 bytes of header, then the name with its NUL, padded so the data
	// starts on a multiple of 4.
	s := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, uid, gid, nlink, mtime, size, 0, 0, rmaj, rmin, len(name)+1, 0)
	s += name + "\x00"
	s += strings.Repeat("\x00", int(pad4(int64(len(s)))))
	return w.write([]byte(s))
}

// Write writes data of the current entry.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if int64(len(p)) > w.remain {
		return 0, errTooLong
	}
	if err := w.write(p); err != nil {
		return 0, err
	}
	w.remain -= int64(len(p))
	return len(p), nil
}

// Close writes the trailer. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	if w.remain > 0 {
		return fmt.Errorf("cpio: last entry is %d bytes short", w.remain)
	}
	if err := w.flushPad(); err != nil {
		return err
	}
	if err := w.header(0, 0, 0, 0, 1, 0, 0, 0, 0, "TRAILER!!!"); err != nil {
		return err
	}
	w.closed = true
	return nil
}

// Len is the number of bytes written so far.
func (w *Writer) Len() int64 { return w.n }

func (w *Writer) flushPad() error {
	if w.pad == 0 {
		return nil
	}
	err := w.write(make([]byte, w.pad))
	w.pad = 0
	return err
}

func (w *Writer) write(p []byte) error {
	n, err := w.w.Write(p)
	w.n += int64(n)
	if err != nil {
		w.err = fmt.Errorf("cpio: %w", err)
	}
	return w.err
}

func pad4(n int64) int64 { return (4 - n%4) % 4 }
