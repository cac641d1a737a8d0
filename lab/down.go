package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"
)

// VMStatus is one machine in Status.
type VMStatus struct {
	VM
	Running bool
	// Last is the machine's latest milestone (zero before the first).
	Last Milestone
}

// Status is a lab as `kindling lab status` shows it.
type Status struct {
	State *State
	// Supervising is set while the supervisor runs (holds the lock).
	Supervising bool
	Server      bool
	VMs         []VMStatus
}

// ReadStatus reads the lab in dir: its state, which of its processes
// run, and each machine's latest milestone.
func ReadStatus(dir string) (*Status, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := ReadState(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if netnsExists(NetnsName(dir)) {
				return nil, fmt.Errorf("%w in %s, but its network namespace %s is left over: kindling lab down -dir %s removes it", errNoLab, dir, NetnsName(dir), dir)
			}
			return nil, fmt.Errorf("%w in %s", errNoLab, dir)
		}
		return nil, err
	}
	s := &Status{State: st, Supervising: locked(dir), Server: st.Server.Alive()}
	ms, _, _ := readProgress(dir, 0)
	last := map[string]Milestone{}
	for _, m := range ms {
		if m.VM != "" {
			last[m.VM] = m
		}
	}
	for _, vm := range st.VMs {
		s.VMs = append(s.VMs, VMStatus{VM: vm, Running: vm.Alive(), Last: last[vm.Name]})
	}
	return s, nil
}

// Write prints the status.
func (s *Status) Write(w io.Writer) {
	st := s.State
	sup := "supervisor not running"
	if s.Supervising {
		sup = fmt.Sprintf("supervisor pid %d", st.Supervisor.PID)
	}
	fmt.Fprintf(w, "lab %s: %s (%s), %s, %s (%s)\n", st.Dir, st.Phase, sup, st.Firmware, orDash(st.Accel), orDash(st.AccelReason))
	if st.Error != "" {
		fmt.Fprintf(w, "error: %s\n", st.Error)
	}
	if st.Netns != "" {
		fmt.Fprintf(w, "network: namespace %s, bridge %s %s\n", st.Netns, st.Bridge, bridgeCIDR)
	} else if st.Network != "" {
		fmt.Fprintf(w, "network: %s\n", st.Network)
	}
	data := "the embedded example"
	if st.DataPath != "" {
		data = st.DataPath
	}
	fmt.Fprintf(w, "server %s: %s, log %s, data: %s\n", orDash(st.ServerURL), running(s.Server, st.Server), orDash(st.Server.Log), data)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, v := range s.VMs {
		last := v.Last.Text
		if last == "" {
			last = "(no milestone yet)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.1fs\t%s\tserial %s\n", v.Name, v.MAC, running(v.Running, v.Proc), v.Last.Elapsed.Seconds(), last, v.Serial)
	}
	tw.Flush()
}

func running(alive bool, p Proc) string {
	switch {
	case alive:
		return fmt.Sprintf("running (pid %d)", p.PID)
	case p.Exit != "":
		return "stopped (" + p.Exit + ")"
	case p.PID == 0:
		return "not started"
	}
	return "not running"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Down stops the lab in dir and removes what it made: processes, taps,
// bridge, network namespace, disks, firmware variables and state. It
// keeps the logs (serial, server, progress) unless purge is set, which
// also removes them and the directory when nothing else is in it. It is
// idempotent, and works after a crash: it uses the state file when there
// is one, and finds the namespace and the processes in it by the
// directory's namespace name. It prints what it does to w.
func Down(ctx context.Context, dir string, purge bool, w io.Writer) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		if netnsExists(NetnsName(dir)) {
			return cleanup(ctx, dir, w, purge)
		}
		fmt.Fprintf(w, "lab: nothing to do: no lab directory %s\n", dir)
		return nil
	}
	if locked(dir) {
		st, _ := ReadState(dir)
		sup := Proc{PID: lockHolder(dir)}
		if st != nil && st.Supervisor.PID == sup.PID {
			sup = st.Supervisor
		}
		if sup.PID > 0 {
			fmt.Fprintf(w, "lab: stopping the supervisor (pid %d)\n", sup.PID)
			syscall.Kill(sup.PID, syscall.SIGTERM)
		}
		deadline := time.Now().Add(30 * time.Second)
		for locked(dir) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
		if locked(dir) && sup.Alive() {
			fmt.Fprintf(w, "lab: the supervisor did not stop within 30s: killing it\n")
			syscall.Kill(sup.PID, syscall.SIGKILL)
			time.Sleep(200 * time.Millisecond)
		}
	}
	return cleanup(ctx, dir, w, purge)
}

// cleanup removes whatever a lab in dir left: it is what the supervisor's
// own teardown does, from the outside, for when it could not. The caller
// makes sure no supervisor runs.
func cleanup(ctx context.Context, dir string, w io.Writer, purge bool) error {
	if w == nil {
		w = io.Discard
	}
	st, _ := ReadState(dir)
	var errs []error
	did := false
	if st != nil {
		type named struct {
			name string
			p    Proc
		}
		var procs []named
		for _, vm := range st.VMs {
			procs = append(procs, named{vm.Name, vm.Proc})
		}
		procs = append(procs, named{"server", st.Server}, named{"dnsmasq", st.RA})
		for _, p := range procs {
			if p.p.Alive() {
				fmt.Fprintf(w, "lab: stopping %s (pid %d)\n", p.name, p.p.PID)
				did = true
				p.p.stop(3 * time.Second)
			}
		}
	}
	names := []string{NetnsName(dir)}
	if st != nil && st.Netns != "" && st.Netns != names[0] {
		names = append(names, st.Netns)
	}
	for _, ns := range names {
		if !netnsExists(ns) {
			continue
		}
		// Anything still in the namespace is the lab's: it has no other
		// users and no uplink.
		for _, pid := range netnsPIDs(ns) {
			fmt.Fprintf(w, "lab: killing pid %d, left in network namespace %s\n", pid, ns)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		for end := time.Now().Add(3 * time.Second); len(netnsPIDs(ns)) > 0 && time.Now().Before(end); {
			time.Sleep(50 * time.Millisecond)
		}
		fmt.Fprintf(w, "lab: deleting network namespace %s (bridge and taps with it)\n", ns)
		did = true
		if err := deleteNetns(ctx, ns); err != nil {
			errs = append(errs, err)
		}
	}
	// The lock file stays (Up holds it while it cleans up); it locks
	// nothing once no process has it open.
	remove := []string{stateFile, configFile, "dnsmasq.pid", "dnsmasq.leases", "accel-probe.log", "accel-probe.ipxe"}
	globs := []string{"vm*.disk.raw", "vm*.vars.fd"}
	if purge {
		remove = append(remove, lockFile, progressFile, accelFile, labLog, serverLog, raLog)
		globs = append(globs, "vm*.serial.log", "vm*.qemu.log")
	}
	for _, g := range globs {
		m, _ := filepath.Glob(filepath.Join(dir, g))
		for _, f := range m {
			remove = append(remove, filepath.Base(f))
		}
	}
	n := 0
	for _, f := range remove {
		err := os.Remove(filepath.Join(dir, f))
		switch {
		case err == nil:
			n++
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, err)
		}
	}
	if purge {
		if err := os.Remove(dir); err == nil {
			fmt.Fprintf(w, "lab: removed %s\n", dir)
		} else if !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(w, "lab: kept %s: it holds files the lab did not make\n", dir)
		}
	} else if n > 0 {
		fmt.Fprintf(w, "lab: removed disks and state; logs kept in %s (kindling lab down -purge removes them)\n", dir)
	} else if !did {
		fmt.Fprintf(w, "lab: nothing to do: no lab in %s\n", dir)
	}
	return errors.Join(errs...)
}
