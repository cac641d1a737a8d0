package dhcp

import (
	"net"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzClassify feeds arbitrary datagrams through parsing, Classify, the
// boot table and both modes' handlers (no sockets): nothing may panic,
// and a reply is always a well-formed BOOTREPLY.
func FuzzClassify(f *testing.F) {
	for _, c := range clients {
		for _, mt := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform, dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline} {
			r := c.req(mt)
			r.Options[50] = []byte{10, 9, 0, 120}
			r.Options[54] = testServerIP
			f.Add(r.ToBytes(), uint16(67))
		}
	}
	f.Add([]byte{}, uint16(67))
	f.Add([]byte{1, 1, 6, 0}, uint16(4011))
	cfg := &Config{ServerIP: testServerIP}
	servers := []*Server{testServer(f, ModeServer), testServer(f, ModeProxy)}
	peer := &net.UDPAddr{IP: net.IPv4(10, 9, 0, 50), Port: 68}
	f.Fuzz(func(t *testing.T, pkt []byte, port uint16) {
		if req, err := dhcpv4.FromBytes(pkt); err == nil {
			if c, err := Classify(req); err == nil {
				file, url := cfg.BootFile(c)
				if url && file == "" {
					t.Errorf("BootFile(%+v) = \"\", true", c)
				}
				_ = c.Arch.String() + c.Kind.String()
			}
		}
		p := 67
		if port%2 == 1 {
			p = pxePort
		}
		for _, s := range servers {
			ans, err := s.receive(pkt, p, peer)
			if err != nil || ans == nil {
				continue
			}
			out, err := dhcpv4.FromBytes(ans.reply.ToBytes())
			if err != nil {
				t.Fatalf("%s mode: reply does not parse: %v", s.cfg.Mode, err)
			}
			if out.OpCode != dhcpv4.OpcodeBootReply || ans.to == nil {
				t.Fatalf("%s mode: bad reply %s to %v", s.cfg.Mode, out.Summary(), ans.to)
			}
		}
	})
}
