// Command storm simulates a rack powering on at once: N machines, each
// doing what PXE firmware and iPXE do — DHCP discover/offer/request/ack,
// a TFTP download of the iPXE binary, then /boot.ipxe, /ipxe and
// /ignition over HTTP — against one Kindling server, and reports how long
// it took to serve them all and what failed. storm.sh runs it in a pair
// of network namespaces it creates; it sends nothing anywhere else.
//
// All simulated machines share the driver's one address for TFTP and
// HTTP (the DHCP leases they obtain are not configured on the interface):
// the server's work per machine is the same.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/pin/tftp/v3"

	"github.com/kindlingboot/kindling/bench"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "storm:", err)
		os.Exit(1)
	}
}

type stats struct {
	mu       sync.Mutex
	failures map[string]int
	times    []time.Duration
	ok       atomic.Int64
}

func (s *stats) fail(step string, err error) {
	s.mu.Lock()
	key := step + ": " + err.Error()
	if len(key) > 120 {
		key = key[:120]
	}
	s.failures[key]++
	s.mu.Unlock()
}

func run() error {
	var (
		n        = flag.Int("n", 1000, "machines")
		conc     = flag.Int("c", 100, "machines booting at once")
		iface    = flag.String("iface", "", "interface facing the server (DHCP is broadcast on it)")
		server   = flag.String("server", "10.77.0.1", "server address (TFTP, HTTP)")
		httpPort = flag.Int("http-port", 8080, "server HTTP port")
		tftpFile = flag.String("tftp-file", "undionly.kpxe", "file to fetch over TFTP")
		timeout  = flag.Duration("timeout", 60*time.Second, "give up after this long")
	)
	flag.Parse()
	if *iface == "" {
		return errors.New("-iface is required")
	}
	d, err := newDHCP(*iface)
	if err != nil {
		return err
	}
	defer d.close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	httpc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: *conc}}
	st := &stats{failures: map[string]int{}}
	sem := make(chan struct{}, *conc)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 1; i <= *n; i++ {
		m := bench.MachineN(i)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			t0 := time.Now()
			if err := boot(ctx, d, httpc, m, *server, *httpPort, *tftpFile, st); err == nil {
				st.ok.Add(1)
				st.mu.Lock()
				st.times = append(st.times, time.Since(t0))
				st.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	total := time.Since(start)
	sort.Slice(st.times, func(i, j int) bool { return st.times[i] < st.times[j] })
	pct := func(p float64) time.Duration {
		if len(st.times) == 0 {
			return 0
		}
		return st.times[int(p*float64(len(st.times)-1))]
	}
	failed := int64(*n) - st.ok.Load()
	fmt.Printf("storm: %d machines (%d at once) in %v: %d booted, %d failed; per machine p50 %v p99 %v max %v\n",
		*n, *conc, total.Round(time.Millisecond), st.ok.Load(), failed,
		pct(0.5).Round(time.Millisecond), pct(0.99).Round(time.Millisecond), pct(1).Round(time.Millisecond))
	keys := make([]string, 0, len(st.failures))
	for k := range st.failures {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("  %5d × %s\n", st.failures[k], k)
	}
	fmt.Printf("RESULT machines=%d ok=%d failed=%d total_ms=%d\n", *n, st.ok.Load(), failed, total.Milliseconds())
	if failed > 0 {
		return fmt.Errorf("%d machines failed", failed)
	}
	return nil
}

func boot(ctx context.Context, d *dhcpClient, httpc *http.Client, m bench.Machine, server string, port int, file string, st *stats) error {
	hw, _ := net.ParseMAC(m.MAC)
	ip, err := d.dora(ctx, hw)
	if err != nil {
		st.fail("dhcp", err)
		return err
	}
	_ = ip
	c, err := tftp.NewClient(net.JoinHostPort(server, "69"))
	if err != nil {
		st.fail("tftp", err)
		return err
	}
	c.SetBlockSize(1468)
	c.SetTimeout(2 * time.Second)
	c.SetRetries(5)
	wt, err := c.Receive(file, "octet")
	if err == nil {
		_, err = wt.WriteTo(io.Discard)
	}
	if err != nil {
		st.fail("tftp", err)
		return err
	}
	base := fmt.Sprintf("http://%s:%d", server, port)
	for _, p := range []string{"/boot.ipxe", "/ipxe?mac=" + m.HexHyp(), "/ignition?mac=" + m.HexHyp()} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+p, nil)
		resp, err := httpc.Do(req)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
		}
		if err != nil {
			st.fail("http "+strings.SplitN(p, "?", 2)[0], err)
			return err
		}
	}
	return nil
}

// dhcpClient is many simulated DHCP clients on one socket: replies are
// matched to machines by transaction ID.
type dhcpClient struct {
	conn *net.UDPConn
	mu   sync.Mutex
	wait map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4
	done chan struct{}
}

func newDHCP(iface string) (*dhcpClient, error) {
	conn, err := listenBroadcast(iface)
	if err != nil {
		return nil, err
	}
	d := &dhcpClient{conn: conn, wait: map[dhcpv4.TransactionID]chan *dhcpv4.DHCPv4{}, done: make(chan struct{})}
	go d.read()
	return d, nil
}

func (d *dhcpClient) close() { close(d.done); d.conn.Close() }

func (d *dhcpClient) read() {
	buf := make([]byte, 4096)
	for {
		n, _, err := d.conn.ReadFrom(buf)
		if err != nil {
			select {
			case <-d.done:
				return
			default:
				continue
			}
		}
		p, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || p.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		d.mu.Lock()
		ch := d.wait[p.TransactionID]
		d.mu.Unlock()
		if ch != nil {
			select {
			case ch <- p:
			default:
			}
		}
	}
}

var broadcast = &net.UDPAddr{IP: net.IPv4bcast, Port: 67}

// exchange sends p and waits for a reply of type want, retrying.
func (d *dhcpClient) exchange(ctx context.Context, p *dhcpv4.DHCPv4, want dhcpv4.MessageType) (*dhcpv4.DHCPv4, error) {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	d.mu.Lock()
	d.wait[p.TransactionID] = ch
	d.mu.Unlock()
	defer func() { d.mu.Lock(); delete(d.wait, p.TransactionID); d.mu.Unlock() }()
	wait := time.Second
	for try := 0; try < 5; try++ {
		if _, err := d.conn.WriteTo(p.ToBytes(), broadcast); err != nil {
			return nil, err
		}
		timer := time.NewTimer(wait)
		for {
			select {
			case r := <-ch:
				if r.MessageType() == want {
					timer.Stop()
					return r, nil
				}
				if r.MessageType() == dhcpv4.MessageTypeNak {
					timer.Stop()
					return nil, errors.New("NAK")
				}
				continue
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return nil, ctx.Err()
			}
			break
		}
		wait *= 2 // as firmware backs off
	}
	return nil, fmt.Errorf("no %s after 5 tries", want)
}

// pxeOptions make a request look like BIOS PXE firmware's.
func pxeOptions() []dhcpv4.Modifier {
	return []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithBroadcast(true),
	}
}

func (d *dhcpClient) dora(ctx context.Context, hw net.HardwareAddr) (net.IP, error) {
	disc, err := dhcpv4.NewDiscovery(hw, pxeOptions()...)
	if err != nil {
		return nil, err
	}
	offer, err := d.exchange(ctx, disc, dhcpv4.MessageTypeOffer)
	if err != nil {
		return nil, fmt.Errorf("discover: %w", err)
	}
	req, err := dhcpv4.NewRequestFromOffer(offer, pxeOptions()...)
	if err != nil {
		return nil, err
	}
	ack, err := d.exchange(ctx, req, dhcpv4.MessageTypeAck)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	return ack.YourIPAddr, nil
}
