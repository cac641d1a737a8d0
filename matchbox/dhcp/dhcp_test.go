package dhcp

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestBootFile(t *testing.T) {
	cfg := &Config{ServerIP: net.IPv4(10, 9, 0, 1), HTTPPort: 8081}
	snp := &Config{ServerIP: net.IPv4(10, 9, 0, 1), BootFiles: BootFiles{UseSNP: true}}
	custom := &Config{ServerIP: net.IPv4(10, 9, 0, 1), BootFiles: BootFiles{BIOS: "k.kpxe", UEFIx64: "k64.efi", UEFIarm64: "ka64.efi", UseSNP: true}}
	tests := []struct {
		name    string
		cfg     *Config
		c       Client
		want    string
		wantURL bool
	}{
		{"bios", cfg, Client{Kind: KindPXE, Arch: 0}, "undionly.kpxe", false},
		{"x64 uefi 7", cfg, Client{Kind: KindPXE, Arch: 7}, "ipxe.efi", false},
		{"x64 uefi 9", cfg, Client{Kind: KindPXE, Arch: 9}, "ipxe.efi", false},
		{"x64 uefi snp", snp, Client{Kind: KindPXE, Arch: 7}, "snponly.efi", false},
		{"arm64 uefi", cfg, Client{Kind: KindPXE, Arch: 11}, "ipxe-arm64.efi", false},
		{"x64 http", cfg, Client{Kind: KindHTTP, Arch: 16}, "http://10.9.0.1:8081/assets/ipxe/ipxe.efi", true},
		{"x64 http snp", snp, Client{Kind: KindHTTP, Arch: 16}, "http://10.9.0.1:8080/assets/ipxe/snponly.efi", true},
		{"arm64 http", cfg, Client{Kind: KindHTTP, Arch: 19}, "http://10.9.0.1:8081/assets/ipxe/ipxe-arm64.efi", true},
		{"ipxe bios", cfg, Client{Kind: KindIPXE, Arch: 0}, "http://10.9.0.1:8081/boot.ipxe", true},
		{"ipxe efi", cfg, Client{Kind: KindIPXE, Arch: 7}, "http://10.9.0.1:8081/boot.ipxe", true},
		{"ipxe no arch", cfg, Client{Kind: KindIPXE, Arch: ArchNone}, "http://10.9.0.1:8081/boot.ipxe", true},
		{"grub", cfg, Client{Kind: KindGRUB, Arch: 7}, "http://10.9.0.1:8081/grub", true},
		{"custom bios", custom, Client{Kind: KindPXE, Arch: 0}, "k.kpxe", false},
		{"custom x64 beats snp", custom, Client{Kind: KindPXE, Arch: 7}, "k64.efi", false},
		{"custom arm64", custom, Client{Kind: KindPXE, Arch: 11}, "ka64.efi", false},
		{"ia32 uefi: no row", cfg, Client{Kind: KindPXE, Arch: 6}, "", false},
		{"riscv64: no row", cfg, Client{Kind: KindPXE, Arch: 27}, "", false},
		{"x86 http 15: no row", cfg, Client{Kind: KindHTTP, Arch: 15}, "", false},
		{"pxe without arch", cfg, Client{Kind: KindPXE, Arch: ArchNone}, "", false},
		{"http with pxe arch", cfg, Client{Kind: KindHTTP, Arch: 7}, "", false},
		{"not a boot client", cfg, Client{Kind: KindNone, Arch: 0}, "", false},
	}
	for _, tt := range tests {
		got, url := tt.cfg.BootFile(tt.c)
		if got != tt.want || url != tt.wantURL {
			t.Errorf("%s: BootFile(kind %s, arch %d) = %q, %v; want %q, %v", tt.name, tt.c.Kind, tt.c.Arch, got, url, tt.want, tt.wantURL)
		}
	}
}

func TestClassify(t *testing.T) {
	for _, c := range clients {
		got, err := Classify(c.req(dhcpv4.MessageTypeDiscover))
		if err != nil {
			t.Errorf("Classify(%s) error: %v", c.name, err)
			continue
		}
		want := map[string]Kind{
			"bios-pxe": KindPXE, "uefi-x64": KindPXE, "uefi-x64-arch9": KindPXE, "uefi-arm64": KindPXE,
			"uefi-http": KindHTTP, "uefi-http-arm64": KindHTTP, "ipxe": KindIPXE, "grub": KindGRUB,
			"plain": KindNone, "uefi-ia32": KindPXE,
		}[c.name]
		if got.Kind != want {
			t.Errorf("Classify(%s).Kind = %s, want %s", c.name, got.Kind, want)
		}
	}
	ipxe, _ := Classify(clients[6].req(dhcpv4.MessageTypeDiscover))
	if ipxe.UserClass != "iPXE" || !ipxe.IPXE || ipxe.Arch != 0 {
		t.Errorf("Classify(ipxe) = %+v, want user class iPXE, option 175, arch 0", ipxe)
	}
	grub, _ := Classify(clients[7].req(dhcpv4.MessageTypeDiscover))
	if grub.UserClass != "GRUB2" || grub.Arch != 7 {
		t.Errorf("Classify(grub) = %+v, want RFC 3004 user class GRUB2, arch 7", grub)
	}
	// A custom iPXE build with its own user class is still iPXE (175).
	custom := clients[6].req(dhcpv4.MessageTypeDiscover)
	custom.Options[77] = []byte("kindling")
	if c, _ := Classify(custom); c.Kind != KindIPXE {
		t.Errorf("Classify(iPXE with user class kindling).Kind = %s, want ipxe", c.Kind)
	}
	// Several RFC 3004 classes.
	multi := request(dhcpv4.MessageTypeDiscover, testMAC, false, opt{77, []byte{3, 'f', 'o', 'o', 4, 'i', 'P', 'X', 'E'}})
	if c, _ := Classify(multi); c.UserClass != "foo,iPXE" || c.Kind != KindIPXE {
		t.Errorf("Classify(user classes foo, iPXE) = %q %s, want \"foo,iPXE\" ipxe", c.UserClass, c.Kind)
	}
	// GRUB by vendor class.
	gv := request(dhcpv4.MessageTypeDiscover, testMAC, false, opt{60, []byte("GRUBClient")})
	if c, _ := Classify(gv); c.Kind != KindGRUB {
		t.Errorf("Classify(vendor class GRUBClient).Kind = %s, want grub", c.Kind)
	}

	bad := []struct {
		name string
		req  *dhcpv4.DHCPv4
		want error
	}{
		{"nil", nil, ErrMalformed},
		{"reply", func() *dhcpv4.DHCPv4 {
			r := clients[0].req(dhcpv4.MessageTypeDiscover)
			r.OpCode = dhcpv4.OpcodeBootReply
			return r
		}(), ErrNotRequest},
		{"no mac", request(dhcpv4.MessageTypeDiscover, nil, false), ErrNoMAC},
		{"zero mac", request(dhcpv4.MessageTypeDiscover, make(net.HardwareAddr, 6), false), ErrNoMAC},
		{"bootp", func() *dhcpv4.DHCPv4 {
			r := clients[0].req(dhcpv4.MessageTypeDiscover)
			delete(r.Options, 53)
			return r
		}(), ErrNoMessageType},
	}
	for _, b := range bad {
		if _, err := Classify(b.req); !errors.Is(err, b.want) {
			t.Errorf("Classify(%s) error = %v, want %v", b.name, err, b.want)
		}
	}
}

func TestNewErrors(t *testing.T) {
	r := func(a, b string) [2]net.IP { return [2]net.IP{net.ParseIP(a), net.ParseIP(b)} }
	tests := []struct {
		name string
		cfg  Config
		nets []*net.IPNet
		want string
	}{
		{"no range", Config{Mode: ModeServer, Interface: "eth9"}, []*net.IPNet{testNet}, "-dhcp-range"},
		{"backwards", Config{Mode: ModeServer, Interface: "eth9", Range: r("10.9.0.200", "10.9.0.100")}, []*net.IPNet{testNet}, "-dhcp-range 10.9.0.200-10.9.0.100: start is after end"},
		{"outside", Config{Mode: ModeServer, Interface: "eth9", Range: r("10.9.0.100", "10.9.1.10")}, []*net.IPNet{testNet}, "-dhcp-range 10.9.0.100-10.9.1.10 is outside 10.9.0.0/24, the subnet of -dhcp-interface eth9"},
		{"huge range", Config{Mode: ModeServer, Interface: "eth9", Range: r("10.0.0.1", "10.255.255.254")}, []*net.IPNet{{IP: net.IPv4(10, 0, 0, 1).To4(), Mask: net.CIDRMask(8, 32)}}, "at most 1048576"},
		{"v6 range", Config{Mode: ModeServer, Interface: "eth9", Range: r("fd00::1", "fd00::9")}, []*net.IPNet{testNet}, "IPv4"},
		{"no address", Config{Mode: ModeServer, Interface: "eth9", Range: r("10.9.0.100", "10.9.0.110")}, nil, "-dhcp-interface \"eth9\" has no IPv4 address"},
		{"bad router", Config{Mode: ModeServer, Interface: "eth9", Range: r("10.9.0.100", "10.9.0.110"), Router: net.ParseIP("fd00::1")}, []*net.IPNet{testNet}, "-dhcp-router"},
		{"bad mode", Config{Mode: 7, Interface: "eth9"}, []*net.IPNet{testNet}, "-dhcp"},
	}
	for _, tt := range tests {
		_, err := newServer(tt.cfg, tt.nets)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: newServer error = %v, want it to mention %q", tt.name, err, tt.want)
		}
	}
	if _, err := New(Config{}); err == nil || !strings.Contains(err.Error(), "-dhcp-interface") {
		t.Errorf("New(no interface) error = %v, want it to name -dhcp-interface", err)
	}
	if _, err := New(Config{Interface: "kdhcp-no-such0"}); err == nil || !strings.Contains(err.Error(), "-dhcp-interface \"kdhcp-no-such0\"") {
		t.Errorf("New(missing interface) error = %v, want it to name the interface", err)
	}
	if _, err := ParseMode("full"); err == nil || !strings.Contains(err.Error(), "-dhcp") {
		t.Errorf("ParseMode(full) error = %v", err)
	}
}

// dora runs DISCOVER+REQUEST for mac through s, returning the ACKed
// address (nil if none).
func dora(t *testing.T, s *Server, mac net.HardwareAddr) net.IP {
	t.Helper()
	d := request(dhcpv4.MessageTypeDiscover, mac, false)
	ans, err := s.receive(d.ToBytes(), 67, clientPeer)
	if err != nil {
		t.Fatalf("DISCOVER from %s: %v", mac, err)
	}
	ack, err := s.receive(selecting(d, ans.reply).ToBytes(), 67, clientPeer)
	if err != nil {
		t.Fatalf("REQUEST from %s: %v", mac, err)
	}
	if ack.typ != "ack" {
		t.Fatalf("REQUEST from %s: got %s (%s)", mac, ack.typ, ack.reply.Message())
	}
	return ack.reply.YourIPAddr
}

func mac(i int) net.HardwareAddr { return net.HardwareAddr{2, 0, 0, 0, byte(i >> 8), byte(i)} }

func TestLeaseLifecycle(t *testing.T) {
	small := func(c *Config) { c.Range = [2]net.IP{net.IPv4(10, 9, 0, 100), net.IPv4(10, 9, 0, 103)} }
	s := testServer(t, ModeServer, small)
	var ips []string
	for i := 1; i <= 4; i++ {
		ips = append(ips, dora(t, s, mac(i)).String())
	}
	if want := "10.9.0.100 10.9.0.101 10.9.0.102 10.9.0.103"; strings.Join(ips, " ") != want {
		t.Errorf("first four leases = %v, want %s", ips, want)
	}
	// The range is full: a fifth client gets nothing.
	if _, err := s.receive(request(dhcpv4.MessageTypeDiscover, mac(5), false).ToBytes(), 67, clientPeer); !errors.Is(err, ErrNoAddress) {
		t.Errorf("DISCOVER with the range full: %v, want ErrNoAddress", err)
	}
	if got := value(s.metrics.Dropped.WithLabelValues("no-address")); got != 1 {
		t.Errorf("dropped{no-address} = %v, want 1", got)
	}
	// Client 2 releases; client 5 gets its address (the only free one).
	rel := request(dhcpv4.MessageTypeRelease, mac(2), false)
	rel.ClientIPAddr = net.ParseIP("10.9.0.101").To4()
	if ans, err := s.receive(rel.ToBytes(), 67, clientPeer); ans != nil || err != nil {
		t.Fatalf("RELEASE = %v, %v; want no reply", ans, err)
	}
	if got := dora(t, s, mac(5)).String(); got != "10.9.0.101" {
		t.Errorf("after a release, new client got %s, want 10.9.0.101", got)
	}
	// Client 1 declines its address: it is held out; client 1 gets none
	// (the range is full) until leases expire.
	dec := request(dhcpv4.MessageTypeDecline, mac(1), false)
	dec.Options[50] = net.ParseIP("10.9.0.100").To4()
	s.receive(dec.ToBytes(), 67, clientPeer)
	if got := s.MACFor(net.ParseIP("10.9.0.100")); got != "" {
		t.Errorf("MACFor(declined address) = %q, want \"\"", got)
	}
	// An hour later every lease has expired: the declined address is
	// usable again, and each old client gets its old address back.
	later := testNow.Add(2 * time.Hour)
	s.now = func() time.Time { return later }
	if got := dora(t, s, mac(3)).String(); got != "10.9.0.102" {
		t.Errorf("returning client 3 got %s, want its old 10.9.0.102", got)
	}
	if got := dora(t, s, mac(9)).String(); got != "10.9.0.100" {
		t.Errorf("new client after expiry got %s, want the longest-expired 10.9.0.100 (declined, now free)", got)
	}
	if got := s.MACFor(net.ParseIP("10.9.0.102")); got != mac(3).String() {
		t.Errorf("MACFor(10.9.0.102) = %q, want %s", got, mac(3))
	}
}

func TestLeaseFileRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dhcp-leases.json")
	withFile := func(c *Config) { c.LeaseFile = path }
	s := testServer(t, ModeServer, withFile)
	a, b := dora(t, s, mac(1)), dora(t, s, mac(2))
	// The ACKs were durable-flagged; write as the committer would.
	s.commit.touch()
	s.commit.flush(func(*answer) {}, func(*answer, error) {}, s.log)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f leaseFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("lease file is not JSON: %v\n%s", err, data)
	}
	if len(f.Leases) != 2 || f.Leases[0].MAC != mac(1).String() || f.Leases[1].IP != b.String() {
		t.Errorf("lease file = %s", data)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("temp file left behind: %v", err)
	}
	s2 := testServer(t, ModeServer, withFile)
	if got := dora(t, s2, mac(2)); !got.Equal(b) {
		t.Errorf("after restart client 2 got %s, want %s", got, b)
	}
	if got := dora(t, s2, mac(1)); !got.Equal(a) {
		t.Errorf("after restart client 1 got %s, want %s", got, a)
	}
	if got := dora(t, s2, mac(3)).String(); got == a.String() || got == b.String() {
		t.Errorf("new client after restart got %s, a leased address", got)
	}
	// A corrupt file is an error, not silently empty leases.
	os.WriteFile(path, []byte("{not json"), 0o644)
	if _, err := newServer(Config{Mode: ModeServer, Interface: "t", LeaseFile: path, Range: [2]net.IP{net.IPv4(10, 9, 0, 100), net.IPv4(10, 9, 0, 110)}}, []*net.IPNet{testNet}); err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("corrupt lease file: error = %v, want one naming %s", err, path)
	}
}

// TestGroupCommit: replies wait for the write that covers their lease;
// one write covers a whole batch.
func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	s := testServer(t, ModeServer, func(c *Config) { c.LeaseFile = filepath.Join(dir, "l.json") })
	var sent []string
	for i := 1; i <= 5; i++ {
		d := request(dhcpv4.MessageTypeDiscover, mac(i), false)
		off, _ := s.receive(d.ToBytes(), 67, clientPeer)
		ack, _ := s.receive(selecting(d, off.reply).ToBytes(), 67, clientPeer)
		s.commit.submit(ack)
	}
	s.commit.flush(func(a *answer) {
		// Each reply's lease is in the file when it is released.
		data, _ := os.ReadFile(filepath.Join(dir, "l.json"))
		if !strings.Contains(string(data), a.client.MAC.String()) {
			t.Errorf("reply for %s sent before its lease was written", a.client.MAC)
		}
		sent = append(sent, a.client.MAC.String())
	}, func(a *answer, err error) { t.Errorf("dropped %s: %v", a.client.MAC, err) }, s.log)
	if len(sent) != 5 {
		t.Errorf("one flush released %d replies, want 5", len(sent))
	}
	// A failing write withholds the replies.
	os.RemoveAll(dir)
	d := request(dhcpv4.MessageTypeDiscover, mac(7), false)
	off, _ := s.receive(d.ToBytes(), 67, clientPeer)
	ack, _ := s.receive(selecting(d, off.reply).ToBytes(), 67, clientPeer)
	s.commit.submit(ack)
	var dropped int
	s.commit.flush(func(a *answer) { t.Errorf("sent %s although the write failed", a.client.MAC) },
		func(a *answer, err error) {
			if !errors.Is(err, errPersist) {
				t.Errorf("drop error = %v, want errPersist", err)
			}
			dropped++
		}, s.log)
	if dropped != 1 {
		t.Errorf("dropped %d replies after a failed write, want 1", dropped)
	}
}

// TestHostilePackets: bad datagrams are dropped with a reason and the
// server still answers a good client afterwards.
func TestHostilePackets(t *testing.T) {
	for _, mode := range []Mode{ModeServer, ModeProxy} {
		s := testServer(t, mode)
		good := clients[1].req(dhcpv4.MessageTypeDiscover).ToBytes()
		wrongOp := clients[1].req(dhcpv4.MessageTypeDiscover)
		wrongOp.OpCode = dhcpv4.OpcodeBootReply
		noMAC := clients[1].req(dhcpv4.MessageTypeDiscover)
		noMAC.ClientHWAddr = nil
		huge := clients[1].req(dhcpv4.MessageTypeDiscover)
		for c := 128; c < 250; c++ {
			huge.Options[uint8(c)] = make([]byte, 255)
		}
		hugeBytes := huge.ToBytes() // ~31 KB of options: valid, just big
		badLen := append([]byte(nil), good[:240]...)
		badLen = append(badLen, 53, 1, 1, 60, 200, 'P') // option runs past the end
		bad := []struct {
			name   string
			pkt    []byte
			reason string
		}{
			{"empty", nil, "malformed"},
			{"truncated header", good[:100], "malformed"},
			{"truncated options", good[:len(good)-40], "malformed"},
			{"no cookie", good[:236], "malformed"},
			{"option past end", badLen, "malformed"},
			{"wrong op", wrongOp.ToBytes(), "not-request"},
			{"no mac", noMAC.ToBytes(), "no-mac"},
		}
		for _, b := range bad {
			ans, err := s.receive(b.pkt, 67, clientPeer)
			if ans != nil || err == nil || reason(err) != b.reason {
				t.Errorf("%s: %s: receive = %v, %v; want dropped for %q", mode, b.name, ans, err, b.reason)
			}
		}
		if ans, err := s.receive(hugeBytes, 67, clientPeer); err != nil || ans == nil {
			t.Errorf("%s: huge options: receive = %v, %v; want an answer", mode, ans, err)
		}
		if ans, err := s.receive(good, 67, clientPeer); err != nil || ans == nil {
			t.Errorf("%s: good client after the bad ones: %v, %v", mode, ans, err)
		}
		if got := value(s.metrics.Dropped.WithLabelValues("malformed")); got != 5 {
			t.Errorf("%s: dropped{malformed} = %v, want 5", mode, got)
		}
		if got := value(s.metrics.Packets.WithLabelValues("invalid")); got != 5 {
			t.Errorf("%s: packets{invalid} = %v, want 5", mode, got)
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	tb := newLeaseTable(ipToU32(net.IPv4(10, 9, 0, 100)), ipToU32(net.IPv4(10, 9, 0, 199)), testNet)
	tb.put(&lease{ip: ipToU32(net.IPv4(10, 9, 0, 101)), mac: "02:00:00:00:00:01", hostname: "we\"ird\\name\u00e9", expires: testNow, bound: true})
	tb.put(&lease{ip: ipToU32(net.IPv4(10, 9, 0, 102)), expires: testNow})                                       // declined
	tb.put(&lease{ip: ipToU32(net.IPv4(10, 9, 0, 103)), mac: "02:00:00:00:00:03", expires: testNow})             // offer: not saved
	tb.put(&lease{ip: ipToU32(net.IPv4(10, 9, 0, 20)), mac: "02:00:00:00:00:04", expires: testNow, bound: true}) // reserved, outside range
	path := filepath.Join(t.TempDir(), "l.json")
	img, _ := tb.snapshot(nil, nil)
	if err := writeFileAtomic(path, img); err != nil {
		t.Fatal(err)
	}
	t2 := newLeaseTable(tb.start, tb.end, testNet)
	n, dropped, err := t2.load(path)
	if err != nil || n != 3 || dropped != 0 {
		data, _ := os.ReadFile(path)
		t.Fatalf("load = %d, %d, %v; want 3 leases\n%s", n, dropped, err, data)
	}
	if l := t2.get(ipToU32(net.IPv4(10, 9, 0, 101))); l == nil || l.hostname != "we\"ird\\name\u00e9" || !l.expires.Equal(testNow) {
		t.Errorf("round-tripped lease = %+v", l)
	}
	if l := t2.get(ipToU32(net.IPv4(10, 9, 0, 102))); l == nil || l.mac != "" {
		t.Errorf("declined address after load = %+v", l)
	}
	if t2.inUse != 2 {
		t.Errorf("inUse after load = %d, want 2 (the reserved address is outside the range)", t2.inUse)
	}
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}
