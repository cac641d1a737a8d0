// Package stages applies the parts of an Ignition config to a machine: one
// file per stage (disks, raid, luks, filesystems, mount, files, passwd,
// systemd). Every write to the target system is made under Env.Root; every
// external tool is found on PATH through Env.Tool, and a missing one is an
// error naming the Debian package that provides it.
//
// Stages never print: they log through Env.Log and return an *OpError
// naming the operation that failed. In plan mode (Env.Plan non-nil) they
// read what exists, record what they would change in the plan, and touch
// nothing.
package stages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"

	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// Fetcher fetches a resource of the config: a file's contents or append,
// a LUKS key file. It applies the resource's compression and verifies its
// hash; its errors never contain the resource's contents (data URLs are
// redacted).
type Fetcher interface {
	Fetch(ctx context.Context, r types.Resource) ([]byte, error)
}

// Env is what every stage works with.
type Env struct {
	// Root is the target root directory; every path of the config is
	// resolved inside it and nothing is written outside it (devices
	// excepted). Required.
	Root string
	// Log receives one line per operation. Nil discards.
	Log *slog.Logger
	// Fetch fetches resources. Nil makes any resource with a source an error.
	Fetch Fetcher
	// Plan, when non-nil, puts the stages in plan mode: they record what
	// they would do here and change nothing.
	Plan *Plan
	// LookPath finds external tools; nil means exec.LookPath. Tests set it
	// to hide a tool.
	LookPath func(name string) (string, error)
}

// Plan is the list of changes a run would make, in order.
type Plan struct {
	Actions []Action
}

// Action is one change (or one deliberate non-change) a run would make.
type Action struct {
	Stage  string `json:"stage"`  // "disks", "filesystems", "files", "passwd", "systemd", …
	Verb   string `json:"verb"`   // "create", "delete", "keep", "resize", "format", "reuse", "write", "append", "link", "mkdir", "chmod", "enable", "mask", …
	Target string `json:"target"` // the device, path, user, group or unit
	Detail string `json:"detail,omitempty"`
}

// Record adds an action to the plan (a no-op outside plan mode).
func (e *Env) Record(stage, verb, target, detail string) {
	if e.Plan == nil {
		return
	}
	e.Plan.Actions = append(e.Plan.Actions, Action{Stage: stage, Verb: verb, Target: target, Detail: detail})
}

// Planning reports whether the stages must not change anything.
func (e *Env) Planning() bool { return e.Plan != nil }

// Logger returns Log, or a logger that discards.
func (e *Env) Logger() *slog.Logger {
	if e.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Log
}

// OpError is a failed operation: what was being done, and why it failed.
// Its message must never contain secrets (file contents, key files,
// password hashes).
type OpError struct {
	Stage string // filled by the runner when empty
	Op    string // e.g. "creating partition 1 (root) on /dev/vda"
	Err   error
}

func (e *OpError) Error() string {
	if e.Stage == "" {
		return e.Op + ": " + e.Err.Error()
	}
	return e.Stage + ": " + e.Op + ": " + e.Err.Error()
}

func (e *OpError) Unwrap() error { return e.Err }

// Failf returns an *OpError for op with a formatted cause.
func Failf(op string, format string, args ...any) error {
	return &OpError{Op: op, Err: fmt.Errorf(format, args...)}
}

// Fail wraps err as the failure of op; a nil err stays nil.
func Fail(op string, err error) error {
	if err == nil {
		return nil
	}
	var oe *OpError
	if errors.As(err, &oe) {
		return err
	}
	return &OpError{Op: op, Err: err}
}

// toolPackages names the Debian package that provides each tool the
// stages call.
var toolPackages = map[string]string{
	"sgdisk":     "gdisk",
	"partx":      "util-linux",
	"wipefs":     "util-linux",
	"blkid":      "util-linux",
	"mount":      "mount",
	"umount":     "mount",
	"mkswap":     "util-linux",
	"mkfs.ext4":  "e2fsprogs",
	"mkfs.xfs":   "xfsprogs",
	"mkfs.btrfs": "btrfs-progs",
	"mkfs.fat":   "dosfstools",
	"mdadm":      "mdadm",
	"cryptsetup": "cryptsetup-bin",
	"udevadm":    "udev",
	"modprobe":   "kmod",
}

// ToolPackage returns the Debian package that provides tool, or "".
func ToolPackage(tool string) string { return toolPackages[tool] }

// Tool returns the path of an external tool, or an error naming the
// package to install.
func (e *Env) Tool(name string) (string, error) {
	look := e.LookPath
	if look == nil {
		look = exec.LookPath
	}
	p, err := look(name)
	if err != nil {
		if pkg := toolPackages[name]; pkg != "" {
			return "", fmt.Errorf("%s not found on PATH (install the %s package)", name, pkg)
		}
		return "", fmt.Errorf("%s not found on PATH", name)
	}
	return p, nil
}

// Command runs an external tool and returns its standard output. A
// failure's error carries the command line and the last lines of its
// standard error. stdin may be nil. Callers must not pass secrets as
// arguments (use stdin or a key file).
func (e *Env) Command(ctx context.Context, stdin io.Reader, name string, args ...string) ([]byte, error) {
	path, err := e.Tool(name)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	e.Logger().Debug("running", "cmd", name+" "+strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = "…" + msg[len(msg)-2000:]
		}
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.Bytes(), nil
}
