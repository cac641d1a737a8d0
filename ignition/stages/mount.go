package stages

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	cutil "github.com/coreos/ignition/v2/config/util"
	"github.com/coreos/ignition/v2/config/v3_6/types"
	"golang.org/x/sys/unix"
)

// Unmount unmounts what Mount mounted, deepest first. It is safe to call
// after a Mount that failed half way, and again after a failure (it then
// retries what is still mounted).
type Unmount func(ctx context.Context) error

// Mount mounts, shallowest first, every filesystem of the config that has
// a path and a mountable format (not swap or none) at env.Root+path, with
// `mount -t FORMAT [-o mountOptions]`. Missing mount point directories are
// made (0755); a mount path with a component that exists and is not a
// directory (a symlink included) is an error, so a mount never leaves the
// root. Then, when the config has LUKS volumes, it writes their key files
// and /etc/crypttab entries into the root (see writeLuksFiles): the files
// stage must not write them again.
//
// The returned Unmount is never nil, also on error. In plan mode Mount
// records the mounts and mounts nothing.
func Mount(ctx context.Context, env *Env, s types.Storage) (Unmount, error) {
	m := &mounter{env: env}
	var fss []types.Filesystem
	for _, f := range s.Filesystems {
		if cutil.NotEmpty(f.Path) && cutil.NotEmpty(f.Format) && *f.Format != "swap" && *f.Format != "none" {
			fss = append(fss, f)
		}
	}
	sort.SliceStable(fss, func(i, j int) bool { return mountDepth(*fss[i].Path) < mountDepth(*fss[j].Path) })
	if len(fss) > 0 || len(s.Luks) > 0 {
		if env.Root == "" {
			return m.unmount, Failf("mounting filesystems", "the target root is not set")
		}
	}
	r := &diskRun{env: env, planned: map[string]blockRef{}}
	for _, f := range fss {
		if err := m.mount(ctx, r, f); err != nil {
			return m.unmount, err
		}
	}
	if err := writeLuksFiles(ctx, env, s); err != nil {
		return m.unmount, err
	}
	return m.unmount, nil
}

// mountDepth counts the components of a clean absolute path ("/" is 0).
func mountDepth(p string) int {
	p = strings.Trim(path.Clean("/"+p), "/")
	if p == "" {
		return 0
	}
	return strings.Count(p, "/") + 1
}

type mounter struct {
	env     *Env
	mounted []string // targets, in mount order
}

func (m *mounter) mount(ctx context.Context, r *diskRun, f types.Filesystem) error {
	rel := path.Clean("/" + *f.Path)
	op := fmt.Sprintf("mounting %s at %s", f.Device, rel)
	var opts []string
	for _, o := range f.MountOptions {
		opts = append(opts, string(o))
	}
	detail := *f.Format + " filesystem on " + f.Device
	if len(opts) > 0 {
		detail += ", options " + strings.Join(opts, ",")
	}
	if m.env.Planning() {
		m.env.Record("mount", "mount", rel, detail)
		return nil
	}
	root, err := filepath.EvalSymlinks(m.env.Root)
	if err != nil {
		return Fail(op, fmt.Errorf("target root: %w", err))
	}
	ref, err := r.device(ctx, f.Device)
	if err != nil {
		return Fail(op, err)
	}
	if err := makeMountPoint(root, rel); err != nil {
		return Fail(op, err)
	}
	target := filepath.Join(root, rel)
	args := []string{"-t", *f.Format}
	if len(opts) > 0 {
		args = append(args, "-o", strings.Join(opts, ","))
	}
	if _, err := m.env.Command(ctx, nil, "mount", append(args, ref.Path, target)...); err != nil {
		return Fail(op, err)
	}
	m.mounted = append(m.mounted, target)
	m.env.Logger().Info("mounted", "device", f.Device, "path", rel)
	return nil
}

// makeMountPoint makes the directories of rel inside root (0755), refusing
// any existing component that is not a directory.
func makeMountPoint(root, rel string) error {
	r, err := os.OpenRoot(root)
	if err != nil {
		return fmt.Errorf("target root: %w", err)
	}
	defer r.Close()
	cur := ""
	for _, c := range strings.Split(strings.Trim(rel, "/"), "/") {
		if c == "" {
			continue
		}
		cur = path.Join(cur, c)
		st, err := r.Lstat(cur)
		switch {
		case err == nil:
			if !st.IsDir() {
				return fmt.Errorf("mount path %s has a component that is not a directory: /%s is a %s", rel, cur, mountPathKind(st.Mode()))
			}
		case errors.Is(err, fs.ErrNotExist):
			if err := r.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("making mount point /%s: %w", cur, err)
			}
		default:
			return err
		}
	}
	return nil
}

func mountPathKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "symlink"
	case m.IsRegular():
		return "regular file"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// unmount unmounts deepest first, retrying a busy mount for a few seconds;
// what fails stays listed for another call.
func (m *mounter) unmount(ctx context.Context) error {
	var errs []error
	var left []string
	for i := len(m.mounted) - 1; i >= 0; i-- {
		t := m.mounted[i]
		if err := unmountBusy(ctx, t); err != nil {
			errs = append(errs, Fail("unmounting "+t, err))
			left = append([]string{t}, left...)
			continue
		}
		m.env.Logger().Info("unmounted", "path", t)
	}
	m.mounted = left
	return errors.Join(errs...)
}

func unmountBusy(ctx context.Context, target string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Unmount(target, 0)
		if err == nil || errors.Is(err, unix.EINVAL) && !isMountPoint(target) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// mountinfoUnescape decodes the octal escapes of /proc/self/mountinfo.
var mountinfoUnescape = strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)

// isMountPoint reports whether target is listed as a mount point.
func isMountPoint(target string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return true
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && mountinfoUnescape.Replace(f[4]) == target {
			return true
		}
	}
	return false
}
