package tftp

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	pin "github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/kindlingboot/kindling/assets"
	"github.com/kindlingboot/kindling/matchbox/events"
)

// testServer is a Server on 127.0.0.1 over a temporary root.
type testServer struct {
	addr string
	dir  string // the served root
	stop func() // stops the server and waits for Serve to return
}

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	base := t.TempDir()
	dir := filepath.Join(base, "root")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := assets.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Root = root
	if cfg.Logger == nil && testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(cfg).Serve(ctx, conn) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve = %v, want nil after cancel", err)
				}
			case <-time.After(5 * time.Second):
				t.Error("Serve did not return within 5s of cancel")
			}
			conn.Close()
			root.Close()
		})
	}
	t.Cleanup(stop)
	return &testServer{addr: conn.LocalAddr().String(), dir: dir, stop: stop}
}

// content is deterministic pseudo-random file content.
func content(size int, seed uint64) []byte {
	b := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

func (s *testServer) write(t *testing.T, name string, b []byte) {
	t.Helper()
	p := filepath.Join(s.dir, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// bigSize is over 65535 blocks of 512 bytes, so a 512-byte transfer wraps
// the block number (block 65536 is sent as 0), and not a multiple of 512.
const bigSize = 65536*512 + 1000

// writeBig writes a sparse file of bigSize bytes with distinct content
// around the start, the block-number wrap and the end; it returns its hash.
func (s *testServer) writeBig(t *testing.T, name string) [32]byte {
	t.Helper()
	p := filepath.Join(s.dir, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(bigSize); err != nil {
		t.Fatal(err)
	}
	for i, off := range []int64{0, 65535 * 512, 65536*512 - 100, bigSize - 4096} {
		if _, err := f.WriteAt(content(4096, uint64(100+i))[:min(4096, bigSize-off)], off); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// pinGet downloads with pin/tftp's client; blksize 0 sends no options
// (plain RFC 1350) unless tsize is set.
func pinGet(addr, name, mode string, blksize int, tsize bool) (data []byte, size int64, sizeOK bool, err error) {
	c, err := pin.NewClient(addr)
	if err != nil {
		return nil, 0, false, err
	}
	c.SetTimeout(2 * time.Second)
	if blksize > 0 {
		c.SetBlockSize(blksize)
	}
	c.RequestTSize(tsize)
	wt, err := c.Receive(name, mode)
	if err != nil {
		return nil, 0, false, err
	}
	if it, ok := wt.(pin.IncomingTransfer); ok {
		size, sizeOK = it.Size()
	}
	var buf bytes.Buffer
	_, err = wt.WriteTo(&buf)
	return buf.Bytes(), size, sizeOK, err
}

func TestPinClientDownloads(t *testing.T) {
	srv := startServer(t, Config{})
	sizes := []int{0, 511, 512, 513, 1468, 8192 * 3, 1 << 20}
	files := map[string][]byte{}
	for i, n := range sizes {
		name := fmt.Sprintf("f%d.bin", n)
		files[name] = content(n, uint64(i))
		srv.write(t, name, files[name])
	}
	bigHash := srv.writeBig(t, "big.bin")

	for _, blksize := range []int{0, 512, 1468, 8192} {
		for _, n := range sizes {
			name := fmt.Sprintf("f%d.bin", n)
			tsize := blksize != 0
			t.Run(fmt.Sprintf("blksize=%d/size=%d", blksize, n), func(t *testing.T) {
				t.Parallel()
				got, size, sizeOK, err := pinGet(srv.addr, name, "octet", blksize, tsize)
				if err != nil {
					t.Fatalf("Receive(%s) = %v", name, err)
				}
				if !bytes.Equal(got, files[name]) {
					t.Errorf("Receive(%s): got %d bytes, want %d identical bytes", name, len(got), n)
				}
				if tsize && (!sizeOK || size != int64(n)) {
					t.Errorf("Receive(%s): tsize = %d, %v, want %d, true", name, size, sizeOK, n)
				}
			})
		}
		t.Run(fmt.Sprintf("blksize=%d/size=%d", blksize, bigSize), func(t *testing.T) {
			if blksize == 0 && testing.Short() {
				t.Skip("short: the 512-byte run covers the wrap")
			}
			t.Parallel()
			got, size, _, err := pinGet(srv.addr, "big.bin", "octet", blksize, true)
			if err != nil {
				t.Fatalf("Receive(big.bin) = %v", err)
			}
			if len(got) != bigSize || sha256.Sum256(got) != bigHash {
				t.Errorf("Receive(big.bin): got %d bytes (hash differs: %v), want %d", len(got), sha256.Sum256(got) != bigHash, bigSize)
			}
			if blksize != 0 && size != bigSize {
				t.Errorf("Receive(big.bin): tsize = %d, want %d", size, bigSize)
			}
		})
	}
}

func TestWindowsize(t *testing.T) {
	srv := startServer(t, Config{Timeout: 200 * time.Millisecond})
	sizes := []int{0, 511, 512, 513, 1468 * 4, 1 << 20}
	for i, n := range sizes {
		srv.write(t, fmt.Sprintf("f%d.bin", n), content(n, uint64(i)))
	}
	for _, blksize := range []int{512, 1468, 8192} {
		for _, window := range []int{1, 4, 16, 64} {
			if window*blksize > 96<<10 {
				// A burst bigger than a default socket buffer (212992
				// bytes) overflows it even on loopback: a test of the
				// host, not the server.
				continue
			}
			for i, n := range sizes {
				name := fmt.Sprintf("f%d.bin", n)
				t.Run(fmt.Sprintf("blksize=%d/window=%d/size=%d", blksize, window, n), func(t *testing.T) {
					t.Parallel()
					opts := map[string]string{"blksize": strconv.Itoa(blksize), "windowsize": strconv.Itoa(window), "tsize": "0"}
					res, err := get(srv.addr, name, getOpts{opts: opts})
					if err != nil {
						t.Fatalf("get(%s, %v) = %v", name, opts, err)
					}
					if !bytes.Equal(res.data, content(n, uint64(i))) {
						t.Errorf("get(%s, %v): got %d bytes, want %d identical bytes", name, opts, len(res.data), n)
					}
					want := map[string]string{"blksize": strconv.Itoa(blksize), "windowsize": strconv.Itoa(window), "tsize": strconv.Itoa(n)}
					if diff := cmp.Diff(want, res.oack); diff != "" {
						t.Errorf("get(%s, %v): OACK differs (-want +got):\n%s", name, opts, diff)
					}
					if res.dups != 0 {
						t.Errorf("get(%s, %v): %d duplicate DATA packets on a lossless link", name, opts, res.dups)
					}
				})
			}
		}
	}
}

// TestWrap transfers files of more than 65535 blocks at blksize 8, so the
// block number wraps to 0, with and without a final empty block.
func TestWrap(t *testing.T) {
	srv := startServer(t, Config{})
	for i, n := range []int{65536 * 8, 65536*8 + 3, 70000 * 8} {
		name := fmt.Sprintf("w%d.bin", n)
		want := content(n, uint64(i))
		srv.write(t, name, want)
		opts := map[string]string{"blksize": "8", "windowsize": "64"}
		res, err := get(srv.addr, name, getOpts{opts: opts})
		if err != nil {
			t.Fatalf("get(%s, %v) = %v", name, opts, err)
		}
		if !bytes.Equal(res.data, want) {
			t.Errorf("get(%s, %v): got %d bytes, want %d identical bytes", name, opts, len(res.data), n)
		}
	}
}

// TestWindowRecovery breaks the happy path: lost and late ACKs, a lost DATA
// block, duplicated ACKs.
func TestWindowRecovery(t *testing.T) {
	const timeout = 100 * time.Millisecond
	const n = 100*1024 + 7
	want := content(n, 1)
	blocks := n/1024 + 1

	tests := []struct {
		name    string
		window  int
		timeout time.Duration // the server's; 0 means timeout
		o       getOpts
		// check inspects the result beyond the bytes.
		check func(t *testing.T, res getResult, took time.Duration)
	}{{
		name:   "lost ACK",
		window: 4,
		o: getOpts{ackHook: func(nth int) time.Duration {
			if nth == 2 { // the ACK of the second window
				return -1
			}
			return 0
		}, timeout: time.Second},
		check: func(t *testing.T, res getResult, took time.Duration) {
			// The server times out and resends the second window.
			if res.dups != 4 {
				t.Errorf("duplicate DATA packets = %d, want 4 (the second window, once)", res.dups)
			}
		},
	}, {
		name:   "late ACK",
		window: 4,
		o: getOpts{ackHook: func(nth int) time.Duration {
			if nth == 3 {
				return 3 * timeout / 2
			}
			return 0
		}, timeout: time.Second},
		check: func(t *testing.T, res getResult, took time.Duration) {
			// The window is resent once; the late ACK and the client's
			// re-ACK of the duplicate window are the same block: the
			// second must not make the server send the next window twice.
			if res.dups != 4 {
				t.Errorf("duplicate DATA packets = %d, want 4 (one window)", res.dups)
			}
		},
	}, {
		name:    "lost DATA",
		window:  8,
		timeout: 5 * time.Second,
		o: func() getOpts {
			lost := false
			return getOpts{loseData: func(expected int64, seen int) bool {
				if expected == 11 && !lost {
					lost = true
					return true
				}
				return false
			}, timeout: 10 * time.Second}
		}(),
		check: func(t *testing.T, res getResult, took time.Duration) {
			// The client's ACK of block 10 (the last before the gap) makes
			// the server resend from 11 at once, well before its timeout.
			if took >= 2*time.Second {
				t.Errorf("transfer took %v, want recovery before the server's 5s timeout", took)
			}
		},
	}, {
		name:   "duplicated ACKs, lock-step",
		window: 1,
		o:      getOpts{dupAcks: true},
		check: func(t *testing.T, res getResult, took time.Duration) {
			// Sorcerer's Apprentice: a duplicate ACK must not trigger a
			// resend, or every block after it goes out twice.
			if res.packets != blocks {
				t.Errorf("DATA packets = %d, want %d (one per block)", res.packets, blocks)
			}
		},
	}, {
		name:   "duplicated ACKs, window 8",
		window: 8,
		o:      getOpts{dupAcks: true},
		check: func(t *testing.T, res getResult, took time.Duration) {
			if res.packets != blocks {
				t.Errorf("DATA packets = %d, want %d (one per block)", res.packets, blocks)
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.timeout == 0 {
				tc.timeout = timeout
			}
			srv := startServer(t, Config{Timeout: tc.timeout})
			srv.write(t, "f.bin", want)
			tc.o.opts = map[string]string{"blksize": "1024", "windowsize": strconv.Itoa(tc.window)}
			start := time.Now()
			res, err := get(srv.addr, "f.bin", tc.o)
			took := time.Since(start)
			if err != nil {
				t.Fatalf("get = %v", err)
			}
			if !bytes.Equal(res.data, want) {
				t.Fatalf("got %d bytes, want %d identical bytes", len(res.data), n)
			}
			tc.check(t, res, took)
		})
	}
}

func TestOptions(t *testing.T) {
	srv := startServer(t, Config{MaxBlksize: 1024})
	want := content(5000, 9)
	srv.write(t, "f.bin", want)
	tests := []struct {
		name     string
		opts     map[string]string
		wantOACK map[string]string
	}{
		{"none", nil, nil},
		{"blksize capped", map[string]string{"blksize": "8192"}, map[string]string{"blksize": "1024"}},
		{"blksize under cap", map[string]string{"blksize": "600"}, map[string]string{"blksize": "600"}},
		{"blksize too small ignored", map[string]string{"blksize": "7"}, nil},
		{"blksize not a number ignored", map[string]string{"blksize": "x"}, nil},
		{"timeout", map[string]string{"timeout": "3"}, map[string]string{"timeout": "3"}},
		{"timeout out of range ignored", map[string]string{"timeout": "256"}, nil},
		{"windowsize 0 ignored", map[string]string{"windowsize": "0"}, nil},
		{"unknown ignored", map[string]string{"foo": "bar", "multicast": "", "tsize": "0"}, map[string]string{"tsize": "5000"}},
		{"upper case names", map[string]string{"BLKSIZE": "512", "TSize": "0"}, map[string]string{"blksize": "512", "tsize": "5000"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := get(srv.addr, "f.bin", getOpts{opts: tc.opts})
			if err != nil {
				t.Fatalf("get(%v) = %v", tc.opts, err)
			}
			if !bytes.Equal(res.data, want) {
				t.Errorf("get(%v): got %d bytes, want %d identical bytes", tc.opts, len(res.data), len(want))
			}
			if diff := cmp.Diff(tc.wantOACK, res.oack); diff != "" {
				t.Errorf("get(%v): OACK differs (-want +got):\n%s", tc.opts, diff)
			}
		})
	}
	t.Run("netascii served as octet", func(t *testing.T) {
		text := []byte("line one\nline two\r\n\x00bin")
		srv.write(t, "t.txt", text)
		res, err := get(srv.addr, "t.txt", getOpts{mode: "NetASCII"})
		if err != nil {
			t.Fatalf("get(netascii) = %v", err)
		}
		if !bytes.Equal(res.data, text) {
			t.Errorf("get(netascii) = %q, want %q", res.data, text)
		}
	})
	t.Run("backslashes and leading slash", func(t *testing.T) {
		srv.write(t, "pxelinux.cfg/default", []byte("DEFAULT x\n"))
		for _, name := range []string{`pxelinux.cfg\default`, `\pxelinux.cfg\default`, "/pxelinux.cfg/default", "//pxelinux.cfg/./default"} {
			res, err := get(srv.addr, name, getOpts{})
			if err != nil || string(res.data) != "DEFAULT x\n" {
				t.Errorf("get(%q) = %q, %v, want the file", name, res.data, err)
			}
		}
	})
}

func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed (Debian: apt-get install curl)")
	}
	if out, err := exec.Command(curl, "--version").Output(); err != nil || !strings.Contains(string(out), "tftp") {
		t.Skip("this curl has no tftp:// support")
	}
	srv := startServer(t, Config{})
	want := content(300_000, 3)
	srv.write(t, "ipxe.efi", want)
	for _, blksize := range []string{"512", "1468"} {
		out := filepath.Join(t.TempDir(), "out")
		cmd := exec.Command(curl, "-sS", "--max-time", "10", "--tftp-blksize", blksize, "-o", out, "tftp://"+srv.addr+"/ipxe.efi")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", cmd, err, b)
		}
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("curl --tftp-blksize %s: got %d bytes, want %d identical bytes", blksize, len(got), len(want))
		}
	}
	cmd := exec.Command(curl, "-sS", "--max-time", "10", "-o", os.DevNull, "tftp://"+srv.addr+"/missing")
	if b, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("%v succeeded for a missing file:\n%s", cmd, b)
	}
}

// exchange sends one packet from a fresh socket and returns the first
// answer, or nil if none came within wait.
func exchange(t *testing.T, addr string, p []byte, wait time.Duration) []byte {
	t.Helper()
	// Unconnected: answers come from the transfer's port, not addr.
	uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	ra, _ := net.ResolveUDPAddr("udp", addr)
	if _, err := uc.WriteToUDP(p, ra); err != nil {
		t.Fatal(err)
	}
	uc.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 70000)
	n, _, err := uc.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func errorCode(p []byte) (uint16, string, bool) {
	if len(p) < 4 || binary.BigEndian.Uint16(p) != opERROR {
		return 0, "", false
	}
	return binary.BigEndian.Uint16(p[2:]), string(bytes.TrimRight(p[4:], "\x00")), true
}

func TestRefused(t *testing.T) {
	srv := startServer(t, Config{})
	secret := []byte("SECRET-OUTSIDE-THE-ROOT")
	outside := filepath.Join(filepath.Dir(srv.dir), "outside.txt")
	if err := os.WriteFile(outside, secret, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(srv.dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside.txt", filepath.Join(srv.dir, "rel-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Dir(srv.dir), filepath.Join(srv.dir, "dir-link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(srv.dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		file string
		code uint16
	}{
		{"missing", "missing.bin", codeNotFound},
		{"directory", "sub", codeNotFound},
		{"root", "/", codeAccess},
		{"dot", ".", codeAccess},
		{"parent", "../outside.txt", codeAccess},
		{"parent, backslash", `..\outside.txt`, codeAccess},
		{"parent after slash", "/../outside.txt", codeAccess},
		{"parent inside", "sub/../../outside.txt", codeAccess},
		{"absolute outside", outside, codeNotFound}, // read as root/<that path>
		{"etc passwd", "/etc/passwd", codeNotFound},
		{"symlink out, absolute", "link", codeAccess},
		{"symlink out, relative", "rel-link", codeAccess},
		{"through a symlinked directory", "dir-link/outside.txt", codeAccess},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, opts := range []map[string]string{nil, {"blksize": "1468", "tsize": "0"}} {
				p := exchange(t, srv.addr, rrq(opRRQ, tc.file, "octet", opts), 2*time.Second)
				if bytes.Contains(p, secret) {
					t.Fatalf("RRQ %q: the outside file's content arrived", tc.file)
				}
				code, msg, ok := errorCode(p)
				if !ok || code != tc.code {
					t.Errorf("RRQ %q (options %v) = % x, want ERROR code %d", tc.file, opts, p, tc.code)
				}
				_ = msg
				// And through a full client, in case the first packet
				// hides what follows.
				if _, err := get(srv.addr, tc.file, getOpts{opts: opts}); err == nil {
					t.Errorf("get(%q) succeeded", tc.file)
				}
			}
		})
	}
}

func TestBadPackets(t *testing.T) {
	srv := startServer(t, Config{})
	want := content(10_000, 4)
	srv.write(t, "ok.bin", want)

	t.Run("WRQ", func(t *testing.T) {
		p := exchange(t, srv.addr, rrq(opWRQ, "new.bin", "octet", nil), 2*time.Second)
		code, msg, ok := errorCode(p)
		if !ok || code != codeAccess || !strings.Contains(msg, "read-only") {
			t.Errorf("WRQ = % x, want ERROR 2 \"read-only…\"", p)
		}
		if _, err := os.Stat(filepath.Join(srv.dir, "new.bin")); err == nil {
			t.Error("WRQ created a file")
		}
	})
	answered := []struct {
		name string
		p    []byte
		code uint16
	}{
		{"RRQ, name not terminated", []byte{0, 1, 'a', 'b'}, codeIllegal},
		{"RRQ, mode not terminated", []byte("\x00\x01ok.bin\x00oct"), codeIllegal},
		{"RRQ, no mode", []byte("\x00\x01ok.bin\x00"), codeIllegal},
		{"RRQ, mail mode", []byte("\x00\x01ok.bin\x00mail\x00"), codeIllegal},
		{"RRQ, empty name", []byte("\x00\x01\x00octet\x00"), codeAccess},
	}
	for _, tc := range answered {
		t.Run(tc.name, func(t *testing.T) {
			p := exchange(t, srv.addr, tc.p, 2*time.Second)
			if code, _, ok := errorCode(p); !ok || code != tc.code {
				t.Errorf("%q = % x, want ERROR code %d", tc.p, p, tc.code)
			}
		})
	}
	ignored := []struct {
		name string
		p    []byte
	}{
		{"empty", nil},
		{"one byte", []byte{1}},
		{"DATA", []byte{0, 3, 0, 1, 'x'}},
		{"ACK", []byte{0, 4, 0, 1}},
		{"ERROR", []byte("\x00\x05\x00\x01oops\x00")},
		{"OACK", []byte("\x00\x06blksize\x00512\x00")},
		{"opcode 9", []byte{0, 9, 1, 2, 3}},
		{"opcode 0xffff", []byte{0xff, 0xff}},
	}
	for _, tc := range ignored {
		t.Run(tc.name, func(t *testing.T) {
			if p := exchange(t, srv.addr, tc.p, 100*time.Millisecond); p != nil {
				t.Errorf("%q was answered with % x, want silence", tc.p, p)
			}
		})
	}
	t.Run("a valid download after all that", func(t *testing.T) {
		// A burst of garbage, then a normal client.
		c, err := net.Dial("udp", srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		r := rand.New(rand.NewPCG(1, 2))
		for range 500 {
			b := make([]byte, r.IntN(600))
			for i := range b {
				b[i] = byte(r.UintN(256))
			}
			if len(b) >= 2 && r.IntN(2) == 0 {
				b[0], b[1] = 0, byte(1+r.IntN(6))
			}
			c.Write(b)
		}
		c.Write(make([]byte, 65000))
		c.Close()
		// UDP: a burst bigger than the socket buffer drops packets, the
		// client's request among them if it came right behind. Let the
		// server drain the burst first.
		time.Sleep(100 * time.Millisecond)
		got, _, _, err := pinGet(srv.addr, "ok.bin", "octet", 1468, true)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("download after garbage: %d bytes, %v; want %d bytes", len(got), err, len(want))
		}
	})
}

func TestVirtual(t *testing.T) {
	script := []byte("#!ipxe\nchain http://10.0.0.1:8080/boot.ipxe\n")
	var gotRemote net.Addr
	var mu sync.Mutex
	srv := startServer(t, Config{Virtual: func(name string, remote net.Addr) ([]byte, bool) {
		if name != "boot.ipxe" {
			return nil, false
		}
		mu.Lock()
		gotRemote = remote
		mu.Unlock()
		return script, true
	}})
	srv.write(t, "boot.ipxe", []byte("the file on disk, shadowed"))
	srv.write(t, "other", []byte("from disk"))
	for _, name := range []string{"boot.ipxe", "/boot.ipxe"} {
		got, size, _, err := pinGet(srv.addr, name, "octet", 1468, true)
		if err != nil || !bytes.Equal(got, script) || size != int64(len(script)) {
			t.Errorf("Receive(%s) = %q (tsize %d), %v, want %q", name, got, size, err, script)
		}
	}
	mu.Lock()
	if ua, ok := gotRemote.(*net.UDPAddr); !ok || !ua.IP.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("Virtual got remote %v, want 127.0.0.1:port", gotRemote)
	}
	mu.Unlock()
	got, _, _, err := pinGet(srv.addr, "other", "octet", 0, false)
	if err != nil || string(got) != "from disk" {
		t.Errorf("Receive(other) = %q, %v, want the root's file", got, err)
	}

	// No Root at all: only virtual files.
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go New(Config{Virtual: func(string, net.Addr) ([]byte, bool) { return script, true }}).Serve(ctx, conn)
	got, _, _, err = pinGet(conn.LocalAddr().String(), "anything", "octet", 512, false)
	if err != nil || !bytes.Equal(got, script) {
		t.Errorf("Receive(anything), no Root = %q, %v, want %q", got, err, script)
	}
}

func TestEventsAndMetrics(t *testing.T) {
	rec := newRecorder()
	reg := prometheus.NewRegistry()
	var logBuf syncBuffer
	srv := startServer(t, Config{
		Record:  rec.record,
		MACFor:  func(ip net.IP) string { return "52:54:00:12:34:56" },
		Metrics: NewMetrics(reg),
		Logger:  slog.New(slog.NewTextHandler(&logBuf, nil)),
	})
	srv.write(t, "ipxe.efi", content(3000, 5))
	if _, _, _, err := pinGet(srv.addr, "ipxe.efi", "octet", 1468, true); err != nil {
		t.Fatal(err)
	}
	// The client is done once it has sent the last ACK; the server once
	// it has read it.
	rec.wait(t, 2*time.Second)
	if _, _, _, err := pinGet(srv.addr, "nope.efi", "octet", 1468, true); err == nil {
		t.Fatal("missing file downloaded")
	}
	exchange(t, srv.addr, rrq(opWRQ, "x", "octet", nil), 2*time.Second)
	srv.stop() // every transfer has been counted once Serve returns

	want := []events.Event{
		{Source: "tftp", Step: "transfer", File: "ipxe.efi", IP: "127.0.0.1", MAC: "52:54:00:12:34:56"},
		{Source: "tftp", Step: "transfer", File: "nope.efi", IP: "127.0.0.1", MAC: "52:54:00:12:34:56", Error: "file not found"},
		{Source: "tftp", Step: "transfer", File: "x", IP: "127.0.0.1", MAC: "52:54:00:12:34:56", Error: errReadOnly.msg},
	}
	rec.mu.Lock()
	got := rec.evs
	rec.mu.Unlock()
	slices.SortFunc(got, func(a, b events.Event) int { return strings.Compare(a.File, b.File) })
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("events differ (-want +got):\n%s", diff)
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	gotM := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += fmt.Sprintf("{%s=%s}", l.GetName(), l.GetValue())
			}
			switch {
			case m.GetCounter() != nil:
				gotM[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				gotM[key] = m.GetGauge().GetValue()
			}
		}
	}
	wantM := map[string]float64{
		"kindling_tftp_transfers_total{result=ok}":      1,
		"kindling_tftp_transfers_total{result=error}":   0,
		"kindling_tftp_transfers_total{result=refused}": 2,
		"kindling_tftp_bytes_total":                     3000,
		"kindling_tftp_transfers_active":                0,
	}
	if diff := cmp.Diff(wantM, gotM); diff != "" {
		t.Errorf("metrics differ (-want +got):\n%s", diff)
	}

	log := logBuf.String()
	for _, s := range []string{
		`msg="tftp transfer" file=ipxe.efi ip=127.0.0.1 mac=52:54:00:12:34:56 result=ok bytes=3000 blksize=1468 windowsize=1 duration=`,
		`file=nope.efi ip=127.0.0.1 mac=52:54:00:12:34:56 result=refused error="file not found"`,
	} {
		if !strings.Contains(log, s) {
			t.Errorf("log lacks %q; log:\n%s", s, log)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestBusyAndShutdown fills the only transfer slot with a client that never
// acknowledges, checks that the next request is turned away, that a
// retransmitted request does not start a second transfer, and that
// cancelling the context aborts the stuck transfer and returns from Serve.
func TestBusyAndShutdown(t *testing.T) {
	srv := startServer(t, Config{MaxTransfers: 1, Timeout: 5 * time.Second})
	srv.write(t, "f.bin", content(5000, 6))

	stuck, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	ra, _ := net.ResolveUDPAddr("udp", srv.addr)
	req := rrq(opRRQ, "f.bin", "octet", map[string]string{"blksize": "1024"})
	for range 3 { // the same request, retransmitted
		stuck.WriteToUDP(req, ra)
	}
	buf := make([]byte, 2000)
	stuck.SetReadDeadline(time.Now().Add(2 * time.Second))
	n, _, err := stuck.ReadFromUDP(buf)
	if err != nil || binary.BigEndian.Uint16(buf) != opOACK {
		t.Fatalf("first answer = % x, %v, want an OACK", buf[:n], err)
	}
	stuck.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, _, err := stuck.ReadFromUDP(buf); err == nil {
		t.Errorf("second answer % x: a retransmitted RRQ started a second transfer", buf[:n])
	}

	p := exchange(t, srv.addr, rrq(opRRQ, "f.bin", "octet", nil), 2*time.Second)
	if code, msg, ok := errorCode(p); !ok || code != codeUndefined || !strings.Contains(msg, "busy") {
		t.Errorf("request while full = % x, want ERROR 0 \"server busy…\"", p)
	}

	start := time.Now()
	srv.stop()
	if took := time.Since(start); took > time.Second {
		t.Errorf("Serve took %v to return after cancel, want well under the 5s timeout", took)
	}
	stuck.SetReadDeadline(time.Now().Add(time.Second))
	n, _, err = stuck.ReadFromUDP(buf)
	if code, msg, ok := errorCode(buf[:n]); err != nil || !ok || !strings.Contains(msg, "shutting down") {
		t.Errorf("stuck client got % x (%d %q), %v, want ERROR \"server shutting down\"", buf[:n], code, msg, err)
	}
}

func TestListenAndServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	s := New(Config{Virtual: func(string, net.Addr) ([]byte, bool) { return []byte("x"), true }})
	// Find a free port, then listen on it (a small race, fine in tests).
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := c.LocalAddr().String()
	c.Close()
	done := make(chan error, 1)
	go func() { done <- s.ListenAndServe(ctx, addr) }()
	// get resends its request every 20ms until the server listens.
	res, err := get(addr, "boot.ipxe", getOpts{timeout: 20 * time.Millisecond})
	if string(res.data) != "x" {
		t.Errorf("get = %q, %v, want \"x\"", res.data, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe = %v, want nil after cancel", err)
	}
	if err := New(Config{}).ListenAndServe(context.Background(), "256.0.0.1:69"); err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("ListenAndServe(bad address) = %v, want an error", err)
	}
}

// TestUnspecifiedAddress serves on a socket bound to the unspecified
// address (as `kindling serve` does on ":69"): each transfer must answer
// from the address the client sent its request to (IP_PKTINFO), over IPv4
// and, when the host has it, IPv6.
func TestUnspecifiedAddress(t *testing.T) {
	conn, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- New(Config{Virtual: func(string, net.Addr) ([]byte, bool) { return []byte("hello"), true }}).Serve(ctx, conn)
	}()
	port := conn.LocalAddr().(*net.UDPAddr).Port
	targets := []string{net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err == nil {
		c.Close()
		targets = append(targets, net.JoinHostPort("::1", strconv.Itoa(port)))
	} else {
		t.Logf("no IPv6 loopback (%v): IPv4 only", err)
	}
	// Other local addresses of this host, if any (e.g. the container's
	// own address): a reply from 127.0.0.1 to those would be dropped.
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
				targets = append(targets, net.JoinHostPort(ipn.IP.String(), strconv.Itoa(port)))
				break
			}
		}
	}
	for _, addr := range targets {
		// get accepts the first answer from the server's IP only (any
		// port), as clients do: an answer from another address is never
		// read, and the download times out.
		res, err := getFromSameIP(addr)
		if err != nil || string(res) != "hello" {
			t.Errorf("download from %s = %q, %v, want \"hello\"", addr, res, err)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Serve = %v, want nil after cancel", err)
	}
}

// getFromSameIP fetches a small file (one block, no options) and rejects
// answers from an address other than addr's IP.
func getFromSameIP(addr string) ([]byte, error) {
	ra, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: ra.IP})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.WriteToUDP(rrq(opRRQ, "boot.ipxe", "octet", nil), ra); err != nil {
		return nil, err
	}
	buf := make([]byte, 600)
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return nil, err
		}
		if !from.IP.Equal(ra.IP) {
			return nil, fmt.Errorf("answer from %v, want %v", from, ra.IP)
		}
		if n < 4 || binary.BigEndian.Uint16(buf) != opDATA {
			return nil, fmt.Errorf("answer % x, want DATA", buf[:n])
		}
		c.WriteToUDP([]byte{0, opACK, buf[2], buf[3]}, from)
		return bytes.Clone(buf[4:n]), nil
	}
}

// recorder collects events; wait returns once n have arrived.
type recorder struct {
	mu  sync.Mutex
	evs []events.Event
	ch  chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 100)} }

func (r *recorder) record(e events.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, e)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *recorder) wait(t *testing.T, d time.Duration) events.Event {
	t.Helper()
	select {
	case <-r.ch:
	case <-time.After(d):
		t.Fatalf("no transfer event within %v", d)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.evs[len(r.evs)-1]
}

// TestClientFailures: the client stops answering, goes away, or aborts.
func TestClientFailures(t *testing.T) {
	const timeout, retries = 50 * time.Millisecond, 3
	rec := newRecorder()
	srv := startServer(t, Config{Timeout: timeout, Retries: retries, Record: rec.record})
	srv.write(t, "f.bin", content(5000, 7))

	// silent sends req and reads answers until an ERROR or 2s pass; it
	// never acknowledges anything.
	silent := func(t *testing.T, req []byte) (answers [][]byte) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ra, _ := net.ResolveUDPAddr("udp", srv.addr)
		c.WriteToUDP(req, ra)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		for {
			buf := make([]byte, 2000)
			n, _, err := c.ReadFromUDP(buf)
			if err != nil {
				return answers
			}
			answers = append(answers, buf[:n])
			if binary.BigEndian.Uint16(buf) == opERROR {
				return answers
			}
		}
	}
	opcodes := func(ps [][]byte) []uint16 {
		var ops []uint16
		for _, p := range ps {
			ops = append(ops, binary.BigEndian.Uint16(p))
		}
		return ops
	}

	t.Run("no ACK for DATA", func(t *testing.T) {
		got := opcodes(silent(t, rrq(opRRQ, "f.bin", "octet", nil)))
		want := []uint16{opDATA, opDATA, opDATA, opDATA, opERROR} // first send + 3 retries, then "timeout"
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("packets to a silent client differ (-want +got):\n%s", diff)
		}
		if e := rec.wait(t, time.Second); !strings.Contains(e.Error, "timed out") {
			t.Errorf("event error = %q, want a timeout", e.Error)
		}
	})
	t.Run("no ACK for OACK", func(t *testing.T) {
		got := opcodes(silent(t, rrq(opRRQ, "f.bin", "octet", map[string]string{"tsize": "0"})))
		want := []uint16{opOACK, opOACK, opOACK, opOACK, opERROR}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("packets to a silent client differ (-want +got):\n%s", diff)
		}
		rec.wait(t, time.Second)
	})
	t.Run("client aborts after OACK", func(t *testing.T) {
		// Some PXE ROMs ask for tsize, read the OACK and abort, then ask
		// again with their real options.
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ra, _ := net.ResolveUDPAddr("udp", srv.addr)
		c.WriteToUDP(rrq(opRRQ, "f.bin", "octet", map[string]string{"tsize": "0"}), ra)
		buf := make([]byte, 2000)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, from, err := c.ReadFromUDP(buf)
		if err != nil || binary.BigEndian.Uint16(buf) != opOACK {
			t.Fatalf("answer % x, %v, want OACK", buf[:n], err)
		}
		c.WriteToUDP([]byte("\x00\x05\x00\x08tsize probe only\x00"), from)
		e := rec.wait(t, time.Second)
		if want := `client sent error 8: "tsize probe only"`; e.Error != want {
			t.Errorf("event error = %q, want %q", e.Error, want)
		}
	})
	t.Run("client goes away", func(t *testing.T) {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		ra, _ := net.ResolveUDPAddr("udp", srv.addr)
		c.WriteToUDP(rrq(opRRQ, "f.bin", "octet", nil), ra)
		buf := make([]byte, 2000)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := c.ReadFromUDP(buf); err != nil {
			t.Fatal(err)
		}
		c.Close() // the retransmission of block 1 meets a closed port
		if e := rec.wait(t, time.Second); !strings.Contains(e.Error, "went away") {
			t.Errorf("event error = %q, want the client gone", e.Error)
		}
	})
}
