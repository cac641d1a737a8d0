package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/api/client"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/profiles"
)

// cliAttempts is how often the CLI tries a request the server did not
// answer: enough to ride out a restart, short enough to report a down
// server within a second.
const cliAttempts = 3

// apiFlags are the flags of every command that talks to a control plane.
type apiFlags struct {
	endpoint, caFile, certFile, keyFile, tokenFile, output string
}

func addAPIFlags(fs *flag.FlagSet) *apiFlags {
	f := &apiFlags{}
	fs.StringVar(&f.endpoint, "endpoint", "", "the control plane, HOST:PORT (kindling serve -rpc-address)")
	fs.StringVar(&f.caFile, "ca-file", "", "CA bundle that signed the server's certificate (default: ~/.config/kindling/ca.crt if it exists)")
	fs.StringVar(&f.certFile, "cert-file", "", "client certificate (default: ~/.config/kindling/client.crt if it and client.key exist)")
	fs.StringVar(&f.keyFile, "key-file", "", "client key (default: ~/.config/kindling/client.key if it and client.crt exist)")
	fs.StringVar(&f.tokenFile, "token-file", "", "file holding a bearer token (a server started with -api-token-file)")
	fs.StringVar(&f.output, "o", "table", "output: table or json")
	return f
}

// kindlingConfigDir is where default certificates live: $XDG_CONFIG_HOME/kindling
// or ~/.config/kindling; "" when neither variable is set.
func kindlingConfigDir(getenv func(string) string) string {
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "kindling")
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "kindling")
	}
	return ""
}

func regularFileExists(name string) bool {
	fi, err := os.Stat(name)
	return err == nil && fi.Mode().IsRegular()
}

// client checks the flags and makes a client; mistakes are usage errors.
func (f *apiFlags) client(getenv func(string) string) (*client.Client, error) {
	if f.output != "table" && f.output != "json" {
		return nil, usageError{fmt.Sprintf("-o %q: want table or json", f.output)}
	}
	if f.endpoint == "" {
		return nil, usageError{"no server: give -endpoint HOST:PORT (or set KINDLING_ENDPOINT), the address of kindling serve -rpc-address"}
	}
	cfg := client.Config{Endpoint: f.endpoint, CAFile: f.caFile, CertFile: f.certFile, KeyFile: f.keyFile, MaxAttempts: cliAttempts}
	if dir := kindlingConfigDir(getenv); dir != "" {
		if cfg.CAFile == "" && regularFileExists(filepath.Join(dir, "ca.crt")) {
			cfg.CAFile = filepath.Join(dir, "ca.crt")
		}
		crt, key := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
		if cfg.CertFile == "" && cfg.KeyFile == "" && regularFileExists(crt) && regularFileExists(key) {
			cfg.CertFile, cfg.KeyFile = crt, key
		}
	}
	if f.tokenFile != "" {
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("-token-file: %w", err)
		}
		if cfg.Token = strings.TrimSpace(string(b)); cfg.Token == "" {
			return nil, fmt.Errorf("-token-file %s: empty; want the token the server's -api-token-file holds", f.tokenFile)
		}
	}
	c, err := client.New(cfg)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return nil, err
		}
		if strings.HasPrefix(err.Error(), "endpoint") {
			return nil, usageError{"-" + err.Error()}
		}
		return nil, err
	}
	return c, nil
}

// parseInterspersed parses flags and arguments in any order (`kindling group get
// web1 -o json`; after "--" everything is an argument), then fills flags
// not given from KINDLING_<FLAG>. It returns the arguments.
func parseInterspersed(fs *flag.FlagSet, args []string, getenv func(string) string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, errHelp
			}
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if err := parse(fs, nil, getenv); err != nil {
		return nil, err
	}
	return pos, nil
}

const apiUsage = `Usage:
  kindling %[1]s list [flags]
  kindling %[1]s get %[2]s [flags]
  kindling %[1]s put %[3]s
  kindling %[1]s delete %[2]s… [flags]
Flags go before or after the arguments; run 'kindling %[1]s list -h' for them.
`

// apiCmd runs `kindling group|profile|ignition|generic …` against a remote server.
func apiCmd(ctx context.Context, kind string, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	idName, putArgs := "ID", "[ID] [-f FILE] [flags]   the "+kind+" as JSON (standard input without -f); ID defaults to its \"id\""
	if kind == "ignition" || kind == "generic" {
		idName, putArgs = "NAME", "NAME [-f FILE] [flags]   store FILE (or standard input) as NAME; with -f, NAME defaults to FILE's base name"
	}
	usageText := fmt.Sprintf(apiUsage, kind, idName, putArgs)
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText)
		return usageError{fmt.Sprintf("%s: give a command: list, get, put or delete", kind)}
	}
	verb := args[0]
	switch verb {
	case "list", "get", "put", "delete":
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usageText)
		return errHelp
	default:
		fmt.Fprint(stderr, usageText)
		return usageError{fmt.Sprintf("%s: unknown command %q: want list, get, put or delete", kind, verb)}
	}
	fs := newFlagSet(kind+" "+verb, stderr)
	af := addAPIFlags(fs)
	var file string
	if verb == "put" {
		fs.StringVar(&file, "f", "", "read the "+kind+" from FILE (- or empty: standard input)")
	}
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		fmt.Fprintln(stderr, "Flags:")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args[1:], getenv)
	if err != nil {
		return err
	}
	wantArgs := map[string]string{"list": "no arguments", "get": "one " + idName, "put": "at most one " + idName, "delete": "one or more " + idName + "s"}
	if n := len(pos); (verb == "list" && n != 0) || (verb == "get" && n != 1) || (verb == "put" && n > 1) || (verb == "delete" && n == 0) {
		return usageError{fmt.Sprintf("%s %s takes %s, got %d: %q", kind, verb, wantArgs[verb], n, pos)}
	}
	var data []byte
	name := "standard input"
	if verb == "put" {
		if file == "" || file == "-" {
			data, err = io.ReadAll(stdin)
		} else {
			name = file
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return fmt.Errorf("%s put: reading %s: %w", kind, name, err)
		}
		if (kind == "ignition" || kind == "generic") && len(pos) == 0 {
			if file == "" || file == "-" {
				return usageError{fmt.Sprintf("%s put: give the NAME to store it as: kindling %s put NAME -f FILE", kind, kind)}
			}
			pos = []string{filepath.Base(file)}
		}
		if (kind == "group" || kind == "profile") && len(bytes.TrimSpace(data)) == 0 {
			return fmt.Errorf("%s put: %s is empty; want the %s as a JSON object", kind, name, kind)
		}
	}
	c, err := af.client(getenv)
	if err != nil {
		return err
	}
	defer c.Close()
	cmd := apiRun{ctx: ctx, c: c, kind: kind, output: af.output, stdout: stdout}
	switch verb {
	case "list":
		err = cmd.list()
	case "get":
		if err = cmd.get(pos[0]); err != nil {
			err = fmt.Errorf("%s: %w", pos[0], err)
		}
	case "put":
		err = cmd.put(pos, name, data)
	case "delete":
		for _, id := range pos {
			if err = cmd.delete(id); err != nil {
				err = fmt.Errorf("%s: %w", id, err)
				break
			}
		}
	}
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return usageError{fmt.Sprintf("%s %s: %s", kind, verb, ue.msg)}
		}
		return fmt.Errorf("%s %s: %w", kind, verb, err)
	}
	return nil
}

// apiRun is one remote command.
type apiRun struct {
	ctx    context.Context
	c      *client.Client
	kind   string
	output string
	stdout io.Writer
}

func (a apiRun) list() error {
	var v any
	var err error
	switch a.kind {
	case "group":
		v, err = a.c.GroupList(a.ctx)
	case "profile":
		v, err = a.c.ProfileList(a.ctx)
	case "ignition":
		v, err = a.c.IgnitionList(a.ctx)
	case "generic":
		v, err = a.c.GenericList(a.ctx)
	}
	if err != nil {
		return err
	}
	return a.print(v)
}

func (a apiRun) get(id string) error {
	var v any
	var err error
	switch a.kind {
	case "group":
		var g *groups.Group
		if g, err = a.c.GroupGet(a.ctx, id); err == nil {
			v = []groups.Group{*g}
		}
	case "profile":
		var p *profiles.Profile
		if p, err = a.c.ProfileGet(a.ctx, id); err == nil {
			v = []profiles.Profile{*p}
		}
	case "ignition", "generic":
		get := a.c.IgnitionGet
		if a.kind == "generic" {
			get = a.c.GenericGet
		}
		b, err := get(a.ctx, id)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(b) // the file as stored, whatever -o says
		return err
	}
	if err != nil {
		return err
	}
	if a.output == "json" {
		// One object, not a list of one.
		switch x := v.(type) {
		case []groups.Group:
			return a.print(x[0])
		case []profiles.Profile:
			return a.print(x[0])
		}
	}
	return a.print(v)
}

func (a apiRun) put(pos []string, name string, data []byte) error {
	id := ""
	if len(pos) == 1 {
		id = pos[0]
	}
	switch a.kind {
	case "group":
		g, err := catalog.DecodeGroup(data)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := reconcileID(&g.ID, id, name); err != nil {
			return err
		}
		stored, err := a.c.GroupPut(a.ctx, &g)
		if err != nil {
			return fmt.Errorf("%s: %w", g.ID, err)
		}
		return a.printOne(*stored)
	case "profile":
		p, err := catalog.DecodeProfile(data)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if err := reconcileID(&p.ID, id, name); err != nil {
			return err
		}
		stored, err := a.c.ProfilePut(a.ctx, &p)
		if err != nil {
			return fmt.Errorf("%s: %w", p.ID, err)
		}
		return a.printOne(*stored)
	case "ignition":
		if err := a.c.IgnitionPut(a.ctx, id, data); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
	case "generic":
		if err := a.c.GenericPut(a.ctx, id, data); err != nil {
			return fmt.Errorf("%s: %w", id, err)
		}
	}
	return nil
}

// reconcileID fills the object's id from the argument, or checks they agree.
func reconcileID(objID *string, arg, name string) error {
	switch {
	case arg == "" && *objID == "":
		return usageError{fmt.Sprintf("%s has no \"id\": give it in the file or as the argument", name)}
	case arg == "":
	case *objID == "":
		*objID = arg
	case *objID != arg:
		return usageError{fmt.Sprintf("the argument says %q but %s has \"id\": %q; make them agree (or drop one)", arg, name, *objID)}
	}
	return nil
}

func (a apiRun) delete(id string) error {
	switch a.kind {
	case "group":
		return a.c.GroupDelete(a.ctx, id)
	case "profile":
		return a.c.ProfileDelete(a.ctx, id)
	case "ignition":
		return a.c.IgnitionDelete(a.ctx, id)
	}
	return a.c.GenericDelete(a.ctx, id)
}

func (a apiRun) printOne(v any) error {
	if a.output == "json" {
		return a.print(v)
	}
	switch x := v.(type) {
	case groups.Group:
		return a.print([]groups.Group{x})
	case profiles.Profile:
		return a.print([]profiles.Profile{x})
	}
	return a.print(v)
}

// print writes v as indented JSON (-o json) or as a table.
func (a apiRun) print(v any) error {
	if a.output == "json" {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(append(b, '\n'))
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	switch x := v.(type) {
	case []groups.Group:
		fmt.Fprintln(tw, "ID\tNAME\tPROFILE\tSELECTOR")
		for _, g := range x {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", g.ID, tableCell(g.Name), tableCell(g.Profile), tableCell(selectorCell(g.Selector)))
		}
	case []profiles.Profile:
		fmt.Fprintln(tw, "ID\tNAME\tKERNEL\tIGNITION")
		for _, p := range x {
			kernel := ""
			if p.Boot != nil {
				kernel = p.Boot.Kernel
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p.ID, tableCell(p.Name), tableCell(kernel), tableCell(p.IgnitionID))
		}
	case []string:
		fmt.Fprintln(tw, "NAME")
		for _, n := range x {
			fmt.Fprintln(tw, n)
		}
	}
	return tw.Flush()
}

// tableCell stands in for an empty cell, so columns stay aligned for awk.
func tableCell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.ReplaceAll(s, "\t", " ")
}

// selectorCell is a selector on one line: k=v,k=v1|v2, sorted.
func selectorCell(s groups.Selector) string {
	parts := make([]string, 0, len(s))
	for k, vs := range s {
		parts = append(parts, k+"="+strings.Join(vs, "|"))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// selectRemote asks the server at -endpoint which group and profile a
// machine with these labels gets: `kindling select -endpoint … key=value…`.
func selectRemote(ctx context.Context, af *apiFlags, getenv func(string) string, labels groups.Labels, stdout io.Writer) error {
	c, err := af.client(getenv)
	if err != nil {
		return err
	}
	defer c.Close()
	sel, err := c.Select(ctx, labels)
	if client.IsNotFound(err) && af.output == "table" {
		fmt.Fprintf(stdout, "labels: %s\n", strings.Join(sortedPairs(labels), " "))
		fmt.Fprintln(stdout, "result: no group matches; every machine endpoint answers 404 for these labels")
		return errSilent
	}
	if err != nil {
		return fmt.Errorf("select: %w", err)
	}
	if af.output == "json" {
		b, err := json.MarshalIndent(sel, "", "  ")
		if err != nil {
			return err
		}
		_, err = stdout.Write(append(b, '\n'))
		return err
	}
	fmt.Fprintf(stdout, "labels: %s\n", strings.Join(sortedPairs(labels), " "))
	fmt.Fprintf(stdout, "group:   %s\nprofile: %s\n", sel.Group.ID, sel.Profile.ID)
	if b := sel.Profile.Boot; b != nil {
		fmt.Fprintf(stdout, "kernel:  %s\n", b.Kernel)
		for _, i := range b.Initrd {
			fmt.Fprintf(stdout, "initrd:  %s\n", i)
		}
		fmt.Fprintf(stdout, "args:    %s\n", strings.Join(b.Args, " "))
	} else {
		fmt.Fprintln(stdout, "boot:    none (the profile has no boot section)")
	}
	if sel.Profile.IgnitionID != "" {
		fmt.Fprintf(stdout, "ignition: ignition/%s\n", sel.Profile.IgnitionID)
	}
	if sel.Profile.GenericID != "" {
		fmt.Fprintf(stdout, "generic: generic/%s\n", sel.Profile.GenericID)
	}
	return nil
}
