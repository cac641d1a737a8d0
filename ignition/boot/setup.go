package boot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// System is the state Setup leaves the machine in.
type System struct {
	// Cmdline is the parsed kernel command line.
	Cmdline Cmdline
	// Modules are the modules loaded (or found already loaded), in
	// order; Failed those that did not load, with why.
	Modules []string
	Failed  map[string]error
	// Lease is the network configuration of the boot interface; nil when
	// the network is off (ip=off).
	Lease *Lease
}

// pathEnv is the PATH of the agent and the tools it runs: the kernel
// starts /init with none.
const pathEnv = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Setup prepares the initramfs for the agent: it mounts /proc, /sys, /dev
// (devtmpfs), /run and /tmp, loads the modules in /etc/kindling/modules,
// and configures the boot interface. It must run as PID 1 of an
// initramfs: it changes the machine, not a root directory.
func Setup(ctx context.Context, log *slog.Logger) (*System, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if os.Getpid() != 1 {
		return nil, fmt.Errorf("boot setup: running as PID %d: only the initramfs's /init (PID 1) may set up the machine", os.Getpid())
	}
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", pathEnv)
	}
	if os.Getenv("HOME") == "" {
		os.Setenv("HOME", "/root")
	}
	start := time.Now()
	if err := mountAPI(); err != nil {
		return nil, err
	}
	log.Info("mounted", "fs", "proc sysfs devtmpfs run tmp", "took", since(start))

	cmd, err := ReadCmdline()
	if err != nil {
		return nil, err
	}
	sys := &System{Cmdline: cmd, Failed: map[string]error{}}

	start = time.Now()
	if err := loadModules(log, sys, "/etc/kindling/modules"); err != nil {
		return nil, err
	}
	log.Info("modules loaded", "loaded", len(sys.Modules), "failed", len(sys.Failed), "took", since(start))

	lease, err := setupNetwork(ctx, log, cmd)
	if err != nil {
		return sys, err
	}
	sys.Lease = lease
	return sys, nil
}

func since(t time.Time) string { return time.Since(t).Round(time.Millisecond).String() }

// mountAPI mounts the kernel's filesystems where they are not mounted yet.
func mountAPI() error {
	mounts := []struct{ target, fstype, data string }{
		{"/proc", "proc", ""},
		{"/sys", "sysfs", ""},
		{"/dev", "devtmpfs", "mode=0755"},
		{"/dev/pts", "devpts", "gid=5,mode=620,ptmxmode=000"},
		{"/run", "tmpfs", "mode=0755"},
		{"/tmp", "tmpfs", "mode=1777"},
	}
	for _, m := range mounts {
		if m.target != "/proc" && mounted(m.target) {
			continue
		}
		if m.target == "/proc" {
			if _, err := os.Stat("/proc/self/mountinfo"); err == nil {
				continue
			}
		}
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return fmt.Errorf("boot setup: creating mount point %s: %w", m.target, err)
		}
		flags := uintptr(unix.MS_NOSUID)
		if m.fstype != "devtmpfs" && m.fstype != "devpts" {
			flags |= unix.MS_NODEV
		}
		if err := unix.Mount(m.fstype, m.target, m.fstype, flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("boot setup: mounting %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// mounted reports whether target is a mount point, from
// /proc/self/mountinfo.
func mounted(target string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && unescapeMount(f[4]) == target {
			return true
		}
	}
	return false
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ParseModuleList parses /etc/kindling/modules: absolute paths of module
// files, one a line, '#' comments and blank lines ignored.
func ParseModuleList(b []byte) ([]string, error) {
	var out []string
	for i, l := range strings.Split(string(b), "\n") {
		if j := strings.IndexByte(l, '#'); j >= 0 {
			l = l[:j]
		}
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if !path.IsAbs(l) || !strings.HasSuffix(l, ".ko") {
			return nil, fmt.Errorf("line %d: %q: want the absolute path of a .ko file", i+1, l)
		}
		out = append(out, l)
	}
	return out, nil
}

// moduleName is the kernel's name of a module file: its base name without
// .ko, dashes as underscores (as in /sys/module).
func moduleName(p string) string {
	return strings.ReplaceAll(strings.TrimSuffix(path.Base(p), ".ko"), "-", "_")
}

func loadModules(log *slog.Logger, sys *System, list string) error {
	b, err := os.ReadFile(list)
	if errors.Is(err, os.ErrNotExist) {
		log.Info("no module list", "path", list)
		return nil
	}
	if err != nil {
		return fmt.Errorf("boot setup: reading the module list: %w", err)
	}
	mods, err := ParseModuleList(b)
	if err != nil {
		return fmt.Errorf("boot setup: %s: %w", list, err)
	}
	if want, err := os.ReadFile(path.Join(path.Dir(list), "kernel-version")); err == nil {
		var u unix.Utsname
		if unix.Uname(&u) == nil {
			running := unix.ByteSliceToString(u.Release[:])
			if w := strings.TrimSpace(string(want)); w != running {
				log.Warn("initramfs modules are for another kernel: they will not load", "initramfs", w, "running", running)
			}
		}
	}
	for _, m := range mods {
		name := moduleName(m)
		if _, err := os.Stat("/sys/module/" + name); err == nil {
			sys.Modules = append(sys.Modules, name)
			continue
		}
		t := time.Now()
		err := loadModule(m)
		log.Debug("module", "module", name, "took", since(t), "err", err)
		if err != nil {
			sys.Failed[name] = err
			log.Info("module not loaded", "module", name, "err", err)
			continue
		}
		sys.Modules = append(sys.Modules, name)
	}
	return nil
}

func loadModule(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.ENOSYS) {
		b, rerr := os.ReadFile(p)
		if rerr != nil {
			return rerr
		}
		err = unix.InitModule(b, "")
	}
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
