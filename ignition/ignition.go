package ignition

import (
	"context"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/coreos/ignition/v2/config/v3_6/types"

	"github.com/kindlingboot/kindling/ignition/boot"
	"github.com/kindlingboot/kindling/ignition/config"
	"github.com/kindlingboot/kindling/ignition/fetch"
	"github.com/kindlingboot/kindling/ignition/stages"
)

// Mode selects which stages a run goes through.
type Mode int

const (
	// ModeRun runs every stage: fetch, disks, mount, files, umount, report.
	ModeRun Mode = iota
	// ModeApply applies only files, passwd and systemd to an already
	// mounted root or image directory.
	ModeApply
	// ModePlan reads what exists and records what ModeRun (with
	// Config.Disks) or ModeApply would change, touching nothing.
	ModePlan
)

// Config says what to run, against what.
type Config struct {
	Mode Mode
	// Root is the target root directory. Required.
	Root string
	// Source is a config file path or URL (http, https, tftp, data). Empty
	// means the kernel command line: ignition.config.url=, or
	// ignition.config.device= with ignition.config.path=.
	Source string
	// Cmdline is the kernel command line (the caller reads /proc/cmdline).
	Cmdline boot.Cmdline
	// Firstboot says this is the machine's first boot even without
	// ignition.firstboot on the command line. ModeRun does nothing unless
	// it is the first boot.
	Firstboot bool
	// Force runs even when Root is already provisioned.
	Force bool
	// Disks, in ModePlan, includes the storage stages in the plan.
	Disks bool
	// ReportURL receives the report as a POST; empty means
	// kindling.report.url= from the command line, or no POST.
	ReportURL string
	// Log receives progress; nil discards.
	Log *slog.Logger
	// Console receives the final report (human line + JSON); nil discards.
	Console io.Writer
	// Plan receives the actions in ModePlan. Required in ModePlan.
	Plan *stages.Plan
	// Agent names the agent in the report, e.g. "ignite v1.2.3".
	Agent string
	// ConfigTimeout bounds fetching the config itself, retries included, so
	// a server that keeps failing ends in a reported failure; 0 means 2 min.
	ConfigTimeout time.Duration
	// HTTPClient posts the report; nil means a client with a 10 s timeout.
	HTTPClient *http.Client
	// Install, when set, writes an OS image to a disk before the disks
	// stage and mounts its root at Root. ModeRun only.
	Install func(ctx context.Context, log *slog.Logger) (*InstallSummary, error)
	// ProbeDevices are block devices that may hold an already provisioned
	// root (e.g. the root of an earlier install). Like the config's
	// filesystems mounted at / or /etc, each is mounted read-only before any
	// disk is touched, and a result file there makes the run a no-op.
	ProbeDevices []string
	// KeepRootMounted leaves the config's filesystem for / mounted at Root
	// after a successful run, for a switch into it.
	KeepRootMounted bool
}

// ErrInvalidConfig marks a config that does not parse or validate: a
// usage error (exit code 2), not a provisioning failure.
var ErrInvalidConfig = errors.New("invalid config")

// ResultFile is where a successful run records itself, inside the root.
const ResultFile = "/etc/.ignition-result.json"

// Run runs the stages the mode selects and returns the report. The error
// is nil on success and when there was nothing to do; otherwise it is the
// failure (which the report also describes). The report is printed to
// Console and posted to the report URL in every case, failure included.
func Run(ctx context.Context, c Config) (*Report, error) {
	r := &runner{c: c, log: c.Log, report: &Report{Started: time.Now().UTC(), Agent: c.Agent, Root: c.Root, Stages: []StageTime{}}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.report.Hostname, _ = os.Hostname()
	err := r.run(ctx)
	r.finish(ctx, err)
	return r.report, err
}

type runner struct {
	c      Config
	log    *slog.Logger
	report *Report
	f      *fetch.Fetcher
	cfg    types.Config
}

func (r *runner) run(ctx context.Context) error {
	c := r.c
	if c.Root == "" {
		return fmt.Errorf("%w: no target root given", ErrInvalidConfig)
	}
	if c.Mode == ModeRun && !c.Firstboot && !c.Cmdline.Has("ignition.firstboot") {
		r.report.Result = ResultSkipped
		r.report.Reason = "not the first boot (no ignition.firstboot on the kernel command line, no -firstboot)"
		return nil
	}
	if c.Mode != ModePlan && !c.Force {
		if done, err := r.provisioned(); done {
			r.report.Result = ResultSkipped
			r.report.Reason = fmt.Sprintf("%s is already provisioned (%s exists; -force runs again)", c.Root, ResultFile)
			return nil
		} else if err != nil {
			return err
		}
	}

	if err := r.stage(ctx, "fetch", r.fetch); err != nil {
		return err
	}
	// In an initramfs Root is empty until the mount stage, so look for a
	// result file on the disks themselves before the disks stage may wipe
	// them: a PXE profile passes ignition.firstboot on every boot.
	if c.Mode == ModeRun && !c.Force {
		where, done, err := r.provisionedOnDisk(ctx)
		if err != nil {
			r.report.Stage = "disks"
			return fmt.Errorf("%w; nothing was changed (-force skips this check)", err)
		}
		if done {
			r.report.Result = ResultSkipped
			r.report.Reason = fmt.Sprintf("%s already holds %s (-force runs again)", where, ResultFile)
			if c.KeepRootMounted {
				// The boot goes on into the provisioned root.
				return r.stage(ctx, "mount", func(context.Context) error { return r.remountRoot() })
			}
			return nil
		}
	}
	env := &stages.Env{Root: c.Root, Log: r.log, Fetch: r.f, Plan: c.Plan}
	if c.Mode == ModePlan && c.Plan == nil {
		return fmt.Errorf("plan mode needs a Plan")
	}

	var unmount stages.Unmount
	if c.Mode == ModeRun && c.Install != nil {
		if err := r.stage(ctx, "install", func(ctx context.Context) error {
			sum, err := c.Install(ctx, r.log)
			r.report.Install = sum
			return err
		}); err != nil {
			return err
		}
	}
	if c.Mode == ModeRun || (c.Mode == ModePlan && c.Disks) {
		if err := r.stage(ctx, "disks", func(ctx context.Context) error {
			return stages.Disks(ctx, env, r.cfg.Storage)
		}); err != nil {
			return err
		}
	}
	if c.Mode == ModeRun {
		if err := r.stage(ctx, "mount", func(ctx context.Context) error {
			var err error
			unmount, err = stages.Mount(ctx, env, r.cfg.Storage)
			return err
		}); err != nil {
			if unmount != nil {
				r.unmount(ctx, unmount)
			}
			return err
		}
		// In an initramfs the root is only there once mounted: check again.
		if !c.Force {
			if done, _ := r.provisioned(); done {
				r.report.Result = ResultSkipped
				r.report.Reason = fmt.Sprintf("%s is already provisioned (%s exists; -force runs again)", c.Root, ResultFile)
				if c.KeepRootMounted {
					return nil // mounted, and the boot goes on into it
				}
				r.unmount(ctx, unmount)
				return nil
			}
		}
	}
	filesErr := r.stage(ctx, "files", func(ctx context.Context) error {
		if err := stages.Files(ctx, env, r.cfg); err != nil {
			return err
		}
		if c.Mode == ModePlan {
			return nil
		}
		return r.writeResult()
	})
	if c.Mode == ModeRun {
		// Unmount even after a failure, so the disk is consistent.
		umountErr := r.stage(ctx, "umount", func(ctx context.Context) error {
			if err := unmount(ctx); err != nil {
				return err
			}
			if c.KeepRootMounted && filesErr == nil {
				return r.remountRoot()
			}
			return nil
		})
		if filesErr == nil {
			filesErr = umountErr
		}
	}
	return filesErr
}

// stage runs one stage, timing it and marking the report on failure.
func (r *runner) stage(ctx context.Context, name string, fn func(context.Context) error) error {
	start := time.Now()
	r.log.Info("stage started", "stage", name)
	err := fn(ctx)
	st := StageTime{Name: name, Result: ResultSuccess, DurationMS: time.Since(start).Milliseconds()}
	if err != nil {
		st.Result = ResultFailure
		var oe *stages.OpError
		if errors.As(err, &oe) && oe.Stage == "" {
			oe.Stage = name
		}
		if r.report.Stage == "" {
			r.report.Stage = name
			if oe != nil {
				r.report.Operation = oe.Op
			}
		}
		r.log.Error("stage failed", "stage", name, "err", err)
	} else {
		r.log.Info("stage finished", "stage", name, "ms", st.DurationMS)
	}
	r.report.Stages = append(r.report.Stages, st)
	return err
}

func (r *runner) unmount(ctx context.Context, u stages.Unmount) {
	if u == nil {
		return
	}
	if err := u(ctx); err != nil {
		r.log.Error("unmounting", "err", err)
	}
}

// fetch acquires, parses and renders the config.
func (r *runner) fetch(ctx context.Context) error {
	f, err := fetch.New(fetch.Options{Log: r.log})
	if err != nil {
		return err
	}
	r.f = f
	data, where, err := r.acquire(ctx)
	if err != nil {
		return err
	}
	r.report.Config = where
	sum := sha512.Sum512(data)
	r.report.ConfigSHA512 = hex.EncodeToString(sum[:])
	cfg, problems, err := config.Parse(data)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidConfig, where, err)
	}
	for _, p := range problems {
		r.report.Warnings = append(r.report.Warnings, p.String())
		r.log.Warn("config warning", "warning", p.String())
	}
	cfg, err = config.Render(ctx, cfg, f, r.log)
	if err != nil {
		return fmt.Errorf("rendering %s: %w", where, err)
	}
	if err := config.CheckSources(cfg); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidConfig, where, err)
	}
	r.cfg = cfg
	return nil
}

// acquire reads the raw config from Source or the kernel command line.
func (r *runner) acquire(ctx context.Context) ([]byte, string, error) {
	src := r.c.Source
	if src == "" {
		src = r.c.Cmdline.Value("ignition.config.url")
	}
	if src != "" {
		if !strings.Contains(src, ":") || strings.HasPrefix(src, "/") || strings.HasPrefix(src, ".") {
			data, err := os.ReadFile(src)
			if err != nil {
				return nil, src, fmt.Errorf("reading config: %w", err)
			}
			return data, src, nil
		}
		where := fetch.Redact(src)
		r.log.Info("fetching config", "url", where)
		limit := r.c.ConfigTimeout
		if limit == 0 {
			limit = 2 * time.Minute
		}
		fctx, cancel := context.WithTimeout(ctx, limit)
		defer cancel()
		data, err := r.f.FetchURL(fctx, src)
		if err != nil && ctx.Err() == nil && fctx.Err() != nil {
			err = fmt.Errorf("gave up after %s: %w", limit, err)
		}
		if err != nil {
			return nil, where, fmt.Errorf("fetching config %s: %w", where, err)
		}
		return data, where, nil
	}
	dev, path := r.c.Cmdline.Value("ignition.config.device"), r.c.Cmdline.Value("ignition.config.path")
	switch {
	case dev != "" && path != "":
		return readFromDevice(ctx, r.log, dev, path)
	case dev != "" || path != "":
		return nil, "", fmt.Errorf("%w: ignition.config.device= and ignition.config.path= must be given together", ErrInvalidConfig)
	}
	return nil, "", fmt.Errorf("%w: no config: give -config FILE|URL, or ignition.config.url= (or ignition.config.device= and ignition.config.path=) on the kernel command line", ErrInvalidConfig)
}

// provisioned reports whether the root already has a result file.
func (r *runner) provisioned() (bool, error) {
	_, err := os.Lstat(filepath.Join(r.c.Root, ResultFile))
	if err == nil {
		return true, nil
	}
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return false, fmt.Errorf("checking %s: %w", ResultFile, err)
}

// writeResult records the successful run in the root, atomically, as the
// last write of the files stage: a crash before it leaves no result file,
// so a half-applied root is never reported as provisioned.
func (r *runner) writeResult() error {
	res := map[string]any{
		"provisioningDate":   time.Now().UTC().Format(time.RFC3339),
		"userConfigProvided": true,
		"agent":              r.c.Agent,
	}
	if id, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		res["provisioningBootID"] = strings.TrimSpace(string(id))
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	root, err := os.OpenRoot(r.c.Root)
	if err != nil {
		return stages.Fail("writing "+ResultFile, err)
	}
	defer root.Close()
	if err := root.MkdirAll("etc", 0o755); err != nil {
		return stages.Fail("writing "+ResultFile, err)
	}
	tmp := ResultFile[1:] + ".tmp"
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return stages.Fail("writing "+ResultFile, err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = root.Rename(tmp, ResultFile[1:])
	}
	if err != nil {
		root.Remove(tmp)
		return stages.Fail("writing "+ResultFile, err)
	}
	if d, err := root.Open("etc"); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// finish completes the report, prints it and posts it.
func (r *runner) finish(ctx context.Context, err error) {
	rep := r.report
	rep.DurationMS = time.Since(rep.Started).Milliseconds()
	switch {
	case err != nil:
		rep.Result = ResultFailure
		rep.Error = err.Error()
		if rep.Stage == "" {
			rep.Stage = "fetch"
		}
	case rep.Result == "":
		rep.Result = ResultSuccess
	}
	if r.c.Mode == ModePlan {
		return
	}
	r.report.Stages = append(r.report.Stages, StageTime{Name: "report", Result: ResultSuccess})
	if r.c.Console != nil {
		rep.Print(r.c.Console)
	}
	url := r.c.ReportURL
	if url == "" {
		url = r.c.Cmdline.Value("kindling.report.url")
	}
	if url == "" {
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if perr := rep.Post(pctx, r.c.HTTPClient, url); perr != nil {
		r.log.Error("report not delivered", "url", fetch.Redact(url), "err", perr)
		return
	}
	r.log.Info("report delivered", "url", fetch.Redact(url), "result", rep.Result)
}
