package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"
)

// Lease is the network configuration of the boot interface.
type Lease struct {
	Interface string
	MAC       net.HardwareAddr
	Address   net.IPNet
	Router    net.IP  // nil when there is none
	Routes    []Route // classless static routes (RFC 3442), when given
	DNS       []net.IP
	Domain    string
	Search    []string
	Hostname  string
	MTU       int
	// Server is the DHCP server; nil for a static configuration.
	Server net.IP
	// Duration is how long the lease lasts (zero: static).
	Duration time.Duration
	// Static is true when the address came from ip=, not DHCP.
	Static bool
}

// Route is a route to Dest through Gateway (nil: on the link).
type Route struct {
	Dest    *net.IPNet
	Gateway net.IP
}

// NetConfig is what the kernel command line asks of the network.
type NetConfig struct {
	// Off: ip=off or ip=none, no network.
	Off bool
	// MAC is the boot interface from BOOTIF, nil if not given.
	MAC net.HardwareAddr
	// Device is the interface name from ip=, "" if not given.
	Device string
	// Static is the address from ip=CLIENT::GW:MASK…, nil for DHCP.
	Static *Lease
	// Timeout bounds waiting for the interface and the lease together.
	Timeout time.Duration
}

// DefaultNetTimeout is how long Setup waits for the boot interface and a
// lease when kindling.net.timeout is not given.
const DefaultNetTimeout = 60 * time.Second

// ParseNetConfig reads BOOTIF, ip= and kindling.net.timeout.
func ParseNetConfig(c Cmdline) (NetConfig, error) {
	nc := NetConfig{Timeout: DefaultNetTimeout}
	if v, ok := c.Get(ArgNetTimeout); ok {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return nc, fmt.Errorf("%s=%q: want a positive duration such as 30s", ArgNetTimeout, v)
		}
		nc.Timeout = d
	}
	if v := c.Value(ArgBootIF); v != "" {
		mac, err := parseBootIF(v)
		if err != nil {
			return nc, err
		}
		nc.MAC = mac
	}
	v, ok := c.Get(ArgIP)
	if !ok {
		return nc, nil
	}
	switch v {
	case "", "dhcp", "on", "any", "both":
		return nc, nil
	case "off", "none":
		nc.Off = true
		return nc, nil
	}
	// client-ip:server-ip:gw-ip:netmask:hostname:device:autoconf:dns0-ip:dns1-ip
	f := strings.Split(v, ":")
	for len(f) < 9 {
		f = append(f, "")
	}
	nc.Device = f[5]
	switch f[6] {
	case "", "off", "none":
	case "dhcp", "on", "any", "both":
		return nc, nil
	default:
		return nc, fmt.Errorf("ip=%s: autoconf %q: want off or dhcp", v, f[6])
	}
	if f[0] == "" {
		return nc, nil // no address: DHCP on the device
	}
	ip := net.ParseIP(f[0]).To4()
	if ip == nil {
		return nc, fmt.Errorf("ip=%s: client address %q: want an IPv4 address", v, f[0])
	}
	mask := net.IPv4Mask(255, 255, 255, 0)
	if f[3] != "" {
		m := net.ParseIP(f[3]).To4()
		if m == nil {
			return nc, fmt.Errorf("ip=%s: netmask %q: want a dotted mask such as 255.255.255.0", v, f[3])
		}
		mask = net.IPMask(m)
		if ones, bits := mask.Size(); ones == 0 && bits == 0 {
			return nc, fmt.Errorf("ip=%s: netmask %q is not contiguous", v, f[3])
		}
	}
	l := &Lease{Address: net.IPNet{IP: ip, Mask: mask}, Hostname: f[4], Static: true}
	if f[2] != "" {
		if l.Router = net.ParseIP(f[2]).To4(); l.Router == nil {
			return nc, fmt.Errorf("ip=%s: gateway %q: want an IPv4 address", v, f[2])
		}
	}
	for _, d := range f[7:9] {
		if d == "" {
			continue
		}
		a := net.ParseIP(d)
		if a == nil {
			return nc, fmt.Errorf("ip=%s: DNS server %q: want an IP address", v, d)
		}
		l.DNS = append(l.DNS, a)
	}
	nc.Static = l
	return nc, nil
}

// parseBootIF reads BOOTIF's "01-aa-bb-cc-dd-ee-ff" (ARP type 1, then the
// MAC) or a plain MAC.
func parseBootIF(v string) (net.HardwareAddr, error) {
	s := strings.ToLower(v)
	if len(s) == 20 && strings.HasPrefix(s, "01-") {
		s = s[3:]
	}
	mac, err := net.ParseMAC(strings.ReplaceAll(s, "-", ":"))
	if err != nil || len(mac) != 6 {
		return nil, fmt.Errorf("%s=%s: want 01-aa-bb-cc-dd-ee-ff (iPXE: %s=01-${netX/mac:hexhyp})", ArgBootIF, v, ArgBootIF)
	}
	return mac, nil
}

func setupNetwork(ctx context.Context, log *slog.Logger, cmd Cmdline) (*Lease, error) {
	nc, err := ParseNetConfig(cmd)
	if err != nil {
		return nil, fmt.Errorf("boot setup: %w", err)
	}
	if nc.Off {
		log.Info("network off", "arg", "ip=off")
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(ctx, nc.Timeout)
	defer cancel()
	nl, err := openRtnl()
	if err != nil {
		return nil, fmt.Errorf("boot setup: %w", err)
	}
	defer nl.Close()
	if lo, err := net.InterfaceByName("lo"); err == nil {
		if err := nl.linkUp(lo.Index); err != nil {
			return nil, fmt.Errorf("boot setup: %w", err)
		}
	}
	start := time.Now()
	ifc, err := waitInterface(ctx, log, nl, nc)
	if err != nil {
		return nil, fmt.Errorf("boot setup: %w", err)
	}
	log.Info("interface up", "iface", ifc.Name, "mac", ifc.HardwareAddr.String(), "took", since(start))

	start = time.Now()
	lease := nc.Static
	if lease == nil {
		// DHCP's transaction IDs come from the kernel's random number
		// generator, which blocks until it is seeded.
		if err := waitRandom(ctx, log); err != nil {
			return nil, fmt.Errorf("boot setup: %w", err)
		}
		lease, err = dhcp(ctx, log, ifc.Name)
		if err != nil {
			return nil, fmt.Errorf("boot setup: DHCP on %s: %w (waited %s; set %s= to wait longer)", ifc.Name, err, since(start), ArgNetTimeout)
		}
	}
	lease.Interface, lease.MAC = ifc.Name, ifc.HardwareAddr
	if err := configure(nl, ifc.Index, lease); err != nil {
		return nil, fmt.Errorf("boot setup: configuring %s: %w", ifc.Name, err)
	}
	if err := os.MkdirAll("/etc", 0o755); err == nil {
		if err := os.WriteFile("/etc/resolv.conf", []byte(ResolvConf(lease)), 0o644); err != nil {
			return nil, fmt.Errorf("boot setup: writing /etc/resolv.conf: %w", err)
		}
	}
	if lease.Hostname != "" {
		if err := unix.Sethostname([]byte(lease.Hostname)); err != nil {
			log.Warn("setting the hostname", "hostname", lease.Hostname, "err", err)
		}
	}
	kind := "DHCP lease"
	if lease.Static {
		kind = "static address"
	}
	log.Info(kind, "iface", ifc.Name, "ip", lease.Address.String(), "router", ipString(lease.Router),
		"dns", ipsString(lease.DNS), "server", ipString(lease.Server), "lease", lease.Duration, "took", since(start))
	return lease, nil
}

func ipString(ip net.IP) string {
	if ip == nil {
		return ""
	}
	return ip.String()
}

func ipsString(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ",")
}

// ResolvConf renders /etc/resolv.conf for a lease.
func ResolvConf(l *Lease) string {
	var b strings.Builder
	b.WriteString("# Written by Kindling's agent from the boot interface's configuration.\n")
	search := l.Search
	if len(search) == 0 && l.Domain != "" {
		search = []string{l.Domain}
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for _, d := range l.DNS {
		fmt.Fprintf(&b, "nameserver %s\n", d)
	}
	return b.String()
}

// waitInterface waits for the boot interface (by MAC, by name, or the
// first Ethernet interface to get a carrier), sets it up and waits for
// its carrier.
func waitInterface(ctx context.Context, log *slog.Logger, nl *rtnl, nc NetConfig) (*net.Interface, error) {
	up := map[int]bool{}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ifs, _ := net.Interfaces()
		sort.Slice(ifs, func(i, j int) bool { return ifs[i].Index < ifs[j].Index })
		var cands []net.Interface
		for _, ifc := range ifs {
			if ifc.Flags&net.FlagLoopback != 0 || len(ifc.HardwareAddr) != 6 {
				continue
			}
			switch {
			case nc.MAC != nil && ifc.HardwareAddr.String() != nc.MAC.String():
				continue
			case nc.MAC == nil && nc.Device != "" && ifc.Name != nc.Device:
				continue
			}
			cands = append(cands, ifc)
		}
		for _, ifc := range cands {
			if !up[ifc.Index] {
				if err := nl.linkUp(ifc.Index); err != nil {
					return nil, err
				}
				up[ifc.Index] = true
			}
			if carrier(ifc.Name) {
				return &ifc, nil
			}
		}
		select {
		case <-ctx.Done():
			switch {
			case nc.MAC != nil && len(cands) == 0:
				return nil, fmt.Errorf("no interface with MAC %s (%s) appeared: is its driver in the initramfs?", nc.MAC, ArgBootIF)
			case nc.Device != "" && len(cands) == 0:
				return nil, fmt.Errorf("no interface %s (ip=) appeared: is its driver in the initramfs?", nc.Device)
			case len(cands) == 0:
				return nil, errors.New("no Ethernet interface appeared: is its driver in the initramfs?")
			}
			names := make([]string, len(cands))
			for i, c := range cands {
				names[i] = c.Name
			}
			return nil, fmt.Errorf("no carrier on %s: is the cable in?", strings.Join(names, ", "))
		case <-tick.C:
		}
	}
}

func carrier(name string) bool {
	b, err := os.ReadFile("/sys/class/net/" + name + "/carrier")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// dhcp gets a lease, retrying with backoff until ctx ends.
func dhcp(ctx context.Context, log *slog.Logger, iface string) (*Lease, error) {
	c, err := nclient4.New(iface, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	backoff := 500 * time.Millisecond
	for attempt := 1; ; attempt++ {
		l, err := c.Request(ctx, dhcpv4.WithRequestedOptions(
			dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionDomainName, dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionHostName,
			dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionInterfaceMTU))
		if err == nil {
			return leaseFrom(l.ACK), nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no lease after %d attempts: %w", attempt, err)
		}
		log.Info("DHCP attempt failed", "iface", iface, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no lease after %d attempts: %w", attempt, err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 8*time.Second)
	}
}

// leaseFrom reads the configuration out of a DHCPACK.
func leaseFrom(ack *dhcpv4.DHCPv4) *Lease {
	mask := ack.SubnetMask()
	if mask == nil {
		mask = net.IP(ack.YourIPAddr.To4()).DefaultMask()
	}
	l := &Lease{
		Address:  net.IPNet{IP: ack.YourIPAddr.To4(), Mask: mask},
		DNS:      ack.DNS(),
		Domain:   ack.DomainName(),
		Hostname: ack.HostName(),
		Server:   ack.ServerIdentifier(),
		Duration: ack.IPAddressLeaseTime(0),
	}
	if r := ack.Router(); len(r) > 0 {
		l.Router = r[0]
	}
	if s := ack.DomainSearch(); s != nil {
		l.Search = s.Labels
	}
	for _, r := range ack.ClasslessStaticRoute() {
		l.Routes = append(l.Routes, Route{Dest: r.Dest, Gateway: r.Router})
	}
	if b := ack.GetOneOption(dhcpv4.OptionInterfaceMTU); len(b) == 2 {
		l.MTU = int(b[0])<<8 | int(b[1])
	}
	return l
}

// configure applies a lease to the interface: MTU, address, routes.
func configure(nl *rtnl, index int, l *Lease) error {
	if l.MTU >= 576 {
		if err := nl.setMTU(index, l.MTU); err != nil {
			return err
		}
	}
	if err := nl.addAddr(index, l.Address); err != nil {
		return err
	}
	// RFC 3442: with classless static routes, the router option is
	// ignored.
	if len(l.Routes) > 0 {
		for _, r := range l.Routes {
			if err := nl.addRoute(index, r.Dest, r.Gateway); err != nil {
				return err
			}
		}
		return nil
	}
	if l.Router != nil {
		if !l.Address.Contains(l.Router) {
			// A router outside the subnet is reached on the link first.
			if err := nl.addRoute(index, &net.IPNet{IP: l.Router, Mask: net.CIDRMask(32, 32)}, nil); err != nil {
				return err
			}
		}
		return nl.addRoute(index, nil, l.Router)
	}
	return nil
}

// waitRandom waits until the kernel's random number generator is seeded,
// saying why when it is not: a VM without RDRAND or a virtio-rng device
// can wait minutes.
func waitRandom(ctx context.Context, log *slog.Logger) error {
	b := make([]byte, 1)
	start := time.Now()
	warned := false
	for {
		if _, err := unix.Getrandom(b, unix.GRND_NONBLOCK); err == nil {
			if warned {
				log.Info("random number generator seeded", "took", since(start))
			}
			return nil
		} else if !errors.Is(err, unix.EAGAIN) {
			return nil // no getrandom: nothing will block on it either
		}
		if !warned && time.Since(start) > time.Second {
			log.Warn("waiting for the kernel's random number generator: give the machine a hardware RNG (QEMU: -device virtio-rng-pci)")
			warned = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the kernel's random number generator was not seeded after %s: give the machine a hardware RNG (QEMU: -device virtio-rng-pci; the initramfs loads virtio_rng)", since(start))
		case <-time.After(50 * time.Millisecond):
		}
	}
}
