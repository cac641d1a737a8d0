package boot

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestParseCmdline(t *testing.T) {
	tests := []struct {
		in     string
		args   []Arg
		values map[string]string
		init   []string
	}{
		{"", nil, map[string]string{}, nil},
		{"console=ttyS0 quiet ignition.firstboot ip=\n",
			[]Arg{{"console", "ttyS0", true}, {"quiet", "", false}, {"ignition.firstboot", "", false}, {"ip", "", true}},
			map[string]string{"console": "ttyS0", "quiet": "", "ignition.firstboot": "", "ip": ""}, nil},
		{`a="b c"  "d=e f" url=http://h/x?a=1&b=2`,
			[]Arg{{"a", "b c", true}, {"d", "e f", true}, {"url", "http://h/x?a=1&b=2", true}},
			map[string]string{"a": "b c", "d": "e f", "url": "http://h/x?a=1&b=2"}, nil},
		{"console=tty0 console=ttyS0 -- single x",
			[]Arg{{"console", "tty0", true}, {"console", "ttyS0", true}},
			map[string]string{"console": "ttyS0"}, []string{"single", "x"}},
	}
	for _, tt := range tests {
		c := ParseCmdline(tt.in)
		if diff := cmp.Diff(tt.args, c.Args); diff != "" {
			t.Errorf("ParseCmdline(%q).Args (-want +got):\n%s", tt.in, diff)
		}
		if diff := cmp.Diff(tt.values, c.Values); diff != "" {
			t.Errorf("ParseCmdline(%q).Values (-want +got):\n%s", tt.in, diff)
		}
		if diff := cmp.Diff(tt.init, c.Init); diff != "" {
			t.Errorf("ParseCmdline(%q).Init (-want +got):\n%s", tt.in, diff)
		}
	}
	c := ParseCmdline("console=tty0 ignition.firstboot console=ttyS0")
	if got := c.All("console"); strings.Join(got, ",") != "tty0,ttyS0" {
		t.Errorf("All(console) = %v, want [tty0 ttyS0]", got)
	}
	if !c.Has("ignition.firstboot") || c.Has("nope") || c.Value("console") != "ttyS0" {
		t.Errorf("Has/Value on %+v wrong", c)
	}
}

func TestParseNetConfig(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	tests := []struct {
		cmdline string
		want    NetConfig
		err     string
	}{
		{"", NetConfig{Timeout: DefaultNetTimeout}, ""},
		{"BOOTIF=01-52-54-00-12-34-56 kindling.net.timeout=5s", NetConfig{MAC: mac, Timeout: 5 * time.Second}, ""},
		{"BOOTIF=52:54:00:12:34:56 ip=dhcp", NetConfig{MAC: mac, Timeout: DefaultNetTimeout}, ""},
		{"ip=off", NetConfig{Off: true, Timeout: DefaultNetTimeout}, ""},
		{"ip=:::::eth1:dhcp", NetConfig{Device: "eth1", Timeout: DefaultNetTimeout}, ""},
		{"ip=10.0.2.15::10.0.2.2:255.255.255.0:node1:eth0:off:10.0.2.3", NetConfig{Device: "eth0", Timeout: DefaultNetTimeout,
			Static: &Lease{Address: net.IPNet{IP: net.IPv4(10, 0, 2, 15).To4(), Mask: net.IPv4Mask(255, 255, 255, 0)},
				Router: net.IPv4(10, 0, 2, 2).To4(), Hostname: "node1", DNS: []net.IP{net.ParseIP("10.0.2.3")}, Static: true}}, ""},
		{"ip=192.168.1.9", NetConfig{Timeout: DefaultNetTimeout,
			Static: &Lease{Address: net.IPNet{IP: net.IPv4(192, 168, 1, 9).To4(), Mask: net.IPv4Mask(255, 255, 255, 0)}, Static: true}}, ""},
		{"BOOTIF=01-zz", NetConfig{}, "want 01-aa-bb-cc-dd-ee-ff"},
		{"kindling.net.timeout=soon", NetConfig{}, "want a positive duration"},
		{"ip=10.0.0.300", NetConfig{}, "client address"},
		{"ip=10.0.0.3:::255.0.255.0", NetConfig{}, "not contiguous"},
		{"ip=10.0.0.3::::::rarp", NetConfig{}, "want off or dhcp"},
		{"ip=10.0.0.3::gw", NetConfig{}, "gateway"},
	}
	for _, tt := range tests {
		got, err := ParseNetConfig(ParseCmdline(tt.cmdline))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseNetConfig(%q) error = %v, want one containing %q", tt.cmdline, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseNetConfig(%q) = %v", tt.cmdline, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseNetConfig(%q) (-want +got):\n%s", tt.cmdline, diff)
		}
	}
}

func TestParseModuleList(t *testing.T) {
	got, err := ParseModuleList([]byte("# header\n/lib/modules/v/a.ko\n\n  /lib/modules/v/b-c.ko  # comment\n"))
	if err != nil || strings.Join(got, " ") != "/lib/modules/v/a.ko /lib/modules/v/b-c.ko" {
		t.Errorf("ParseModuleList() = %v, %v", got, err)
	}
	if moduleName(got[1]) != "b_c" {
		t.Errorf("moduleName(%s) = %s, want b_c", got[1], moduleName(got[1]))
	}
	if _, err := ParseModuleList([]byte("virtio_net\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("ParseModuleList(name, not path) = %v, want an error on line 1", err)
	}
}

func TestLeaseFromACK(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	ack, err := dhcpv4.New(
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(10, 77, 0, 100)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithRouter(net.IPv4(10, 77, 0, 1)),
		dhcpv4.WithDNS(net.IPv4(10, 77, 0, 1), net.IPv4(1, 1, 1, 1)),
		dhcpv4.WithServerIP(net.IPv4(10, 77, 0, 1)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 1))),
		dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(time.Hour)),
		dhcpv4.WithOption(dhcpv4.OptDomainName("lab.example")),
		dhcpv4.WithOption(dhcpv4.OptHostName("node1")),
		dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x05, 0xdc})),
	)
	if err != nil {
		t.Fatal(err)
	}
	l := leaseFrom(ack)
	want := &Lease{
		Address:  net.IPNet{IP: net.IPv4(10, 77, 0, 100).To4(), Mask: net.CIDRMask(24, 32)},
		Router:   net.IPv4(10, 77, 0, 1).To4(),
		DNS:      []net.IP{net.IPv4(10, 77, 0, 1).To4(), net.IPv4(1, 1, 1, 1).To4()},
		Domain:   "lab.example",
		Hostname: "node1",
		MTU:      1500,
		Server:   net.IPv4(10, 77, 0, 1).To4(),
		Duration: time.Hour,
	}
	if diff := cmp.Diff(want, l, cmp.Comparer(func(a, b net.IP) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("leaseFrom(ACK) (-want +got):\n%s", diff)
	}
	if got, want := ResolvConf(l), "search lab.example\nnameserver 10.77.0.1\nnameserver 1.1.1.1\n"; !strings.HasSuffix(got, want) {
		t.Errorf("ResolvConf() = %q, want it to end in %q", got, want)
	}
}

func TestNotPID1(t *testing.T) {
	if _, err := Setup(t.Context(), nil); err == nil || !strings.Contains(err.Error(), "PID 1") {
		t.Errorf("Setup() outside PID 1 = %v, want a refusal", err)
	}
	if err := Finish(t.Context(), nil, Reboot); err == nil || !strings.Contains(err.Error(), "PID 1") {
		t.Errorf("Finish(reboot) outside PID 1 = %v, want a refusal", err)
	}
	if err := Finish(t.Context(), nil, "halt"); err == nil || !strings.Contains(err.Error(), "want reboot, poweroff, switchroot or shell") {
		t.Errorf("Finish(halt) = %v, want the valid actions", err)
	}
}
