package dhcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"

	"github.com/kindlingboot/kindling/matchbox/events"
)

// A lab is two network namespaces joined by a veth pair: the server
// side ("…-s", interface ks0, 10.213.7.1/24) and the client side ("…-c",
// interface kc0, no address). Nothing touches the root namespace; both
// namespaces are deleted when the test ends.
type lab struct {
	srvNS, cliNS string
	srvIP        net.IP
	cliMAC       net.HardwareAddr
}

const (
	srvIf = "ks0"
	cliIf = "kc0"
)

func newLab(t *testing.T) *lab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2) to create network namespaces")
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	name := fmt.Sprintf("kdhcp-%d-%s", os.Getpid(), hex.EncodeToString(rnd[:]))
	l := &lab{srvNS: name + "-s", cliNS: name + "-c", srvIP: net.IPv4(10, 213, 7, 1).To4(),
		cliMAC: net.HardwareAddr{0x02, 0x4b, 0x44, rnd[0], rnd[1], 0x01}}
	t.Cleanup(func() {
		// Namespaces outlive their processes' exit only through mounts;
		// deleting them is enough once our clients are gone.
		exec.Command("ip", "netns", "del", l.srvNS).Run()
		exec.Command("ip", "netns", "del", l.cliNS).Run()
	})
	for _, args := range [][]string{
		{"netns", "add", l.srvNS},
		{"netns", "add", l.cliNS},
		{"-n", l.srvNS, "link", "add", srvIf, "type", "veth", "peer", "name", cliIf, "netns", l.cliNS},
		{"-n", l.srvNS, "addr", "add", "10.213.7.1/24", "dev", srvIf},
		{"-n", l.srvNS, "link", "set", srvIf, "up"},
		{"-n", l.srvNS, "link", "set", "lo", "up"},
		{"-n", l.cliNS, "link", "set", cliIf, "address", l.cliMAC.String()},
		{"-n", l.cliNS, "link", "set", cliIf, "up"},
		{"-n", l.cliNS, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return l
}

// staleNS matches the namespaces newLab makes: kdhcp-PID-RANDOM-{s,c}.
var staleNS = regexp.MustCompile(`^kdhcp-([0-9]+)-[0-9a-f]{8}-[sc]$`)

// TestMain deletes namespaces left by an earlier run of these tests that
// died before its cleanups ran (a panic): only ours (by name) and only
// when the process that made them is gone.
func TestMain(m *testing.M) {
	if ents, err := os.ReadDir("/var/run/netns"); err == nil {
		for _, e := range ents {
			sm := staleNS.FindStringSubmatch(e.Name())
			if sm == nil {
				continue
			}
			if _, err := os.Stat("/proc/" + sm[1]); err == nil {
				continue
			}
			exec.Command("ip", "netns", "del", e.Name()).Run()
		}
	}
	os.Exit(m.Run())
}

// goNS starts fn on an OS thread switched into namespace ns and returns
// once the switch is done (or failed). The thread is never switched
// back: it exits with the goroutine (LockOSThread without Unlock), so no
// other goroutine ever runs in the wrong namespace. Sockets fn creates
// stay in ns for their lifetime.
func goNS(ns string, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open(filepath.Join("/var/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
		f.Close()
		if err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns, err)
			return
		}
		errc <- nil
		fn()
	}()
	return <-errc
}

// inNS runs fn in namespace ns (as goNS) and waits for it.
func inNS(ns string, fn func()) error {
	done := make(chan struct{})
	if err := goNS(ns, func() { defer close(done); fn() }); err != nil {
		return err
	}
	<-done
	return nil
}

// startServer runs a Server in the lab's server namespace until the test
// (or stop) ends it.
func (l *lab) startServer(t *testing.T, cfg Config) (s *Server, stop func()) {
	t.Helper()
	cfg.Interface = srvIf
	ctx, cancel := context.WithCancel(context.Background())
	made := make(chan error, 1)
	done := make(chan error, 1)
	var srv *Server
	err := goNS(l.srvNS, func() {
		var err error
		srv, err = New(cfg)
		made <- err
		if err != nil {
			return
		}
		done <- srv.Serve(ctx)
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := <-made; err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	select {
	case <-srv.ready:
	case err := <-done:
		cancel()
		t.Fatalf("Serve: %v", err)
	case <-time.After(5 * time.Second):
		cancel()
		t.Fatal("server not ready after 5s")
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve returned %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return 5s after its context ended")
		}
	}
	t.Cleanup(stop)
	return srv, stop
}

// nclient makes an nclient4 client on the client namespace's interface.
func (l *lab) nclient(t *testing.T, hw net.HardwareAddr, timeout time.Duration) *nclient4.Client {
	t.Helper()
	var c *nclient4.Client
	var err error
	if e := inNS(l.cliNS, func() {
		opts := []nclient4.ClientOpt{nclient4.WithTimeout(timeout), nclient4.WithRetry(2)}
		if hw != nil {
			opts = append(opts, nclient4.WithHWAddr(hw))
		}
		c, err = nclient4.New(cliIf, opts...)
	}); e != nil {
		t.Fatal(e)
	}
	if err != nil {
		t.Fatalf("nclient4.New: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// run runs a command in the client namespace, bounded by timeout.
func (l *lab) run(t *testing.T, timeout time.Duration, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", l.cliNS, name}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("needs %s (Debian package %s)", name, map[string]string{"udhcpc": "udhcpc", "dhclient": "isc-dhcp-client"}[name])
	}
	return p
}

// script writes a DHCP client hook that prints what the client learnt.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hook.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

var udhcpcBound = regexp.MustCompile(`BOUND ip=(\S+) siaddr=(\S*) boot_file=(\S*)`)

// udhcpc runs busybox udhcpc once; it returns the bound address or nil.
func (l *lab) udhcpc(t *testing.T, tries int, extra ...string) (net.IP, string) {
	t.Helper()
	hook := script(t, `[ "$1" = bound ] && echo "BOUND ip=$ip siaddr=$siaddr boot_file=$boot_file"`)
	args := append([]string{"-f", "-q", "-n", "-i", cliIf, "-s", hook, "-t", fmt.Sprint(tries), "-T", "1", "-A", "1"}, extra...)
	out, err := l.run(t, 20*time.Second, needTool(t, "udhcpc"), args...)
	m := udhcpcBound.FindStringSubmatch(out)
	if m == nil {
		return nil, fmt.Sprintf("%v\n%s", err, out)
	}
	return net.ParseIP(m[1]), out
}

func leaseFileMACs(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading lease file: %v", err)
	}
	var f leaseFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("lease file: %v\n%s", err, data)
	}
	m := map[string]string{}
	for _, l := range f.Leases {
		m[l.MAC] = l.IP
	}
	return m
}

func inRange(ip net.IP) bool {
	v := ipToU32(ip)
	return v >= ipToU32(net.IPv4(10, 213, 7, 100)) && v <= ipToU32(net.IPv4(10, 213, 7, 150))
}

// TestNetnsServerMode: real clients (busybox udhcpc, ISC dhclient,
// nclient4) lease addresses from Kindling in server mode over a veth;
// leases are on disk; a restarted server gives them back.
func TestNetnsServerMode(t *testing.T) {
	l := newLab(t)
	leaseFile := filepath.Join(t.TempDir(), "dhcp-leases.json")
	var (
		mu  sync.Mutex
		evs []events.Event
	)
	cfg := Config{
		Mode:      ModeServer,
		Range:     [2]net.IP{net.IPv4(10, 213, 7, 100), net.IPv4(10, 213, 7, 150)},
		Router:    net.IPv4(10, 213, 7, 1),
		DNS:       []net.IP{net.IPv4(10, 213, 7, 1)},
		LeaseTime: 10 * time.Minute,
		LeaseFile: leaseFile,
		Record: func(e events.Event) {
			mu.Lock()
			evs = append(evs, e)
			mu.Unlock()
		},
	}
	s, stop := l.startServer(t, cfg)

	// busybox udhcpc, as an OS would run it.
	ip1, out := l.udhcpc(t, 3)
	if ip1 == nil || !inRange(ip1) {
		t.Fatalf("udhcpc got %v; want an address in the range\n%s", ip1, out)
	}
	t.Logf("udhcpc: %s", ip1)
	if got := s.MACFor(ip1); got != l.cliMAC.String() {
		t.Errorf("MACFor(%s) = %q, want %s", ip1, got, l.cliMAC)
	}

	// ISC dhclient, same NIC: same machine, same address.
	if _, err := exec.LookPath("dhclient"); err == nil {
		dir := t.TempDir()
		got := filepath.Join(dir, "got")
		hook := script(t, `case "$reason" in BOUND|REBOOT) echo "$new_ip_address" > `+got+`;; esac`)
		pf, lf := filepath.Join(dir, "pid"), filepath.Join(dir, "leases")
		out, err := l.run(t, 30*time.Second, "dhclient", "-4", "-1", "-v", "-sf", hook, "-lf", lf, "-pf", pf, cliIf)
		// dhclient forks to keep the lease; stop it (-x: without a RELEASE).
		l.run(t, 10*time.Second, "dhclient", "-x", "-pf", pf)
		data, _ := os.ReadFile(got)
		ip := net.ParseIP(strings.TrimSpace(string(data)))
		if err != nil || ip == nil {
			t.Errorf("dhclient: %v, got %q\n%s", err, data, out)
		} else if !ip.Equal(ip1) {
			t.Errorf("dhclient got %s; the same NIC had %s from udhcpc", ip, ip1)
		} else {
			t.Logf("dhclient: %s", ip)
		}
	} else {
		t.Log("dhclient (isc-dhcp-client) not installed; skipping that client")
	}

	// nclient4 with two other MACs.
	macA := net.HardwareAddr{0x02, 0x4b, 0x44, 0, 0, 0xa}
	macB := net.HardwareAddr{0x02, 0x4b, 0x44, 0, 0, 0xb}
	leaseA, err := l.nclient(t, macA, time.Second).Request(context.Background())
	if err != nil {
		t.Fatalf("nclient4 DORA: %v", err)
	}
	leaseB, err := l.nclient(t, macB, time.Second).Request(context.Background())
	if err != nil {
		t.Fatalf("nclient4 DORA: %v", err)
	}
	ipA, ipB := leaseA.ACK.YourIPAddr, leaseB.ACK.YourIPAddr
	if !inRange(ipA) || !inRange(ipB) || ipA.Equal(ipB) || ipA.Equal(ip1) {
		t.Errorf("nclient4 leases %s, %s (udhcpc %s): want distinct addresses in the range", ipA, ipB, ip1)
	}
	if leaseA.ACK.BootFileName != "" || leaseA.ACK.Options.Has(dhcpv4.OptionBootfileName) {
		t.Errorf("a plain client got boot file %q", leaseA.ACK.BootFileName)
	}
	// Every ACKed lease is on disk (written before its ACK was sent).
	onDisk := leaseFileMACs(t, leaseFile)
	for m, ip := range map[string]net.IP{l.cliMAC.String(): ip1, macA.String(): ipA, macB.String(): ipB} {
		if onDisk[m] != ip.String() {
			t.Errorf("lease file has %s → %q, want %s (file: %v)", m, onDisk[m], ip, onDisk)
		}
	}

	t.Logf("nclient4: %s, %s", ipA, ipB)

	// Restart: a new Server from the same lease file.
	stop()
	_, _ = l.startServer(t, cfg)
	if ip, out := l.udhcpc(t, 3); !ip.Equal(ip1) {
		t.Errorf("after restart udhcpc got %v, want %s\n%s", ip, ip1, out)
	}
	if lease, err := l.nclient(t, macB, time.Second).Request(context.Background()); err != nil || !lease.ACK.YourIPAddr.Equal(ipB) {
		t.Errorf("after restart nclient4 %s got %v (%v), want %s", macB, lease, err, ipB)
	}
	mu.Lock()
	defer mu.Unlock()
	steps := map[string]int{}
	for _, e := range evs {
		if e.Source != "dhcp" {
			t.Errorf("event source %q, want dhcp", e.Source)
		}
		steps[e.Step]++
	}
	if steps["offer"] < 5 || steps["ack"] < 5 {
		t.Errorf("events by step = %v, want ≥5 offers and acks", steps)
	}
}

// TestNetnsProxyMode: in proxy mode a plain client gets no answer, a
// PXE-shaped DISCOVER gets a proxy offer with no address, and port 4011
// answers a boot server REQUEST.
func TestNetnsProxyMode(t *testing.T) {
	l := newLab(t)
	s, _ := l.startServer(t, Config{Mode: ModeProxy, HTTPPort: 8080})

	// Plain clients: silence (both asked at once, ~2 s).
	start := time.Now()
	plain := make(chan string, 1)
	go func() {
		if _, err := exec.LookPath("udhcpc"); err != nil {
			plain <- ""
			return
		}
		if ip, out := l.udhcpc(t, 2); ip != nil {
			plain <- fmt.Sprintf("proxy mode leased %s to a plain udhcpc\n%s", ip, out)
			return
		}
		plain <- ""
	}()
	if offer, err := l.nclient(t, nil, time.Second).DiscoverOffer(context.Background()); err == nil {
		t.Errorf("proxy mode answered a plain DISCOVER:\n%s", offer.Summary())
	}
	if msg := <-plain; msg != "" {
		t.Error(msg)
	}
	t.Logf("plain clients unanswered after %s", time.Since(start).Round(time.Millisecond))

	// A PXE client (x64 UEFI, as OVMF sends it).
	pxe := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
		dhcpv4.WithGeneric(dhcpv4.OptionClientSystemArchitectureType, u16(7)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, []byte{1, 3, 0}),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, testUUID),
	}
	offer, err := l.nclient(t, nil, time.Second).DiscoverOffer(context.Background(), pxe...)
	if err != nil {
		t.Fatalf("PXE DISCOVER: %v", err)
	}
	if !offer.YourIPAddr.IsUnspecified() || offer.BootFileName != "ipxe.efi" || offer.ClassIdentifier() != "PXEClient" ||
		!offer.ServerIPAddr.Equal(l.srvIP) || !offer.ServerIdentifier().Equal(l.srvIP) {
		t.Errorf("proxy offer = %s; want yiaddr 0.0.0.0, file ipxe.efi, option 60 PXEClient, siaddr and option 54 %s", offer.Summary(), l.srvIP)
	}

	// Boot server discovery: the client has an address now and unicasts
	// a REQUEST to port 4011.
	if out, err := exec.Command("ip", "-n", l.cliNS, "addr", "add", "10.213.7.50/24", "dev", cliIf).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v\n%s", err, out)
	}
	req, _ := dhcpv4.New(append(pxe, dhcpv4.WithHwAddr(l.cliMAC), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.IPv4(10, 213, 7, 50)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(l.srvIP)))...)
	var reply *dhcpv4.DHCPv4
	var rerr error
	if err := inNS(l.cliNS, func() {
		reply, rerr = exchangeUDP(&net.UDPAddr{IP: net.IPv4(10, 213, 7, 50), Port: 4011}, &net.UDPAddr{IP: l.srvIP, Port: 4011}, req.ToBytes())
	}); err != nil {
		t.Fatal(err)
	}
	if rerr != nil {
		t.Fatalf("REQUEST to port 4011: %v", rerr)
	}
	if reply.MessageType() != dhcpv4.MessageTypeAck || reply.BootFileName != "ipxe.efi" || reply.ClassIdentifier() != "PXEClient" {
		t.Errorf("4011 reply = %s; want ACK, file ipxe.efi, option 60 PXEClient", reply.Summary())
	}
	if got := s.MACFor(net.IPv4(10, 213, 7, 50)); got != l.cliMAC.String() {
		t.Errorf("MACFor(10.213.7.50) after its 4011 request = %q, want %s", got, l.cliMAC)
	}
}

// exchangeUDP sends pkt from laddr to raddr and waits 2s for one reply.
func exchangeUDP(laddr, raddr *net.UDPAddr, pkt []byte) (*dhcpv4.DHCPv4, error) {
	c, err := net.ListenUDP("udp4", laddr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.WriteToUDP(pkt, raddr); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		return nil, err
	}
	return dhcpv4.FromBytes(buf[:n])
}

// TestNetnsHostile: garbage sent at the live server's port 67 is dropped
// (and counted); a good client is answered afterwards.
func TestNetnsHostile(t *testing.T) {
	l := newLab(t)
	s, _ := l.startServer(t, Config{Mode: ModeServer, Range: [2]net.IP{net.IPv4(10, 213, 7, 100), net.IPv4(10, 213, 7, 150)}})
	if out, err := exec.Command("ip", "-n", l.cliNS, "addr", "add", "10.213.7.60/24", "dev", cliIf).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v\n%s", err, out)
	}
	good := clients[0].req(dhcpv4.MessageTypeDiscover)
	wrongOp := clients[0].req(dhcpv4.MessageTypeDiscover)
	wrongOp.OpCode = dhcpv4.OpcodeBootReply
	noMAC := clients[0].req(dhcpv4.MessageTypeDiscover)
	noMAC.ClientHWAddr = nil
	huge := clients[0].req(dhcpv4.MessageTypeDiscover)
	for c := 128; c < 250; c++ {
		huge.Options[uint8(c)] = bytes.Repeat([]byte{0xa5}, 255)
	}
	junk := [][]byte{
		nil, {1}, good.ToBytes()[:120], good.ToBytes()[:236],
		wrongOp.ToBytes(), noMAC.ToBytes(),
		append(good.ToBytes()[:240:240], 53, 1, 1, 77, 250, 'i'),
		bytes.Repeat([]byte{0xff}, 60000), // one big datagram of junk
	}
	if err := inNS(l.cliNS, func() {
		c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: l.srvIP, Port: 67})
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		for _, j := range junk {
			c.Write(j)
		}
		c.Write(huge.ToBytes()) // valid, big: answered
	}); err != nil {
		t.Fatal(err)
	}
	if lease, err := l.nclient(t, nil, time.Second).Request(context.Background()); err != nil || !inRange(lease.ACK.YourIPAddr) {
		t.Fatalf("good client after junk: %v, %v", lease, err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) && value(s.metrics.Dropped.WithLabelValues("malformed")) < 6 {
		time.Sleep(20 * time.Millisecond)
	}
	for r, want := range map[string]float64{"malformed": 6, "not-request": 1, "no-mac": 1} {
		if got := value(s.metrics.Dropped.WithLabelValues(r)); got != want {
			t.Errorf("dropped{%s} = %v, want %v", r, got, want)
		}
	}
	if got := value(s.metrics.Replies.WithLabelValues("offer", "x86-bios")); got != 1 {
		t.Errorf("replies{offer,x86-bios} = %v, want 1 (the big valid DISCOVER)", got)
	}
}
