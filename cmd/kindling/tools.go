package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kindlingboot/kindling/examples"
	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/render"
)

// loadCatalog loads the data directory, or the embedded example when dir
// is empty.
func loadCatalog(dir string, strict bool) (*catalog.Catalog, error) {
	var src fs.FS = examples.Default
	if dir != "" {
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("data directory %s: not a directory", dir)
		}
		src = os.DirFS(dir)
	}
	return catalog.Load(src, catalog.Options{ButaneStrict: strict})
}

func selectCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("select", stderr)
	dataPath := fs.String("data-path", "", "data directory; empty uses the embedded example")
	af := addAPIFlags(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: kindling select [-data-path DIR] key=value…  (e.g. mac=52:54:00:a1:9c:ae uuid=…)")
		fmt.Fprintln(stderr, "       kindling select -endpoint HOST:PORT [-o json] key=value…  (ask a running server)")
		fs.PrintDefaults()
	}
	pos, err := parseInterspersed(fs, args, getenv)
	if err != nil {
		return err
	}
	q := url.Values{}
	for _, a := range pos {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return usageError{fmt.Sprintf("label %q: want key=value, e.g. mac=52:54:00:a1:9c:ae", a)}
		}
		q.Add(k, v)
	}
	labels, err := groups.FromQuery(q)
	if err != nil {
		return err
	}
	if af.endpoint != "" {
		if *dataPath != "" {
			return usageError{"select: give -endpoint (ask a server) or -data-path (read a directory here), not both"}
		}
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		return selectRemote(ctx, af, getenv, labels, stdout)
	}
	if af.output != "table" {
		return usageError{fmt.Sprintf("select: -o %s needs -endpoint; the local explanation is text", af.output)}
	}
	c, err := loadCatalog(*dataPath, false)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "labels: %s\n", strings.Join(sortedPairs(labels), " "))
	verdicts := c.Explain(labels)
	m, selErr := c.Select(labels)
	if selErr != nil {
		fmt.Fprintln(stdout, "result: no group matches; every machine endpoint answers 404 for these labels")
	} else {
		fmt.Fprintf(stdout, "group:   %s (groups/%s.json)\nprofile: %s (profiles/%s.json)\n", m.Group.ID, m.Group.ID, m.Profile.ID, m.Profile.ID)
		req := catalog.Request{Labels: labels, RawQuery: q.Encode(), Host: "SERVER"}
		if b, err := c.Boot(m, req); err == nil {
			fmt.Fprintf(stdout, "kernel:  %s\n", b.Kernel)
			for _, i := range b.Initrd {
				fmt.Fprintf(stdout, "initrd:  %s\n", i)
			}
			fmt.Fprintf(stdout, "args:    %s\n", strings.Join(b.Args, " "))
		} else if !errors.Is(err, catalog.ErrNotConfigured) {
			fmt.Fprintf(stdout, "boot:    error: %v\n", err)
		} else {
			fmt.Fprintln(stdout, "boot:    none (the profile has no boot section)")
		}
		if m.Profile.IgnitionID != "" {
			fmt.Fprintf(stdout, "ignition: ignition/%s\n", m.Profile.IgnitionID)
		}
		if m.Profile.GenericID != "" {
			fmt.Fprintf(stdout, "generic: generic/%s\n", m.Profile.GenericID)
		}
	}
	fmt.Fprintln(stdout, "\ngroups:")
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	for _, v := range verdicts {
		mark := "✗"
		if v.Matched {
			mark = "✓"
		}
		reason := v.Reason
		if reason == "" {
			reason = "selected"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", mark, v.Group.ID, selectorText(v.Group.Selector), reason)
	}
	tw.Flush()
	if selErr != nil {
		return errSilent
	}
	return nil
}

func selectorText(s groups.Selector) string {
	if len(s) == 0 {
		return "{} (default)"
	}
	var parts []string
	for k, vs := range s {
		parts = append(parts, k+"="+strings.Join(vs, "|"))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func sortedPairs(l groups.Labels) []string {
	var parts []string
	for k, v := range l {
		parts = append(parts, k+"="+render.ShellQuote(v))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return []string{"(none)"}
	}
	return parts
}

func validate(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("validate", stderr)
	dataPath := fs.String("data-path", "", "data directory (or give it as the argument)")
	strict := fs.Bool("butane-strict", false, "treat Butane warnings as errors")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	dir := *dataPath
	switch fs.NArg() {
	case 0:
	case 1:
		dir = fs.Arg(0)
	default:
		return usageError{"validate takes one data directory"}
	}
	if dir == "" {
		return usageError{"validate: give a data directory: kindling validate DIR"}
	}
	c, err := loadCatalog(dir, *strict)
	var le *catalog.LoadError
	if errors.As(err, &le) {
		for _, p := range le.Problems {
			fmt.Fprintf(stdout, "error: %s\n", filepath.Join(dir, p.File)+": "+p.Err.Error())
		}
		fmt.Fprintf(stdout, "%s: %d problem(s)\n", dir, len(le.Problems))
		return errSilent
	}
	if err != nil {
		return err
	}
	problems, warnings := c.Check()
	seen := make(map[string]bool)
	for _, w := range append(c.Warnings, warnings...) {
		line := filepath.Join(dir, w.File) + ": " + w.Err.Error()
		if !seen[line] { // Load already tried one group per template
			seen[line] = true
			fmt.Fprintf(stdout, "warning: %s\n", line)
		}
	}
	for _, p := range problems {
		fmt.Fprintf(stdout, "error: %s\n", filepath.Join(dir, p.File)+": "+p.Err.Error())
	}
	g, p, n := c.Counts()
	if len(problems) > 0 {
		fmt.Fprintf(stdout, "%s: %d problem(s)\n", dir, len(problems))
		return errSilent
	}
	fmt.Fprintf(stdout, "%s: ok (%d groups, %d profiles, %d config files)\n", dir, g, p, n)
	return nil
}

func butane(args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("butane", stderr)
	strict := fs.Bool("strict", false, "fail on warnings")
	filesDir := fs.String("files-dir", "", "directory for local: file references")
	out := fs.String("o", "", "write the Ignition config to this file (default: stdout)")
	pretty := fs.Bool("pretty", false, "indent the output")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	var src []byte
	var err error
	name := "stdin"
	switch fs.NArg() {
	case 0:
		src, err = io.ReadAll(stdin)
	case 1:
		name = fs.Arg(0)
		src, err = os.ReadFile(name)
	default:
		return usageError{"butane takes at most one input file"}
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", name, err)
	}
	ign, warnings, err := render.Butane(src, render.ButaneOptions{Strict: *strict, FilesDir: *filesDir, Pretty: *pretty})
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if warnings != "" {
		fmt.Fprintf(stderr, "%s: %s\n", name, warnings)
	}
	ign = append(ign, '\n')
	if *out == "" {
		_, err = stdout.Write(ign)
		return err
	}
	return writeFileAtomic(*out, ign)
}

// writeFileAtomic writes via a temporary file and rename, so a failure
// leaves any existing file intact.
func writeFileAtomic(name string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	return nil
}

// discoveryCmd asks a running server for an etcd discovery URL.
func discoveryCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "new" {
		return usageError{"usage: kindling discovery new [-size 3] [-server http://127.0.0.1:8080]"}
	}
	fs := newFlagSet("discovery new", stderr)
	size := fs.Int("size", 3, "cluster size: members beyond it are refused")
	server := fs.String("server", "http://127.0.0.1:8080", "the Kindling server's machine-plane URL, as the etcd members reach it")
	if err := parse(fs, args[1:], getenv); err != nil {
		return err
	}
	u := strings.TrimRight(*server, "/") + "/discovery/new?size=" + strconv.Itoa(*size)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return usageError{fmt.Sprintf("-server %q: %v", *server, err)}
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("asking %s for a discovery token: %w", *server, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s: %s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	fmt.Fprintln(stdout, strings.TrimSpace(string(body)))
	return nil
}
