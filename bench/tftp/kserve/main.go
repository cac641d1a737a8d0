// Command kserve runs Kindling's TFTP server (matchbox/tftp) over a
// directory, for bench/tftp/run.sh. It is the same tftp.Server that
// `kindling serve` runs, with nothing else around it.
//
//	go run ./bench/tftp/kserve -addr 127.0.0.1:16969 -root DIR [-pprof 127.0.0.1:16968]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/signal"
	"syscall"

	"github.com/kindlingboot/kindling/assets"
	"github.com/kindlingboot/kindling/matchbox/tftp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:16969", "UDP listen address")
	dir := flag.String("root", ".", "directory to serve")
	pprof := flag.String("pprof", "", "if set, serve /debug/pprof on this TCP address")
	verbose := flag.Bool("v", false, "log every transfer")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *dir, *pprof, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "kserve:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, dir, pprof string, verbose bool) error {
	root, err := assets.Open(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	if pprof != "" {
		go func() { _ = http.ListenAndServe(pprof, nil) }()
	}
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	return tftp.New(tftp.Config{Root: root, Logger: log}).ListenAndServe(ctx, addr)
}
