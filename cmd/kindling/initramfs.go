package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kindlingboot/kindling/assets/initramfs"
)

const initramfsUsage = `Usage: kindling initramfs build [flags]

Builds an initramfs (cpio newc, compressed) whose /init is the ignite agent,
with kernel modules for one kernel and the tools the agent calls, copied
from this host with their shared libraries.
`

// initramfsCmd runs `kindling initramfs build`.
func initramfsCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "build" {
		fmt.Fprint(stderr, initramfsUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help") {
			return errHelp
		}
		return usageError{"kindling initramfs: want the subcommand build"}
	}
	fs := newFlagSet("initramfs build", stderr)
	var (
		out         = fs.String("o", "kindling-initramfs.img", "output file")
		ignite      = fs.String("ignite", "", "the ignite binary to use as /init (default: ignite next to kindling, else on PATH)")
		kver        = fs.String("kernel-version", "", "kernel version of the modules (default: the running kernel's, or the only one in /lib/modules)")
		kmods       = fs.String("kernel-modules", "", "modules directory with modules.dep (default: /lib/modules/VERSION)")
		modules     = fs.String("modules", "", "comma-separated modules to load, dependencies added; NAME? is optional; \"none\" for none (default: "+strings.Join(initramfs.DefaultModules, ",")+", all optional)")
		tools       = fs.String("tools", "", "comma-separated tools to copy; NAME? is optional; \"none\" for none (default: "+strings.Join(initramfs.DefaultTools, ",")+")")
		compression = fs.String("compression", "gzip", "gzip, zstd or none")
	)
	fs.Usage = func() {
		fmt.Fprint(stderr, initramfsUsage, "\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args[1:], getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("kindling initramfs build: unexpected arguments %q", fs.Args())}
	}
	o := initramfs.Options{
		Init:          *ignite,
		KernelVersion: *kver,
		ModulesDir:    *kmods,
		Modules:       list(*modules),
		Tools:         list(*tools),
		Compression:   *compression,
	}
	if o.Init == "" {
		p, err := findIgnite()
		if err != nil {
			return err
		}
		o.Init = p
	}
	dir := filepath.Dir(*out)
	tmp, err := os.CreateTemp(dir, ".kindling-initramfs-*")
	if err != nil {
		return fmt.Errorf("creating the output: %w", err)
	}
	defer os.Remove(tmp.Name())
	res, err := initramfs.Build(ctx, tmp, o)
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing %s: %w", *out, cerr)
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return fmt.Errorf("writing %s: %w", *out, err)
	}
	printBuild(stdout, *out, o.Init, res)
	return nil
}

// list splits a comma-separated flag; empty means the default (nil) and
// "none" means an empty list.
func list(s string) []string {
	s = strings.TrimSpace(s)
	switch s {
	case "":
		return nil
	case "none":
		return []string{}
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// findIgnite looks for the agent next to the kindling executable, then on
// PATH.
func findIgnite() (string, error) {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "ignite")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	if p, err := exec.LookPath("ignite"); err == nil {
		return p, nil
	}
	return "", errors.New("no ignite binary next to kindling or on PATH: build it with: CGO_ENABLED=0 go build -o ignite ./cmd/ignite (or give -ignite PATH)")
}

func printBuild(w io.Writer, out, init string, res initramfs.Result) {
	fmt.Fprintf(w, "init: %s\n", init)
	if res.KernelVersion != "" {
		fmt.Fprintf(w, "kernel %s (%s): %d modules: %s\n", res.KernelVersion, res.ModulesDir, len(res.Modules), strings.Join(res.Modules, " "))
	}
	if len(res.Builtin) > 0 {
		fmt.Fprintf(w, "built into the kernel: %s\n", strings.Join(res.Builtin, " "))
	}
	if len(res.MissingModules) > 0 {
		fmt.Fprintf(w, "optional modules not found: %s\n", strings.Join(res.MissingModules, " "))
	}
	var tools []string
	for t := range res.Tools {
		tools = append(tools, t)
	}
	sort.Strings(tools)
	fmt.Fprintf(w, "tools: %s (%d shared libraries)\n", strings.Join(tools, " "), len(res.Libraries))
	if len(res.MissingTools) > 0 {
		fmt.Fprintf(w, "optional tools not found: %s\n", strings.Join(res.MissingTools, " "))
	}
	fmt.Fprintf(w, "wrote %s: %d entries, %s (%s uncompressed)\n", out, res.Entries, mib(res.Compressed), mib(res.Size))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
