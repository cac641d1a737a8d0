// Command driver downloads a file over TFTP and reports the wall time, for
// bench/tftp/run.sh. It speaks RFC 1350 with the blksize, tsize (RFC 2348,
// 2349) and windowsize (RFC 7440) options, so the same client measures
// every server. It checks every download's size and CRC against the local
// copy of the file.
//
// One download after another (prints one line, times in ms):
//
//	driver -addr 127.0.0.1:16969 -name f1m -local DIR/f1m -blksize 1468 -window 4 -runs 5
//	runs=5 median_ms=… min_ms=… max_ms=… all_ms=…,…
//
// Many at once (prints wall time and failures):
//
//	driver -addr 127.0.0.1:16969 -name f1m -local DIR/f1m -blksize 1468 -c 200
//
// A server that does not answer windowsize in its OACK (tftpd-hpa,
// dnsmasq before 2.92) gets lock-step ACKs, as RFC 7440 requires.
package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:69", "server address")
	name := flag.String("name", "", "file to request")
	local := flag.String("local", "", "local copy of the file, to check what arrives")
	blksize := flag.Int("blksize", 0, "blksize option; 0 sends none")
	window := flag.Int("window", 0, "windowsize option; 0 sends none")
	runs := flag.Int("runs", 1, "downloads, one after another")
	conc := flag.Int("c", 0, "if >0: this many downloads at once, once")
	timeout := flag.Duration("timeout", time.Second, "retransmit timeout")
	flag.Parse()
	want, err := os.ReadFile(*local)
	if err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
	server, err := netip.ParseAddrPort(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "driver:", err)
		os.Exit(1)
	}
	c := client{server: server, blksize: *blksize, window: *window, timeout: *timeout,
		size: int64(len(want)), crc: crc32.Checksum(want, table)}
	if *conc > 0 {
		os.Exit(concurrent(c, *name, *conc))
	}
	var ms []float64
	for range *runs {
		start := time.Now()
		if err := c.get(*name); err != nil {
			fmt.Fprintln(os.Stderr, "driver:", err)
			os.Exit(1)
		}
		ms = append(ms, float64(time.Since(start).Microseconds())/1000)
	}
	all := make([]string, len(ms))
	for i, m := range ms {
		all[i] = strconv.FormatFloat(m, 'f', 2, 64)
	}
	sorted := slices.Clone(ms)
	slices.Sort(sorted)
	fmt.Printf("runs=%d median_ms=%.2f min_ms=%.2f max_ms=%.2f all_ms=%s\n",
		len(ms), sorted[len(sorted)/2], sorted[0], sorted[len(sorted)-1], strings.Join(all, ","))
}

func concurrent(c client, name string, n int) int {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		fails []string
		times []time.Duration
	)
	gate := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			s := time.Now()
			err := c.get(name)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				fails = append(fails, err.Error())
				return
			}
			times = append(times, time.Since(s))
		}()
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	wall := time.Since(start)
	slices.Sort(times)
	pct := func(p float64) float64 {
		if len(times) == 0 {
			return 0
		}
		return float64(times[int(p*float64(len(times)-1))].Microseconds()) / 1000
	}
	fmt.Printf("concurrent=%d ok=%d failed=%d wall_ms=%.1f per_download_p50_ms=%.1f p99_ms=%.1f max_ms=%.1f MiB_per_s=%.1f\n",
		n, len(times), len(fails), float64(wall.Microseconds())/1000, pct(.5), pct(.99), pct(1),
		float64(int64(len(times))*c.size)/(1<<20)/wall.Seconds())
	for i, f := range fails {
		if i == 5 {
			break
		}
		fmt.Fprintln(os.Stderr, "driver: failure:", f)
	}
	if len(fails) > 0 {
		return 1
	}
	return 0
}

var table = crc32.MakeTable(crc32.Castagnoli)

type client struct {
	server          netip.AddrPort
	blksize, window int
	timeout         time.Duration
	size            int64
	crc             uint32
}

const (
	opRRQ   = 1
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// get downloads name once and checks it.
func (c client) get(name string) error {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: c.server.Addr().AsSlice()})
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetReadBuffer(4 << 20)

	req := binary.BigEndian.AppendUint16(nil, opRRQ)
	req = append(append(req, name...), 0)
	req = append(req, "octet\x00tsize\x000\x00"...)
	if c.blksize > 0 {
		req = append(append(append(req, "blksize\x00"...), strconv.Itoa(c.blksize)...), 0)
	}
	if c.window > 0 {
		req = append(append(append(req, "windowsize\x00"...), strconv.Itoa(c.window)...), 0)
	}
	blksize, window := 512, 1
	var (
		peer     netip.AddrPort
		have     int64
		inWindow int
		gapAcked bool
		got      int64
		crc      uint32
		timeouts int
	)
	ack := []byte{0, opACK, 0, 0}
	sendAck := func(block uint16) error {
		binary.BigEndian.PutUint16(ack[2:], block)
		_, err := conn.WriteToUDPAddrPort(ack, peer)
		return err
	}
	buf := make([]byte, 65536+4)
	if _, err := conn.WriteToUDPAddrPort(req, c.server); err != nil {
		return err
	}
	for {
		conn.SetReadDeadline(time.Now().Add(c.timeout))
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return err
			}
			if timeouts++; timeouts > 5 {
				return fmt.Errorf("%s: timed out after %d blocks", name, have)
			}
			if !peer.IsValid() {
				conn.WriteToUDPAddrPort(req, c.server)
			} else {
				sendAck(uint16(have))
				inWindow, gapAcked = 0, false
			}
			continue
		}
		if !peer.IsValid() {
			peer = from
		} else if from != peer {
			continue
		}
		timeouts = 0
		if n < 4 {
			return fmt.Errorf("%s: short packet", name)
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case opERROR:
			return fmt.Errorf("%s: server error %d: %s", name, binary.BigEndian.Uint16(p[2:]), bytes.TrimRight(p[4:], "\x00"))
		case opOACK:
			if have > 0 {
				continue
			}
			f := bytes.Split(p[2:], []byte{0})
			for i := 0; i+1 < len(f); i += 2 {
				v, _ := strconv.Atoi(string(f[i+1]))
				switch strings.ToLower(string(f[i])) {
				case "blksize":
					blksize = v
				case "windowsize":
					window = v
				}
			}
			if err := sendAck(0); err != nil {
				return err
			}
		case opDATA:
			block := binary.BigEndian.Uint16(p[2:])
			switch {
			case block == uint16(have+1):
				have++
				inWindow++
				gapAcked = false
				got += int64(n - 4)
				crc = crc32.Update(crc, table, p[4:])
				if n-4 < blksize {
					sendAck(block)
					if got != c.size || crc != c.crc {
						return fmt.Errorf("%s: got %d bytes (crc %08x), want %d (crc %08x)", name, got, crc, c.size, c.crc)
					}
					return nil
				}
				if inWindow >= window {
					if err := sendAck(block); err != nil {
						return err
					}
					inWindow = 0
				}
			case uint16(have)-block < 0x8000:
				if block == uint16(have) {
					sendAck(block)
					inWindow = 0
				}
			default:
				if !gapAcked {
					sendAck(uint16(have))
					gapAcked, inWindow = true, 0
				}
			}
		}
	}
}
