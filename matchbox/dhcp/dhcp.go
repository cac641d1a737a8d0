// Package dhcp is Kindling's PXE DHCP server, so no dnsmasq is needed. It
// runs in one of two modes:
//
//   - ModeProxy: a proxyDHCP server (PXE spec 2.1, RFC 4578) next to the
//     network's own DHCP server. It answers only PXE and UEFI HTTP boot
//     clients (option 60 "PXEClient…"/"HTTPClient…"), never hands out an
//     address, and tells them what to boot: on UDP 67 a proxy OFFER to
//     DISCOVERs, on UDP 4011 an ACK to boot-server REQUESTs (UEFI firmware
//     and iPXE's ProxyDHCPREQUEST go there).
//   - ModeServer: a full DHCP server (RFC 2131) for an isolated provisioning
//     network: leases from a range, reservations, persistence, relays,
//     and the boot file in the same OFFER/ACK for boot clients.
//
// What each client is told to load is one table, see BootFile.
//
// Known deviations and limits:
//   - Replies to a client without an address go to the broadcast address
//     even when the client did not set the broadcast flag (RFC 2131 §4.1
//     asks for a unicast to chaddr, which needs an ARP-table entry or a
//     raw socket); every client seen in practice accepts broadcasts.
//   - Relayed requests (giaddr set) are served only when giaddr is in the
//     served subnet (one subnet per server); other relays' packets are
//     dropped with reason "relay-subnet". Multi-subnet is not supported yet.
//   - Leases are keyed by MAC, not by client identifier (see lease).
//   - No ICMP probe before offering an address (dnsmasq --no-ping).
//   - GRUB is recognised only when it says so: builds carrying the
//     Fedora/RHEL net_bootp patch send user class "GRUB2" (RFC 3004 form)
//     and option 93; upstream GRUB sends only the message type, so it is
//     an ordinary client (an address, no boot file).
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"

	"github.com/kindlingboot/kindling/matchbox/events"
)

// Mode selects proxyDHCP or full DHCP.
type Mode int

const (
	// ModeProxy answers only boot clients and hands out no addresses.
	// (Not "Proxy"/"Server": Server is the server type.)
	ModeProxy Mode = iota
	// ModeServer is a full DHCP server leasing addresses from Range.
	ModeServer
)

func (m Mode) String() string {
	switch m {
	case ModeProxy:
		return "proxy"
	case ModeServer:
		return "server"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "proxy" or "server" (the -dhcp flag).
func ParseMode(s string) (Mode, error) {
	switch s {
	case "proxy":
		return ModeProxy, nil
	case "server":
		return ModeServer, nil
	}
	return 0, fmt.Errorf("-dhcp %q: want proxy or server", s)
}

// Config configures a Server. Zero values work except where noted.
type Config struct {
	// Mode is ModeProxy (the zero value) or ModeServer.
	Mode Mode
	// Interface is the L2 interface to serve on (required). Its first
	// IPv4 address is the server's identity unless ServerIP is set.
	Interface string
	// ServerIP is our address: siaddr, option 54, and the host in HTTP
	// URLs. nil means the interface's first IPv4 address.
	ServerIP net.IP
	// HTTPPort is Kindling's HTTP port, for http://SERVER:PORT/… boot
	// URLs; 0 means 8080.
	HTTPPort int
	// BootFiles names the iPXE binaries; the zero value is the defaults.
	BootFiles BootFiles

	// Range is the first and last address to lease (server mode,
	// required), inside the interface's subnet.
	Range [2]net.IP
	// Netmask is the served subnet's mask; nil means the interface's.
	Netmask net.IPMask
	// Router, DNS and Domain are handed to clients (options 3, 6, 15)
	// when set.
	Router net.IP
	DNS    []net.IP
	Domain string
	// LeaseTime is how long leases last; 0 means 1h.
	LeaseTime time.Duration
	// LeaseFile is where leases persist (JSON); "" keeps them in memory
	// only. It is loaded by New. Every change is written atomically
	// (temp file, fsync, rename, directory fsync), and an ACK is sent
	// only once the lease it grants is on disk. Writes are group-committed:
	// replies wait while a write is in flight and the next write covers
	// them all, so a burst costs one write per batch, not per lease. Each
	// write rewrites the whole table (about 100 bytes a lease).
	LeaseFile string
	// Reservations maps a MAC to a fixed address (and hostname, option
	// 12); nil means none. It is called per packet, so it must be cheap
	// and safe for concurrent use. A reserved address should lie outside
	// Range: the server cannot enumerate reservations, so an address
	// inside Range may already be leased to someone else, in which case
	// the reserved machine gets a dynamic address until it is free.
	Reservations func(mac net.HardwareAddr) (ip net.IP, hostname string, ok bool)
	// Logger receives one Info line per answer (keys mac, ip, arch, kind,
	// file, type) and Debug lines for ignored packets; nil discards.
	Logger *slog.Logger
	// Record, when set, receives an event per answer, release and
	// decline (Source "dhcp").
	Record func(events.Event)
	// Metrics are updated per packet; nil makes a private, unregistered
	// set.
	Metrics *Metrics
}

// Server is a configured DHCP server, ready to Serve.
type Server struct {
	cfg     Config // ServerIP resolved, defaults applied
	ip      net.IP // 4-byte form of cfg.ServerIP
	subnet  *net.IPNet
	log     *slog.Logger
	metrics *Metrics
	leases  *leaseTable // server mode
	commit  *committer  // server mode with a LeaseFile
	seen    *seenTable  // proxy mode: IP→MAC learnt from REQUESTs
	now     func() time.Time

	readyOnce sync.Once
	ready     chan struct{} // closed once Serve has bound its sockets
}

// New validates cfg against the interface it names and loads the lease
// file. Errors name the flag at fault.
func New(cfg Config) (*Server, error) {
	if cfg.Interface == "" {
		return nil, errors.New("no DHCP interface: set -dhcp-interface to the interface machines boot on")
	}
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("-dhcp-interface %q: %w", cfg.Interface, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("-dhcp-interface %q: reading its addresses: %w", cfg.Interface, err)
	}
	var nets []*net.IPNet
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			nets = append(nets, &net.IPNet{IP: n.IP.To4(), Mask: n.Mask})
		}
	}
	return newServer(cfg, nets)
}

// newServer is New after the interface lookup: nets are its IPv4
// networks (tests pass their own).
func newServer(cfg Config, nets []*net.IPNet) (*Server, error) {
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: cfg.Metrics, now: time.Now, ready: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	if cfg.Mode != ModeProxy && cfg.Mode != ModeServer {
		return nil, fmt.Errorf("-dhcp: unknown mode %d", int(cfg.Mode))
	}
	// Our identity and the served subnet.
	var home *net.IPNet
	if cfg.ServerIP != nil {
		ip := cfg.ServerIP.To4()
		if ip == nil || ip.IsUnspecified() {
			return nil, fmt.Errorf("server address %q is not an IPv4 address", cfg.ServerIP)
		}
		s.ip = ip
		for _, n := range nets {
			if n.Contains(ip) {
				home = n
				break
			}
		}
	} else {
		if len(nets) == 0 {
			return nil, fmt.Errorf("-dhcp-interface %q has no IPv4 address; give it one (the server's identity) or set the server address", cfg.Interface)
		}
		s.ip = nets[0].IP.To4()
		home = nets[0]
	}
	if home == nil && len(nets) > 0 {
		home = nets[0]
	}
	s.cfg.ServerIP = s.ip
	if s.cfg.HTTPPort == 0 {
		s.cfg.HTTPPort = 8080
	}
	if s.cfg.LeaseTime <= 0 {
		s.cfg.LeaseTime = time.Hour
	}
	if home != nil {
		mask := home.Mask
		if cfg.Netmask != nil {
			mask = cfg.Netmask
		}
		if ones, bits := mask.Size(); bits != 32 || ones == 0 {
			return nil, fmt.Errorf("netmask %s is not a valid IPv4 netmask", net.IP(mask))
		}
		s.subnet = &net.IPNet{IP: home.IP.To4().Mask(mask), Mask: mask}
	}
	if cfg.Mode == ModeProxy {
		s.seen = &seenTable{m: map[uint32]string{}}
		return s, nil
	}

	// Server mode.
	if s.subnet == nil {
		return nil, fmt.Errorf("-dhcp-interface %q has no IPv4 address, so it has no subnet to lease from; give it one", cfg.Interface)
	}
	if cfg.Range[0] == nil || cfg.Range[1] == nil {
		return nil, fmt.Errorf("-dhcp server needs -dhcp-range START-END inside %s (the subnet of -dhcp-interface %s)", s.subnet, cfg.Interface)
	}
	first, last := cfg.Range[0].To4(), cfg.Range[1].To4()
	if first == nil || last == nil {
		return nil, fmt.Errorf("-dhcp-range %s-%s: both ends must be IPv4 addresses", cfg.Range[0], cfg.Range[1])
	}
	if ipToU32(first) > ipToU32(last) {
		return nil, fmt.Errorf("-dhcp-range %s-%s: start is after end", first, last)
	}
	if n := uint64(ipToU32(last)-ipToU32(first)) + 1; n > maxRange {
		return nil, fmt.Errorf("-dhcp-range %s-%s has %d addresses; at most %d are supported", first, last, n, maxRange)
	}
	if !s.subnet.Contains(first) || !s.subnet.Contains(last) {
		return nil, fmt.Errorf("-dhcp-range %s-%s is outside %s, the subnet of -dhcp-interface %s", first, last, s.subnet, cfg.Interface)
	}
	if cfg.Router != nil && cfg.Router.To4() == nil {
		return nil, fmt.Errorf("-dhcp-router %s is not an IPv4 address", cfg.Router)
	}
	for _, d := range cfg.DNS {
		if d.To4() == nil {
			return nil, fmt.Errorf("-dhcp-dns %s is not an IPv4 address", d)
		}
	}
	s.leases = newLeaseTable(ipToU32(first), ipToU32(last), s.subnet, s.ip, cfg.Router)
	if cfg.LeaseFile != "" {
		n, dropped, err := s.leases.load(cfg.LeaseFile)
		if err != nil {
			return nil, err
		}
		if n+dropped > 0 {
			s.log.Info("dhcp leases loaded", "path", cfg.LeaseFile, "leases", n, "dropped_outside_subnet", dropped)
		}
		s.commit = newCommitter(cfg.LeaseFile, s.leases)
	}
	s.metrics.Leases.Set(float64(s.leases.bound(s.now())))
	return s, nil
}

// MACFor is the MAC that holds (or last held) ip: from the lease table in
// server mode, from the REQUESTs and boot-server requests seen in proxy
// mode. "" when unknown.
func (s *Server) MACFor(ip net.IP) string {
	v := ipToU32(ip)
	if v == 0 {
		return ""
	}
	if s.leases != nil {
		return s.leases.macFor(v)
	}
	return s.seen.get(v)
}

// Serve binds UDP 67 (and 4011 in proxy mode) on the interface and
// answers until ctx ends; it returns nil then. Bad packets are counted,
// logged at debug and ignored.
func (s *Server) Serve(ctx context.Context) error {
	// Sockets are all made here, on the calling goroutine: a caller that
	// runs Serve on a thread switched into another network namespace
	// gets them in that namespace.
	conn67, err := server4.NewIPv4UDPConn(s.cfg.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		return fmt.Errorf("dhcp: listening on %s port 67: %w", s.cfg.Interface, err)
	}
	conns := []*net.UDPConn{conn67}
	if s.cfg.Mode == ModeProxy {
		conn4011, err := server4.NewIPv4UDPConn(s.cfg.Interface, &net.UDPAddr{Port: pxePort})
		if err != nil {
			conn67.Close()
			return fmt.Errorf("dhcp: listening on %s port 4011: %w", s.cfg.Interface, err)
		}
		conns = append(conns, conn4011)
	}
	for _, c := range conns {
		growReadBuffer(c)
	}
	s.log.Info("dhcp serving", "mode", s.cfg.Mode.String(), "interface", s.cfg.Interface, "ip", s.ip.String(), "subnet", fmt.Sprint(s.subnet))

	var wg sync.WaitGroup
	commitDone := make(chan struct{})
	stopCommit := make(chan struct{})
	if s.commit != nil {
		go func() {
			defer close(commitDone)
			s.commit.run(stopCommit, s.send, s.dropAnswer, s.log)
		}()
	} else {
		close(commitDone)
	}
	for _, c := range conns {
		wg.Add(1)
		go func(c *net.UDPConn) {
			defer wg.Done()
			s.readLoop(c)
		}(c)
	}
	if s.leases != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(10 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					s.metrics.Leases.Set(float64(s.leases.bound(s.now())))
				}
			}
		}()
	}
	s.readyOnce.Do(func() { close(s.ready) })
	<-ctx.Done()
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	close(stopCommit)
	<-commitDone
	s.log.Info("dhcp stopped", "interface", s.cfg.Interface)
	return nil
}

// readBuffer is the socket receive buffer asked for: a rack powering on
// sends bursts, and the default (~200 KiB, ~600 DHCP packets) overflows
// while a lease-file write holds up a batch of replies.
const readBuffer = 8 << 20

// growReadBuffer raises conn's receive buffer to readBuffer: past
// net.core.rmem_max when running as root (SO_RCVBUFFORCE), else up to it.
func growReadBuffer(conn *net.UDPConn) {
	if rc, err := conn.SyscallConn(); err == nil {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, readBuffer)
		}); err == nil && serr == nil {
			return
		}
	}
	_ = conn.SetReadBuffer(readBuffer)
}

// pxePort is the PXE boot server port (PXE spec 2.1 §2.2.1).
const pxePort = 4011

func (s *Server) readLoop(conn *net.UDPConn) {
	port := conn.LocalAddr().(*net.UDPAddr).Port
	buf := make([]byte, 65536) // a whole datagram: a truncated one would parse wrong
	for {
		n, peer, err := conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("dhcp read", "error", err.Error())
			continue
		}
		s.serveOne(conn, port, buf[:n], peer)
	}
}

// serveOne handles one datagram received on port from peer.
func (s *Server) serveOne(conn *net.UDPConn, port int, pkt []byte, peer *net.UDPAddr) {
	ans, err := s.receive(pkt, port, peer)
	if err != nil || ans == nil {
		return
	}
	ans.conn = conn
	if ans.durable && s.commit != nil {
		s.commit.submit(ans)
		return
	}
	s.send(ans)
}

// receive parses and handles one datagram, counting it; a dropped
// packet is counted and logged here and returned as the error.
func (s *Server) receive(pkt []byte, port int, peer *net.UDPAddr) (*answer, error) {
	req, err := dhcpv4.FromBytes(pkt)
	if err != nil {
		s.metrics.Packets.WithLabelValues("invalid").Inc()
		err = fmt.Errorf("%w: %v", ErrMalformed, err)
		s.drop(nil, err, peer)
		return nil, err
	}
	s.metrics.Packets.WithLabelValues(msgTypeName(req.MessageType())).Inc()
	ans, err := s.handle(req, port, peer)
	if err != nil {
		s.drop(req, err, peer)
		return nil, err
	}
	return ans, nil
}

func (s *Server) drop(req *dhcpv4.DHCPv4, err error, peer *net.UDPAddr) {
	s.metrics.Dropped.WithLabelValues(reason(err)).Inc()
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []any{"reason", err.Error(), "peer", fmt.Sprint(peer)}
	if req != nil {
		attrs = append(attrs, "mac", req.ClientHWAddr.String(), "msg", msgTypeName(req.MessageType()))
	}
	s.log.Debug("dhcp packet ignored", attrs...)
}

// dropAnswer drops an answer that could not be made durable.
func (s *Server) dropAnswer(a *answer, err error) {
	s.metrics.Dropped.WithLabelValues(reason(err)).Inc()
	s.log.Error("dhcp reply not sent", "mac", a.client.MAC.String(), "type", a.typ, "error", err.Error())
}

// send writes a reply and reports it.
func (s *Server) send(a *answer) {
	if _, err := a.conn.WriteToUDP(a.reply.ToBytes(), a.to); err != nil {
		s.metrics.Dropped.WithLabelValues(reason(errSend)).Inc()
		s.log.Warn("dhcp send failed", "mac", a.client.MAC.String(), "to", a.to.String(), "type", a.typ, "error", err.Error())
		return
	}
	arch := a.client.Arch.String()
	s.metrics.Replies.WithLabelValues(a.typ, a.client.Arch.label()).Inc()
	ip := ipString(a.reply.YourIPAddr)
	if ip == "" {
		ip = ipString(a.reply.ClientIPAddr)
	}
	mac := a.client.MAC.String()
	s.log.Info("dhcp "+a.typ, "mac", mac, "ip", ip, "arch", arch, "kind", a.client.Kind.String(), "file", a.file, "type", a.typ)
	if s.cfg.Record != nil {
		step := a.typ
		if step == "proxy-ack" {
			step = "boot-server-ack"
		}
		e := events.Event{MAC: mac, Source: "dhcp", Step: step, IP: ip, Arch: arch, File: a.file}
		if a.typ == "nak" {
			e.Error = a.reply.Message()
		}
		s.cfg.Record(e)
	}
}

// record reports a release or decline (no reply).
func (s *Server) record(step string, c Client, ip net.IP) {
	s.log.Info("dhcp "+step, "mac", c.MAC.String(), "ip", ipString(ip), "type", step)
	if s.cfg.Record != nil {
		s.cfg.Record(events.Event{MAC: c.MAC.String(), Source: "dhcp", Step: step, IP: ipString(ip), Arch: c.Arch.String()})
	}
}

func msgTypeName(t dhcpv4.MessageType) string {
	switch t {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeRequest,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak,
		dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform:
		return strings.ToLower(t.String())
	case dhcpv4.MessageTypeNone:
		return "none"
	}
	return "other"
}

// seenTable remembers IP→MAC pairs seen in proxy mode, for MACFor. It is
// bounded: when full it starts over.
type seenTable struct {
	mu sync.Mutex
	m  map[uint32]string
}

const seenMax = 1 << 16

func (t *seenTable) note(ip uint32, mac string) {
	if ip == 0 || mac == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.m) >= seenMax {
		t.m = map[uint32]string{}
	}
	t.m[ip] = mac
}

func (t *seenTable) get(ip uint32) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[ip]
}
