// Command ignite is Kindling's first-boot agent: it applies an Ignition
// config (spec 3.0–3.6) to a machine once, and reports what it did.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errSilent) {
			fmt.Fprintln(os.Stderr, "ignite:", err)
		}
		os.Exit(exitCode(err))
	}
}
