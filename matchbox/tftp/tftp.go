// Package tftp is Kindling's read-only TFTP server, the first hop of a PXE
// boot: firmware fetches iPXE (or another boot loader) from it.
//
// It speaks RFC 1350 (read requests only, octet; netascii is served as
// octet), RFC 2347 option negotiation with the options of RFC 2348
// (blksize), RFC 2349 (tsize, timeout) and RFC 7440 (windowsize, which
// UEFI firmware asks for: EDK2/OVMF requests windowsize 4). Each transfer
// runs on its own ephemeral UDP socket (its TID, RFC 1350 section 4) in its
// own goroutine; files are read block by block with ReadAt from an
// assets.Root, so no requested name reaches outside the root and no file
// is held in memory.
//
// The server is written here rather than taken from pin/tftp because
// pin/tftp v3 has no windowsize; pin/tftp is the client in the tests.
package tftp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/kindlingboot/kindling/assets"
	"github.com/kindlingboot/kindling/matchbox/events"
)

// Config configures a Server. The zero value serves nothing (every request
// is answered "file not found"), with a 1 s retransmit timeout and 5
// retries.
type Config struct {
	// Root is the tree files are served from: regular files only, and no
	// requested name can climb out of it (this package refuses ".."; the
	// Root opens through os.Root). Symlinks pointing out are refused by a
	// Root from assets.Open and followed by one from
	// assets.OpenFollowingLinks. nil means only Virtual files.
	Root *assets.Root
	// Virtual, when set, is asked first for every requested name (cleaned:
	// relative, slash-separated, e.g. "boot.ipxe"); it returns the file's
	// content and true to serve it, or false to fall through to Root. It
	// must be safe for concurrent use and should be fast.
	Virtual func(name string, remote net.Addr) ([]byte, bool)
	// Logger gets one Info line per finished transfer (and per refused
	// request), Debug lines for ignored packets; nil discards.
	Logger *slog.Logger
	// Record, when set, gets one event per transfer (Source "tftp", Step
	// "transfer").
	Record func(events.Event)
	// MACFor, when set, names the machine at an IP (the DHCP side knows);
	// it returns "" when it does not know.
	MACFor func(ip net.IP) string
	// Metrics are updated per transfer; nil makes a private, unregistered
	// set.
	Metrics *Metrics
	// Timeout is the retransmit timeout; 0 means 1 s. A client's timeout
	// option (RFC 2349, 1..255 s) overrides it for its transfer.
	Timeout time.Duration
	// Retries is how many times a block (or window, or OACK) is resent
	// without an answer before the transfer is abandoned; 0 means 5.
	Retries int
	// MaxBlksize caps the negotiated block size; 0 (or more than 65464)
	// means 65464, the RFC 2348 maximum. The block size used is the
	// smaller of the client's request and this.
	MaxBlksize int
	// MaxTransfers bounds concurrent transfers; a request beyond it gets
	// an ERROR packet ("server busy"). 0 means 1000.
	MaxTransfers int
}

// listenBuffer is the receive buffer asked for on the request socket.
const listenBuffer = 4 << 20

// Server is a read-only TFTP server. One Server may Serve several
// sockets at once.
type Server struct {
	cfg     Config
	log     *slog.Logger
	metrics *Metrics
	slots   chan struct{} // one token per running transfer

	mu     sync.Mutex
	active map[netip.AddrPort]struct{} // clients with a transfer running
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Retries <= 0 {
		cfg.Retries = 5
	}
	if cfg.MaxBlksize <= 0 || cfg.MaxBlksize > maxBlksize {
		cfg.MaxBlksize = maxBlksize
	}
	cfg.MaxBlksize = max(cfg.MaxBlksize, minBlksize)
	if cfg.MaxTransfers <= 0 {
		cfg.MaxTransfers = 1000
	}
	s := &Server{
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: cfg.Metrics,
		slots:   make(chan struct{}, cfg.MaxTransfers),
		active:  make(map[netip.AddrPort]struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	return s
}

// ListenAndServe listens on the UDP address addr (e.g. ":69", which needs
// root or CAP_NET_BIND_SERVICE) and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	conn, err := net.ListenPacket("udp", addr)
	if err != nil {
		return fmt.Errorf("tftp: listening on %s: %w", addr, err)
	}
	defer conn.Close()
	return s.Serve(ctx, conn)
}

// Serve answers requests arriving on conn until ctx ends, then aborts the
// transfers still running, waits for them, and returns nil. A bad packet
// is logged at Debug and skipped; Serve returns an error only when conn
// fails for good (e.g. it was closed). The caller closes conn. On a
// *net.UDPConn, Serve enlarges the receive buffer (up to the kernel's
// net.core.rmem_max) and, when it is bound to the unspecified address,
// turns on IP_PKTINFO to answer from the address each request was sent to.
func (s *Server) Serve(ctx context.Context, conn net.PacketConn) error {
	// Deferred in this order: cancel (abort transfers), then wait for them.
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	defer stop()

	// On a socket bound to 0.0.0.0 or [::], learn each request's
	// destination so the transfer answers from that address.
	uc, _ := conn.(*net.UDPConn)
	var oob []byte
	if uc != nil {
		// A boot storm sends hundreds of requests at once; with the
		// default buffer (212992 bytes, about 200 requests) the rest are
		// dropped and the firmware waits seconds before asking again.
		// The kernel caps this at net.core.rmem_max.
		_ = uc.SetReadBuffer(listenBuffer)
		if la, ok := uc.LocalAddr().(*net.UDPAddr); ok && la.IP.IsUnspecified() && enableDstAddr(uc) {
			oob = make([]byte, 128)
		}
	}
	buf := make([]byte, 65536)
	for {
		var (
			n     int
			from  net.Addr
			local *net.UDPAddr
			err   error
		)
		if oob != nil {
			var oobn int
			var ua *net.UDPAddr
			n, oobn, _, ua, err = uc.ReadMsgUDP(buf, oob)
			if err == nil {
				from, local = ua, dstAddr(oob[:oobn])
			}
		} else {
			n, from, err = conn.ReadFrom(buf)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("tftp: reading requests: %w", err)
			}
			// Transient (e.g. an ICMP error reported on the socket):
			// keep serving, but do not spin.
			s.log.Debug("tftp: read error", "error", err.Error())
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if local == nil {
			if la, ok := conn.LocalAddr().(*net.UDPAddr); ok && !la.IP.IsUnspecified() {
				local = &net.UDPAddr{IP: la.IP, Zone: la.Zone}
			}
		}
		if err := s.handle(ctx, conn, buf[:n], from, local, &wg); err != nil {
			s.log.Debug("tftp: packet ignored", "ip", addrIP(from), "error", err.Error())
		}
	}
}

// handle answers one datagram from the listening socket. It returns why a
// packet was ignored (for the Debug log), nil when it was answered.
func (s *Server) handle(ctx context.Context, conn net.PacketConn, p []byte, from net.Addr, local *net.UDPAddr, wg *sync.WaitGroup) error {
	remote, ok := from.(*net.UDPAddr)
	if !ok {
		return fmt.Errorf("not a UDP peer: %v", from)
	}
	if len(p) < 2 {
		return fmt.Errorf("%d-byte packet", len(p))
	}
	if op := uint16(p[0])<<8 | uint16(p[1]); op != opRRQ && op != opWRQ {
		// DATA, ACK, ERROR, OACK belong on a transfer's socket; never
		// answer them here (an ERROR answered with an ERROR can loop).
		return fmt.Errorf("opcode %d on the request port", op)
	}
	req, err := parseRequest(p)
	if err != nil {
		var re *reqError
		if !errors.As(err, &re) {
			re = errMalformed
		}
		_, _ = conn.WriteTo(errorPacket(re.code, re.msg), remote)
		if re == errReadOnly || re == errBadName {
			// Well-formed requests we refuse: worth an Info line.
			s.finish(result{req: req, remote: remote, refused: true, err: err})
			return nil
		}
		return fmt.Errorf("answered with error %d: %w", re.code, err) // garbage: Debug only
	}
	key := remote.AddrPort()
	s.mu.Lock()
	_, dup := s.active[key]
	if !dup {
		s.active[key] = struct{}{}
	}
	s.mu.Unlock()
	if dup {
		// A retransmitted RRQ: the first reply is on its way (or was lost
		// and the transfer will resend it). A second transfer to the same
		// TID would only fight the first.
		return fmt.Errorf("duplicate request for %q while a transfer to %v runs", req.raw, remote)
	}
	select {
	case s.slots <- struct{}{}:
	default:
		s.release(key)
		_, _ = conn.WriteTo(errorPacket(codeUndefined, "server busy, try again"), remote)
		s.finish(result{req: req, remote: remote, refused: true, err: errors.New("server busy: too many transfers")})
		return nil
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { <-s.slots }()
		defer s.release(key)
		s.metrics.Active.Inc()
		defer s.metrics.Active.Dec()
		s.finish(s.transfer(ctx, req, remote, local))
	}()
	return nil
}

func (s *Server) release(key netip.AddrPort) {
	s.mu.Lock()
	delete(s.active, key)
	s.mu.Unlock()
}

// open finds the requested file: Virtual first, then Root.
func (s *Server) open(name string, remote net.Addr) (file, error) {
	if s.cfg.Virtual != nil {
		if b, ok := s.cfg.Virtual(name, remote); ok {
			return file{r: bytesReaderAt(b), size: int64(len(b))}, nil
		}
	}
	if s.cfg.Root == nil {
		return file{}, errNotFound
	}
	f, fi, err := s.cfg.Root.Open(name)
	if err != nil {
		return file{}, openError(err)
	}
	return file{r: f, size: fi.Size(), c: f}, nil
}

// openError maps an open failure to the ERROR packet the client gets,
// keeping the cause for the log. Not found and not-a-file (directories,
// devices) are code 1; anything else — a symlink or name escaping the root,
// permissions — is an access violation (code 2).
func openError(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, assets.ErrNotFile):
		return &openErr{reqError{codeNotFound, "file not found"}, err}
	default:
		return &openErr{reqError{codeAccess, "access violation"}, err}
	}
}

type openErr struct {
	reqError
	cause error
}

func (e *openErr) Error() string {
	if e.code == codeNotFound {
		return e.msg
	}
	return e.msg + " (" + e.cause.Error() + ")"
}
func (e *openErr) Unwrap() []error { return []error{&e.reqError, e.cause} }

// file is an open source of blocks.
type file struct {
	r    io.ReaderAt
	size int64
	c    io.Closer // nil for virtual files
}

func (f file) close() {
	if f.c != nil {
		f.c.Close()
	}
}

type bytesReaderAt []byte

func (b bytesReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(b)) {
		return 0, io.EOF
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// result is how a transfer (or a refused request) ended.
type result struct {
	req      request
	remote   *net.UDPAddr
	refused  bool // answered with an ERROR before any data
	err      error
	bytes    int64 // acknowledged file bytes
	blksize  int
	window   int
	duration time.Duration
}

// finish logs, records and counts one transfer.
func (s *Server) finish(r result) {
	ip := r.remote.IP
	mac := ""
	if s.cfg.MACFor != nil {
		mac = s.cfg.MACFor(ip)
	}
	file := r.req.name
	if file == "" {
		file = r.req.raw
	}
	attrs := []slog.Attr{
		slog.String("file", file),
		slog.String("ip", ip.String()),
	}
	if mac != "" {
		attrs = append(attrs, slog.String("mac", mac))
	}
	switch {
	case r.refused:
		s.metrics.refused.Inc()
		attrs = append(attrs, slog.String("result", "refused"))
	case r.err != nil:
		s.metrics.failed.Inc()
		attrs = append(attrs, slog.String("result", "error"))
	default:
		s.metrics.ok.Inc()
		attrs = append(attrs, slog.String("result", "ok"))
	}
	if !r.refused {
		s.metrics.Bytes.Add(float64(r.bytes))
		attrs = append(attrs,
			slog.Int64("bytes", r.bytes),
			slog.Int("blksize", r.blksize),
			slog.Int("windowsize", r.window),
			slog.Duration("duration", r.duration.Round(time.Microsecond)))
	}
	ev := events.Event{Source: "tftp", Step: "transfer", File: file, IP: ip.String(), MAC: mac}
	if r.err != nil {
		attrs = append(attrs, slog.String("error", r.err.Error()))
		ev.Error = r.err.Error()
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "tftp transfer", attrs...)
	if s.cfg.Record != nil {
		s.cfg.Record(ev)
	}
}

func addrIP(a net.Addr) string {
	if ua, ok := a.(*net.UDPAddr); ok {
		return ua.IP.String()
	}
	if a == nil {
		return ""
	}
	return a.String()
}
