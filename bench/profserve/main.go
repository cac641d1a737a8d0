// Command profserve is `kindling serve` with net/http/pprof on a second
// address, for profiling the real server under load (bench/profile.sh).
// The same address serves /debug/sched: the Go scheduler's latency
// histogram (how long goroutines waited, runnable, before running) as
// percentiles since start or since the previous call.
// It builds the server exactly as kindling serve does (matchbox.New, then
// Serve) with the same data directory, listen address and log level.
//
//	go run ./bench/profserve -data-path bench/out/data -address 127.0.0.1:18080 -pprof 127.0.0.1:18099
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // registers /debug/pprof/ on http.DefaultServeMux
	"os"
	"os/signal"
	"runtime/metrics"
	"sync"
	"syscall"

	"github.com/kindlingboot/kindling/matchbox"
)

func main() {
	data := flag.String("data-path", "bench/out/data", "data directory")
	addr := flag.String("address", "127.0.0.1:18080", "machine-plane listen address")
	pprofAddr := flag.String("pprof", "127.0.0.1:18099", "listen address of /debug/pprof/")
	level := flag.String("log-level", "warn", "log level")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *data, *addr, *pprofAddr, *level); err != nil {
		fmt.Fprintln(os.Stderr, "profserve:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, data, addr, pprofAddr, level string) error {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
	srv, err := matchbox.New(matchbox.Config{Address: addr, DataPath: data, Logger: log})
	if err != nil {
		return err
	}
	http.HandleFunc("/debug/sched", schedLatency)
	ps := &http.Server{Addr: pprofAddr, Handler: http.DefaultServeMux}
	go func() {
		if err := ps.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof server", "error", err.Error())
		}
	}()
	defer ps.Close()
	return srv.Serve(ctx)
}

var (
	schedMu   sync.Mutex
	schedPrev []uint64
)

// schedLatency writes percentiles of /sched/latencies:seconds counted since
// the previous call (or start).
func schedLatency(w http.ResponseWriter, r *http.Request) {
	s := []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	metrics.Read(s)
	h := s[0].Value.Float64Histogram()
	schedMu.Lock()
	counts := append([]uint64(nil), h.Counts...)
	if len(schedPrev) == len(counts) {
		for i := range counts {
			counts[i] -= schedPrev[i]
		}
	}
	schedPrev = append(schedPrev[:0], h.Counts...)
	schedMu.Unlock()
	var total uint64
	for _, c := range counts {
		total += c
	}
	fmt.Fprintf(w, "goroutine scheduling latency, %d samples:", total)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		var acc uint64
		for i, c := range counts {
			acc += c
			if total > 0 && float64(acc) >= q*float64(total) {
				// Buckets[i+1] is the bucket's upper bound.
				fmt.Fprintf(w, " p%g<=%.3gms", q*100, h.Buckets[i+1]*1000)
				break
			}
		}
	}
	fmt.Fprintln(w)
}
