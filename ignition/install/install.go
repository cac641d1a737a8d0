// Package install is the agent's installer mode, for distributions
// without Ignition: Image streams a raw disk image from http(s) to a block
// device, decompressing it on the way (gzip, xz or zstd, recognised by
// their magic bytes) and verifying its SHA-256; FindRoot then finds the
// installed root partition so the runner can mount it and apply the
// Ignition config there.
//
// The kernel arguments that drive it are documented in package
// ignition/boot: kindling.install.dev, kindling.install.image,
// kindling.install.sha256 and kindling.install.root.
//
// # The hash
//
// SHA256 is the hash of the file as the server serves it, compressed or
// not: the output of `sha256sum image.raw.zst`, as distributions publish
// it. The image is streamed, so the hash is known only once the disk is
// written. On a mismatch (or any failure after writing began) Image
// zeroes the disk's first and last MiB, so neither firmware nor a later
// boot finds a half-trusted partition table, and returns an error naming
// both hashes: the runner must report the failure and never go on to
// configure or boot the disk.
package install

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unsafe"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
	"golang.org/x/sys/unix"

	"github.com/kindlingboot/kindling/ignition/fetch"
)

// ErrHashMismatch is returned (wrapped) when the image's SHA-256 is not
// the expected one.
var ErrHashMismatch = errors.New("image SHA-256 mismatch")

// Options say what to install where.
type Options struct {
	// Device is the whole disk to write, e.g. /dev/vda. A regular file
	// works too (tests, image building). Required.
	Device string
	// URL is the image, http or https. Required.
	URL string
	// SHA256 is the hex SHA-256 of the file as served; empty skips the
	// check.
	SHA256 string
	// Log receives progress; nil discards.
	Log *slog.Logger
	// HTTPClient fetches the image; nil means a client that gives up on
	// a connection or on response headers after 30 s, but lets the body
	// take as long as it takes.
	HTTPClient *http.Client
}

// Result is what Image did.
type Result struct {
	Format     string // "raw", "gzip", "xz" or "zstd"
	Downloaded int64  // bytes of the file as served
	Written    int64  // bytes written to the disk
	SHA256     string // of the file as served
	Duration   time.Duration
	MBps       float64 // Written per second, in MB (10^6 bytes)
	// Partitions are the partition device nodes found after the write.
	Partitions []string
}

const chunk = 4 << 20 // write size and alignment

var defaultClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	ResponseHeaderTimeout: 30 * time.Second,
	TLSHandshakeTimeout:   30 * time.Second,
	IdleConnTimeout:       90 * time.Second,
}}

// Image writes the image at o.URL to o.Device.
func Image(ctx context.Context, o Options) (Result, error) {
	var res Result
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Device == "" {
		return res, errors.New("install: no device (kindling.install.dev): want a disk such as /dev/vda")
	}
	if !strings.HasPrefix(o.URL, "http://") && !strings.HasPrefix(o.URL, "https://") {
		return res, fmt.Errorf("install: image URL %q (kindling.install.image): want http:// or https://", fetch.Redact(o.URL))
	}
	shown := fetch.Redact(o.URL) // logs, errors and reports never carry credentials
	want := strings.ToLower(strings.TrimSpace(o.SHA256))
	if want != "" {
		if b, err := hex.DecodeString(want); err != nil || len(b) != sha256.Size {
			return res, fmt.Errorf("install: SHA-256 %q (kindling.install.sha256): want 64 hex digits", o.SHA256)
		}
	}
	client := o.HTTPClient
	if client == nil {
		client = defaultClient
	}
	start := time.Now()
	dev, size, err := openDevice(o.Device)
	if err != nil {
		return res, err
	}
	defer func() {
		if dev != nil {
			dev.Close()
		}
	}()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.URL, nil)
	if err != nil {
		return res, fmt.Errorf("install: image URL %q: %w", shown, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		// net/http's errors quote the URL; report it redacted instead.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return res, fmt.Errorf("install: fetching %s: %w", shown, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("install: fetching %s: %s", shown, resp.Status)
	}
	log.Info("installing", "image", shown, "device", o.Device, "size", resp.ContentLength, "disk", size)

	h := sha256.New()
	served := &counter{r: resp.Body}
	body := io.TeeReader(served, h)
	br := bufio.NewReaderSize(body, 1<<20)
	format, dec, closeDec, err := decompressor(br)
	if err != nil {
		return res, fmt.Errorf("install: %s: %w", shown, err)
	}
	res.Format = format
	if format == "raw" && resp.ContentLength > size {
		closeDec()
		return res, fmt.Errorf("install: %s (%d bytes) is larger than %s (%d bytes); nothing was written", shown, resp.ContentLength, o.Device, size)
	}
	written, werr := write(ctx, log, dev, size, dec, o.Device)
	closeDec()
	res.Written = written
	if werr == nil {
		// Hash what follows the compressed stream too: the hash is of the
		// whole file.
		if _, err := io.Copy(io.Discard, br); err != nil {
			werr = fmt.Errorf("reading the rest of the image: %w", err)
		}
	}
	res.Downloaded = served.n
	res.SHA256 = hex.EncodeToString(h.Sum(nil))
	if werr == nil && want != "" && res.SHA256 != want {
		werr = fmt.Errorf("%w: %s has %s, want %s (kindling.install.sha256)", ErrHashMismatch, shown, res.SHA256, want)
	}
	if werr == nil {
		if err := dev.Sync(); err != nil {
			werr = fmt.Errorf("flushing %s: %w", o.Device, err)
		}
	}
	if werr != nil {
		if written > 0 {
			if err := invalidate(dev, size); err != nil {
				log.Error("could not wipe the partial image", "device", o.Device, "err", err)
			} else {
				werr = fmt.Errorf("%w; the disk's first and last MiB were zeroed so it does not boot", werr)
			}
		}
		return res, fmt.Errorf("install: %w", werr)
	}
	dev.Close()
	dev = nil
	res.Duration = time.Since(start)
	res.MBps = float64(written) / 1e6 / res.Duration.Seconds()

	parts, err := rescan(ctx, log, o.Device)
	if err != nil {
		return res, fmt.Errorf("install: %w", err)
	}
	res.Partitions = parts
	log.Info("installed", "device", o.Device, "format", format, "downloaded", res.Downloaded, "written", written,
		"sha256", res.SHA256, "took", res.Duration.Round(time.Millisecond).String(), "MB/s", fmt.Sprintf("%.1f", res.MBps),
		"partitions", strings.Join(parts, " "))
	return res, nil
}

type counter struct {
	r io.Reader
	n int64
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// openDevice opens the disk for writing, exclusively for a block device
// (it fails while a partition is mounted), and returns its size.
func openDevice(p string) (*os.File, int64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, 0, fmt.Errorf("install: device: %w", err)
	}
	flags := os.O_WRONLY
	block := fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
	switch {
	case block:
		flags |= unix.O_EXCL
	case fi.Mode().IsRegular():
	default:
		return nil, 0, fmt.Errorf("install: device %s: not a block device", p)
	}
	f, err := os.OpenFile(p, flags, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, 0, fmt.Errorf("install: device %s is in use (mounted, or part of a RAID or LVM): %w", p, err)
		}
		return nil, 0, fmt.Errorf("install: opening %s: %w", p, err)
	}
	size := fi.Size()
	if block {
		var s uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&s))); e != 0 {
			f.Close()
			return nil, 0, fmt.Errorf("install: size of %s: %w", p, e)
		}
		size = int64(s)
	} else {
		size = 1 << 62 // a file grows
	}
	return f, size, nil
}

// decompressor recognises the image's format by its first bytes.
func decompressor(br *bufio.Reader) (string, io.Reader, func(), error) {
	magic, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", nil, nil, fmt.Errorf("reading the image: %w", err)
	}
	nop := func() {}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return "", nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return "gzip", zr, nop, nil
	case bytes.HasPrefix(magic, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		xr, err := xz.NewReader(br)
		if err != nil {
			return "", nil, nil, fmt.Errorf("xz: %w", err)
		}
		return "xz", xr, nop, nil
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true))
		if err != nil {
			return "", nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return "zstd", zr, zr.Close, nil
	}
	return "raw", br, nop, nil
}

// write copies the image to the disk in aligned chunks. All-zero chunks
// are written with BLKZEROOUT where the device supports it, which is
// far faster for the empty space of a disk image.
func write(ctx context.Context, log *slog.Logger, dev *os.File, size int64, r io.Reader, name string) (int64, error) {
	buf := make([]byte, chunk)
	var off int64
	zeroOut := true
	last := time.Now()
	start := last
	for {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if off+int64(n) > size {
				return off, fmt.Errorf("the image is larger than %s (%d bytes)", name, size)
			}
			p := buf[:n]
			done := false
			if zeroOut && n%512 == 0 && allZero(p) {
				done = blkZeroOut(dev, off, int64(n)) == nil
				if !done {
					zeroOut = false
				}
			}
			if !done {
				if _, err := dev.WriteAt(p, off); err != nil {
					return off, fmt.Errorf("writing %s at byte %d: %w", name, off, err)
				}
			}
			off += int64(n)
			if time.Since(last) >= 10*time.Second {
				last = time.Now()
				log.Info("installing", "device", name, "written", off, "MB/s", fmt.Sprintf("%.1f", float64(off)/1e6/time.Since(start).Seconds()))
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return off, nil
		}
		if err != nil {
			return off, fmt.Errorf("reading the image: %w", err)
		}
	}
}

func allZero(p []byte) bool {
	var z [4096]byte
	for len(p) > 0 {
		n := min(len(p), len(z))
		if !bytes.Equal(p[:n], z[:n]) {
			return false
		}
		p = p[n:]
	}
	return true
}
