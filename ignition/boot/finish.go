package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Finish actions.
const (
	Reboot     = "reboot"
	Poweroff   = "poweroff"
	SwitchRoot = "switchroot"
	Shell      = "shell"
)

// SysRoot is where the installed root must be mounted for SwitchRoot.
const SysRoot = "/sysroot"

// Finish ends the boot. action is "reboot", "poweroff", "switchroot" or
// "shell"; empty means the kernel argument kindling.finish, else reboot.
// It syncs first. Reboot and poweroff unmount everything but the kernel's
// own filesystems; switchroot moves /dev, /proc, /sys and /run into
// /sysroot, frees the initramfs, makes /sysroot the root and executes
// /sbin/init there; shell runs a shell on the console and reboots when it
// exits. Finish returns only on failure. It refuses to run unless the
// process is PID 1, so a test or a mistaken call cannot reboot a host.
func Finish(ctx context.Context, log *slog.Logger, action string) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if action == "" {
		if c, err := ReadCmdline(); err == nil {
			action = c.Value(ArgFinish)
		}
		if action == "" {
			action = Reboot
		}
	}
	switch action {
	case Reboot, Poweroff, SwitchRoot, Shell:
	default:
		return fmt.Errorf("finishing the boot: action %q (%s): want reboot, poweroff, switchroot or shell", action, ArgFinish)
	}
	if os.Getpid() != 1 {
		return fmt.Errorf("finishing the boot (%s): running as PID %d: only the initramfs's /init (PID 1) may %s the machine", action, os.Getpid(), action)
	}
	log.Info("finishing", "action", action)
	unix.Sync()
	switch action {
	case SwitchRoot:
		return switchRoot(log, SysRoot, "/sbin/init")
	case Shell:
		if err := runShell(ctx); err != nil {
			log.Warn("shell", "err", err)
		}
	}
	unmountAll(log)
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if action == Poweroff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	if err := unix.Reboot(cmd); err != nil {
		return fmt.Errorf("finishing the boot: %s: %w", action, err)
	}
	select {} // the kernel is going down
}

func runShell(ctx context.Context) error {
	for _, sh := range [][]string{{"sh"}, {"busybox", "sh"}} {
		p, err := exec.LookPath(sh[0])
		if err != nil {
			continue
		}
		cmd := exec.CommandContext(ctx, p, sh[1:]...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		cmd.Env = append(os.Environ(), "PS1=kindling# ")
		return cmd.Run()
	}
	return errors.New("no shell in the initramfs (add busybox with -tools …,busybox)")
}

// apiMounts are kept mounted until the end.
var apiMounts = []string{"/", "/proc", "/sys", "/dev", "/run"}

func isAPIMount(p string) bool {
	for _, a := range apiMounts {
		if p == a || (a != "/" && strings.HasPrefix(p, a+"/")) {
			return true
		}
	}
	return false
}

// mountPoints lists the mount points of /proc/self/mountinfo in mount
// order.
func mountPoints() []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 4 {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out
}

// unmountAll unmounts what the agent mounted (the installed root, …),
// deepest and latest first; failures are logged, not fatal.
func unmountAll(log *slog.Logger) {
	mps := mountPoints()
	for i := len(mps) - 1; i >= 0; i-- {
		if isAPIMount(mps[i]) {
			continue
		}
		if err := unix.Unmount(mps[i], 0); err != nil {
			log.Warn("unmount", "path", mps[i], "err", err)
		}
	}
}

// switchRoot makes newRoot the root and executes init there.
func switchRoot(log *slog.Logger, newRoot, init string) error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("switching root to %s: %s", newRoot, fmt.Sprintf(format, a...))
	}
	var root, nr unix.Stat_t
	if err := unix.Stat("/", &root); err != nil {
		return fail("%v", err)
	}
	if err := unix.Stat(newRoot, &nr); err != nil {
		return fail("%v (mount the installed root there first)", err)
	}
	if root.Dev == nr.Dev {
		return fail("not a mount point (mount the installed root there first)")
	}
	if _, err := os.Lstat(filepath.Join(newRoot, init)); err != nil {
		return fail("no %s in the new root: %v", init, err)
	}
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		dst := filepath.Join(newRoot, m)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fail("%v", err)
		}
		if err := unix.Mount(m, dst, "", unix.MS_MOVE, ""); err != nil {
			log.Warn("moving mount failed, detaching it", "path", m, "err", err)
			unix.Unmount(m, unix.MNT_DETACH)
		}
	}
	// Free the initramfs's memory: delete its files, never crossing into
	// another filesystem (the new root is one).
	var fs unix.Statfs_t
	if err := unix.Statfs("/", &fs); err == nil && (fs.Type == unix.RAMFS_MAGIC || fs.Type == unix.TMPFS_MAGIC) {
		removeTree("/", root.Dev)
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fail("%v", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fail("moving it to /: %v", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fail("chroot: %v", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fail("%v", err)
	}
	log.Info("switched root", "init", init)
	env := []string{"PATH=" + pathEnv, "TERM=linux", "HOME=/"}
	if err := unix.Exec(init, []string{init}, env); err != nil {
		return fmt.Errorf("executing %s in the new root: %w", init, err)
	}
	return nil
}

// removeTree deletes dir's contents that are on device dev.
func removeTree(dir string, dev uint64) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Dev != dev {
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			removeTree(p, dev)
			unix.Rmdir(p)
			continue
		}
		unix.Unlink(p)
	}
}
