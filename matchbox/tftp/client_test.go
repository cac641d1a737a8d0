package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"
)

// This file is a small TFTP client for the tests: pin/tftp's client has no
// windowsize, and the tests need to drop, delay and duplicate ACKs.

// getOpts are a test download's options and faults.
type getOpts struct {
	mode    string            // "" means octet
	opts    map[string]string // options sent in the RRQ, in sorted order
	timeout time.Duration     // client's retransmit timeout; 0 means 300ms

	// loseData, when set, is asked for every DATA packet received (its
	// block counted from 1 without wrap, as the client expects it next,
	// and how many DATA packets came before); true drops it.
	loseData func(expected int64, seen int) bool
	// ackHook, when set, is called for the nth ACK (from 0) the client is
	// about to send; it returns a delay (the ACK is sent that much later,
	// from another goroutine) or -1 to drop it.
	ackHook func(nth int) time.Duration
	// dupAcks sends every ACK twice.
	dupAcks bool
}

// getResult is what a test download saw.
type getResult struct {
	data    []byte
	oack    map[string]string // nil if the server sent no OACK
	packets int               // DATA packets received, counting duplicates
	dups    int               // DATA packets for blocks already received
}

// tftpError is an ERROR packet from the server.
type tftpError struct {
	code uint16
	msg  string
}

func (e *tftpError) Error() string { return fmt.Sprintf("tftp error %d: %s", e.code, e.msg) }

func rrq(op uint16, name, mode string, opts map[string]string) []byte {
	b := binary.BigEndian.AppendUint16(nil, op)
	b = append(append(b, name...), 0)
	b = append(append(b, mode...), 0)
	for _, k := range sortedKeys(opts) {
		b = append(append(b, k...), 0)
		b = append(append(b, opts[k]...), 0)
	}
	return b
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func parseOACK(p []byte) map[string]string {
	m := map[string]string{}
	fields := bytes.Split(p[2:], []byte{0})
	for i := 0; i+1 < len(fields); i += 2 {
		m[string(fields[i])] = string(fields[i+1])
	}
	return m
}

// get downloads name from the server at addr.
func get(addr, name string, o getOpts) (getResult, error) {
	var res getResult
	server, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return res, err
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: server.IP})
	if err != nil {
		return res, err
	}
	defer conn.Close()
	if o.mode == "" {
		o.mode = "octet"
	}
	if o.timeout == 0 {
		o.timeout = 300 * time.Millisecond
	}
	blksize, window := 512, 1
	var peer *net.UDPAddr
	nacks := 0
	sendAck := func(block uint16) {
		p := binary.BigEndian.AppendUint16([]byte{0, opACK}, block)
		nth := nacks
		nacks++
		var d time.Duration
		if o.ackHook != nil {
			d = o.ackHook(nth)
		}
		send := func() {
			conn.WriteToUDP(p, peer)
			if o.dupAcks {
				conn.WriteToUDP(p, peer)
			}
		}
		switch {
		case d < 0:
		case d > 0:
			time.AfterFunc(d, send)
		default:
			send()
		}
	}

	req := rrq(opRRQ, name, o.mode, o.opts)
	buf := make([]byte, 70000)
	var have int64 // blocks received in order
	inWindow := 0  // of them, since the last ACK
	gapAcked := false
	timeouts := 0
	for {
		if peer == nil {
			if _, err := conn.WriteToUDP(req, server); err != nil {
				return res, err
			}
		}
		conn.SetReadDeadline(time.Now().Add(o.timeout))
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				if timeouts++; timeouts > 20 {
					return res, fmt.Errorf("client timed out after %d blocks", have)
				}
				if peer != nil {
					sendAck(uint16(have))
					inWindow, gapAcked = 0, false
				}
				continue
			}
			return res, err
		}
		if peer == nil {
			peer = from
		} else if from.Port != peer.Port {
			continue
		}
		timeouts = 0
		p := buf[:n]
		if n < 4 {
			return res, fmt.Errorf("short packet % x", p)
		}
		switch binary.BigEndian.Uint16(p) {
		case opERROR:
			return res, &tftpError{binary.BigEndian.Uint16(p[2:]), string(bytes.TrimRight(p[4:], "\x00"))}
		case opOACK:
			if have > 0 || res.oack != nil {
				continue
			}
			res.oack = parseOACK(p)
			if v, ok := res.oack["blksize"]; ok {
				blksize, _ = strconv.Atoi(v)
			}
			if v, ok := res.oack["windowsize"]; ok {
				window, _ = strconv.Atoi(v)
			}
			sendAck(0)
		case opDATA:
			res.packets++
			block := binary.BigEndian.Uint16(p[2:])
			if o.loseData != nil && o.loseData(have+1, res.packets-1) {
				continue
			}
			switch {
			case block == uint16(have+1):
				res.data = append(res.data, p[4:]...)
				have++
				inWindow++
				gapAcked = false
				if n-4 < blksize {
					sendAck(block)
					return res, nil
				}
				if n-4 > blksize {
					return res, fmt.Errorf("block %d has %d bytes, blksize is %d", have, n-4, blksize)
				}
				if inWindow == window {
					sendAck(block)
					inWindow = 0
				}
			case uint16(have)-block < 0x8000:
				// Already have it: the server resent a window. Re-ACK at
				// its end, so the server moves on.
				res.dups++
				if block == uint16(have) {
					sendAck(block)
					inWindow = 0
				}
			default:
				// A gap: a block went missing. RFC 7440 section 4: ACK
				// the last block received in order, once.
				if !gapAcked {
					sendAck(uint16(have))
					gapAcked, inWindow = true, 0
				}
			}
		}
	}
}
