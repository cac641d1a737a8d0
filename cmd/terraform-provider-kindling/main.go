// Command terraform-provider-kindling is the OpenTofu/Terraform provider for
// Kindling's control plane: it manages profiles (kernel, initrd, args, an
// Ignition config or Butane template, a generic template) and groups
// (selector, profile, metadata) through the JSON API of `kindling serve
// -rpc-address`, using the client package matchbox/api/client.
//
// The binary is started by tofu/terraform, not by hand; run it with -debug
// to attach a debugger (it prints TF_REATTACH_PROVIDERS for the CLI).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/terraform-plugin-framework/providerserver"
)

// address is the provider's registry address; the CLI config's
// dev_overrides name it as "kindlingboot/kindling".
const address = "registry.terraform.io/kindlingboot/kindling"

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "terraform-provider-kindling:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := flag.NewFlagSet("terraform-provider-kindling", flag.ContinueOnError)
	fs.SetOutput(stderr)
	debug := fs.Bool("debug", false, "run with support for debuggers (prints TF_REATTACH_PROVIDERS)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	return providerserver.Serve(ctx, newProvider(version, getenv), providerserver.ServeOpts{
		Address: address,
		Debug:   *debug,
	})
}
