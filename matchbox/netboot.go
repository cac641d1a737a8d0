package matchbox

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/kindlingboot/kindling/assets"
	"github.com/kindlingboot/kindling/matchbox/dhcp"
	"github.com/kindlingboot/kindling/matchbox/tftp"
	"github.com/kindlingboot/kindling/matchbox/web"
)

// netboot holds the network-boot plane: DHCP and TFTP, when configured.
type netboot struct {
	dhcp     *dhcp.Server
	tftp     *tftp.Server
	tftpAddr string
	tftpRoot *assets.Root // also served over HTTP at /assets/ipxe/
}

// newNetboot builds the DHCP and TFTP servers from cfg. They share the
// event log and metrics registry with the HTTP side.
func (s *Server) newNetboot() (*netboot, error) {
	nb := &netboot{}
	cfg := s.cfg
	if cfg.DHCP != nil {
		d := *cfg.DHCP
		d.Logger = s.log
		d.Record = s.events.Record
		d.Metrics = dhcp.NewMetrics(s.metrics.Registry)
		if d.HTTPPort == 0 {
			d.HTTPPort = httpPort(cfg.Address)
		}
		if d.LeaseFile == "" && cfg.DataPath != "" {
			d.LeaseFile = filepath.Join(cfg.DataPath, "dhcp-leases.json")
		}
		d.Reservations = func(mac net.HardwareAddr) (net.IP, string, bool) {
			r, ok := s.Catalog().Reserved(mac.String())
			return r.IP, r.Hostname, ok
		}
		srv, err := dhcp.New(d)
		if err != nil {
			return nil, err
		}
		nb.dhcp = srv
	}
	if cfg.TFTPAddress != "" {
		root := cfg.TFTPRoot
		if root == "" {
			var assetsDir string
			if s.assets != nil {
				assetsDir = s.assets.Dir()
			}
			root = defaultTFTPRoot(assetsDir)
		}
		if root == "" {
			return nil, fmt.Errorf("-tftp-address %s: no TFTP root: set -tftp-root, put iPXE binaries in ASSETS/ipxe/, or install Debian's ipxe package (/usr/lib/ipxe)", cfg.TFTPAddress)
		}
		r, err := assets.OpenFollowingLinks(root)
		if err != nil {
			return nil, fmt.Errorf("-tftp-root: %w", err)
		}
		t := tftp.Config{
			Root:    r,
			Logger:  s.log,
			Record:  s.events.Record,
			Metrics: tftp.NewMetrics(s.metrics.Registry),
			Virtual: func(name string, remote net.Addr) ([]byte, bool) {
				if name != "boot.ipxe" {
					return nil, false
				}
				// Over TFTP the chain URL must be absolute: a relative one
				// would resolve to tftp://, which cannot run /ipxe.
				return []byte(web.BootIPXEFor("http://" + s.httpHost(remote) + "/")), true
			},
		}
		if nb.dhcp != nil {
			t.MACFor = nb.dhcp.MACFor
		}
		nb.tftp = tftp.New(t)
		nb.tftpRoot = r
		nb.tftpAddr = cfg.TFTPAddress
		s.log.Info("tftp root", "path", root)
	}
	return nb, nil
}

// ipxeRoot is the TFTP root, or nil.
func (nb *netboot) ipxeRoot() *assets.Root {
	if nb == nil {
		return nil
	}
	return nb.tftpRoot
}

func (nb *netboot) macFor(ip net.IP) string {
	if nb == nil || nb.dhcp == nil {
		return ""
	}
	return nb.dhcp.MACFor(ip)
}

func (nb *netboot) serve(ctx context.Context, g interface{ Go(func() error) }) {
	if nb.dhcp != nil {
		g.Go(func() error { return nb.dhcp.Serve(ctx) })
	}
	if nb.tftp != nil {
		g.Go(func() error { return nb.tftp.ListenAndServe(ctx, nb.tftpAddr) })
	}
}

// defaultTFTPRoot is the first of ASSETS/ipxe and Debian's /usr/lib/ipxe
// that exists.
func defaultTFTPRoot(assetsDir string) string {
	var candidates []string
	if assetsDir != "" {
		candidates = append(candidates, filepath.Join(assetsDir, "ipxe"))
	}
	candidates = append(candidates, "/usr/lib/ipxe")
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.IsDir() {
			return c
		}
	}
	return ""
}

func httpPort(addr string) int {
	if addr == "" {
		return 8080
	}
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 8080
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return 8080
	}
	return n
}

// httpHost is host:port at which a machine at remote reaches the HTTP
// server: -address, or, when that listens on every address, the DHCP
// server's address, else the local address the kernel routes to remote by
// (connecting a UDP socket sends nothing; it only picks the route).
func (s *Server) httpHost(remote net.Addr) string {
	host, port, err := net.SplitHostPort(s.cfg.Address)
	if err != nil {
		host, port = "", "8080"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = ""
		if d := s.cfg.DHCP; d != nil {
			if d.ServerIP != nil {
				host = d.ServerIP.String()
			} else if ip := ifaceIPv4(d.Interface); ip != nil {
				host = ip.String()
			}
		}
		if ua, ok := remote.(*net.UDPAddr); host == "" && ok {
			if c, err := net.DialUDP("udp", nil, ua); err == nil {
				host = c.LocalAddr().(*net.UDPAddr).IP.String()
				c.Close()
			}
		}
	}
	return net.JoinHostPort(host, port)
}

// ifaceIPv4 is the first IPv4 address of an interface, or nil.
func ifaceIPv4(name string) net.IP {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4()
		}
	}
	return nil
}
