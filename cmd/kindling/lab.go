package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/kindlingboot/kindling/lab"
)

const labUsage = `Usage:
  kindling lab up [flags]              start a Kindling server and N VMs that PXE-boot from it,
                                       and print each machine's progress as it happens
  kindling lab watch [-dir D] [-wait T]
                                       follow a running lab's machines again
  kindling lab status [-dir D]         show the server and each machine: running?, last milestone,
                                       serial log
  kindling lab down [-dir D] [-purge]  stop everything the lab started and remove what it made
                                       (logs are kept unless -purge)

The lab runs in the background (a supervisor process) until 'kindling lab down'.
Machines have fixed MACs, so groups can select them: vm1 is 52:54:00:00:00:01,
vm10 52:54:00:00:00:0a (the index in hex).
Run 'kindling lab up -h' for the flags.
`

// labCmd runs `kindling lab up|watch|status|down` (and `supervise`, which
// lab up starts).
func labCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, labUsage)
		return usageError{"kindling lab: want up, watch, status or down"}
	}
	switch args[0] {
	case "up":
		return labUp(ctx, args[1:], getenv, stdout, stderr)
	case "watch":
		return labWatch(ctx, args[1:], getenv, stdout, stderr)
	case "status":
		return labStatus(args[1:], getenv, stdout, stderr)
	case "down":
		return labDown(ctx, args[1:], getenv, stdout, stderr)
	case "supervise":
		return labSupervise(ctx, args[1:], getenv, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, labUsage)
		return errHelp
	}
	fmt.Fprint(stderr, labUsage)
	return usageError{fmt.Sprintf("kindling lab: unknown subcommand %q: want up, watch, status or down", args[0])}
}

func labDirFlag(fs *flag.FlagSet, dir *string) {
	fs.StringVar(dir, "dir", lab.DefaultDir, "lab directory: state, disks, serial logs")
}

func labUp(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lab up", stderr)
	var cfg lab.Config
	labDirFlag(fs, &cfg.Dir)
	fs.IntVar(&cfg.VMs, "n", 3, fmt.Sprintf("number of machines (1-%d)", lab.MaxVMs))
	fs.BoolVar(&cfg.UEFI, "uefi", false, "boot the machines with UEFI firmware (OVMF) instead of BIOS")
	fs.StringVar(&cfg.DataPath, "data-path", "", "the server's data directory; empty serves the embedded example")
	fs.StringVar(&cfg.AssetsPath, "assets-path", "", "the server's assets directory (default DATA-PATH/assets)")
	fs.IntVar(&cfg.MemoryMiB, "memory", 1024, "memory per machine, MiB")
	fs.IntVar(&cfg.CPUs, "cpus", 1, "virtual CPUs per machine")
	diskSize := fs.String("disk-size", "4G", "size of each machine's empty disk (sparse raw file), e.g. 4G, 512M")
	fs.StringVar(&cfg.Accel, "accel", "auto", "auto (KVM if a test boot under KVM works, else TCG), kvm or tcg")
	fs.StringVar(&cfg.Network, "net", "auto", "netns (private network namespace, Kindling's DHCP/TFTP; needs root), user (QEMU user networking) or auto (netns as root)")
	wait := fs.Duration("wait", 0, "give up following after this long and exit non-zero unless every machine finished well (0: follow until all finish)")
	detach := fs.Bool("detach", false, "start the lab and return without following the machines")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: kindling lab up [flags]\n\n"+
			"Starts a Kindling server and N QEMU machines that PXE-boot from it on a private network,\n"+
			"then prints each machine's milestones (DHCP, iPXE, kernel, agent, report) as they happen.\n"+
			"The lab keeps running after this command returns: kindling lab status, kindling lab down.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("kindling lab up: unexpected arguments %q", fs.Args())}
	}
	if cfg.VMs < 1 {
		return usageError{fmt.Sprintf("-n %d: want 1 to %d machines", cfg.VMs, lab.MaxVMs)}
	}
	size, err := lab.ParseSize(*diskSize)
	if err != nil {
		return usageError{"-disk-size: " + err.Error()}
	}
	cfg.DiskSize = size
	st, err := lab.Up(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "lab: started in %s (supervisor pid %d, log %s/lab.log)\n", st.Dir, st.Supervisor.PID, st.Dir)
	if *detach {
		fmt.Fprintf(stdout, "lab: follow it with kindling lab watch -dir %s; stop it with kindling lab down -dir %s\n", st.Dir, st.Dir)
		return nil
	}
	return follow(ctx, st.Dir, *wait, stdout)
}

func labWatch(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lab watch", stderr)
	var dir string
	labDirFlag(fs, &dir)
	wait := fs.Duration("wait", 0, "give up after this long (0: until every machine finished)")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	return follow(ctx, dir, *wait, stdout)
}

// follow prints milestones until the machines finish, then a summary.
func follow(ctx context.Context, dir string, wait time.Duration, stdout io.Writer) error {
	sum, err := lab.Watch(ctx, dir, stdout, wait)
	if err != nil {
		return err
	}
	sum.Write(stdout)
	fmt.Fprintf(stdout, "lab: still running: kindling lab status -dir %s; kindling lab down -dir %s\n", sum.Dir, sum.Dir)
	if sum.Interrupted {
		return nil
	}
	return sum.Err()
}

func labStatus(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lab status", stderr)
	var dir string
	labDirFlag(fs, &dir)
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	s, err := lab.ReadStatus(dir)
	if err != nil {
		return err
	}
	s.Write(stdout)
	return nil
}

func labDown(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("lab down", stderr)
	var dir string
	labDirFlag(fs, &dir)
	purge := fs.Bool("purge", false, "also remove the logs, and the lab directory if nothing else is in it")
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	// Tear-down must finish even when interrupted: a half-deleted lab
	// is worse than a slow one.
	return lab.Down(context.WithoutCancel(ctx), dir, *purge, stdout)
}

// labSupervise is the lab's background process, started by lab up.
func labSupervise(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	fs := newFlagSet("lab supervise", stderr)
	var dir string
	labDirFlag(fs, &dir)
	if err := parse(fs, args, getenv); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return lab.Supervise(ctx, dir, log)
}
