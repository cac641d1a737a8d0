package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/kindlingboot/kindling/matchbox/events"
)

// pollInterval is how often the supervisor reads events, reports and
// serial logs.
const pollInterval = 250 * time.Millisecond

// Supervise runs the lab in dir, configured by Up: it is the body of
// `kindling lab supervise`, which Up starts. It sets the lab up, follows
// the machines until ctx ends (SIGTERM from Down), then stops everything
// it started and deletes the network namespace. It holds dir's lock for
// its whole life: the one Up passed as file descriptor 3, or its own.
func Supervise(ctx context.Context, dir string, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	lock, err := inheritedLock(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	lock.Truncate(0)
	lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)

	b, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return fmt.Errorf("reading the lab configuration (written by kindling lab up): %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("reading %s: %w", filepath.Join(dir, configFile), err)
	}
	cfg.Dir = dir
	if cfg, err = cfg.withDefaults(); err != nil {
		return err
	}
	prog, err := openProgress(dir)
	if err != nil {
		return err
	}
	defer prog.close()
	st := &State{
		Dir: dir, Phase: PhaseStarting, Network: cfg.Network, DataPath: cfg.DataPath,
		Firmware:   "bios",
		Supervisor: procOf(os.Getpid(), filepath.Join(dir, labLog)),
		Started:    time.Now(),
	}
	if cfg.UEFI {
		st.Firmware = "uefi"
	}
	if err := st.save(); err != nil {
		return err
	}
	s := &supervisor{cfg: cfg, st: st, prog: prog, log: log, exits: make(chan *child, cfg.VMs+8)}
	if err := s.setup(ctx); err != nil {
		st.Phase, st.Error = PhaseFailed, err.Error()
		st.save()
		log.Error("setup failed", "error", err)
		prog.note("setup failed: %v", err)
		s.teardown()
		st.save()
		return err
	}
	st.Phase = PhaseRunning
	st.save()
	s.follow(ctx)
	st.Phase = PhaseStopping
	st.save()
	prog.note("stopping")
	s.teardown()
	st.Phase = PhaseStopped
	st.save()
	prog.note("stopped")
	return nil
}

// inheritedLock is the lock Up passed as fd 3 when it is dir's lock
// file, else the lock taken here.
func inheritedLock(dir string) (*os.File, error) {
	want, err := os.Stat(filepath.Join(dir, lockFile))
	if err == nil {
		// Compare before wrapping: an *os.File would close a foreign fd 3
		// when collected.
		var st syscall.Stat_t
		w, ok := want.Sys().(*syscall.Stat_t)
		if syscall.Fstat(3, &st) == nil && ok && st.Ino == w.Ino && st.Dev == w.Dev {
			// Children must not inherit it: a VM outliving the
			// supervisor would look like a running lab.
			syscall.CloseOnExec(3)
			return os.NewFile(3, filepath.Join(dir, lockFile)), nil
		}
	}
	return tryLock(dir)
}

type supervisor struct {
	cfg      Config
	st       *State
	prog     *progressLog
	log      *slog.Logger
	exits    chan *child
	server   *child
	ra       *child
	vms      []*child // by index of st.VMs
	ovmfCode string
	client   *http.Client
}

// child is a process the supervisor started and reaps.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	exit string
}

func (s *supervisor) start(name, logPath string, argv ...string) (*child, error) {
	if s.st.Network == "netns" {
		argv = append([]string{"ip", "netns", "exec", s.st.Netns}, argv...)
	}
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = s.st.Dir
	cmd.Stdout, cmd.Stderr = f, f
	s.log.Info("starting", "name", name, "cmd", cmd.String())
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		c.exit = "exit status 0"
		if err != nil {
			c.exit = err.Error()
		}
		close(c.done)
		s.exits <- c
	}()
	return c, nil
}

// stop ends c: SIGTERM, then SIGKILL after grace.
func (c *child) stop(grace time.Duration) {
	if c == nil {
		return
	}
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		c.cmd.Process.Kill()
		<-c.done
	}
}

func (s *supervisor) setup(ctx context.Context) error {
	cfg, st := s.cfg, s.st
	st.Accel, st.AccelReason = Accelerator(ctx, cfg.Accel, cfg.QEMU, cfg.Dir, s.log)
	s.prog.note("accelerator %s: %s", st.Accel, st.AccelReason)
	if cfg.UEFI {
		code, _, err := findOVMF()
		if err != nil {
			return err
		}
		s.ovmfCode = code
	}
	for i := 1; i <= cfg.VMs; i++ {
		name := "vm" + strconv.Itoa(i)
		vm := VM{
			Name:   name,
			MAC:    MAC(i),
			Disk:   filepath.Join(cfg.Dir, name+".disk.raw"),
			Serial: filepath.Join(cfg.Dir, name+".serial.log"),
		}
		vm.Log = filepath.Join(cfg.Dir, name+".qemu.log")
		if cfg.Network == "netns" {
			vm.Tap = "tap" + strconv.Itoa(i)
		}
		if cfg.UEFI {
			vm.Vars = filepath.Join(cfg.Dir, name+".vars.fd")
		}
		st.VMs = append(st.VMs, vm)
	}
	s.vms = make([]*child, len(st.VMs))
	if avail := memAvailableMiB(); avail > 0 && cfg.VMs*cfg.MemoryMiB > avail {
		s.prog.note("warning: %d machines of %d MiB need up to %d MiB, and this host has %d MiB available", cfg.VMs, cfg.MemoryMiB, cfg.VMs*cfg.MemoryMiB, avail)
	}

	serverArgs := []string{cfg.Kindling, "serve", "-log-level", "info", "-shutdown-timeout", "2s"}
	if cfg.DataPath != "" {
		serverArgs = append(serverArgs, "-data-path", cfg.DataPath)
	}
	if cfg.AssetsPath != "" {
		serverArgs = append(serverArgs, "-assets-path", cfg.AssetsPath)
	}
	switch cfg.Network {
	case "netns":
		st.Netns, st.Bridge = NetnsName(cfg.Dir), bridgeName
		st.ServerURL = fmt.Sprintf("http://%s:%d", bridgeIP, serverPort)
		st.PollURL = st.ServerURL
		if err := st.save(); err != nil { // before creating it: a crash now is still cleaned up
			return err
		}
		var taps []string
		for _, vm := range st.VMs {
			taps = append(taps, vm.Tap)
		}
		if err := createNetns(ctx, st.Netns, taps, s.log); err != nil {
			return fmt.Errorf("creating the lab network: %w", err)
		}
		s.prog.note("network namespace %s: bridge %s %s, taps %s", st.Netns, bridgeName, bridgeCIDR, strings.Join(taps, " "))
		if err := s.startRA(); err != nil {
			return err
		}
		serverArgs = append(serverArgs, "-address", fmt.Sprintf("%s:%d", bridgeIP, serverPort),
			"-dhcp", "server", "-dhcp-interface", bridgeName, "-dhcp-range", dhcpRange,
			"-tftp-address", bridgeIP+":69")
	case "user":
		port, err := freePort()
		if err != nil {
			return fmt.Errorf("finding a free port for the server: %w", err)
		}
		st.ServerURL = fmt.Sprintf("http://10.0.2.2:%d", port)
		st.PollURL = fmt.Sprintf("http://127.0.0.1:%d", port)
		serverArgs = append(serverArgs, "-address", fmt.Sprintf("127.0.0.1:%d", port))
		s.prog.note("QEMU user networking: machines reach the server at %s (no DHCP or TFTP from Kindling)", st.ServerURL)
	}
	s.client = httpClient(st)

	srvLog := filepath.Join(cfg.Dir, serverLog)
	c, err := s.start("server", srvLog, serverArgs...)
	if err != nil {
		return err
	}
	s.server = c
	st.Server = procOf(c.cmd.Process.Pid, srvLog)
	if err := st.save(); err != nil {
		return err
	}
	if err := s.waitServer(ctx, 30*time.Second); err != nil {
		return err
	}
	data := "the embedded example"
	if cfg.DataPath != "" {
		data = cfg.DataPath
	}
	s.prog.note("server %s (pid %d, log %s), data: %s", st.ServerURL, st.Server.PID, srvLog, data)

	for i := range st.VMs {
		if err := s.startVM(i); err != nil {
			return err
		}
	}
	return nil
}

// startRA starts dnsmasq for IPv6 router advertisements only: no DNS
// (--port=0), no DHCPv4 (Kindling's), no leases outside the lab
// directory. Without it iPXE waits ~13 s for SLAAC on every boot.
func (s *supervisor) startRA() error {
	dnsmasq, err := exec.LookPath("dnsmasq")
	if err != nil {
		s.prog.note("dnsmasq not found (Debian package dnsmasq-base): no IPv6 router advertisements, so iPXE waits about 13 s per boot")
		return nil
	}
	dir := s.st.Dir
	c, err := s.start("dnsmasq", filepath.Join(dir, raLog), dnsmasq,
		"--keep-in-foreground", "--conf-file=/dev/null", "--port=0", "--user=root",
		"--interface="+bridgeName, "--bind-interfaces", "--enable-ra", "--dhcp-range=fd77::,ra-only",
		"--pid-file="+filepath.Join(dir, "dnsmasq.pid"), "--dhcp-leasefile="+filepath.Join(dir, "dnsmasq.leases"))
	if err != nil {
		return err
	}
	s.ra = c
	s.st.RA = procOf(c.cmd.Process.Pid, filepath.Join(dir, raLog))
	return s.st.save()
}

// waitServer waits until the server answers /healthz.
func (s *supervisor) waitServer(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.st.PollURL+"/healthz", nil)
		if resp, err := s.client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.server.done:
			s.st.Server.Exit = s.server.exit
			return fmt.Errorf("the server exited (%s):\n%s", s.server.exit, tail(filepath.Join(s.st.Dir, serverLog), 2000))
		case <-ctx.Done():
			return fmt.Errorf("the server did not answer %s/healthz within %v:\n%s", s.st.PollURL, timeout, tail(filepath.Join(s.st.Dir, serverLog), 2000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *supervisor) startVM(i int) error {
	vm := &s.st.VMs[i]
	if err := createDisk(vm.Disk, s.cfg.DiskSize); err != nil {
		return err
	}
	if s.cfg.UEFI {
		_, vars, err := findOVMF()
		if err != nil {
			return err
		}
		if err := copyFile(vm.Vars, vars); err != nil {
			return fmt.Errorf("copying the UEFI variable store for %s: %w", vm.Name, err)
		}
	}
	os.Remove(vm.Serial)
	vm.Started = time.Now()
	c, err := s.start(vm.Name, vm.Log, append([]string{s.cfg.QEMU}, qemuArgs(s.cfg, s.st, *vm, s.ovmfCode)...)...)
	if err != nil {
		return err
	}
	s.vms[i] = c
	vm.Proc = procOf(c.cmd.Process.Pid, vm.Log)
	if err := s.st.save(); err != nil {
		return err
	}
	s.prog.note("%s %s started (pid %d, serial log %s)", vm.Name, vm.MAC, vm.PID, vm.Serial)
	return nil
}

// reorderWindow is how long milestones wait before they are written, so
// that server events (fetched every pollInterval, with the server's exact
// times) and serial output (read as QEMU writes it) come out in the order
// they happened.
const reorderWindow = 2 * pollInterval

// follow turns what the server and the serial logs show into milestones
// until ctx ends. Serial logs are read as soon as QEMU writes them
// (inotify), so their milestones carry the time they were written; the
// server is polled.
func (s *supervisor) follow(ctx context.Context) {
	trackers := make([]*tracker, len(s.st.VMs))
	offsets := make([]int64, len(s.st.VMs))
	bySerial := map[string]int{}
	for i, vm := range s.st.VMs {
		trackers[i] = newTracker(vm)
		bySerial[vm.Serial] = i
	}
	stopped := make([]time.Time, len(s.st.VMs)) // when each machine's QEMU exited
	var pending []Milestone
	emit := func(ms ...Milestone) { pending = append(pending, ms...) }
	flush := func(all bool) {
		sort.SliceStable(pending, func(i, j int) bool { return pending[i].Time.Before(pending[j].Time) })
		cut := time.Now().Add(-reorderWindow)
		n := 0
		for n < len(pending) && (all || !pending[n].Time.After(cut)) {
			n++
		}
		if n > 0 {
			s.prog.add(pending[:n]...)
			pending = append(pending[:0], pending[n:]...)
		}
	}
	defer flush(true)
	readSerial := func(i int) {
		now := time.Now()
		b, off := readFrom(s.st.VMs[i].Serial, offsets[i])
		offsets[i] = off
		if len(b) > 0 {
			emit(trackers[i].serial(b, now)...)
		}
	}
	var written <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err == nil {
		defer w.Close()
		if w.Add(s.st.Dir) == nil {
			written = w.Events
		}
	}
	reports := true // until the server shows it has no /report
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-written:
			if i, ok := bySerial[ev.Name]; ok && ev.Has(fsnotify.Write) {
				readSerial(i)
			}
		case c := <-s.exits:
			emit(s.exited(c, trackers, readSerial)...)
			for i, v := range s.vms {
				if v == c {
					stopped[i] = time.Now()
				}
			}
		case <-tick.C:
			for i := range s.st.VMs {
				t := trackers[i]
				// A machine that stopped is still polled for a while: its
				// report may be fetched after its power-off was read.
				if t.final && !stopped[i].IsZero() && time.Since(stopped[i]) > 4*reorderWindow {
					continue
				}
				readSerial(i) // in case a write event was missed
				if evs, err := s.events(ctx, t.vm.MAC); err == nil {
					emit(t.events(evs)...)
				}
				if reports && t.report == "" {
					body, found, err := s.report(ctx, t.vm.MAC)
					switch {
					case errors.Is(err, errNoReportEndpoint):
						reports = false
					case err == nil && found:
						if m, ok := t.fromReport(body, time.Now()); ok {
							emit(t.add(nil, m, false)...)
						}
					}
				}
			}
			flush(false)
		}
	}
}

// exited records a child's end; for a machine, its last serial output and
// the milestone of its end.
func (s *supervisor) exited(c *child, trackers []*tracker, readSerial func(int)) []Milestone {
	defer s.st.save()
	switch c {
	case s.server:
		s.st.Server.Exit = c.exit
		s.prog.note("the server exited (%s); see %s", c.exit, s.st.Server.Log)
	case s.ra:
		s.st.RA.Exit = c.exit
		s.prog.note("dnsmasq exited (%s); see %s", c.exit, s.st.RA.Log)
	default:
		for i, v := range s.vms {
			if v == c {
				readSerial(i)
				s.st.VMs[i].Exit = c.exit
				return []Milestone{trackers[i].exited(c.exit, lastLine(s.st.VMs[i].Log), time.Now())}
			}
		}
	}
	return nil
}

// teardown stops every child (machines first, so nothing talks to a
// stopped server) and deletes the network namespace.
func (s *supervisor) teardown() {
	for _, c := range s.vms {
		if c != nil {
			go c.stop(5 * time.Second)
		}
	}
	for _, c := range s.vms {
		if c != nil {
			<-waitStopped(c, 6*time.Second)
		}
	}
	s.server.stop(5 * time.Second)
	s.ra.stop(2 * time.Second)
	if s.st.Netns != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := deleteNetns(ctx, s.st.Netns); err != nil {
			s.log.Warn("deleting the lab network", "error", err)
		}
	}
}

func waitStopped(c *child, d time.Duration) <-chan struct{} {
	out := make(chan struct{})
	go func() {
		select {
		case <-c.done:
		case <-time.After(d):
		}
		close(out)
	}()
	return out
}

// events fetches the server's boot events for mac.
func (s *supervisor) events(ctx context.Context, mac string) ([]events.Event, error) {
	body, status, err := s.get(ctx, "/events?mac="+mac)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /events: status %d", status)
	}
	var evs []events.Event
	return evs, json.Unmarshal(body, &evs)
}

var errNoReportEndpoint = errors.New("the server has no /report endpoint")

// report fetches the agent's report for mac; found is false while there
// is none. A server without the endpoint (its generic 404, or a 405), or
// one that records no reports, is errNoReportEndpoint.
func (s *supervisor) report(ctx context.Context, mac string) (body []byte, found bool, err error) {
	body, status, err := s.get(ctx, "/report?mac="+mac)
	if err != nil {
		return nil, false, err
	}
	switch {
	case status == http.StatusOK:
		return body, true, nil
	case status == http.StatusMethodNotAllowed,
		status == http.StatusNotFound && strings.TrimSpace(string(body)) == "404 not found: /report",
		status == http.StatusNotFound && strings.Contains(string(body), "not recorded"):
		return nil, false, errNoReportEndpoint
	}
	return nil, false, nil
}

func (s *supervisor) get(ctx context.Context, path string) ([]byte, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.st.PollURL+path, nil)
	if err != nil {
		return nil, 0, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return b, resp.StatusCode, err
}

// readFrom reads path from off to its end.
func readFrom(path string, off int64) ([]byte, int64) {
	f, err := os.Open(path)
	if err != nil {
		return nil, off
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() < off {
		off = 0 // truncated: QEMU started over
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, off
	}
	b, _ := io.ReadAll(io.LimitReader(f, 4<<20))
	return b, off + int64(len(b))
}

// lastLine is the last non-empty line of a file, for short error
// messages.
func lastLine(path string) string {
	s := strings.TrimSpace(tail(path, 1000))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if strings.HasPrefix(s, "(") { // tail's error text
		return ""
	}
	return s
}

// memAvailableMiB is MemAvailable from /proc/meminfo, or 0.
func memAvailableMiB() int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemAvailable:" {
			kb, _ := strconv.Atoi(f[1])
			return kb / 1024
		}
	}
	return 0
}
