// Command kindling is Kindling's server and CLI: `kindling serve` runs the
// boot server; select, validate and butane help write and debug data
// directories. main only wires: the work is in the library packages.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default so a second one
		// kills the process instead of waiting for downloads to finish.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr); err != nil {
		if err != errSilent {
			fmt.Fprintln(os.Stderr, "kindling:", err)
		}
		os.Exit(exitCode(err))
	}
}
