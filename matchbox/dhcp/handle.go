package dhcp

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// answer is a reply ready to send, and what to report about it.
type answer struct {
	reply  *dhcpv4.DHCPv4
	to     *net.UDPAddr
	typ    string // offer, ack, nak, proxy-offer, proxy-ack
	client Client
	file   string
	// durable: the reply grants a lease that must be on disk first.
	durable bool
	conn    *net.UDPConn
}

var broadcast = net.IPv4bcast.To4()

// handle decides the answer to req, received on port from peer. It
// returns (nil, nil) for packets that need no reply (RELEASE, DECLINE),
// and an error saying why a packet is ignored.
func (s *Server) handle(req *dhcpv4.DHCPv4, port int, peer *net.UDPAddr) (*answer, error) {
	c, err := Classify(req)
	if err != nil {
		return nil, err
	}
	if s.cfg.Mode == ModeProxy {
		return s.handleProxy(req, c, port, peer)
	}
	return s.handleServer(req, c, s.now())
}

// Proxy mode (PXE spec 2.1 §2.2, RFC 4578).

func (s *Server) handleProxy(req *dhcpv4.DHCPv4, c Client, port int, peer *net.UDPAddr) (*answer, error) {
	if port == pxePort {
		// Boot server discovery (PXE spec §2.2.5) and iPXE's
		// ProxyDHCPREQUEST: a unicast REQUEST (or INFORM) from a client
		// that already has an address.
		if c.Type != dhcpv4.MessageTypeRequest && c.Type != dhcpv4.MessageTypeInform {
			return nil, fmt.Errorf("%w: %s on port %d", ErrUnsupported, msgTypeName(c.Type), port)
		}
		s.seen.note(ipToU32(req.ClientIPAddr), c.MAC.String())
		a, err := s.proxyReply(req, c, dhcpv4.MessageTypeAck, "proxy-ack")
		if err != nil {
			return nil, err
		}
		// Back to where it came from (the client listens on its source
		// port, 68 or 4011).
		to := &net.UDPAddr{IP: peer.IP, Port: peer.Port}
		if ip := req.ClientIPAddr.To4(); ip != nil && !ip.IsUnspecified() {
			to.IP = ip
		}
		if to.IP == nil || to.IP.IsUnspecified() {
			to = &net.UDPAddr{IP: broadcast, Port: dhcpv4.ClientPort}
		}
		a.to = to
		a.reply.ClientIPAddr = req.ClientIPAddr
		// Echo the boot item (43.71) the client asked for: iPXE's PXEBS
		// and EDK2 match the reply's item against their request's.
		if item := pxeSubOption(req.Options.Get(dhcpv4.OptionVendorSpecificInformation), pxeBootItem); item != nil {
			a.reply.Options.Update(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, append(append([]byte{pxeBootItem, byte(len(item))}, item...), 255)))
		}
		return a, nil
	}
	switch c.Type {
	case dhcpv4.MessageTypeDiscover:
		return s.proxyReply(req, c, dhcpv4.MessageTypeOffer, "proxy-offer")
	case dhcpv4.MessageTypeRequest:
		// Mostly a client REQUESTing its lease from the real DHCP
		// server; learn the address for MACFor and stay silent. A
		// REQUEST naming us (option 54) is a boot server request sent to
		// port 67 instead of 4011: answer it like one.
		ip := req.RequestedIPAddress()
		if ip == nil {
			ip = req.ClientIPAddr
		}
		s.seen.note(ipToU32(ip), c.MAC.String())
		if sid := req.ServerIdentifier(); sid != nil && sid.Equal(s.ip) {
			return s.proxyReply(req, c, dhcpv4.MessageTypeAck, "proxy-ack")
		}
		return nil, fmt.Errorf("%w: REQUEST for server %v", ErrOtherServer, req.ServerIdentifier())
	}
	return nil, fmt.Errorf("%w: %s in proxy mode", ErrUnsupported, msgTypeName(c.Type))
}

// PXE vendor options (option 43 sub-options, PXE spec 2.1 §2.4).
const (
	pxeDiscoveryControl = 6
	pxeBootItem         = 71
	// discovery control bit 3: "if the boot file name is present in this
	// packet, download it, skip boot server discovery". With option 54
	// set it keeps clients off port 4011 (what Tinkerbell does); firmware
	// that goes to 4011 anyway is answered there.
	pxeUseBootFile = 8
)

// proxyReply is a proxyDHCP OFFER or ACK: boot information, no address.
func (s *Server) proxyReply(req *dhcpv4.DHCPv4, c Client, mt dhcpv4.MessageType, typ string) (*answer, error) {
	var vendor string
	switch {
	case strings.HasPrefix(c.VendorClass, "PXEClient"):
		vendor = "PXEClient"
	case strings.HasPrefix(c.VendorClass, "HTTPClient"):
		vendor = "HTTPClient"
	default:
		return nil, fmt.Errorf("%w: vendor class %q", ErrNotPXE, c.VendorClass)
	}
	file, _ := s.cfg.BootFile(c)
	if file == "" {
		return nil, fmt.Errorf("%w: arch %d (%s), kind %s", ErrNoBootFile, int(c.Arch), c.Arch, c.Kind)
	}
	r := s.newReply(req, mt)
	r.YourIPAddr = net.IPv4zero.To4()
	r.ClientIPAddr = net.IPv4zero.To4()
	r.Options.Update(dhcpv4.OptServerIdentifier(s.ip))
	// The vendor class of the reply is what makes it a proxy offer
	// (PXEClient) or an HTTP boot offer (HTTPClient).
	r.Options.Update(dhcpv4.OptClassIdentifier(vendor))
	if vendor == "PXEClient" {
		r.Options.Update(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, []byte{pxeDiscoveryControl, 1, pxeUseBootFile, 255}))
	}
	if c.UUID != nil {
		r.Options.Update(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, c.UUID))
	}
	setBootFile(r, s.ip, file)
	return &answer{reply: r, to: s.replyTo(req, false), typ: typ, client: c, file: file}, nil
}

// pxeSubOption finds sub-option code in PXE vendor options b.
func pxeSubOption(b []byte, code byte) []byte {
	for len(b) >= 2 {
		if b[0] == 255 {
			return nil
		}
		if b[0] == 0 {
			b = b[1:]
			continue
		}
		n := int(b[1])
		if 2+n > len(b) {
			return nil
		}
		if b[0] == code {
			return b[2 : 2+n]
		}
		b = b[2+n:]
	}
	return nil
}

// Server mode (RFC 2131).

func (s *Server) handleServer(req *dhcpv4.DHCPv4, c Client, now time.Time) (*answer, error) {
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() && !s.subnet.Contains(gi) {
		return nil, fmt.Errorf("%w: giaddr %s not in %s", ErrRelaySubnet, gi, s.subnet)
	}
	switch c.Type {
	case dhcpv4.MessageTypeDiscover:
		return s.offer(req, c, now)
	case dhcpv4.MessageTypeRequest:
		return s.request(req, c, now)
	case dhcpv4.MessageTypeDecline:
		s.decline(req, c, now)
		return nil, nil
	case dhcpv4.MessageTypeRelease:
		s.release(req, c, now)
		return nil, nil
	case dhcpv4.MessageTypeInform:
		return s.inform(req, c)
	}
	return nil, fmt.Errorf("%w: %s", ErrUnsupported, msgTypeName(c.Type))
}

// reservation is c's reserved address, if it has one inside the subnet.
func (s *Server) reservation(c Client) (ip uint32, hostname string, ok bool) {
	if s.cfg.Reservations == nil {
		return 0, "", false
	}
	rip, host, ok := s.cfg.Reservations(c.MAC)
	if !ok {
		return 0, "", false
	}
	if rip4 := rip.To4(); rip4 == nil || !s.subnet.Contains(rip4) {
		s.log.Warn("dhcp reservation ignored: not in the served subnet", "mac", c.MAC.String(), "ip", fmt.Sprint(rip), "subnet", s.subnet.String())
		return 0, "", false
	}
	return ipToU32(rip), host, true
}

// offer answers a DISCOVER. The address is, in order: the client's
// reservation, its current or previous lease, the address it asks for
// (option 50) if free, the next free address in the range.
func (s *Server) offer(req *dhcpv4.DHCPv4, c Client, now time.Time) (*answer, error) {
	mac := c.MAC.String()
	rip, host, reserved := s.reservation(c)
	t := s.leases
	t.mu.Lock()
	var ip uint32
	rec := t.byMAC[mac]
	want := ipToU32(req.RequestedIPAddress())
	switch {
	case reserved && t.availableFor(rip, mac, now):
		ip = rip
	case rec != nil && t.inRange(rec.ip) && !t.skip[rec.ip]:
		ip = rec.ip
	case want != 0 && t.inRange(want) && t.availableFor(want, mac, now):
		ip = want
	default:
		var ok bool
		if ip, ok = t.allocate(now); !ok {
			t.mu.Unlock()
			s.log.Warn("dhcp range exhausted", "mac", mac, "range", fmt.Sprintf("%s-%s", u32ToIP(t.start), u32ToIP(t.end)))
			return nil, ErrNoAddress
		}
	}
	if reserved && ip != rip {
		s.log.Warn("dhcp reserved address in use by another machine; offering a dynamic one", "mac", mac, "reserved", u32ToIP(rip).String(), "ip", u32ToIP(ip).String())
		host = ""
	}
	// Hold the address for this client while it decides.
	if rec != nil && rec.ip == ip {
		if !rec.active(now) {
			rec.expires, rec.line = now.Add(offerHold), nil
		}
	} else {
		t.put(&lease{ip: ip, mac: mac, hostname: host, expires: now.Add(offerHold)})
	}
	t.mu.Unlock()

	r := s.newReply(req, dhcpv4.MessageTypeOffer)
	r.YourIPAddr = u32ToIP(ip)
	s.addConfig(r, true, host)
	file := s.addBoot(r, c)
	return &answer{reply: r, to: s.replyTo(req, false), typ: "offer", client: c, file: file}, nil
}

// request answers a REQUEST in each RFC 2131 §4.3.2 state:
//   - SELECTING (option 54 set): the client picked a server. Not us: free
//     our offer, stay silent. Us: ACK the offered address.
//   - INIT-REBOOT (option 50, no 54, ciaddr 0): the client remembers an
//     address. ACK it if it is right for this network and this client,
//     else NAK so it starts over.
//   - RENEWING/REBINDING (ciaddr set): likewise for ciaddr; the reply is
//     unicast to ciaddr.
//
// Kindling is authoritative for its subnet: a client it has no record of
// (lease file lost) gets its address back if it is in the range and free,
// and a NAK otherwise, rather than silence.
func (s *Server) request(req *dhcpv4.DHCPv4, c Client, now time.Time) (*answer, error) {
	mac := c.MAC.String()
	sid := req.ServerIdentifier()
	want := req.RequestedIPAddress()
	selecting := sid != nil && !sid.IsUnspecified()
	t := s.leases
	if selecting && !sid.Equal(s.ip) {
		t.mu.Lock()
		if rec := t.byMAC[mac]; rec != nil && !rec.bound {
			rec.expires, rec.line = now, nil // our offer was declined; free it at once
		}
		t.mu.Unlock()
		return nil, fmt.Errorf("%w: client chose %s", ErrOtherServer, sid)
	}
	if want == nil || want.IsUnspecified() {
		want = req.ClientIPAddr
	}
	if want == nil || want.To4() == nil || want.IsUnspecified() {
		return s.nak(req, c, "no address requested"), nil
	}
	want = want.To4()
	if !s.subnet.Contains(want) {
		return s.nak(req, c, fmt.Sprintf("%s is not on this network (%s)", want, s.subnet)), nil
	}
	ip := ipToU32(want)
	rip, host, reserved := s.reservation(c)

	t.mu.Lock()
	rec := t.byMAC[mac]
	var why string
	switch {
	case reserved && ip != rip && t.availableFor(rip, mac, now):
		why = fmt.Sprintf("%s is reserved for this machine", u32ToIP(rip))
	case rec != nil && rec.ip != ip && rec.active(now):
		why = fmt.Sprintf("this machine's address is %s", u32ToIP(rec.ip))
	case !(reserved && ip == rip) && !t.inRange(ip):
		why = fmt.Sprintf("%s is outside the range", want)
	case !t.availableFor(ip, mac, now):
		why = fmt.Sprintf("%s is in use", want)
	}
	if why != "" {
		t.mu.Unlock()
		return s.nak(req, c, why), nil
	}
	if !(reserved && ip == rip) {
		host = ""
	}
	if rec != nil && rec.ip == ip {
		rec.expires, rec.bound, rec.hostname, rec.line = now.Add(s.cfg.LeaseTime), true, host, nil
	} else {
		t.put(&lease{ip: ip, mac: mac, hostname: host, expires: now.Add(s.cfg.LeaseTime), bound: true})
	}
	t.mu.Unlock()

	r := s.newReply(req, dhcpv4.MessageTypeAck)
	r.YourIPAddr = u32ToIP(ip)
	r.ClientIPAddr = req.ClientIPAddr
	s.addConfig(r, true, host)
	file := s.addBoot(r, c)
	return &answer{reply: r, to: s.replyTo(req, false), typ: "ack", client: c, file: file, durable: true}, nil
}

func (s *Server) nak(req *dhcpv4.DHCPv4, c Client, why string) *answer {
	r := s.newReply(req, dhcpv4.MessageTypeNak)
	r.YourIPAddr = net.IPv4zero.To4()
	r.ClientIPAddr = net.IPv4zero.To4()
	r.Options.Update(dhcpv4.OptServerIdentifier(s.ip))
	r.Options.Update(dhcpv4.OptMessage(why))
	if !req.GatewayIPAddr.IsUnspecified() && req.GatewayIPAddr != nil {
		r.SetBroadcast() // RFC 2131 §4.3.2: the relay must broadcast a NAK
	}
	return &answer{reply: r, to: s.replyTo(req, true), typ: "nak", client: c}
}

// decline: the client found the address in use (ARP), RFC 2131 §4.3.3.
// The address is kept out of use for declineHold.
func (s *Server) decline(req *dhcpv4.DHCPv4, c Client, now time.Time) {
	ip := ipToU32(req.RequestedIPAddress())
	mac := c.MAC.String()
	t := s.leases
	t.mu.Lock()
	rec := t.byMAC[mac]
	ok := rec != nil && rec.ip == ip && ip != 0
	if ok {
		t.remove(rec)
		t.put(&lease{ip: ip, expires: now.Add(declineHold)})
	}
	t.mu.Unlock()
	if !ok {
		s.log.Debug("dhcp decline for an address not leased to the client", "mac", mac, "ip", u32ToIP(ip).String())
		return
	}
	s.log.Warn("dhcp address declined: another host uses it; held out of the range", "mac", mac, "ip", u32ToIP(ip).String(), "for", declineHold)
	s.record("decline", c, u32ToIP(ip))
	if s.commit != nil {
		s.commit.touch()
	}
}

// release: the client gives its address back (RFC 2131 §4.3.4). The
// record keeps the MAC, so the client gets the same address next time if
// nobody else needed it.
func (s *Server) release(req *dhcpv4.DHCPv4, c Client, now time.Time) {
	ip := ipToU32(req.ClientIPAddr)
	mac := c.MAC.String()
	t := s.leases
	t.mu.Lock()
	rec := t.byMAC[mac]
	ok := rec != nil && rec.ip == ip && ip != 0
	if ok {
		rec.expires, rec.line = now, nil
	}
	t.mu.Unlock()
	if !ok {
		return
	}
	s.record("release", c, u32ToIP(ip))
	if s.commit != nil {
		s.commit.touch()
	}
}

// inform answers a client that configured its address itself (RFC 2131
// §4.3.5): configuration and boot file, no lease.
func (s *Server) inform(req *dhcpv4.DHCPv4, c Client) (*answer, error) {
	r := s.newReply(req, dhcpv4.MessageTypeAck)
	r.ClientIPAddr = req.ClientIPAddr
	r.YourIPAddr = net.IPv4zero.To4()
	s.addConfig(r, false, "")
	file := s.addBoot(r, c)
	return &answer{reply: r, to: s.replyTo(req, false), typ: "ack", client: c, file: file}, nil
}

// newReply starts a reply to req: header fields copied as RFC 2131 §4.3.1
// table 3 says, and the options servers must echo (client identifier,
// RFC 6842; relay agent information, RFC 3046 §2.2).
func (s *Server) newReply(req *dhcpv4.DHCPv4, mt dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootReply,
		HWType:        req.HWType,
		TransactionID: req.TransactionID,
		Flags:         req.Flags,
		ClientIPAddr:  net.IPv4zero.To4(),
		YourIPAddr:    net.IPv4zero.To4(),
		ServerIPAddr:  net.IPv4zero.To4(),
		GatewayIPAddr: req.GatewayIPAddr,
		ClientHWAddr:  req.ClientHWAddr,
		Options:       dhcpv4.Options{},
	}
	r.Options.Update(dhcpv4.OptMessageType(mt))
	for _, code := range []dhcpv4.OptionCode{dhcpv4.OptionClientIdentifier, dhcpv4.OptionRelayAgentInformation} {
		if v := req.Options.Get(code); v != nil {
			r.Options.Update(dhcpv4.OptGeneric(code, v))
		}
	}
	return r
}

// addConfig adds the server-mode network configuration.
func (s *Server) addConfig(r *dhcpv4.DHCPv4, lease bool, hostname string) {
	r.Options.Update(dhcpv4.OptServerIdentifier(s.ip))
	if lease {
		lt := s.cfg.LeaseTime
		r.Options.Update(dhcpv4.OptIPAddressLeaseTime(lt))
		r.Options.Update(dhcpv4.OptRenewTimeValue(lt / 2))
		r.Options.Update(dhcpv4.OptRebindingTimeValue(lt * 7 / 8))
	}
	r.Options.Update(dhcpv4.OptSubnetMask(s.subnet.Mask))
	if s.cfg.Router != nil {
		r.Options.Update(dhcpv4.OptRouter(s.cfg.Router.To4()))
	}
	if len(s.cfg.DNS) > 0 {
		r.Options.Update(dhcpv4.OptDNS(s.cfg.DNS...))
	}
	if s.cfg.Domain != "" {
		r.Options.Update(dhcpv4.OptDomainName(s.cfg.Domain))
	}
	if hostname != "" {
		r.Options.Update(dhcpv4.OptHostName(hostname))
	}
}

// addBoot adds c's boot file (server mode) and returns it ("" for none).
func (s *Server) addBoot(r *dhcpv4.DHCPv4, c Client) string {
	file, _ := s.cfg.BootFile(c)
	if file == "" {
		return ""
	}
	setBootFile(r, s.ip, file)
	switch c.Kind {
	case KindHTTP:
		r.Options.Update(dhcpv4.OptClassIdentifier("HTTPClient"))
	case KindIPXE:
		// 175.176 (no-pxedhcp) = 1: don't wait ~3 s for proxyDHCP
		// offers; this server already said everything.
		r.Options.Update(dhcpv4.OptGeneric(optIPXEEncap, []byte{176, 1, 1}))
	}
	if c.UUID != nil && (c.Kind == KindPXE || c.Kind == KindHTTP) {
		r.Options.Update(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, c.UUID))
	}
	return file
}

// setBootFile sets siaddr (next server), the file field and option 67.
// Firmware reads one or the other; URLs too long for the 128-byte field
// go in option 67 only.
func setBootFile(r *dhcpv4.DHCPv4, server net.IP, file string) {
	r.ServerIPAddr = server
	if len(file) < 128 {
		r.BootFileName = file
	}
	r.Options.Update(dhcpv4.OptBootFileName(file))
}

// replyTo is where a reply to req goes (RFC 2131 §4.1): the relay if
// there is one; for a NAK, broadcast; a client with an address, to that
// address; otherwise broadcast (see the package comment).
func (s *Server) replyTo(req *dhcpv4.DHCPv4, nak bool) *net.UDPAddr {
	if gi := req.GatewayIPAddr.To4(); gi != nil && !gi.IsUnspecified() {
		return &net.UDPAddr{IP: gi, Port: dhcpv4.ServerPort}
	}
	if ci := req.ClientIPAddr.To4(); !nak && ci != nil && !ci.IsUnspecified() {
		return &net.UDPAddr{IP: ci, Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: broadcast, Port: dhcpv4.ClientPort}
}
