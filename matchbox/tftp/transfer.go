package tftp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// maxWindow is the largest windowsize the server grants. RFC 7440 allows
// up to 65535 and lets the server answer less (section 3); beyond 32768 a
// stale ACK and a new one are indistinguishable under 16-bit block numbers
// with rollover. Clients ask for 4 (EDK2) to 64 (u-root).
const maxWindow = 32768

// chunkTarget is how many file bytes one ReadAt fetches: several blocks
// per system call, while 1000 concurrent transfers hold only ~16 MiB.
const chunkTarget = 16 << 10

// chunkPools recycles read buffers by power-of-two size class; a buffer
// holds a 4-byte header slot and then whole blocks.
var chunkPools [17]sync.Pool

func getChunk(size int) *[]byte {
	class := bits.Len(uint(size - 1))
	if b, ok := chunkPools[class].Get().(*[]byte); ok {
		*b = (*b)[:size]
		return b
	}
	b := make([]byte, size, 1<<class)
	return &b
}

func putChunk(b *[]byte) {
	chunkPools[bits.Len(uint(cap(*b)-1))].Put(b)
}

// sender is one running transfer.
type sender struct {
	conn    *net.UDPConn
	f       file
	blksize int64
	last    int64 // number of the final block, counting from 1 without wrap

	// chunk holds file bytes [start, start+n) at chunk[4:4+n]; a block is
	// sent by writing its 4-byte header over the bytes just before its
	// data (saved and restored), so blocks go out without a copy.
	chunk *[]byte
	start int64
	n     int
	hdr   [4]byte
	in    [1024]byte

	// Adaptive busy-polling; see read.
	raw      syscall.RawConn
	pollFn   func(fd uintptr) bool // t.poll, made once
	maxSpin  int32                 // max(1, GOMAXPROCS/2)
	spin     spinState
	misses   int           // polls in a row that ended parked
	cooldown int           // reads left without polling
	rtt      time.Duration // smoothed time from a window's last block to its ACK; 0: not measured
	sentAt   time.Time     // when the last block was sent
}

var errShutdown = errors.New("server shutting down")

// transfer serves one read request on its own socket (a new TID).
func (s *Server) transfer(ctx context.Context, req request, remote, local *net.UDPAddr) result {
	start := time.Now()
	res := result{req: req, remote: remote, blksize: defBlksize, window: 1}
	conn, err := net.DialUDP("udp", local, remote)
	if err != nil && local != nil {
		conn, err = net.DialUDP("udp", nil, remote) // e.g. a subnet broadcast address
	}
	if err != nil {
		res.err = fmt.Errorf("opening a transfer socket: %w", err)
		return res
	}
	defer conn.Close()

	f, err := s.open(req.name, remote)
	if err != nil {
		var re *reqError
		if !errors.As(err, &re) {
			re = &reqError{codeUndefined, "error"}
		}
		_, _ = conn.Write(errorPacket(re.code, re.msg))
		res.refused, res.err = true, err
		return res
	}
	defer f.close()

	// RFC 2347: answer accepted options with an OACK, in which the client's
	// requests may only be lowered; no OACK if none was accepted.
	var oack []byte
	blksize, window, timeout := defBlksize, 1, s.cfg.Timeout
	if req.blksize > 0 || req.tsize || req.timeout > 0 || req.window > 0 {
		oack = make([]byte, 2, 64)
		binary.BigEndian.PutUint16(oack, opOACK)
	}
	if req.blksize > 0 {
		blksize = min(req.blksize, s.cfg.MaxBlksize)
		oack = appendOption(oack, "blksize", int64(blksize))
	}
	if req.tsize {
		oack = appendOption(oack, "tsize", f.size)
	}
	if req.timeout > 0 {
		timeout = time.Duration(req.timeout) * time.Second
		oack = appendOption(oack, "timeout", int64(req.timeout))
	}
	if req.window > 0 {
		window = min(req.window, maxWindow)
		oack = appendOption(oack, "windowsize", int64(window))
	}
	res.blksize, res.window = blksize, window

	// On shutdown: tell the client, and unblock the transfer.
	stop := context.AfterFunc(ctx, func() {
		_, _ = conn.Write(errorPacket(codeUndefined, errShutdown.Error()))
		conn.Close()
	})
	defer stop()

	t := &sender{conn: conn, f: f, blksize: int64(blksize), last: f.size/int64(blksize) + 1}
	t.raw, _ = conn.SyscallConn()
	t.pollFn = t.poll
	t.maxSpin = int32(max(1, runtime.GOMAXPROCS(0)/2))
	running.Add(1)
	defer running.Add(-1)
	perChunk := min(max(1, chunkTarget/blksize), int(t.last)) // small files get small buffers
	t.chunk = getChunk(4 + perChunk*blksize)
	defer putChunk(t.chunk)

	var acked int64
	if oack != nil {
		err = s.negotiate(t, oack, timeout)
	}
	if err == nil {
		acked, err = s.send(t, int64(window), timeout)
	}
	res.bytes = min(acked*int64(blksize), f.size)
	res.duration = time.Since(start)
	if err != nil {
		if ctx.Err() != nil {
			err = errShutdown
		}
		res.err = err
		if errors.Is(err, errTimeout) {
			_, _ = conn.Write(errorPacket(codeUndefined, "timeout"))
		}
	}
	return res
}

// negotiate sends the OACK until the client acknowledges it with ACK 0
// (RFC 2347).
func (s *Server) negotiate(t *sender, oack []byte, timeout time.Duration) error {
	for try := 0; ; try++ {
		if try > s.cfg.Retries {
			return errTimeout
		}
		if _, err := t.conn.Write(oack); err != nil {
			return sendError(err)
		}
		if err := t.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return err
		}
		t.sentAt = time.Now()
		for {
			n, err := t.read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return sendError(err)
			}
			p := t.in[:n]
			if n < 4 {
				continue
			}
			switch binary.BigEndian.Uint16(p) {
			case opACK:
				if binary.BigEndian.Uint16(p[2:]) == 0 {
					t.sampleRTT()
					return nil
				}
			case opERROR:
				// e.g. code 8, or a PXE ROM that only wanted tsize and
				// aborts to re-request with its real options.
				return parseClientError(p)
			}
		}
	}
}

// send runs the data phase: windows of blocks, each window moved by the
// client's ACKs (RFC 1350 is windowsize 1). It returns the number of
// blocks acknowledged.
//
// RFC 7440: an ACK for the last block of the window, or for any earlier
// block sent, moves the window to start after it; for an earlier block that
// means the client lost the next one, so sending restarts there. On timeout
// the window is resent from the block after the last acknowledged one.
// A duplicate or stale ACK is ignored: resending on it is the Sorcerer's
// Apprentice bug (RFC 1123 section 4.2.3.1). Block numbers are 16-bit and
// wrap from 65535 to 0, as tftpd-hpa, dnsmasq, iPXE and EDK2 expect.
func (s *Server) send(t *sender, window int64, timeout time.Duration) (int64, error) {
	var acked int64 // highest block acknowledged; blocks count from 1
	next := int64(1)
	retries := 0
	for {
		if end := min(t.last, acked+window); next <= end {
			for ; next <= end; next++ {
				if err := t.sendBlock(next); err != nil {
					return acked, err
				}
			}
			t.sentAt = time.Now()
		}
		if err := t.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return acked, err
		}
	wait:
		for {
			n, err := t.read()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if retries++; retries > s.cfg.Retries {
					return acked, errTimeout
				}
				next = acked + 1
				break
			}
			if err != nil {
				return acked, sendError(err)
			}
			if n < 4 {
				continue
			}
			p := t.in[:n]
			switch binary.BigEndian.Uint16(p) {
			case opACK:
				d := int64(binary.BigEndian.Uint16(p[2:]) - uint16(acked))
				if d == 0 || d > next-1-acked {
					continue // duplicate, stale, or a block not sent yet
				}
				if acked+d == next-1 {
					t.sampleRTT()
				}
				acked += d
				retries = 0
				if acked == t.last {
					return acked, nil
				}
				if acked < next-1 {
					next = acked + 1
				}
				break wait
			case opERROR:
				return acked, parseClientError(p)
			}
		}
	}
}

// sendBlock sends block k (counting from 1, without wrap).
func (t *sender) sendBlock(k int64) error {
	off := (k - 1) * t.blksize
	n := int(min(t.blksize, t.f.size-off))
	if n == 0 {
		// The empty block ending a file whose size is a multiple of
		// blksize (RFC 1350: a block shorter than blksize ends it).
		binary.BigEndian.PutUint16(t.hdr[:], opDATA)
		binary.BigEndian.PutUint16(t.hdr[2:], uint16(k))
		_, err := t.conn.Write(t.hdr[:])
		return sendError(err)
	}
	if off < t.start || off+int64(n) > t.start+int64(t.n) {
		if err := t.fill(off); err != nil {
			return err
		}
	}
	i := 4 + int(off-t.start)
	pkt := (*t.chunk)[i-4 : i+n]
	saved := [4]byte(pkt)
	binary.BigEndian.PutUint16(pkt, opDATA)
	binary.BigEndian.PutUint16(pkt[2:], uint16(k))
	_, err := t.conn.Write(pkt)
	copy(pkt, saved[:])
	return sendError(err)
}

// Busy-polling. A client that answers within microseconds (a VM on the
// same host, loopback) waits mostly for the server's goroutine to be parked
// and woken again through the netpoller, which costs more than the round
// trip itself. So when a transfer's ACKs have been arriving within
// spinRTT, the server polls the socket for up to spinMax before parking.
// Slower clients (real networks) never trigger it, and it happens only
// while at most half the CPUs' worth of transfers run (one on a 2-CPU
// machine): in a boot storm the CPUs serve other transfers instead. When
// polling does not pay (spinMisses polls in a row end parked: typically the
// client needs the very CPU the poller holds), the transfer stops polling
// for spinCooldown reads, then tries again.
const (
	spinRTT      = 100 * time.Microsecond
	spinMax      = 100 * time.Microsecond
	spinMisses   = 3
	spinCooldown = 1024
)

var (
	running  atomic.Int32 // transfers in this process
	spinning atomic.Int32 // of them, polling now
)

// read reads the client's next packet into t.in, honouring the read
// deadline.
func (t *sender) read() (int, error) {
	if t.raw == nil || t.rtt == 0 || t.rtt > spinRTT || running.Load() > t.maxSpin {
		return t.conn.Read(t.in[:])
	}
	if t.cooldown > 0 {
		t.cooldown--
		return t.conn.Read(t.in[:])
	}
	if spinning.Add(1) > t.maxSpin {
		spinning.Add(-1)
		return t.conn.Read(t.in[:])
	}
	t.spin = spinState{budget: min(spinMax, 2*t.rtt+10*time.Microsecond), start: time.Now()}
	err := t.raw.Read(t.pollFn)
	if t.spin.parked {
		if t.misses++; t.misses >= spinMisses {
			t.misses, t.cooldown = 0, spinCooldown
		}
	} else {
		spinning.Add(-1)
		t.misses = 0
	}
	if err != nil {
		return 0, err
	}
	if t.spin.err != nil {
		return 0, t.spin.err
	}
	return t.spin.n, nil
}

// spinState is one busy-polling read, kept in the sender so that polling
// allocates nothing.
type spinState struct {
	budget time.Duration
	start  time.Time
	parked bool // gave up polling: waiting in the netpoller
	n      int
	err    error
}

// poll is the syscall.RawConn read callback: it reads without blocking
// until a packet arrives or the budget is spent, then returns false to wait
// in the netpoller (which calls it again once the socket is readable).
func (t *sender) poll(fd uintptr) bool {
	for i := 0; ; i++ {
		t.spin.n, t.spin.err = syscall.Read(int(fd), t.in[:])
		if t.spin.err == syscall.EINTR {
			continue
		}
		if t.spin.err != syscall.EAGAIN {
			return true
		}
		if t.spin.parked {
			return false
		}
		if i&7 == 7 && time.Since(t.spin.start) > t.spin.budget {
			t.spin.parked = true
			spinning.Add(-1)
			return false
		}
	}
}

// sampleRTT updates the smoothed ACK delay after an ACK for the last block
// sent.
func (t *sender) sampleRTT() {
	d := time.Since(t.sentAt)
	if t.rtt == 0 {
		t.rtt = d
		return
	}
	t.rtt = (3*t.rtt + d) / 4
}

// fill reads the chunk starting at file offset off.
func (t *sender) fill(off int64) error {
	buf := (*t.chunk)[4:]
	want := int(min(int64(len(buf)), t.f.size-off))
	n, err := t.f.r.ReadAt(buf[:want], off)
	if n < want {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF // the file shrank under us
		}
		t.n = 0
		return fmt.Errorf("reading at offset %d: %w", off, err)
	}
	t.start, t.n = off, want
	return nil
}

// sendError names the usual network failure: the client's port is closed
// (an ICMP port unreachable reported on the connected socket).
func sendError(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ECONNREFUSED) {
		return errors.New("client went away (port unreachable)")
	}
	return err
}
