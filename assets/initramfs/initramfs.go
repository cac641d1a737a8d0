// Package initramfs builds Kindling's initramfs: a compressed cpio "newc"
// archive whose /init is the ignite agent, with the kernel modules and the
// external tools the agent needs, copied from the build host.
//
// Layout of the archive:
//
//	/init                         the agent (Options.Init)
//	/dev/console                  character device 5:1, so /init has a console
//	/dev, /proc, /sys, /run, /tmp, /sysroot   empty mount points
//	/usr/sbin/sgdisk, /usr/bin/mount, …       each tool at its host path
//	/lib/x86_64-linux-gnu/…, /lib64/ld-linux-x86-64.so.2
//	                              the tools' shared libraries and ELF interpreter
//	/lib/modules/VER/kernel/…/NAME.ko        the modules, always uncompressed
//	/etc/kindling/modules         module files to load, one absolute path a
//	                              line, dependencies first
//	/etc/kindling/kernel-version  VER, so the agent can warn on a mismatch
//
// Modules are stored uncompressed (.ko.xz, .ko.zst and .ko.gz are
// decompressed at build time): the agent loads them with finit_module(2),
// which takes compressed modules only on kernels built with module
// decompression, and the archive as a whole is compressed anyway.
//
// The output is reproducible: entries are sorted, owned by root, and carry
// a fixed modification time, so two builds from the same inputs are
// byte-identical.
package initramfs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"
)

// DefaultModules are the modules an initramfs carries unless
// Options.Modules says otherwise: virtual and common disk and network
// drivers, the filesystems the agent formats, RAID and dm-crypt, AF_PACKET
// for DHCP, and virtio_rng: a virtual machine without a CPU random number
// instruction (QEMU's TCG) otherwise waits minutes for the kernel's
// random number generator before the first DHCP request. Each is
// optional: one the kernel lacks or has built in is listed in the Result
// and skipped.
var DefaultModules = []string{
	"virtio_pci", "virtio_blk", "virtio_net", "virtio_scsi", "virtio_console", "virtio_rng",
	"nvme", "ahci", "sd_mod", "e1000", "e1000e",
	"ext4", "xfs", "btrfs", "vfat", "nls_cp437", "nls_iso8859_1",
	"md_mod", "raid0", "raid1", "raid10", "raid456",
	"dm_mod", "dm_crypt", "xts", "ecb", "af_alg", "algif_skcipher",
	"af_packet",
}

// DefaultTools are the external tools the agent's stages call. Each is
// required unless it ends in "?".
var DefaultTools = []string{
	"sgdisk", "partx", "wipefs", "blkid", "mount", "umount",
	"mkfs.ext4", "mkfs.xfs", "mkfs.btrfs", "mkfs.fat", "mkswap",
	"mdadm", "cryptsetup",
}

// toolPackages names the Debian package of each tool Kindling knows, for
// the error when one is missing.
var toolPackages = map[string]string{
	"sgdisk": "gdisk", "partx": "util-linux", "wipefs": "util-linux", "blkid": "util-linux",
	"mount": "mount", "umount": "mount", "mkswap": "util-linux", "losetup": "mount",
	"mkfs.ext4": "e2fsprogs", "mkfs.xfs": "xfsprogs", "mkfs.btrfs": "btrfs-progs",
	"mkfs.fat": "dosfstools", "mkfs.vfat": "dosfstools", "mdadm": "mdadm",
	"cryptsetup": "cryptsetup-bin", "udevadm": "udev", "modprobe": "kmod",
	"busybox": "busybox-static",
}

// toolFiles are data files a tool reads, copied when present on the host.
var toolFiles = map[string][]string{
	"mkfs.ext4": {"/etc/mke2fs.conf"},
}

// Options say what goes into the initramfs. The zero value of every field
// but Init has a working default.
type Options struct {
	// Init is the path of the agent binary (a static ignite); it becomes
	// /init. Required.
	Init string
	// KernelVersion is the version whose modules are copied. Empty means
	// the running kernel when /lib/modules has it, else the only version
	// under /lib/modules.
	KernelVersion string
	// ModulesDir is the directory with modules.dep and the module files.
	// Empty means /lib/modules/KernelVersion. When KernelVersion is empty
	// and ModulesDir is set, the version is ModulesDir's base name.
	ModulesDir string
	// Modules are module names ("virtio_net"; dashes and underscores are
	// the same), loaded in this order after their dependencies. A name
	// ending in "?" is optional. Nil means DefaultModules (all optional);
	// an empty non-nil slice means no modules.
	Modules []string
	// Tools are tools found on the host's PATH (plus the sbin
	// directories), copied with their shared libraries. A name ending in
	// "?" is optional. Nil means DefaultTools; empty non-nil means none.
	Tools []string
	// Compression is "gzip" (the default when empty), "zstd" or "none".
	Compression string
	// ModTime is the modification time of every entry; zero means the
	// Unix epoch.
	ModTime time.Time
	// LookPath finds a tool; nil searches the host's PATH and then
	// /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin.
	LookPath func(name string) (string, error)
}

// Result says what a build included.
type Result struct {
	KernelVersion string
	ModulesDir    string
	// Modules are the module names in load order, dependencies first.
	Modules []string
	// Builtin are requested modules the kernel has built in.
	Builtin []string
	// MissingModules are optional modules neither built in nor found.
	MissingModules []string
	// Tools maps each included tool to its host path.
	Tools map[string]string
	// MissingTools are optional tools not found on the host.
	MissingTools []string
	// Libraries are the host paths of the shared libraries and ELF
	// interpreters copied for the tools.
	Libraries []string
	// Entries is the number of entries in the archive.
	Entries int
	// Size is the size of the cpio archive; Compressed what was written
	// to the output.
	Size, Compressed int64
}

// entry is one file of the archive before it is written.
type entry struct {
	mode     uint32
	src      string // host file to copy, or
	data     []byte // contents, or a symlink's target
	devMajor uint32
	devMinor uint32
}

// image is the archive being assembled, keyed by path without the
// leading slash.
type image map[string]*entry

func (im image) dirs(p string) {
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := im[d]; ok {
			return
		}
		im[d] = &entry{mode: ModeDir | 0o755}
	}
}

func (im image) add(p string, e *entry) {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	im.dirs(p)
	im[p] = e
}

// Build writes an initramfs to w.
func Build(ctx context.Context, w io.Writer, o Options) (Result, error) {
	var res Result
	if o.Init == "" {
		return res, errors.New("initramfs: Options.Init is empty: want the path of a static ignite binary")
	}
	if err := checkInit(o.Init); err != nil {
		return res, err
	}
	im := image{}
	im.add("init", &entry{mode: ModeRegular | 0o755, src: o.Init})
	im.add("dev/console", &entry{mode: ModeCharDev | 0o600, devMajor: 5, devMinor: 1})
	im.add("dev/null", &entry{mode: ModeCharDev | 0o666, devMajor: 1, devMinor: 3})
	for _, d := range []string{"proc", "sys", "run", "tmp", "sysroot", "etc/kindling", "root"} {
		im.add(d, &entry{mode: ModeDir | 0o755})
	}
	im["tmp"].mode = ModeDir | 0o1777
	im["root"].mode = ModeDir | 0o700

	if err := addModules(ctx, im, o, &res); err != nil {
		return res, err
	}
	if err := addTools(ctx, im, o, &res); err != nil {
		return res, err
	}
	res.Entries = len(im)
	return res, writeImage(ctx, w, im, o, &res)
}

// checkInit refuses an /init that would not run as the first process: a
// dynamically linked binary finds no libraries in the initramfs.
func checkInit(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return fmt.Errorf("initramfs: init binary: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("initramfs: init binary %s: not a regular file", p)
	}
	interp, _, err := elfDeps(p)
	if err != nil {
		return fmt.Errorf("initramfs: init binary %s: %w", p, err)
	}
	if interp != "" {
		return fmt.Errorf("initramfs: init binary %s is dynamically linked (interpreter %s): build it with CGO_ENABLED=0", p, interp)
	}
	return nil
}

func writeImage(ctx context.Context, w io.Writer, im image, o Options, res *Result) error {
	cw := &countWriter{w: w}
	var (
		out   io.Writer = cw
		close func() error
	)
	switch o.Compression {
	case "", "gzip":
		zw, _ := gzip.NewWriterLevel(cw, gzip.DefaultCompression) // mtime 0, no name: reproducible
		out, close = zw, zw.Close
	case "zstd":
		// One goroutine keeps the output identical from run to run; the
		// 8 MiB window is within what the kernel's decompressor accepts.
		zw, err := zstd.NewWriter(cw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression),
			zstd.WithWindowSize(8<<20), zstd.WithEncoderCRC(true))
		if err != nil {
			return fmt.Errorf("initramfs: zstd: %w", err)
		}
		out, close = zw, zw.Close
	case "none":
		close = func() error { return nil }
	default:
		return fmt.Errorf("initramfs: compression %q: want gzip, zstd or none", o.Compression)
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	cp := NewWriter(bw)
	names := make([]string, 0, len(im))
	for n := range im {
		names = append(names, n)
	}
	// Lexical order puts every directory before its contents.
	sort.Strings(names)
	mtime := int64(0)
	if !o.ModTime.IsZero() {
		mtime = o.ModTime.Unix()
	}
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := writeEntry(cp, n, im[n], mtime); err != nil {
			return fmt.Errorf("initramfs: %w", err)
		}
	}
	if err := cp.Close(); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("initramfs: writing: %w", err)
	}
	if err := close(); err != nil {
		return fmt.Errorf("initramfs: compressing: %w", err)
	}
	res.Size = cp.Len()
	res.Compressed = cw.n
	return nil
}

func writeEntry(cp *Writer, name string, e *entry, mtime int64) error {
	h := &Header{Name: name, Mode: e.mode, ModTime: mtime, DevMajor: e.devMajor, DevMinor: e.devMinor}
	if e.src == "" {
		h.Size = int64(len(e.data))
		if err := cp.WriteHeader(h); err != nil {
			return err
		}
		_, err := cp.Write(e.data)
		return err
	}
	f, err := os.Open(e.src)
	if err != nil {
		return fmt.Errorf("copying /%s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("copying /%s: %w", name, err)
	}
	h.Size = fi.Size()
	if err := cp.WriteHeader(h); err != nil {
		return err
	}
	n, err := io.Copy(cp, f)
	if err != nil {
		return fmt.Errorf("copying %s to /%s: %w", e.src, name, err)
	}
	if n != h.Size {
		return fmt.Errorf("copying %s to /%s: file changed size during the build (%d, now %d bytes)", e.src, name, h.Size, n)
	}
	return nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// HostKernelVersion is the kernel version Build uses when none is given:
// the running kernel's when /lib/modules has it, else the only version
// installed under /lib/modules.
func HostKernelVersion() (string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		rel := unix.ByteSliceToString(u.Release[:])
		if fi, err := os.Stat(filepath.Join("/lib/modules", rel)); err == nil && fi.IsDir() {
			return rel, nil
		}
	}
	ents, err := os.ReadDir("/lib/modules")
	if err != nil {
		return "", fmt.Errorf("finding the host's kernel modules: %w (install a linux-image package, or give a kernel version and modules directory)", err)
	}
	var vers []string
	for _, e := range ents {
		if e.IsDir() {
			if _, err := os.Stat(filepath.Join("/lib/modules", e.Name(), "modules.dep")); err == nil {
				vers = append(vers, e.Name())
			}
		}
	}
	switch len(vers) {
	case 1:
		return vers[0], nil
	case 0:
		return "", errors.New("no kernel modules under /lib/modules (install a linux-image package, or give a kernel version and modules directory)")
	}
	return "", fmt.Errorf("the running kernel has no modules under /lib/modules and several versions are installed (%s): give one", strings.Join(vers, ", "))
}

// lines returns the non-empty lines of b.
func lines(b []byte) []string {
	var out []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		if s := strings.TrimSpace(string(l)); s != "" {
			out = append(out, s)
		}
	}
	return out
}
