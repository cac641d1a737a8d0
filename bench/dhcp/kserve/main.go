// Command kserve runs Kindling's DHCP server (matchbox/dhcp) alone, so
// bench/dhcp/run.sh can measure the package apart from the rest of
// `kindling serve`. It serves until SIGINT or SIGTERM, then prints its
// packet, reply and drop counters.
//
//	kserve -interface ks0 -range 10.214.1.0-10.214.250.255 -lease-file leases.json
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/kindlingboot/kindling/matchbox/dhcp"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kserve:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("kserve", flag.ContinueOnError)
	mode := fs.String("dhcp", "server", "proxy or server")
	iface := fs.String("interface", "", "interface to serve on")
	rng := fs.String("range", "", "START-END addresses to lease")
	leaseFile := fs.String("lease-file", "", "lease file (empty: memory only)")
	leaseTime := fs.Duration("lease-time", time.Hour, "lease time")
	level := fs.String("log-level", "warn", "debug, info, warn or error")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	m, err := dhcp.ParseMode(*mode)
	if err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		return err
	}
	cfg := dhcp.Config{
		Mode:      m,
		Interface: *iface,
		LeaseFile: *leaseFile,
		LeaseTime: *leaseTime,
		Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})),
		Metrics:   dhcp.NewMetrics(prometheus.NewRegistry()),
	}
	if *rng != "" {
		a, b, ok := strings.Cut(*rng, "-")
		if !ok {
			return fmt.Errorf("-range %q: want START-END", *rng)
		}
		cfg.Range = [2]net.IP{net.ParseIP(a), net.ParseIP(b)}
	}
	s, err := dhcp.New(cfg)
	if err != nil {
		return err
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	err = s.Serve(ctx)
	report(cfg.Metrics)
	return err
}

// report prints the non-zero counters, one per line.
func report(m *dhcp.Metrics) {
	var lines []string
	for _, c := range []*prometheus.CounterVec{m.Packets, m.Replies, m.Dropped} {
		ch := make(chan prometheus.Metric, 64)
		go func() { c.Collect(ch); close(ch) }()
		for metric := range ch {
			desc := metric.Desc().String()
			name := desc[strings.Index(desc, `fqName: "`)+9:]
			name = name[:strings.Index(name, `"`)]
			var d dto.Metric
			if err := metric.Write(&d); err != nil || d.Counter == nil {
				continue
			}
			var labels []string
			for _, l := range d.Label {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			lines = append(lines, fmt.Sprintf("%s{%s} %.0f", name, strings.Join(labels, ","), d.Counter.GetValue()))
		}
	}
	sort.Strings(lines)
	fmt.Fprintln(os.Stderr, strings.Join(lines, "\n"))
}
