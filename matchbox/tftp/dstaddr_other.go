//go:build !linux

package tftp

import "net"

// enableDstAddr is Linux-only; elsewhere replies come from the address the
// kernel picks.
func enableDstAddr(*net.UDPConn) bool { return false }

func dstAddr([]byte) *net.UDPAddr { return nil }
