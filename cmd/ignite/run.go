package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/kindlingboot/kindling/ignition"
	"github.com/kindlingboot/kindling/ignition/boot"
	"github.com/kindlingboot/kindling/ignition/config"
	"github.com/kindlingboot/kindling/ignition/stages"
)

// Version is set at build time with -ldflags "-X main.Version=…".
var Version = "dev"

// Exit codes: 0 success or nothing to do, 1 provisioning failed, 2 bad
// usage or invalid config.
var errSilent = errors.New("failed")

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, ignition.ErrInvalidConfig) {
		return 2
	}
	return 1
}

const usage = `ignite applies an Ignition config (spec 3.0–3.6) to a machine, once.

Usage:
  ignite run [-config FILE|URL] [-root DIR] [-firstboot] [-force] [-report-url URL]
        every stage: fetch, disks, mount, files, umount, report
  ignite apply -config FILE|URL -root DIR [-force]
        only files, passwd and systemd, to a mounted root or image directory
  ignite plan -config FILE|URL -root DIR [-disks] [-o text|json]
        print what would change; touch nothing
  ignite validate FILE
        check a config; print every problem with its JSON path
  ignite version

Without -config the config comes from the kernel command line:
ignition.config.url=URL (http, https, tftp, data), or ignition.config.device=LABEL
with ignition.config.path=FILE. Exit codes: 0 success or nothing to do,
1 provisioning failed, 2 bad usage or invalid config.
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usageError{"no arguments"}
	}
	if os.Getpid() == 1 || filepath.Base(args[0]) == "init" {
		return initramfs(ctx, stdout, stderr)
	}
	if len(args) < 2 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	cmd, rest := args[1], args[2:]
	switch cmd {
	case "run":
		return runCmd(ctx, ignition.ModeRun, rest, stdout, stderr)
	case "apply":
		return runCmd(ctx, ignition.ModeApply, rest, stdout, stderr)
	case "plan":
		return runCmd(ctx, ignition.ModePlan, rest, stdout, stderr)
	case "validate":
		return validateCmd(rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "ignite %s\n", Version)
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

func runCmd(ctx context.Context, mode ignition.Mode, args []string, stdout, stderr io.Writer) error {
	name := map[ignition.Mode]string{ignition.ModeRun: "run", ignition.ModeApply: "apply", ignition.ModePlan: "plan"}[mode]
	fs := flag.NewFlagSet("ignite "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	source := fs.String("config", "", "config file or URL (default: from the kernel command line)")
	root := fs.String("root", "", "target root directory (run: default /sysroot in an initramfs, else /)")
	var firstboot, force, disks *bool
	var reportURL, output, logLevel *string
	defLevel := "info"
	if mode == ignition.ModePlan {
		defLevel = "warn" // the plan is the output
	}
	logLevel = fs.String("log-level", defLevel, "debug, info, warn or error")
	if mode == ignition.ModeRun {
		firstboot = fs.Bool("firstboot", false, "treat this as the first boot (as ignition.firstboot on the kernel command line)")
		reportURL = fs.String("report-url", "", "POST the report here (default: kindling.report.url= on the kernel command line)")
	}
	if mode != ignition.ModePlan {
		force = fs.Bool("force", false, "run even if the root is already provisioned")
	}
	if mode == ignition.ModePlan {
		disks = fs.Bool("disks", false, "include partitions, RAID, LUKS and filesystems in the plan")
		output = fs.String("o", "text", "output: text or json")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usageError{fmt.Sprintf("-log-level %q: want debug, info, warn or error", *logLevel)}
	}
	if mode != ignition.ModeRun && *source == "" {
		return usageError{"-config FILE|URL is required"}
	}
	if mode != ignition.ModeRun && *root == "" {
		return usageError{"-root DIR is required"}
	}
	if *root == "" {
		*root = "/"
	}
	c := ignition.Config{
		Mode:    mode,
		Root:    *root,
		Source:  *source,
		Agent:   "ignite " + Version,
		Log:     slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		Console: stdout,
	}
	if mode == ignition.ModeRun {
		c.Firstboot = *firstboot
		c.ReportURL = *reportURL
		if cl, err := boot.ReadCmdline(); err == nil {
			c.Cmdline = cl
		}
	}
	if force != nil {
		c.Force = *force
	}
	if mode == ignition.ModePlan {
		if *output != "text" && *output != "json" {
			return usageError{fmt.Sprintf("-o %q: want text or json", *output)}
		}
		c.Plan = &stages.Plan{}
		c.Disks = *disks
		c.Console = nil
	}
	rep, err := ignition.Run(ctx, c)
	if mode == ignition.ModePlan {
		if err != nil {
			return err
		}
		return printPlan(stdout, c.Plan, *output)
	}
	if err != nil {
		// The report said why; keep the cause for the exit code.
		return errors.Join(errSilent, err)
	}
	if rep.Result == ignition.ResultSkipped {
		fmt.Fprintln(stderr, "ignite:", rep.Reason)
	}
	return nil
}

func printPlan(w io.Writer, p *stages.Plan, format string) error {
	if format == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if p.Actions == nil {
			p.Actions = []stages.Action{}
		}
		return enc.Encode(p)
	}
	if len(p.Actions) == 0 {
		fmt.Fprintln(w, "no changes")
		return nil
	}
	for _, a := range p.Actions {
		line := fmt.Sprintf("%-11s %-8s %s", a.Stage, a.Verb, a.Target)
		if a.Detail != "" {
			line += "  (" + a.Detail + ")"
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	return nil
}

func validateCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		return usageError{"usage: ignite validate FILE"}
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return usageError{err.Error()}
	}
	problems := config.Validate(data)
	bad := false
	for _, p := range problems {
		fmt.Fprintf(stdout, "%s: %s\n", args[0], p)
		if p.Severity == "error" {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("%s: %w", args[0], ignition.ErrInvalidConfig)
	}
	return nil
}
