package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"

	"github.com/kindlingboot/kindling/matchbox/api/certs"
)

// commaList is a repeatable, comma-separated flag.
type commaList []string

func (l *commaList) String() string { return strings.Join(*l, ",") }

func (l *commaList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

const certsUsage = "Usage: kindling certs init DIR -server-name NAME[,NAME…] -ip IP[,IP…] [-days N] [-force]\n"

// certsCmd runs `kindling certs init`.
func certsCmd(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "init" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
			fmt.Fprint(stdout, certsUsage)
			return errHelp
		}
		fmt.Fprint(stderr, certsUsage)
		return usageError{"certs: the one command is init"}
	}
	fs := newFlagSet("certs init", stderr)
	var names, ips commaList
	fs.Var(&names, "server-name", "DNS name clients use to reach the server (repeatable, comma-separated)")
	fs.Var(&ips, "ip", "IP address clients use to reach the server (repeatable, comma-separated)")
	days := fs.Int("days", certs.DefaultDays, "how many days the certificates are valid")
	force := fs.Bool("force", false, "overwrite existing files")
	fs.Usage = func() {
		fmt.Fprint(stderr, certsUsage)
		fmt.Fprintln(stderr, "Writes ca.crt, ca.key, server.crt, server.key, client.crt, client.key (ECDSA P-256, PEM) to DIR.")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args[1:], getenv)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{fmt.Sprintf("certs init takes one directory, got %d: %q", len(pos), pos)}
	}
	dir := pos[0]
	opts := certs.Options{ServerNames: names, Days: *days, Force: *force}
	for _, s := range ips {
		ip := net.ParseIP(s)
		if ip == nil {
			return usageError{fmt.Sprintf("-ip %q: not an IP address (want e.g. 10.0.0.1 or fd00::1)", s)}
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		opts.IPs = append(opts.IPs, ip)
	}
	if len(opts.ServerNames) == 0 && len(opts.IPs) == 0 {
		return usageError{"certs init: give -server-name and/or -ip: the names and addresses clients use to reach the server, e.g. -server-name kindling.lan -ip 10.0.0.1"}
	}
	if *days <= 0 {
		return usageError{fmt.Sprintf("-days %d: want a positive number of days", *days)}
	}
	if err := certs.Init(dir, opts); err != nil {
		if errors.Is(err, certs.ErrExist) {
			return fmt.Errorf("certs init: %w; give -force to replace them", err)
		}
		return fmt.Errorf("certs init: %w", err)
	}
	p := func(f string) string { return filepath.Join(dir, f) }
	fmt.Fprintf(stdout, "wrote %s, %s, %s, %s, %s, %s\n", p(certs.CACert), certs.CAKey, certs.ServerCert, certs.ServerKey, certs.ClientCert, certs.ClientKey)
	fmt.Fprintf(stdout, "server: kindling serve -rpc-address ADDR -ca-file %s -cert-file %s -key-file %s\n", p(certs.CACert), p(certs.ServerCert), p(certs.ServerKey))
	fmt.Fprintf(stdout, "client: copy %s, %s and %s to ~/.config/kindling/ (or give -ca-file, -cert-file, -key-file)\n", certs.CACert, certs.ClientCert, certs.ClientKey)
	return nil
}
