package ignition

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Result values of a Report.
const (
	ResultSuccess = "success" // every stage ran
	ResultFailure = "failure" // a stage failed; Stage, Operation and Error say where
	ResultSkipped = "skipped" // nothing to do (not first boot, or already provisioned)
)

// Report is the one machine-readable summary every run ends with. It is
// printed to the console and POSTed to the report URL. It never carries
// config contents or secrets: errors name operations, paths and devices.
type Report struct {
	Result    string `json:"result"`
	Stage     string `json:"stage,omitempty"`     // the failing stage
	Operation string `json:"operation,omitempty"` // the failing operation within it
	Error     string `json:"error,omitempty"`
	// Reason explains a skipped run.
	Reason string `json:"reason,omitempty"`
	// Stages lists every stage that ran, in order, with its duration.
	Stages     []StageTime `json:"stages"`
	Started    time.Time   `json:"started"`
	DurationMS int64       `json:"duration_ms"`
	// Config is where the config came from (URL with secrets redacted, or
	// a file path); ConfigSHA512 is the hash of its raw bytes.
	Config       string `json:"config,omitempty"`
	ConfigSHA512 string `json:"config_sha512,omitempty"`
	Root         string `json:"root,omitempty"`
	// Agent is the agent's name and version, e.g. "ignite dev".
	Agent    string `json:"agent"`
	Hostname string `json:"hostname,omitempty"`
	// Warnings are the config's validation warnings.
	Warnings []string `json:"warnings,omitempty"`
	// Install describes an image installation, when one ran.
	Install *InstallSummary `json:"install,omitempty"`
}

// StageTime is one stage's outcome and duration.
type StageTime struct {
	Name       string `json:"name"`
	Result     string `json:"result"` // success, failure
	DurationMS int64  `json:"duration_ms"`
}

// InstallSummary describes an OS image written to disk.
type InstallSummary struct {
	Device   string  `json:"device"`
	Image    string  `json:"image"`
	Bytes    int64   `json:"bytes"`
	MBPerSec float64 `json:"mb_per_sec"`
	Root     string  `json:"root,omitempty"`
}

// Print writes the report as one line of JSON prefixed by a marker that is
// easy to find in a serial log, and a human summary line before it.
func (r *Report) Print(w io.Writer) {
	switch r.Result {
	case ResultSuccess:
		fmt.Fprintf(w, "ignite: provisioning succeeded in %s\n", time.Duration(r.DurationMS)*time.Millisecond)
	case ResultSkipped:
		fmt.Fprintf(w, "ignite: nothing to do: %s\n", r.Reason)
	default:
		fmt.Fprintf(w, "ignite: PROVISIONING FAILED in stage %s: %s\n", r.Stage, r.Error)
	}
	b, _ := json.Marshal(r)
	fmt.Fprintf(w, "KINDLING-REPORT %s\n", b)
}

// maxPost keeps a posted report under the server's 64 KiB limit.
const maxPost = 60 << 10

// bounded is r, shortened when it would be too big to post: at most 20
// warnings and 4 KiB of error text.
func (r *Report) bounded() *Report {
	if b, err := json.Marshal(r); err == nil && len(b) <= maxPost {
		return r
	}
	c := *r
	if len(c.Warnings) > 20 {
		c.Warnings = append(c.Warnings[:20:20], fmt.Sprintf("… and %d more warnings (see the console)", len(r.Warnings)-20))
	}
	for i, w := range c.Warnings {
		if len(w) > 1024 {
			c.Warnings[i] = w[:1024] + "…"
		}
	}
	if len(c.Error) > 4096 {
		c.Error = c.Error[:4096] + "… (truncated; see the console)"
	}
	return &c
}

// Post sends the report to url as JSON, retrying a few times with backoff
// (the network may be flaky at boot). It gives up when ctx ends.
func (r *Report) Post(ctx context.Context, client *http.Client, url string) error {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	body, err := json.Marshal(r.bounded())
	if err != nil {
		return err
	}
	var last error
	delay := 250 * time.Millisecond
	for attempt := 0; attempt < 6; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("posting report: %w (last error: %v)", ctx.Err(), last)
			case <-time.After(delay):
			}
			delay = min(delay*2, 4*time.Second)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return fmt.Errorf("posting report: %w", err)
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			last = err
			continue
		}
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		if resp.StatusCode/100 == 2 {
			return nil
		}
		last = fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(msg))
		if resp.StatusCode/100 == 4 {
			break // the server will not change its mind
		}
	}
	return fmt.Errorf("posting report: %w", last)
}
