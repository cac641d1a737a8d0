package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// VMResult is how far one machine got.
type VMResult struct {
	Name string
	MAC  string
	// Last is the machine's latest milestone (zero before the first).
	Last Milestone
	// Final is set once the machine reached a final milestone; Failed
	// says whether that one was a failure.
	Final  bool
	Failed bool
}

// Summary is where Watch left the machines.
type Summary struct {
	Dir string
	VMs []VMResult
	// Waited is how long Watch waited; TimedOut is set when it gave up
	// before every machine finished, Interrupted when its context ended.
	Waited      time.Duration
	TimedOut    bool
	Interrupted bool
}

// Counts returns how many machines finished well, failed, and have not
// finished.
func (s Summary) Counts() (ok, failed, pending int) {
	for _, v := range s.VMs {
		switch {
		case !v.Final:
			pending++
		case v.Failed:
			failed++
		default:
			ok++
		}
	}
	return ok, failed, pending
}

// Err is nil when every machine finished without a failure.
func (s Summary) Err() error {
	_, failed, pending := s.Counts()
	var names []string
	for _, v := range s.VMs {
		if !v.Final || v.Failed {
			names = append(names, v.Name)
		}
	}
	switch {
	case failed > 0:
		return fmt.Errorf("%d of %s failed (%s)", failed, plural(len(s.VMs), "machine"), strings.Join(names, " "))
	case pending > 0 && s.TimedOut:
		return fmt.Errorf("%d of %s did not finish within %v (%s)", pending, plural(len(s.VMs), "machine"), s.Waited.Round(time.Second), strings.Join(names, " "))
	case pending > 0:
		return fmt.Errorf("%d of %s have not finished (%s)", pending, plural(len(s.VMs), "machine"), strings.Join(names, " "))
	}
	return nil
}

// Write prints the summary: one line for the lab, one per machine.
func (s Summary) Write(w io.Writer) {
	ok, failed, pending := s.Counts()
	how := ""
	switch {
	case s.TimedOut:
		how = fmt.Sprintf(" (gave up waiting after %v)", s.Waited.Round(time.Second))
	case s.Interrupted:
		how = " (stopped watching)"
	}
	fmt.Fprintf(w, "lab: %s: %d ok, %d failed, %d not finished%s\n", plural(len(s.VMs), "machine"), ok, failed, pending, how)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, v := range s.VMs {
		state := "booting"
		switch {
		case v.Final && v.Failed:
			state = "FAILED"
		case v.Final:
			state = "ok"
		}
		last := v.Last.Text
		if last == "" {
			last = "(no milestone yet)"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%.1fs\t%s\n", v.Name, v.MAC, state, v.Last.Elapsed.Seconds(), last)
	}
	tw.Flush()
}

// Watch prints the lab's milestones to w as the supervisor records them,
// from the first, until every machine has reached a final milestone, the
// lab stops or fails, timeout passes (0: no limit) or ctx ends. The lab
// keeps running in every case.
func Watch(ctx context.Context, dir string, w io.Writer, timeout time.Duration) (Summary, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return Summary{}, err
	}
	sum := Summary{Dir: dir}
	if _, err := ReadState(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return sum, fmt.Errorf("%w in %s (start one with kindling lab up -dir %s)", errNoLab, dir, dir)
		}
		return sum, err
	}
	start := time.Now()
	var deadline <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		deadline = t.C
	}
	results := map[string]*VMResult{}
	var off int64
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var ms []Milestone
		ms, off, _ = readProgress(dir, off)
		for _, m := range ms {
			fmt.Fprintln(w, m.String())
			if m.VM == "" {
				continue
			}
			r := results[m.VM]
			if r == nil {
				r = &VMResult{Name: m.VM, MAC: m.MAC}
				results[m.VM] = r
			}
			// Once final, the summary keeps the final milestone, not the
			// machine stopping after it.
			if !r.Final {
				r.Last = m
				r.Final, r.Failed = m.Final, m.Failed
			}
		}
		st, err := ReadState(dir)
		if err != nil {
			return sum, fmt.Errorf("reading the lab state: %w", err)
		}
		sum.VMs = sum.VMs[:0]
		all := st.Phase == PhaseRunning && len(st.VMs) > 0
		for _, vm := range st.VMs {
			r := results[vm.Name]
			if r == nil {
				r = &VMResult{Name: vm.Name, MAC: vm.MAC}
			}
			sum.VMs = append(sum.VMs, *r)
			all = all && r.Final
		}
		sum.Waited = time.Since(start)
		switch {
		case st.Phase == PhaseFailed:
			return sum, fmt.Errorf("the lab failed to start: %s", st.Error)
		case st.Phase == PhaseStopping || st.Phase == PhaseStopped:
			return sum, errors.New("the lab was stopped")
		case all:
			return sum, nil
		case !locked(dir):
			// Read what it wrote last before saying it is gone.
			ms, off, _ = readProgress(dir, off)
			for _, m := range ms {
				fmt.Fprintln(w, m.String())
			}
			return sum, fmt.Errorf("the lab supervisor is not running; see %s, and clean up with kindling lab down -dir %s", filepath.Join(dir, labLog), dir)
		}
		select {
		case <-ctx.Done():
			sum.Interrupted = true
			return sum, nil
		case <-deadline:
			sum.TimedOut = true
			return sum, nil
		case <-tick.C:
		}
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
