package dhcp

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// Requests in the shape real clients send them (captured with tcpdump in
// the lab: reference/lab.md §2, and from the clients' sources).

var (
	testMAC  = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	testUUID = append([]byte{0}, 0x8f, 0x3a, 0x1c, 0x22, 0x59, 0x4e, 0x4b, 0x0d, 0x9e, 0x21, 0x5d, 0x30, 0x6a, 0x1b, 0x77, 0x10)
	testXID  = dhcpv4.TransactionID{0x1e, 0x5a, 0x0c, 0x01}
)

type opt struct {
	code byte
	val  []byte
}

func u16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }

// request builds a BOOTREQUEST of type mt with the options, in the order
// given (so the wire form is what a client sends).
func request(mt dhcpv4.MessageType, mac net.HardwareAddr, broadcast bool, opts ...opt) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        1,
		TransactionID: testXID,
		ClientIPAddr:  net.IPv4zero.To4(),
		YourIPAddr:    net.IPv4zero.To4(),
		ServerIPAddr:  net.IPv4zero.To4(),
		GatewayIPAddr: net.IPv4zero.To4(),
		ClientHWAddr:  mac,
		Options:       dhcpv4.Options{53: []byte{byte(mt)}},
	}
	if broadcast {
		r.SetBroadcast()
	}
	for _, o := range opts {
		r.Options[o.code] = o.val
	}
	return r
}

// PXE parameter request list as EDK2 and PXE ROMs send it.
var pxeParams = opt{55, []byte{1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67, 97, 128, 129, 130, 131, 132, 133, 134, 135}}

// The client kinds, as DISCOVERs.
var clients = []struct {
	name string
	req  func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4
}{
	{"bios-pxe", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		// x86 BIOS PXE ROM: UNDI 2.1.
		return request(mt, testMAC, true, opt{57, u16(1260)}, pxeParams,
			opt{97, testUUID}, opt{94, []byte{1, 2, 1}}, opt{93, u16(0)},
			opt{60, []byte("PXEClient:Arch:00000:UNDI:002001")})
	}},
	{"uefi-x64", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		// OVMF (EDK2 UefiPxeBcDxe), lab.md §2.
		return request(mt, testMAC, true, opt{57, u16(1472)}, pxeParams,
			opt{97, testUUID}, opt{94, []byte{1, 3, 0}}, opt{93, u16(7)},
			opt{60, []byte("PXEClient:Arch:00007:UNDI:003000")})
	}},
	{"uefi-x64-arch9", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		// Old iPXE-based EFI ROMs send 9 (RFC 4578's original x64 value).
		return request(mt, testMAC, true, opt{57, u16(1472)}, pxeParams,
			opt{97, testUUID}, opt{94, []byte{1, 3, 0}}, opt{93, u16(9)},
			opt{60, []byte("PXEClient:Arch:00009:UNDI:003000")})
	}},
	{"uefi-arm64", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		// EDK2 on arm64 (five decimal digits: 00011, not 0000B).
		return request(mt, testMAC, true, opt{57, u16(1472)}, pxeParams,
			opt{97, testUUID}, opt{94, []byte{1, 3, 0}}, opt{93, u16(11)},
			opt{60, []byte("PXEClient:Arch:00011:UNDI:003000")})
	}},
	{"uefi-http", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		// EDK2 HttpBootDxe, x64.
		return request(mt, testMAC, true, opt{57, u16(1472)}, pxeParams,
			opt{97, testUUID}, opt{94, []byte{1, 3, 1}}, opt{93, u16(16)},
			opt{60, []byte("HTTPClient:Arch:00016:UNDI:003001")})
	}},
	{"uefi-http-arm64", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		return request(mt, testMAC, true, opt{57, u16(1472)}, pxeParams,
			opt{97, testUUID}, opt{94, []byte{1, 3, 1}}, opt{93, u16(19)},
			opt{60, []byte("HTTPClient:Arch:00019:UNDI:003001")})
	}},
	{"ipxe", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		// iPXE (BIOS build): user class as a plain string (not RFC 3004),
		// option 175 with its feature flags, client id.
		return request(mt, testMAC, false, opt{57, u16(1472)},
			opt{55, []byte{1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119, 128, 129, 130, 131, 132, 133, 134, 135, 175, 203}},
			opt{175, []byte{0xb1, 0x05, 0x01, 0x1a, 0xf4, 0x10, 0x00, 0xeb, 0x03, 0x01, 0x00, 0x00, 0x17, 0x01, 0x01, 0x13, 0x01, 0x01, 0x11, 0x01, 0x01, 0x18, 0x01, 0x01}},
			opt{61, append([]byte{1}, testMAC...)}, opt{97, testUUID},
			opt{94, []byte{1, 2, 1}}, opt{93, u16(0)},
			opt{60, []byte("PXEClient:Arch:00000:UNDI:002001")},
			opt{77, []byte("iPXE")})
	}},
	{"grub", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		// GRUB built with the Fedora/RHEL net_bootp patch: user class as
		// an RFC 3004 list ("GRUB2"), lease time 3600, arch 7; no vendor
		// class. Upstream GRUB sends only option 53 (and is KindNone).
		return request(mt, testMAC, false, opt{77, append([]byte{5}, "GRUB2"...)},
			opt{51, []byte{0, 0, 0x0e, 0x10}}, opt{93, u16(7)})
	}},
	{"plain", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		// busybox udhcpc: an OS's DHCP client, not a boot client.
		return request(mt, testMAC, false, opt{61, append([]byte{1}, testMAC...)},
			opt{57, u16(576)}, opt{60, []byte("udhcp 1.35.0")},
			opt{55, []byte{1, 3, 6, 12, 15, 28, 42}})
	}},
	{"uefi-ia32", func(mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
		// A PXE architecture with no row in the table.
		return request(mt, testMAC, true, pxeParams, opt{93, u16(6)},
			opt{60, []byte("PXEClient:Arch:00006:UNDI:003000")})
	}},
}

var (
	testServerIP = net.IPv4(10, 9, 0, 1).To4()
	testNet      = &net.IPNet{IP: testServerIP, Mask: net.CIDRMask(24, 32)}
	testNow      = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func testServer(t testing.TB, mode Mode, mod ...func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		Mode:      mode,
		Interface: "test0",
		Range:     [2]net.IP{net.IPv4(10, 9, 0, 100), net.IPv4(10, 9, 0, 199)},
		Router:    net.IPv4(10, 9, 0, 254),
		DNS:       []net.IP{net.IPv4(10, 9, 0, 53)},
		Domain:    "lab.example",
	}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := newServer(cfg, []*net.IPNet{testNet})
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	s.now = func() time.Time { return testNow }
	return s
}

var clientPeer = &net.UDPAddr{IP: net.IPv4zero, Port: 68}

// exchange runs req through s as a datagram on port and dumps the reply.
func exchange(t *testing.T, s *Server, req *dhcpv4.DHCPv4, port int, peer *net.UDPAddr) (string, *dhcpv4.DHCPv4) {
	t.Helper()
	ans, err := s.receive(req.ToBytes(), port, peer)
	if err != nil {
		return fmt.Sprintf("%s from %s port %d: no reply (%s): %v\n", msgTypeName(req.MessageType()), peer, port, reason(err), err), nil
	}
	if ans == nil {
		return fmt.Sprintf("%s from %s port %d: handled, no reply\n", msgTypeName(req.MessageType()), peer, port), nil
	}
	// Through the wire format and back, so the dump is what clients get.
	wire, err := dhcpv4.FromBytes(ans.reply.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	head := fmt.Sprintf("%s from %s port %d: %s to %s (durable %v)\n", msgTypeName(req.MessageType()), peer, port, ans.typ, ans.to, ans.durable)
	return head + dump(wire), wire
}

// dump is a readable, stable text form of a DHCP packet.
func dump(p *dhcpv4.DHCPv4) string {
	var b strings.Builder
	flags := "unicast"
	if p.IsBroadcast() {
		flags = "broadcast"
	}
	fmt.Fprintf(&b, "  op %s htype %d hlen %d hops %d xid %s secs %d flags %s\n", p.OpCode, p.HWType, len(p.ClientHWAddr), p.HopCount, p.TransactionID, p.NumSeconds, flags)
	fmt.Fprintf(&b, "  ciaddr %s yiaddr %s siaddr %s giaddr %s\n", p.ClientIPAddr, p.YourIPAddr, p.ServerIPAddr, p.GatewayIPAddr)
	fmt.Fprintf(&b, "  chaddr %s\n", p.ClientHWAddr)
	fmt.Fprintf(&b, "  sname %q\n", p.ServerHostName)
	fmt.Fprintf(&b, "  file %q\n", p.BootFileName)
	codes := make([]int, 0, len(p.Options))
	for c := range p.Options {
		codes = append(codes, int(c))
	}
	sort.Ints(codes)
	for _, c := range codes {
		v := p.Options[uint8(c)]
		fmt.Fprintf(&b, "  option %3d %-28s %s\n", c, optName(c), optValue(c, v))
	}
	return b.String()
}

var optNames = map[int]string{
	1: "subnet mask", 3: "router", 6: "dns", 12: "hostname", 15: "domain name",
	43: "vendor-specific", 50: "requested address", 51: "lease time",
	53: "message type", 54: "server identifier", 56: "message", 58: "renewal (T1)",
	59: "rebinding (T2)", 60: "vendor class", 61: "client identifier",
	67: "boot file name", 77: "user class", 82: "relay agent info",
	93: "client arch", 97: "client uuid", 175: "iPXE encapsulated",
}

func optName(c int) string {
	if n, ok := optNames[c]; ok {
		return "(" + n + ")"
	}
	return "(?)"
}

func optValue(c int, v []byte) string {
	switch c {
	case 1, 3, 6, 28, 50, 54:
		var ips []string
		for i := 0; i+4 <= len(v); i += 4 {
			ips = append(ips, net.IP(v[i:i+4]).String())
		}
		return strings.Join(ips, " ")
	case 51, 58, 59:
		if len(v) == 4 {
			d := time.Duration(binary.BigEndian.Uint32(v)) * time.Second
			return fmt.Sprintf("%d (%s)", d/time.Second, d)
		}
	case 53:
		if len(v) == 1 {
			return dhcpv4.MessageType(v[0]).String()
		}
	case 12, 15, 56, 60, 66, 67, 77:
		return fmt.Sprintf("%q", v)
	case 93:
		if len(v) == 2 {
			a := Arch(binary.BigEndian.Uint16(v))
			return fmt.Sprintf("%d (%s)", int(a), a)
		}
	}
	return fmt.Sprintf("% x", v)
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run go test -update to create it): %v", err)
	}
	if d := cmp.Diff(string(want), got); d != "" {
		t.Errorf("%s mismatch (-want +got; go test -update rewrites):\n%s", path, d)
	}
}

// selecting is the REQUEST a client sends after choosing offer.
func selecting(disc *dhcpv4.DHCPv4, offer *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	r := request(dhcpv4.MessageTypeRequest, disc.ClientHWAddr, disc.IsBroadcast())
	for c, v := range disc.Options {
		if c != 53 {
			r.Options[c] = v
		}
	}
	r.Options[50] = offer.YourIPAddr.To4()
	r.Options[54] = offer.Options[54]
	return r
}

// TestGoldenServer: each client kind's full DORA in server mode, one
// golden file per boot-table row (and the clients with no row).
func TestGoldenServer(t *testing.T) {
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			s := testServer(t, ModeServer)
			disc := c.req(dhcpv4.MessageTypeDiscover)
			out, offer := exchange(t, s, disc, 67, clientPeer)
			if offer == nil {
				t.Fatalf("no offer:\n%s", out)
			}
			ack, _ := exchange(t, s, selecting(disc, offer), 67, clientPeer)
			checkGolden(t, "server-"+c.name, out+"\n"+ack)
		})
	}
}

// TestGoldenProxy: each client kind's proxy OFFER (or silence), and the
// boot server ACK on port 4011 for those answered.
func TestGoldenProxy(t *testing.T) {
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			s := testServer(t, ModeProxy)
			disc := c.req(dhcpv4.MessageTypeDiscover)
			out, offer := exchange(t, s, disc, 67, clientPeer)
			if offer != nil {
				if offer.YourIPAddr != nil && !offer.YourIPAddr.IsUnspecified() {
					t.Errorf("proxy offer hands out %s; proxyDHCP must never", offer.YourIPAddr)
				}
				// The client got its address elsewhere, then asks the
				// boot server (PXE spec §2.2.5: unicast to 4011, boot
				// item 43.71 type 0 layer 0).
				req := c.req(dhcpv4.MessageTypeRequest)
				req.ClientIPAddr = net.IPv4(192, 168, 7, 23).To4()
				req.Options[54] = testServerIP
				req.Options[43] = []byte{71, 4, 0, 0, 0, 0, 255}
				ack, _ := exchange(t, s, req, 4011, &net.UDPAddr{IP: req.ClientIPAddr, Port: 4011})
				out += "\n" + ack
			}
			checkGolden(t, "proxy-"+c.name, out)
		})
	}
}

// TestGoldenServerStates covers the other server-mode paths: relays,
// INIT-REBOOT, renewals, NAKs, other servers, INFORM.
func TestGoldenServerStates(t *testing.T) {
	plain := clients[len(clients)-2].req
	bios := clients[0].req
	cases := []struct {
		name string
		run  func(t *testing.T, s *Server) string
	}{
		{"relayed", func(t *testing.T, s *Server) string {
			d := bios(dhcpv4.MessageTypeDiscover)
			d.GatewayIPAddr = net.IPv4(10, 9, 0, 2).To4()
			d.HopCount = 1
			out, offer := exchange(t, s, d, 67, &net.UDPAddr{IP: d.GatewayIPAddr, Port: 67})
			r := selecting(d, offer)
			r.GatewayIPAddr = d.GatewayIPAddr
			ack, _ := exchange(t, s, r, 67, &net.UDPAddr{IP: d.GatewayIPAddr, Port: 67})
			return out + "\n" + ack
		}},
		{"relay-other-subnet", func(t *testing.T, s *Server) string {
			d := bios(dhcpv4.MessageTypeDiscover)
			d.GatewayIPAddr = net.IPv4(10, 77, 0, 1).To4()
			out, _ := exchange(t, s, d, 67, &net.UDPAddr{IP: d.GatewayIPAddr, Port: 67})
			return out
		}},
		{"init-reboot-known", func(t *testing.T, s *Server) string {
			d := plain(dhcpv4.MessageTypeDiscover)
			_, offer := exchange(t, s, d, 67, clientPeer)
			exchange(t, s, selecting(d, offer), 67, clientPeer)
			r := plain(dhcpv4.MessageTypeRequest)
			r.Options[50] = offer.YourIPAddr.To4()
			out, _ := exchange(t, s, r, 67, clientPeer)
			return out
		}},
		{"init-reboot-wrong-address", func(t *testing.T, s *Server) string {
			d := plain(dhcpv4.MessageTypeDiscover)
			_, offer := exchange(t, s, d, 67, clientPeer)
			exchange(t, s, selecting(d, offer), 67, clientPeer)
			r := plain(dhcpv4.MessageTypeRequest)
			r.Options[50] = []byte{10, 9, 0, 150}
			out, _ := exchange(t, s, r, 67, clientPeer)
			return out
		}},
		{"init-reboot-other-network", func(t *testing.T, s *Server) string {
			r := plain(dhcpv4.MessageTypeRequest)
			r.Options[50] = []byte{192, 168, 1, 20}
			out, _ := exchange(t, s, r, 67, clientPeer)
			return out
		}},
		{"init-reboot-unknown-free", func(t *testing.T, s *Server) string {
			// Lease file lost: the client gets its address back.
			r := plain(dhcpv4.MessageTypeRequest)
			r.Options[50] = []byte{10, 9, 0, 120}
			out, _ := exchange(t, s, r, 67, clientPeer)
			return out
		}},
		{"renewing", func(t *testing.T, s *Server) string {
			d := plain(dhcpv4.MessageTypeDiscover)
			_, offer := exchange(t, s, d, 67, clientPeer)
			exchange(t, s, selecting(d, offer), 67, clientPeer)
			r := plain(dhcpv4.MessageTypeRequest)
			r.ClientIPAddr = offer.YourIPAddr.To4()
			out, _ := exchange(t, s, r, 67, &net.UDPAddr{IP: r.ClientIPAddr, Port: 68})
			return out
		}},
		{"selecting-other-server", func(t *testing.T, s *Server) string {
			d := plain(dhcpv4.MessageTypeDiscover)
			_, offer := exchange(t, s, d, 67, clientPeer)
			r := selecting(d, offer)
			r.Options[54] = []byte{10, 9, 0, 3}
			out, _ := exchange(t, s, r, 67, clientPeer)
			return out
		}},
		{"requested-address", func(t *testing.T, s *Server) string {
			d := plain(dhcpv4.MessageTypeDiscover)
			d.Options[50] = []byte{10, 9, 0, 142}
			out, _ := exchange(t, s, d, 67, clientPeer)
			return out
		}},
		{"inform", func(t *testing.T, s *Server) string {
			r := bios(dhcpv4.MessageTypeInform)
			r.ClientIPAddr = net.IPv4(10, 9, 0, 7).To4()
			out, _ := exchange(t, s, r, 67, &net.UDPAddr{IP: r.ClientIPAddr, Port: 68})
			return out
		}},
		{"reservation", func(t *testing.T, s *Server) string {
			s.cfg.Reservations = func(mac net.HardwareAddr) (net.IP, string, bool) {
				if mac.String() == testMAC.String() {
					return net.IPv4(10, 9, 0, 20), "node1", true
				}
				return nil, "", false
			}
			d := bios(dhcpv4.MessageTypeDiscover)
			out, offer := exchange(t, s, d, 67, clientPeer)
			ack, _ := exchange(t, s, selecting(d, offer), 67, clientPeer)
			return out + "\n" + ack
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkGolden(t, "server-state-"+c.name, c.run(t, testServer(t, ModeServer)))
		})
	}
}

// TestGoldenProxyStates: REQUESTs to the real DHCP server are watched, not
// answered; one naming us on port 67 is a boot server request.
func TestGoldenProxyStates(t *testing.T) {
	uefi := clients[1].req
	s := testServer(t, ModeProxy)
	r := uefi(dhcpv4.MessageTypeRequest)
	r.Options[54] = []byte{192, 168, 7, 1}
	r.Options[50] = []byte{192, 168, 7, 23}
	out, _ := exchange(t, s, r, 67, clientPeer)
	if got := s.MACFor(net.IPv4(192, 168, 7, 23)); got != testMAC.String() {
		t.Errorf("MACFor(192.168.7.23) after its REQUEST = %q, want %q", got, testMAC)
	}
	r2 := uefi(dhcpv4.MessageTypeRequest)
	r2.Options[54] = testServerIP
	out2, _ := exchange(t, s, r2, 67, clientPeer)
	checkGolden(t, "proxy-state-requests", out+"\n"+out2)
}
