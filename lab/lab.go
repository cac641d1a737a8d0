// Package lab runs a local network-boot lab: a Kindling server plus N QEMU
// virtual machines that PXE-boot from it on a private network, so configs
// can be tried before they touch hardware.
//
// Up starts a supervisor process (the kindling executable, `kindling lab
// supervise`) in its own session and returns; the supervisor (Supervise)
// owns everything the lab runs: it creates a network namespace with a
// bridge and one tap per machine (or, without root, uses QEMU user
// networking), starts `kindling serve` with DHCP and TFTP on the bridge,
// dnsmasq for IPv6 router advertisements only (iPXE waits ~13 s for
// SLAAC on a link without them), and the VMs. It follows each machine's
// boot — the server's /events and /report, and the serial logs — and
// appends one line per milestone to DIR/progress.jsonl, which Watch
// prints. Down stops the supervisor, which tears everything down; Down
// also cleans up on its own, from the state file and the namespace's
// name, after a crash.
//
// Everything lives in the lab directory: state.json, the progress log,
// each machine's disk, firmware variables and serial log, and the logs of
// the server and the supervisor.
package lab

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultDir is the lab directory when Config.Dir is empty, relative to
// the working directory.
const DefaultDir = "kindling-lab"

// MaxVMs bounds Config.VMs: the DHCP range of the lab network holds 100
// addresses.
const MaxVMs = 100

// Config describes a lab. The zero value boots 3 BIOS machines from the
// embedded example data.
type Config struct {
	// Dir is the lab directory; "" means DefaultDir.
	Dir string `json:"dir"`
	// VMs is how many machines to boot; 0 means 3.
	VMs int `json:"vms"`
	// UEFI boots the machines with OVMF instead of SeaBIOS.
	UEFI bool `json:"uefi"`
	// DataPath is the server's data directory; "" serves the example
	// embedded in the kindling executable.
	DataPath string `json:"data_path,omitempty"`
	// AssetsPath is the server's -assets-path; "" means DATA-PATH/assets
	// when it exists.
	AssetsPath string `json:"assets_path,omitempty"`
	// MemoryMiB is each machine's memory; 0 means 1024.
	MemoryMiB int `json:"memory_mib"`
	// CPUs is each machine's virtual CPU count; 0 means 1.
	CPUs int `json:"cpus"`
	// DiskSize is the size of each machine's (sparse, raw) disk in bytes;
	// 0 means 4 GiB.
	DiskSize int64 `json:"disk_size"`
	// Accel is "auto" (or ""), "kvm" or "tcg". Auto uses KVM only when a
	// short real boot under KVM works (see Accelerator).
	Accel string `json:"accel"`
	// Network is "auto" (or ""), "netns" or "user". netns needs root: a
	// private network namespace with a bridge, Kindling's own DHCP and
	// TFTP. user is QEMU user networking with the server on 127.0.0.1:
	// no root needed, but the server sees no DHCP and every machine comes
	// from 127.0.0.1. Auto picks netns as root, else user.
	Network string `json:"network"`
	// Kindling is the kindling executable run as supervisor and server;
	// "" means os.Executable().
	Kindling string `json:"kindling"`
	// QEMU is the emulator; "" means qemu-system-x86_64 on PATH.
	QEMU string `json:"qemu"`
	// Logger receives what Up does; nil discards.
	Logger *slog.Logger `json:"-"`
}

// The lab network inside the namespace. Nothing else lives in the
// namespace, so the addresses cannot collide with the host's.
const (
	bridgeName  = "kbr0"
	bridgeCIDR  = "10.77.0.1/24"
	bridgeIP    = "10.77.0.1"
	bridgeIP6   = "fd77::1/64"
	dhcpRange   = "10.77.0.100-10.77.0.199"
	serverPort  = 8080
	netnsPrefix = "kindling-lab-"
)

// Files in the lab directory.
const (
	stateFile    = "state.json"
	configFile   = "config.json"
	progressFile = "progress.jsonl"
	lockFile     = "lock"
	accelFile    = "accel.json"
	labLog       = "lab.log"
	serverLog    = "server.log"
	raLog        = "dnsmasq.log"
)

// ErrRunning is returned by Up when a lab already runs in the directory.
var ErrRunning = errors.New("a lab is already running")

// withDefaults fills zero fields and makes paths absolute.
func (c Config) withDefaults() (Config, error) {
	if c.Dir == "" {
		c.Dir = DefaultDir
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return c, fmt.Errorf("lab directory %s: %w", c.Dir, err)
	}
	c.Dir = dir
	if c.VMs == 0 {
		c.VMs = 3
	}
	if c.VMs < 1 || c.VMs > MaxVMs {
		return c, fmt.Errorf("-n %d: want 1 to %d machines", c.VMs, MaxVMs)
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 1024
	}
	if c.MemoryMiB < 64 {
		return c, fmt.Errorf("-memory %d: want at least 64 (MiB)", c.MemoryMiB)
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.CPUs < 1 {
		return c, fmt.Errorf("-cpus %d: want at least 1", c.CPUs)
	}
	if c.DiskSize == 0 {
		c.DiskSize = 4 << 30
	}
	if c.DiskSize < 1<<20 {
		return c, fmt.Errorf("-disk-size %d bytes: want at least 1M", c.DiskSize)
	}
	switch c.Accel {
	case "":
		c.Accel = "auto"
	case "auto", "kvm", "tcg":
	default:
		return c, fmt.Errorf("-accel %q: want auto, kvm or tcg", c.Accel)
	}
	switch c.Network {
	case "", "auto":
		c.Network = "user"
		if os.Geteuid() == 0 {
			c.Network = "netns"
		}
	case "netns", "user":
	default:
		return c, fmt.Errorf("-net %q: want auto, netns or user", c.Network)
	}
	for _, p := range []*string{&c.DataPath, &c.AssetsPath} {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return c, err
		}
		*p = abs
	}
	if c.Kindling == "" {
		exe, err := os.Executable()
		if err != nil {
			return c, fmt.Errorf("finding the kindling executable: %w", err)
		}
		c.Kindling = exe
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	return c, nil
}

// check finds what the lab needs before anything starts, so a missing
// tool is one clear error instead of a half-built lab.
func (c Config) check() error {
	if fi, err := os.Stat(c.Kindling); err != nil || fi.IsDir() {
		return fmt.Errorf("kindling executable %s: not found", c.Kindling)
	}
	if _, err := exec.LookPath(c.QEMU); err != nil {
		return fmt.Errorf("%s not found (Debian package qemu-system-x86): %w", c.QEMU, err)
	}
	if c.Network == "netns" {
		if os.Geteuid() != 0 {
			return errors.New("-net netns needs root to create a network namespace and taps: run as root, or use -net user")
		}
		if _, err := exec.LookPath("ip"); err != nil {
			return fmt.Errorf("ip not found (Debian package iproute2): %w", err)
		}
	}
	if c.UEFI {
		if _, _, err := findOVMF(); err != nil {
			return err
		}
	}
	for flag, p := range map[string]string{"-data-path": c.DataPath, "-assets-path": c.AssetsPath} {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return fmt.Errorf("%s %s: %w", flag, p, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("%s %s: not a directory", flag, p)
		}
	}
	return nil
}

// NetnsName is the network namespace of the lab in dir (an absolute
// path): one per directory, so two labs never share one and a stale one
// is found again by name.
func NetnsName(dir string) string {
	sum := sha256.Sum256([]byte(dir))
	return netnsPrefix + hex.EncodeToString(sum[:4])
}

// MAC is the deterministic hardware address of machine i (1-based):
// 52:54:00:00:00:01 for the first. Groups select lab machines by it.
func MAC(i int) string {
	return fmt.Sprintf("52:54:00:00:%02x:%02x", (i>>8)&0xff, i&0xff)
}

// ParseSize parses a disk size: a byte count with an optional K, M, G or
// T suffix (powers of 1024; a trailing "B" or "iB" is allowed).
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(strings.ToUpper(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a positive number with an optional K, M, G or T suffix, e.g. 4G", s)
	}
	return n * mult, nil
}

// Up starts a lab as cfg describes and returns once its supervisor has
// written the first state; the machines boot in the background (Watch
// follows them). It refuses, with ErrRunning, when a lab already runs in
// cfg.Dir; a lab that crashed there is cleaned up first.
func Up(ctx context.Context, cfg Config) (*State, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the lab directory: %w", err)
	}
	lock, err := tryLock(cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	// We hold the lock, so no supervisor runs here: anything left over is
	// from a crash.
	if leftovers(cfg.Dir) {
		log.Info("cleaning up a lab that did not shut down", "dir", cfg.Dir)
		if err := cleanup(ctx, cfg.Dir, io.Discard, false); err != nil {
			return nil, fmt.Errorf("cleaning up the previous lab in %s: %w", cfg.Dir, err)
		}
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(cfg.Dir, configFile), append(b, '\n')); err != nil {
		return nil, err
	}
	for _, f := range []string{stateFile, progressFile} {
		if err := os.Remove(filepath.Join(cfg.Dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	out, err := os.OpenFile(filepath.Join(cfg.Dir, labLog), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer out.Close()
	cmd := exec.Command(cfg.Kindling, "lab", "supervise", "-dir", cfg.Dir)
	cmd.Dir = cfg.Dir
	cmd.Stdout, cmd.Stderr = out, out
	// The supervisor inherits the lock (fd 3) and holds it for its life;
	// its own session keeps it out of the terminal's Ctrl-C.
	cmd.ExtraFiles = []*os.File{lock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	log.Debug("starting supervisor", "cmd", cmd.String())
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting the lab supervisor %s: %w", cfg.Kindling, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if st, err := ReadState(cfg.Dir); err == nil && st.Supervisor.PID == cmd.Process.Pid {
			return st, nil
		}
		select {
		case err := <-exited:
			return nil, fmt.Errorf("the lab supervisor exited (%v):\n%s", err, tail(filepath.Join(cfg.Dir, labLog), 2000))
		case <-deadline.C:
			return nil, fmt.Errorf("the lab supervisor (pid %d) wrote no state within 10s; see %s", cmd.Process.Pid, filepath.Join(cfg.Dir, labLog))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// tryLock takes the lab directory's lock without waiting; ErrRunning
// names the supervisor holding it.
func tryLock(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening the lab lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			pid := lockHolder(dir)
			return nil, fmt.Errorf("%w in %s (supervisor pid %d): stop it with kindling lab down -dir %s", ErrRunning, dir, pid, dir)
		}
		return nil, fmt.Errorf("locking %s: %w", filepath.Join(dir, lockFile), err)
	}
	return f, nil
}

// locked reports whether a supervisor holds dir's lock.
func locked(dir string) bool {
	f, err := os.Open(filepath.Join(dir, lockFile))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return errors.Is(err, syscall.EWOULDBLOCK)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// lockHolder is the PID the supervisor wrote into the lock file, or 0.
func lockHolder(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, lockFile))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}

// leftovers reports whether dir has anything a lab left running or
// configured: a state file or the lab's network namespace.
func leftovers(dir string) bool {
	if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
		return true
	}
	return netnsExists(NetnsName(dir))
}

// tail is the end of a file, for error messages.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.TrimRight(string(b), "\n")
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
