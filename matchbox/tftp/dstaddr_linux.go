package tftp

import (
	"encoding/binary"
	"net"
	"syscall"
)

// enableDstAddr asks the kernel to report each datagram's destination
// address (IP_PKTINFO, IPV6_RECVPKTINFO) on a socket bound to the
// unspecified address, so that each transfer's socket can be bound to the
// address the client sent its request to. On a multi-homed server a reply
// from another address is dropped by clients, which check the source.
func enableDstAddr(c *net.UDPConn) bool {
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	ok := false
	_ = rc.Control(func(fd uintptr) {
		if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_PKTINFO, 1) == nil {
			ok = true
		}
		if syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IPV6, syscall.IPV6_RECVPKTINFO, 1) == nil {
			ok = true
		}
	})
	return ok
}

// dstAddr extracts the destination address from a datagram's control
// messages; nil when there is none.
func dstAddr(oob []byte) *net.UDPAddr {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == syscall.IPPROTO_IP && m.Header.Type == syscall.IP_PKTINFO && len(m.Data) >= 12:
			// struct in_pktinfo { int ipi_ifindex; struct in_addr
			// ipi_spec_dst, ipi_addr; }: ipi_addr is the header's
			// destination; for a broadcast or multicast request, reply
			// from ipi_spec_dst, the local address routing picks.
			ip := net.IPv4(m.Data[8], m.Data[9], m.Data[10], m.Data[11])
			if ip.IsMulticast() || ip.Equal(net.IPv4bcast) {
				ip = net.IPv4(m.Data[4], m.Data[5], m.Data[6], m.Data[7])
			}
			return &net.UDPAddr{IP: ip}
		case m.Header.Level == syscall.IPPROTO_IPV6 && m.Header.Type == syscall.IPV6_PKTINFO && len(m.Data) >= 20:
			// struct in6_pktinfo { struct in6_addr ipi6_addr; int ipi6_ifindex; }
			ip := make(net.IP, 16)
			copy(ip, m.Data[:16])
			if ip.IsMulticast() {
				return nil
			}
			a := &net.UDPAddr{IP: ip}
			if ip.IsLinkLocalUnicast() {
				idx := int(binary.NativeEndian.Uint32(m.Data[16:20]))
				if ifi, err := net.InterfaceByIndex(idx); err == nil {
					a.Zone = ifi.Name
				}
			}
			return a
		}
	}
	return nil
}
