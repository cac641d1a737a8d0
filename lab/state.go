package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Phases of a lab, in State.Phase.
const (
	PhaseStarting = "starting"
	PhaseRunning  = "running"
	PhaseFailed   = "failed" // setup failed; Error says why
	PhaseStopping = "stopping"
	PhaseStopped  = "stopped"
)

// State is what the supervisor records in DIR/state.json: enough to show
// the lab and to take it down even after a crash.
type State struct {
	Dir   string `json:"dir"`
	Phase string `json:"phase"`
	// Error is why setup failed (PhaseFailed).
	Error string `json:"error,omitempty"`
	// Network is "netns" or "user"; Netns and Bridge are set for netns.
	Network string `json:"network"`
	Netns   string `json:"netns,omitempty"`
	Bridge  string `json:"bridge,omitempty"`
	// ServerURL is where the machines reach the server.
	ServerURL string `json:"server_url,omitempty"`
	// PollURL is where the lab reaches it: ServerURL, dialled from inside
	// the namespace, for netns; 127.0.0.1 for user networking (ServerURL
	// is then QEMU's host alias 10.0.2.2).
	PollURL string `json:"poll_url,omitempty"`
	// DataPath is the served data directory; "" is the embedded example.
	DataPath string `json:"data_path,omitempty"`
	// Accel is "kvm" or "tcg"; AccelReason says how it was chosen.
	Accel       string `json:"accel,omitempty"`
	AccelReason string `json:"accel_reason,omitempty"`
	// Firmware is "bios" or "uefi".
	Firmware   string    `json:"firmware"`
	Supervisor Proc      `json:"supervisor"`
	Server     Proc      `json:"server"`
	RA         Proc      `json:"ra"` // dnsmasq sending IPv6 router advertisements; PID 0 when none
	VMs        []VM      `json:"vms"`
	Started    time.Time `json:"started"`
}

// Proc identifies a process the lab started.
type Proc struct {
	PID int `json:"pid,omitempty"`
	// StartTicks is the process's start time in clock ticks after boot
	// (/proc/PID/stat field 22): with PID it tells the process from a
	// later one that reuses the PID.
	StartTicks uint64 `json:"start_ticks,omitempty"`
	// Log is the process's output file.
	Log string `json:"log,omitempty"`
	// Exit is how the process ended, once the supervisor saw it end
	// ("exit status 0", "signal: killed").
	Exit string `json:"exit,omitempty"`
}

// VM is one lab machine.
type VM struct {
	Name   string `json:"name"`
	MAC    string `json:"mac"`
	Tap    string `json:"tap,omitempty"`
	Disk   string `json:"disk"`
	Vars   string `json:"vars,omitempty"` // UEFI variable store
	Serial string `json:"serial"`
	Proc
	Started time.Time `json:"started"`
}

// ReadState reads dir's state file.
func ReadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(dir, stateFile), err)
	}
	return &st, nil
}

func (st *State) save() error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(st.Dir, stateFile), append(b, '\n'))
}

// Alive reports whether the process still runs (a zombie does not) and
// is the one that was started, not a later one with the same PID.
func (p Proc) Alive() bool {
	if p.PID <= 0 {
		return false
	}
	state, start, err := procStat(p.PID)
	if err != nil || state == 'Z' || state == 'X' {
		return false
	}
	return p.StartTicks == 0 || start == p.StartTicks
}

// procOf identifies a running process.
func procOf(pid int, log string) Proc {
	_, start, _ := procStat(pid)
	return Proc{PID: pid, StartTicks: start, Log: log}
}

// procStat reads a process's state letter and start time from
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so the fields are counted from its last ')'.
func procStat(pid int) (state byte, start uint64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); field 22 (starttime) is f[19].
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	return f[0][0], start, err
}

// stop ends a process: SIGTERM, then SIGKILL after grace. It does
// nothing when the process is gone or is not the one that was started.
func (p Proc) stop(grace time.Duration) {
	if !p.Alive() {
		return
	}
	syscall.Kill(p.PID, syscall.SIGTERM)
	for end := time.Now().Add(grace); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if !p.Alive() {
			return
		}
	}
	if p.Alive() {
		syscall.Kill(p.PID, syscall.SIGKILL)
	}
}

// errNoLab is returned by Status and Watch for a directory without a lab.
var errNoLab = errors.New("no lab")
