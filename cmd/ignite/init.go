package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/kindlingboot/kindling/ignition"
	"github.com/kindlingboot/kindling/ignition/boot"
	"github.com/kindlingboot/kindling/ignition/fetch"
	"github.com/kindlingboot/kindling/ignition/install"
	"github.com/kindlingboot/kindling/ignition/stages"
)

// argFinishFailure chooses how the boot ends after a failed run; the
// default, "wait", keeps the machine at its console showing the report.
const argFinishFailure = "kindling.finish.failure"

// initramfs runs ignite as /init of Kindling's initramfs: set the machine
// up, run every stage against /sysroot (installing an image first in
// installer mode), report, and end the boot as the command line says. As
// PID 1 it never returns: an exit would panic the kernel.
func initramfs(ctx context.Context, stdout, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	fmt.Fprintf(stdout, "ignite %s: Kindling's first-boot agent\n", Version)
	sys, err := boot.Setup(ctx, log)
	var cl boot.Cmdline
	if sys != nil {
		cl = sys.Cmdline
	} else if c, rerr := boot.ReadCmdline(); rerr == nil {
		cl = c
	}
	action, onFailure := cl.Value(boot.ArgFinish), cl.Value(argFinishFailure)
	if action == "" {
		action = boot.Reboot
	}
	if onFailure == "" {
		onFailure = "wait"
	}
	if err == nil {
		err = checkFinish(action, onFailure)
	}
	var rep *ignition.Report
	if err != nil {
		// Before the run: without a network there is no config and no
		// report URL to reach; the console is all an operator has.
		rep = &ignition.Report{Result: ignition.ResultFailure, Stage: "setup", Error: err.Error(), Agent: "ignite " + Version, Stages: []ignition.StageTime{}}
		rep.Print(stdout)
	} else {
		if err := os.MkdirAll(boot.SysRoot, 0o755); err != nil {
			log.Error("creating "+boot.SysRoot, "err", err)
		}
		c := ignition.Config{
			Mode:    ignition.ModeRun,
			Root:    boot.SysRoot,
			Cmdline: cl,
			Agent:   "ignite " + Version,
			Log:     log,
			Console: stdout,
		}
		if dev := cl.Value(boot.ArgInstallDev); dev != "" {
			c.Install = installer(cl, dev)
			// An earlier install's root, if there is one, is probed for a
			// result file before the image is written again.
			if root, ferr := install.FindRoot(ctx, dev, cl.Value(boot.ArgInstallRoot)); ferr == nil {
				c.ProbeDevices = []string{root}
			} else {
				log.Info("no earlier install to check", "dev", dev, "reason", ferr)
			}
		} else {
			c.KeepRootMounted = action == boot.SwitchRoot
		}
		rep, err = ignition.Run(ctx, c)
		if err == nil && rep.Result == ignition.ResultSkipped && action == boot.SwitchRoot && c.Install != nil && len(c.ProbeDevices) > 0 {
			// Installed before: the boot goes on into that root.
			if err = mountRoot(log, c.ProbeDevices[0]); err != nil {
				fmt.Fprintf(stdout, "ignite: %v\n", err)
			}
		}
	}
	if err != nil || rep.Result == ignition.ResultFailure {
		action = onFailure
	}
	if action != "wait" {
		if ferr := boot.Finish(ctx, log, action); ferr != nil {
			fmt.Fprintf(stdout, "ignite: could not %s: %v\n", action, ferr)
		}
	}
	if err != nil || rep.Result == ignition.ResultFailure {
		fmt.Fprintf(stdout, "ignite: provisioning failed; the machine waits here (set %s=reboot|poweroff|shell to change)\n", argFinishFailure)
	}
	unix.Sync()
	select {} // PID 1 must not exit
}

// checkFinish validates the finish actions before anything runs, so a typo
// is reported as such instead of after the work is done.
func checkFinish(action, onFailure string) error {
	for _, a := range []struct{ arg, v string }{{boot.ArgFinish, action}, {argFinishFailure, onFailure}} {
		switch a.v {
		case boot.Reboot, boot.Poweroff, boot.Shell:
		case boot.SwitchRoot:
			if a.arg == argFinishFailure {
				return fmt.Errorf("%s=switchroot: a failed run leaves no root to switch into (want wait, reboot, poweroff or shell)", a.arg)
			}
		case "wait":
			if a.arg == argFinishFailure {
				continue
			}
			return fmt.Errorf("%s=wait: want reboot, poweroff, switchroot or shell (wait is only for %s)", a.arg, argFinishFailure)
		default:
			return fmt.Errorf("%s=%q: want reboot, poweroff, switchroot or shell (and for %s also wait)", a.arg, a.v, argFinishFailure)
		}
	}
	return nil
}

// installer returns the install step: stream the image to dev, find the
// installed root and mount it at /sysroot for the remaining stages.
func installer(cl boot.Cmdline, dev string) func(context.Context, *slog.Logger) (*ignition.InstallSummary, error) {
	return func(ctx context.Context, log *slog.Logger) (*ignition.InstallSummary, error) {
		url := cl.Value(boot.ArgInstallImage)
		sum := &ignition.InstallSummary{Device: dev, Image: fetch.Redact(url)}
		res, err := install.Image(ctx, install.Options{Device: dev, URL: url, SHA256: cl.Value(boot.ArgInstallSHA256), Log: log})
		sum.Bytes, sum.MBPerSec = res.Written, res.MBps
		if err != nil {
			return sum, stages.Fail("writing "+sum.Image+" to "+dev, err)
		}
		root, err := install.FindRoot(ctx, dev, cl.Value(boot.ArgInstallRoot))
		if err != nil {
			return sum, stages.Fail("finding the installed root on "+dev, err)
		}
		sum.Root = root
		return sum, mountRoot(log, root)
	}
}

// mountRoot mounts an installed root partition at /sysroot.
func mountRoot(log *slog.Logger, root string) error {
	var errs []string
	for _, fstype := range []string{"ext4", "xfs", "btrfs"} {
		err := unix.Mount(root, boot.SysRoot, fstype, 0, "")
		if err == nil {
			log.Info("installed root mounted", "dev", root, "fs", fstype, "at", boot.SysRoot)
			return nil
		}
		errs = append(errs, fstype+": "+err.Error())
	}
	return stages.Failf("mounting the installed root "+root, "%s", strings.Join(errs, "; "))
}
