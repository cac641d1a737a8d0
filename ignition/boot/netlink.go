package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// rtnl is a minimal rtnetlink client: enough to set a link up, add an
// address and add routes, so the initramfs needs no ip(8).
type rtnl struct {
	fd  int
	seq atomic.Uint32
}

func openRtnl() (*rtnl, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("opening a netlink socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("binding a netlink socket: %w", err)
	}
	return &rtnl{fd: fd}, nil
}

func (r *rtnl) Close() error { return unix.Close(r.fd) }

// attr appends a netlink attribute (rtattr) to b.
func attr(b []byte, typ uint16, data []byte) []byte {
	l := unix.SizeofRtAttr + len(data)
	b = binary.NativeEndian.AppendUint16(b, uint16(l))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func u32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// do sends one request and waits for its acknowledgement.
func (r *rtnl) do(typ uint16, flags uint16, body []byte) error {
	seq := r.seq.Add(1)
	msg := make([]byte, 0, unix.SizeofNlMsghdr+len(body))
	msg = binary.NativeEndian.AppendUint32(msg, uint32(unix.SizeofNlMsghdr+len(body)))
	msg = binary.NativeEndian.AppendUint16(msg, typ)
	msg = binary.NativeEndian.AppendUint16(msg, flags|unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	msg = binary.NativeEndian.AppendUint32(msg, seq)
	msg = binary.NativeEndian.AppendUint32(msg, 0)
	msg = append(msg, body...)
	if err := unix.Sendto(r.fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(r.fd, buf, 0)
		if err != nil {
			return err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Seq != seq || m.Header.Type != unix.NLMSG_ERROR {
				continue
			}
			if len(m.Data) < 4 {
				return errors.New("short netlink error message")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return unix.Errno(-code)
			}
			return nil
		}
	}
}

// ifinfo is struct ifinfomsg.
func ifinfo(index int, flags, change uint32) []byte {
	b := []byte{unix.AF_UNSPEC, 0}
	b = binary.NativeEndian.AppendUint16(b, 0) // type
	b = binary.NativeEndian.AppendUint32(b, uint32(int32(index)))
	b = binary.NativeEndian.AppendUint32(b, flags)
	b = binary.NativeEndian.AppendUint32(b, change)
	return b
}

// linkUp sets the interface up.
func (r *rtnl) linkUp(index int) error {
	if err := r.do(unix.RTM_NEWLINK, 0, ifinfo(index, unix.IFF_UP, unix.IFF_UP)); err != nil {
		return fmt.Errorf("setting link %d up: %w", index, err)
	}
	return nil
}

// setMTU sets the interface's MTU.
func (r *rtnl) setMTU(index, mtu int) error {
	b := attr(ifinfo(index, 0, 0), unix.IFLA_MTU, u32(uint32(mtu)))
	if err := r.do(unix.RTM_NEWLINK, 0, b); err != nil {
		return fmt.Errorf("setting the MTU of link %d to %d: %w", index, mtu, err)
	}
	return nil
}

// addAddr adds an IPv4 address with its prefix length and broadcast.
func (r *rtnl) addAddr(index int, a net.IPNet) error {
	ip := a.IP.To4()
	if ip == nil {
		return fmt.Errorf("address %s: want IPv4", a.IP)
	}
	ones, _ := a.Mask.Size()
	b := []byte{unix.AF_INET, byte(ones), 0, unix.RT_SCOPE_UNIVERSE}
	b = binary.NativeEndian.AppendUint32(b, uint32(index))
	b = attr(b, unix.IFA_LOCAL, ip)
	b = attr(b, unix.IFA_ADDRESS, ip)
	if ones < 31 {
		bc := make(net.IP, 4)
		for i := range bc {
			bc[i] = ip[i] | ^a.Mask[len(a.Mask)-4+i]
		}
		b = attr(b, unix.IFA_BROADCAST, bc)
	}
	if err := r.do(unix.RTM_NEWADDR, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, b); err != nil {
		return fmt.Errorf("adding address %s to link %d: %w", a.String(), index, err)
	}
	return nil
}

// addRoute adds an IPv4 route to dst (nil: default route) through gw
// (nil: on the link) out of the interface.
func (r *rtnl) addRoute(index int, dst *net.IPNet, gw net.IP) error {
	ones := 0
	if dst != nil {
		ones, _ = dst.Mask.Size()
	}
	scope := byte(unix.RT_SCOPE_UNIVERSE)
	if gw == nil || gw.IsUnspecified() {
		scope = unix.RT_SCOPE_LINK
		gw = nil
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags
	b := []byte{unix.AF_INET, byte(ones), 0, 0, unix.RT_TABLE_MAIN, unix.RTPROT_BOOT, scope, unix.RTN_UNICAST}
	b = binary.NativeEndian.AppendUint32(b, 0)
	if ones > 0 {
		b = attr(b, unix.RTA_DST, dst.IP.To4().Mask(dst.Mask))
	}
	if gw != nil {
		b = attr(b, unix.RTA_GATEWAY, gw.To4())
	}
	b = attr(b, unix.RTA_OIF, u32(uint32(index)))
	if err := r.do(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_REPLACE, b); err != nil {
		d := "default"
		if dst != nil && ones > 0 {
			d = dst.String()
		}
		if gw != nil {
			return fmt.Errorf("adding route %s via %s: %w", d, gw, err)
		}
		return fmt.Errorf("adding route %s on link %d: %w", d, index, err)
	}
	return nil
}
