package lab

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/kindlingboot/kindling/matchbox/events"
)

// Milestone is one step of a machine's boot (or, with VM empty, a line
// about the lab itself), one line of Watch's output.
type Milestone struct {
	VM  string `json:"vm,omitempty"`
	MAC string `json:"mac,omitempty"`
	// Time is when it happened: the server's clock for server events,
	// when the lab read it for serial output.
	Time time.Time `json:"time"`
	// Elapsed is Time less the machine's start.
	Elapsed time.Duration `json:"elapsed,omitempty"`
	Text    string        `json:"text"`
	// Final marks the last milestone the lab waits for on this machine:
	// a report, a power-off, or a failure it will not recover from
	// unattended. Failed tells failures from successes.
	Final  bool `json:"final,omitempty"`
	Failed bool `json:"failed,omitempty"`
	// Hint says what to do about a failure.
	Hint string `json:"hint,omitempty"`

	report bool // the agent's report: it outranks a power-off as the final milestone
}

// String is the milestone as Watch prints it, e.g.
// "vm1 52:54:00:00:00:01  12.3s  ipxe script served (group=node1 profile=worker)".
func (m Milestone) String() string {
	if m.VM == "" {
		return "lab: " + m.Text
	}
	s := fmt.Sprintf("%-4s %s %6.1fs  %s", m.VM, m.MAC, m.Elapsed.Seconds(), m.Text)
	if m.Hint != "" {
		s += "\n     hint: " + m.Hint
	}
	return s
}

// tracker turns what is known about one machine — server events, its
// serial output, its report, its QEMU process ending — into milestones.
// It is fed incrementally and never blocks; it knows nothing of files or
// HTTP, so it is tested with recorded input.
type tracker struct {
	vm    VM
	seen  map[string]bool // server events already turned into milestones
	once  map[string]bool // milestones that are shown once per machine
	dhcp  string          // the last DHCP milestone, to drop renewals
	stage string          // the agent's last stage
	lines serialLines
	// downloads counts the files iPXE fetched since its profile script:
	// the first is the kernel, the rest initrds.
	downloads int
	final     bool
	finalAt   time.Time // when the final milestone happened
	report    string    // the last report body turned into a milestone
}

func newTracker(vm VM) *tracker {
	return &tracker{vm: vm, seen: map[string]bool{}, once: map[string]bool{}}
}

func (t *tracker) milestone(at time.Time, text string) Milestone {
	m := Milestone{VM: t.vm.Name, MAC: t.vm.MAC, Time: at, Text: text}
	if !t.vm.Started.IsZero() {
		m.Elapsed = at.Sub(t.vm.Started)
		if m.Elapsed < 0 {
			m.Elapsed = 0
		}
	}
	return m
}

// add appends m to out unless it happened after the machine's final
// milestone (after which only the end of its process is shown). The
// server's events are read after the serial output that may already have
// ended the machine, so an earlier event still counts; serial output is
// read in order, so after a final line (sequential) nothing of it counts.
func (t *tracker) add(out []Milestone, m Milestone, sequential bool) []Milestone {
	if t.final {
		if sequential || m.Time.After(t.finalAt) {
			return out
		}
		if m.report {
			// Posted before the power-off that was read first: the
			// report is what the machine ended with.
			t.finalAt = m.Time
		} else {
			m.Final = false // one final milestone per machine
		}
	} else if m.Final {
		t.final, t.finalAt = true, m.Time
	}
	return append(out, m)
}

func (t *tracker) onceKey(k string) bool {
	if t.once[k] {
		return false
	}
	t.once[k] = true
	return true
}

// events turns the server's events for this machine (oldest first, the
// whole recent list each time) into milestones for the new ones.
func (t *tracker) events(evs []events.Event) []Milestone {
	var out []Milestone
	for _, e := range evs {
		key := fmt.Sprintf("%d|%s|%s|%s|%s", e.Time.UnixNano(), e.Source, e.Step, e.File, e.IP)
		if t.seen[key] {
			continue
		}
		t.seen[key] = true
		if e.Time.Before(t.vm.Started) {
			continue // from an earlier boot of the same MAC
		}
		text := eventText(e)
		if text == "" {
			continue
		}
		switch {
		case e.Source == "dhcp":
			if text == t.dhcp {
				continue
			}
			t.dhcp = text
		case e.Source == "http" && e.Step == "boot.ipxe":
			if !t.onceKey("boot.ipxe") {
				continue
			}
		}
		m := t.milestone(e.Time, text)
		if e.Error != "" {
			m.Failed = true
		}
		out = t.add(out, m, false)
	}
	return out
}

// eventText describes a server event; "" skips it.
func eventText(e events.Event) string {
	match := ""
	if e.Group != "" || e.Profile != "" {
		match = fmt.Sprintf(" (group=%s profile=%s)", e.Group, e.Profile)
	}
	var s string
	switch e.Source {
	case "dhcp":
		switch e.Step {
		case "ack", "proxy-offer":
			what := "DHCP ack " + e.IP
			if e.Step == "proxy-offer" {
				what = "proxyDHCP offer"
			}
			switch {
			case e.File != "" && e.Arch != "":
				s = fmt.Sprintf("%s (%s, boot file %s)", what, e.Arch, e.File)
			case e.Arch == "none" || e.Arch == "":
				s = what + " (an OS DHCP client: no boot file)"
			default:
				s = fmt.Sprintf("%s (%s)", what, e.Arch)
			}
		case "offer":
			return "" // the ack follows
		default:
			s = "DHCP " + e.Step
		}
	case "tftp":
		s = "TFTP " + e.File + " sent"
		if e.Error != "" {
			s = "TFTP " + e.File + " failed"
		}
	case "http":
		switch {
		case e.Error != "" && e.Step != "asset":
			// A machine request the server could not answer (its log has
			// the same reason).
			what := map[string]string{"ipxe": "ipxe script", "ignition": "Ignition config"}[e.Step]
			if what == "" {
				what = e.Step
			}
			return what + " failed" + match + ": " + e.Error
		}
		switch e.Step {
		case "boot.ipxe":
			s = "iPXE running: boot.ipxe served"
		case "ipxe":
			s = "ipxe script served" + match
		case "ignition":
			s = "Ignition config served" + match
		case "asset":
			// iPXE's own "… ok" on the serial port says when a download
			// finished; the start is noise unless it failed.
			if e.Error == "" {
				return ""
			}
			s = "download of " + e.File
		default:
			s = e.Step + " served" + match
		}
	case "agent":
		return "" // the report itself is read from /report, with its details
	default:
		s = e.Source + " " + e.Step
	}
	if e.Error != "" {
		s += ": " + e.Error
	}
	return s
}

// Serial-console patterns: iPXE, the Linux kernel, the agent, firmware.
var (
	reIPXEStart   = regexp.MustCompile(`^iPXE (initialising devices|\d+\.\d+)`)
	reDownloadOK  = regexp.MustCompile(`^(\S+)\.\.\. ?ok$`)
	reDownloadErr = regexp.MustCompile(`^(\S+)\.\.\. ?(.*?) ?\(https?://ipxe\.org/([0-9a-f]{8})\)`)
	reLinux       = regexp.MustCompile(`Linux version (\S+)`)
	reInit        = regexp.MustCompile(`Run (\S+) as init process`)
	rePanic       = regexp.MustCompile(`Kernel panic - not syncing: (.*)`)
	reStage       = regexp.MustCompile(`\bstage[=:]"?([a-z][a-z0-9_-]*)`)
	reLogin       = regexp.MustCompile(`^(\S+) login: ?$`)
)

// reportMarker starts the console line on which the agent prints its
// report as JSON.
const reportMarker = "KINDLING-REPORT "

// serial turns new serial output into milestones; now is when it was
// read.
func (t *tracker) serial(chunk []byte, now time.Time) []Milestone {
	var out []Milestone
	for _, line := range t.lines.feed(chunk) {
		if m, ok := t.serialLine(line, now); ok {
			out = t.add(out, m, true)
		}
	}
	return out
}

func (t *tracker) serialLine(line string, now time.Time) (Milestone, bool) {
	at := func(text string) (Milestone, bool) { return t.milestone(now, text), true }
	if i := strings.Index(line, reportMarker); i >= 0 {
		// The agent prints its report on the console too: the result is
		// known even when posting it to the server failed.
		return t.fromReport([]byte(line[i+len(reportMarker):]), now)
	}
	switch {
	case reIPXEStart.MatchString(line):
		if t.onceKey("ipxe-start") {
			return at("iPXE started")
		}
	case strings.Contains(line, "No bootable device") || strings.Contains(line, "No bootable option or device was found"):
		m, _ := at("no bootable device: network boot failed and the disk is empty")
		m.Final, m.Failed = true, true
		return m, true
	}
	if m := reDownloadErr.FindStringSubmatch(line); m != nil {
		what := t.downloadKind(m[1])
		status := ipxeError(m[2], m[3])
		ms, _ := at(fmt.Sprintf("%s download failed: %s %s", what, status, m[1]))
		ms.Final, ms.Failed = true, true
		switch {
		case what == "ipxe script" && strings.HasPrefix(status, "404"):
			ms.Hint = fmt.Sprintf("no group matches this machine: kindling select -data-path DIR mac=%s explains why", t.vm.MAC)
		case strings.HasPrefix(status, "404") && strings.Contains(m[1], "/assets/"):
			ms.Hint = "the profile names a file the server does not have: put it under DATA-PATH/assets/ (or -assets-path DIR); the embedded example names Fedora CoreOS files it does not ship"
		}
		return ms, true
	}
	if m := reDownloadOK.FindStringSubmatch(line); m != nil {
		switch what := t.downloadKind(m[1]); what {
		case "boot script":
			if t.onceKey("boot.ipxe") {
				return at("iPXE running: boot.ipxe fetched")
			}
		case "ipxe script":
			t.downloads = 0
		default:
			t.downloads++
			return at(fmt.Sprintf("%s downloaded (%s)", what, m[1]))
		}
		return Milestone{}, false
	}
	if m := reLinux.FindStringSubmatch(line); m != nil {
		return at("kernel booting (Linux " + m[1] + ")")
	}
	if m := reInit.FindStringSubmatch(line); m != nil {
		return at(m[1] + " started")
	}
	if m := rePanic.FindStringSubmatch(line); m != nil {
		ms, _ := at("kernel panic: " + strings.TrimSpace(m[1]))
		ms.Final, ms.Failed = true, true
		return ms, true
	}
	if strings.Contains(line, "reboot: Power down") {
		ms, _ := at("powered off")
		ms.Final = true
		return ms, true
	}
	if strings.Contains(line, "reboot: Restarting system") {
		t.downloads = 0
		return at("rebooting")
	}
	if m := reLogin.FindStringSubmatch(line); m != nil {
		ms, _ := at("login prompt (" + m[1] + ")")
		ms.Final = true
		return ms, true
	}
	if m := reStage.FindStringSubmatch(line); m != nil && m[1] != t.stage {
		t.stage = m[1]
		return at("agent stage " + m[1])
	}
	return Milestone{}, false
}

// downloadKind names what iPXE is fetching: its chain scripts by name,
// then, after the profile's script, the kernel and the initrds in order.
func (t *tracker) downloadKind(u string) string {
	base := u
	if i := strings.IndexAny(base, "?#"); i >= 0 {
		base = base[:i]
	}
	base = path.Base(base)
	switch {
	case base == "boot.ipxe" || base == "boot.ipxe.0":
		return "boot script"
	case base == "ipxe":
		return "ipxe script"
	case t.downloads == 0:
		return "kernel"
	}
	return "initrd"
}

// ipxeError turns iPXE's message for a failed download into the HTTP
// status it stands for where that is unambiguous (iPXE maps 404 to
// ENOENT and 403 to EACCES).
func ipxeError(msg, code string) string {
	switch msg {
	case "No such file or directory":
		return "404 not found"
	case "Permission denied":
		return "403 forbidden"
	}
	return fmt.Sprintf("%s (ipxe.org/%s)", msg, code)
}

// exited records the end of the machine's QEMU process.
func (t *tracker) exited(exit string, qemuLog string, now time.Time) Milestone {
	m := t.milestone(now, "machine stopped (qemu "+exit+")")
	if exit != "exit status 0" && !t.final {
		m.Failed = true
		if qemuLog != "" {
			m.Text += ": " + qemuLog
		}
		if strings.Contains(qemuLog, "romfile") {
			m.Hint = "QEMU has no iPXE ROM for virtio-net: install Debian's ipxe-qemu"
		}
	}
	m.Final = true
	if !t.final {
		t.final, t.finalAt = true, now
	}
	return m
}

// fromReport turns the agent's report into a final milestone: the body
// of GET /report?mac=… (the server's record, with the agent's report
// under "report") or the JSON of the agent's KINDLING-REPORT console
// line. "result" is success, failure or skipped; a failure names its
// stage, operation and error. Other shapes are read loosely (a success
// flag or status word). ok is false for a report already shown, one
// received before this boot, or no report at all.
func (t *tracker) fromReport(body []byte, now time.Time) (Milestone, bool) {
	b := bytes.TrimSpace(body)
	if len(b) == 0 || string(b) == t.report {
		return Milestone{}, false
	}
	var outer map[string]any
	if json.Unmarshal(b, &outer) != nil {
		return Milestone{}, false
	}
	at := now
	for _, k := range []string{"received", "time", "reported_at", "finished"} {
		if s, ok := outer[k].(string); ok {
			if ts, err := time.Parse(time.RFC3339Nano, s); err == nil {
				if ts.Before(t.vm.Started) {
					return Milestone{}, false // from an earlier boot
				}
				at = ts
				break
			}
		}
	}
	r := outer
	if inner, ok := outer["report"].(map[string]any); ok {
		r = inner
	}
	str := func(keys ...string) string {
		for _, m := range []map[string]any{r, outer} {
			for _, k := range keys {
				if s, ok := m[k].(string); ok && s != "" {
					return s
				}
			}
		}
		return ""
	}
	result := strings.ToLower(str("result", "status", "outcome"))
	for _, k := range []string{"success", "ok", "succeeded"} {
		if v, ok := r[k].(bool); ok && result == "" {
			result = map[bool]string{true: "success", false: "failure"}[v]
		}
	}
	switch result {
	case "succeeded", "ok", "done", "provisioned":
		result = "success"
	case "failed", "error":
		result = "failure"
	}
	errText := str("error", "message")
	if result == "" && errText != "" {
		result = "failure"
	}
	t.report = string(b)
	m := t.milestone(at, "")
	m.Final, m.report = true, true
	switch result {
	case "success":
		m.Text = "report: success"
		if ms, ok := r["duration_ms"].(float64); ok && ms > 0 {
			m.Text += fmt.Sprintf(" (agent ran %.1fs)", ms/1000)
		}
	case "skipped":
		m.Text = "report: skipped"
		if reason := str("reason"); reason != "" {
			m.Text += ": " + reason
		}
	case "failure":
		m.Failed = true
		m.Text = "report: failed"
		if st := str("stage", "failed_stage", "failedStage", "failing_stage"); st != "" {
			m.Text += " at stage " + st
		}
		if op := str("operation", "op"); op != "" {
			m.Text += " (" + op + ")"
		}
		if errText != "" {
			m.Text += ": " + errText
		}
	default:
		raw := string(b)
		if len(raw) > 160 {
			raw = raw[:160] + "…"
		}
		m.Text = "report received: " + raw
	}
	return m, true
}

// serialLines splits serial output into logical lines: escape sequences
// and other control characters removed, backspaces and carriage returns
// applied, and lines that the BIOS console wrapped at 80 columns joined
// again.
type serialLines struct {
	partial []byte
	pending string // an 80-column line waiting for its continuation
}

const maxLine = 64 << 10

func (s *serialLines) feed(b []byte) []string {
	s.partial = append(s.partial, b...)
	var out []string
	for {
		i := bytes.IndexByte(s.partial, '\n')
		if i < 0 {
			if len(s.partial) < maxLine {
				break
			}
			i = len(s.partial) // a runaway line: cut it
		}
		raw := s.partial[:i]
		if i < len(s.partial) {
			i++
		}
		s.partial = s.partial[i:]
		line := cleanLine(raw)
		joined := s.pending + line
		s.pending = ""
		if utf8.RuneCountInString(line) == 80 {
			s.pending = joined
			continue
		}
		out = append(out, joined)
	}
	if len(s.partial) == 0 {
		s.partial = nil
	}
	return out
}

// cleanLine renders one raw serial line as a terminal would show it.
func cleanLine(raw []byte) string {
	raw = bytes.TrimRight(raw, "\r")
	var b []rune
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == 0x1b: // ESC: a CSI sequence ESC [ params final, or ESC + one byte
			i++
			if i < len(raw) && raw[i] == '[' {
				i++
				for i < len(raw) && (raw[i] < 0x40 || raw[i] > 0x7e) {
					i++
				}
			}
			i++
			continue
		case c == '\b':
			if len(b) > 0 {
				b = b[:len(b)-1]
			}
		case c == '\r':
			b = b[:0]
		case c == '\t':
			b = append(b, ' ')
		case c < 0x20 || c == 0x7f:
		default:
			r, n := utf8.DecodeRune(raw[i:])
			b = append(b, r)
			i += n
			continue
		}
		i++
	}
	return strings.TrimRight(string(b), " ")
}

// progressLog appends milestones to DIR/progress.jsonl, one JSON object
// per line.
type progressLog struct {
	mu sync.Mutex
	f  *os.File
}

func openProgress(dir string) (*progressLog, error) {
	f, err := os.OpenFile(dir+"/"+progressFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &progressLog{f: f}, nil
}

func (p *progressLog) add(ms ...Milestone) {
	p.mu.Lock()
	defer p.mu.Unlock()
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].Time.Before(ms[j].Time) })
	var buf bytes.Buffer
	for _, m := range ms {
		b, err := json.Marshal(m)
		if err != nil {
			continue
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	p.f.Write(buf.Bytes())
}

func (p *progressLog) note(format string, args ...any) {
	p.add(Milestone{Time: time.Now(), Text: fmt.Sprintf(format, args...)})
}

func (p *progressLog) close() error { return p.f.Close() }

// readProgress reads the milestones after byte offset off of
// DIR/progress.jsonl, complete lines only, and the offset to continue
// from.
func readProgress(dir string, off int64) ([]Milestone, int64, error) {
	f, err := os.Open(dir + "/" + progressFile)
	if err != nil {
		return nil, off, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, off, err
	}
	r := bufio.NewReader(f)
	var out []Milestone
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // a partial last line is read next time
		}
		off += int64(len(line))
		var m Milestone
		if json.Unmarshal(line, &m) == nil {
			out = append(out, m)
		}
	}
	return out, off, nil
}
