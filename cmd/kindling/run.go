package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kindlingboot/kindling/examples"
	"github.com/kindlingboot/kindling/matchbox"
	"github.com/kindlingboot/kindling/matchbox/dhcp"
)

// Version is set at build time with -ldflags "-X main.Version=…".
var Version = "dev"

// errSilent is returned when the command already printed why it failed.
var errSilent = errors.New("failed")

// usageError is a mistake in the command line (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

const usage = `kindling provisions bare-metal machines over the network.

Usage:
  kindling serve [flags]                 run the boot server (default data: embedded example)
  kindling select [-data-path DIR] key=value…
                                         explain which group and profile a machine gets
  kindling validate [DIR]                check a data directory, list every problem
  kindling butane [-strict] [-files-dir D] [-o OUT] [FILE]
                                         transpile Butane YAML to Ignition JSON
  kindling discovery new [-size 3] [-server URL]
                                         create an etcd discovery URL (etcd --discovery)
  kindling group|profile|ignition|generic list|get|put|delete [-endpoint HOST:PORT] [-o json]
                                         read and change a running server's data (-f FILE for put)
  kindling select -endpoint HOST:PORT key=value…
                                         ask a running server which group and profile a machine gets
  kindling certs init DIR -server-name NAME[,…] -ip IP[,…] [-days N] [-force]
                                         make a CA, server and client certificate for -rpc-address
  kindling initramfs build -o FILE [-ignite PATH] [-kernel-version V]
                                         build the agent's initramfs (ignite as /init)
  kindling lab up|status|down [-n 3] [-uefi]
                                         boot QEMU VMs that PXE-boot from a local server
  kindling version                       print the version

Every flag can also be set as KINDLING_<FLAG> in the environment
(e.g. KINDLING_DATA_PATH); a flag on the command line wins.
Run 'kindling COMMAND -h' for a command's flags.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	err := dispatch(ctx, args, getenv, stdin, stdout, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

func dispatch(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, getenv, stderr)
	case "select":
		return selectCmd(ctx, rest, getenv, stdout, stderr)
	case "validate":
		return validate(rest, getenv, stdout, stderr)
	case "butane":
		return butane(rest, getenv, stdin, stdout, stderr)
	case "discovery":
		return discoveryCmd(ctx, rest, getenv, stdout, stderr)
	case "group", "profile", "ignition", "generic":
		return apiCmd(ctx, cmd, rest, getenv, stdin, stdout, stderr)
	case "certs":
		return certsCmd(rest, getenv, stdout, stderr)
	case "initramfs":
		return initramfsCmd(ctx, rest, getenv, stdout, stderr)
	case "lab":
		return labCmd(ctx, rest, getenv, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "kindling %s\n", Version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	if strings.HasPrefix(cmd, "-") {
		// matchbox is run with flags only; so can kindling.
		return serve(ctx, args, getenv, stderr)
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

// newFlagSet makes a flag set for a subcommand.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("kindling "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse parses args, then fills every flag not given on the command line
// from KINDLING_<FLAG> (upper case, '-' as '_').
func parse(fs *flag.FlagSet, args []string, getenv func(string) string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return usageError{err.Error()}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := "KINDLING_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageError{fmt.Sprintf("%s=%q: %v", env, v, e)}
			}
		}
	})
	return err
}

// errHelp is returned after -h printed the flags; run reports success.
var errHelp = errors.New("help requested")

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{fmt.Sprintf("-log-level %q: want debug, info, warn or error", level)}
	}
	o := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return nil, usageError{fmt.Sprintf("-log-format %q: want text or json", format)}
}

func serve(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := newFlagSet("serve", stderr)
	var (
		cfg       matchbox.Config
		logLevel  = fs.String("log-level", "info", "log level: debug, info, warn, error")
		logFormat = fs.String("log-format", "text", "log format: text or json")
		version   = fs.Bool("version", false, "print the version and exit")
		strict    = fs.Bool("butane-strict", false, "treat Butane warnings as errors")
		watch     = fs.Bool("watch", true, "reload when files in -data-path change (SIGHUP always reloads)")
	)
	fs.StringVar(&cfg.Address, "address", "127.0.0.1:8080", "HTTP listen address (machine plane)")
	fs.StringVar(&cfg.DataPath, "data-path", "", "data directory (groups/, profiles/, ignition/, generic/, templates/); empty serves the embedded example")
	fs.StringVar(&cfg.AssetsPath, "assets-path", "", "assets directory served at /assets/; empty means DATA-PATH/assets when it exists")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 0, "how long to let in-flight downloads finish on SIGTERM (0: 5m)")
	fs.DurationVar(&cfg.DiscoveryTTL, "discovery-ttl", 0, "how long etcd discovery tokens live (0: 168h)")
	fs.StringVar(&cfg.DiscoveryV3Address, "discovery-v3-address", "", "serve etcd v3 discovery here for etcd 3.6+ (etcd --discovery-endpoints=http://ADDR --discovery-token=TOKEN); empty: off")
	var (
		dhcpMode   = fs.String("dhcp", "", "answer PXE clients' DHCP: proxy (beside an existing DHCP server) or server (hand out addresses); empty: off")
		dhcpIface  = fs.String("dhcp-interface", "", "interface to serve DHCP on (required with -dhcp)")
		dhcpRange  = fs.String("dhcp-range", "", "server mode: addresses to lease, START-END (e.g. 10.0.0.100-10.0.0.199)")
		dhcpRouter = fs.String("dhcp-router", "", "server mode: default gateway to hand out")
		dhcpDNS    = fs.String("dhcp-dns", "", "server mode: DNS servers to hand out, comma-separated")
		dhcpDomain = fs.String("dhcp-domain", "", "server mode: domain name to hand out")
		dhcpLease  = fs.Duration("dhcp-lease-time", 0, "server mode: lease time (0: 1h)")
		dhcpIP     = fs.String("dhcp-server-ip", "", "this server's address as machines reach it (default: the interface's first IPv4 address)")
		dhcpSNP    = fs.Bool("dhcp-snp", false, "give x86-64 UEFI machines snponly.efi instead of ipxe.efi")
		tftpAddr   = fs.String("tftp-address", "", "TFTP listen address (default :69 when -dhcp is set; empty and no -dhcp: off)")
	)
	fs.StringVar(&cfg.TFTPRoot, "tftp-root", "", "directory served over TFTP (default: the first of ASSETS/ipxe and /usr/lib/ipxe that exists)")
	fs.StringVar(&cfg.RPCAddress, "rpc-address", "", "control-plane listen address, HOST:PORT: matchbox's gRPC API and the JSON API under /api/v1/, over TLS; empty: off")
	fs.StringVar(&cfg.CertFile, "cert-file", "", "control plane: server certificate, PEM (kindling certs init makes one)")
	fs.StringVar(&cfg.KeyFile, "key-file", "", "control plane: server key, PEM")
	fs.StringVar(&cfg.CAFile, "ca-file", "", "control plane: CA bundle, PEM; clients must present a certificate it signed")
	fs.StringVar(&cfg.APITokenFile, "api-token-file", "", "control plane: file holding a bearer token that authenticates clients without a certificate (Authorization: Bearer TOKEN)")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if *dhcpMode != "" {
		d, err := dhcpConfig(*dhcpMode, *dhcpIface, *dhcpRange, *dhcpRouter, *dhcpDNS, *dhcpDomain, *dhcpIP, *dhcpLease, *dhcpSNP)
		if err != nil {
			return err
		}
		cfg.DHCP = d
		// DHCP sends machines to http://SERVER:PORT/…; an HTTP server
		// listening only on loopback would leave every one of them stuck.
		if host, _, err := net.SplitHostPort(cfg.Address); err == nil {
			if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
				return usageError{fmt.Sprintf("-dhcp with -address %s: machines could not reach the HTTP server; listen where they can, e.g. -address 0.0.0.0:8080 or the interface's address", cfg.Address)}
			}
		}
		if *tftpAddr == "" {
			*tftpAddr = ":69"
		}
	}
	cfg.TFTPAddress = *tftpAddr
	if *version {
		fmt.Fprintf(stderr, "kindling %s\n", Version)
		return nil
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("serve takes no arguments, got %q", fs.Args())}
	}
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	cfg.Logger = log
	cfg.Catalog.ButaneStrict = *strict
	cfg.NoWatch = !*watch
	if cfg.DataPath == "" {
		cfg.Data = examples.Default
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	cfg.Reload = reload
	log.Info("kindling starting", "version", Version)
	return matchbox.Run(ctx, cfg)
}

// dhcpConfig turns the -dhcp flags into a dhcp.Config; every mistake names
// its flag and what would be valid.
func dhcpConfig(mode, iface, rng, router, dns, domain, serverIP string, lease time.Duration, snp bool) (*dhcp.Config, error) {
	d := &dhcp.Config{Interface: iface, Domain: domain, LeaseTime: lease}
	d.BootFiles.UseSNP = snp
	switch mode {
	case "proxy":
		d.Mode = dhcp.ModeProxy
	case "server":
		d.Mode = dhcp.ModeServer
	default:
		return nil, usageError{fmt.Sprintf("-dhcp %q: want proxy or server", mode)}
	}
	if iface == "" {
		return nil, usageError{"-dhcp needs -dhcp-interface: the interface facing the machines"}
	}
	ip := func(flag, v string) (net.IP, error) {
		if v == "" {
			return nil, nil
		}
		p := net.ParseIP(strings.TrimSpace(v)).To4()
		if p == nil {
			return nil, usageError{fmt.Sprintf("%s %q: not an IPv4 address", flag, v)}
		}
		return p, nil
	}
	var err error
	if d.ServerIP, err = ip("-dhcp-server-ip", serverIP); err != nil {
		return nil, err
	}
	if d.Router, err = ip("-dhcp-router", router); err != nil {
		return nil, err
	}
	if dns != "" {
		for _, v := range strings.Split(dns, ",") {
			p, err := ip("-dhcp-dns", v)
			if err != nil {
				return nil, err
			}
			d.DNS = append(d.DNS, p)
		}
	}
	if d.Mode == dhcp.ModeServer {
		first, last, ok := strings.Cut(rng, "-")
		if !ok {
			return nil, usageError{fmt.Sprintf("-dhcp-range %q: want START-END, e.g. 10.0.0.100-10.0.0.199", rng)}
		}
		if d.Range[0], err = ip("-dhcp-range", first); err != nil {
			return nil, err
		}
		if d.Range[1], err = ip("-dhcp-range", last); err != nil {
			return nil, err
		}
	} else if rng != "" {
		return nil, usageError{"-dhcp-range only applies to -dhcp server: proxy mode never hands out addresses"}
	}
	return d, nil
}
