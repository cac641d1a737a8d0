package ignition

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kindlingboot/kindling/ignition/stages"
)

// readFromDevice reads path from the filesystem labelled label, waiting up
// to 30 s for it to appear, mounted read-only in a temporary directory.
func readFromDevice(ctx context.Context, log *slog.Logger, label, path string) ([]byte, string, error) {
	where := fmt.Sprintf("%s on the filesystem labelled %q", path, label)
	env := &stages.Env{Log: log}
	deadline := time.Now().Add(30 * time.Second)
	var dev string
	for {
		out, err := env.Command(ctx, nil, "blkid", "-L", label)
		if err == nil && strings.TrimSpace(string(out)) != "" {
			dev = strings.TrimSpace(string(out))
			break
		}
		if time.Now().After(deadline) {
			return nil, where, fmt.Errorf("no filesystem labelled %q appeared within 30s (ignition.config.device=)", label)
		}
		select {
		case <-ctx.Done():
			return nil, where, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
	dir, err := os.MkdirTemp("", "ignite-config-")
	if err != nil {
		return nil, where, err
	}
	defer os.Remove(dir)
	var lastErr error
	mounted := false
	for _, fstype := range []string{"iso9660", "vfat", "ext4", "xfs", "btrfs"} {
		if lastErr = unix.Mount(dev, dir, fstype, unix.MS_RDONLY, ""); lastErr == nil {
			mounted = true
			break
		}
	}
	if !mounted {
		return nil, where, fmt.Errorf("mounting %s read-only: %w", dev, lastErr)
	}
	defer unix.Unmount(dir, 0)
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, where, err
	}
	defer root.Close()
	data, err := root.ReadFile(strings.TrimPrefix(filepath.Clean("/"+path), "/"))
	if err != nil {
		return nil, where, fmt.Errorf("reading %s: %w", where, err)
	}
	return data, where, nil
}

// provisionedOnDisk looks for the result file on the filesystems the config
// mounts at / or /etc and on Config.ProbeDevices, each mounted read-only in
// a temporary directory. A device that is absent, or holds no filesystem of
// the configured type, is not provisioned; any other failure to look is an
// error, so that the disks stage never wipes a disk that could not be
// checked. It returns where the file was found.
func (r *runner) provisionedOnDisk(ctx context.Context) (string, bool, error) {
	type probe struct {
		dev, rel string
		types    []string
	}
	var probes []probe
	env := &stages.Env{Log: r.log}
	for _, fs := range r.cfg.Storage.Filesystems {
		if fs.Path == nil || fs.Format == nil || *fs.Format == "swap" || *fs.Format == "none" {
			continue
		}
		p := filepath.Clean(*fs.Path)
		if p != "/" && p != "/etc" {
			continue
		}
		dev, err := stages.ProbeDevice(ctx, env, fs.Device)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", false, fmt.Errorf("checking %s for an earlier run: %w", fs.Device, err)
		}
		probes = append(probes, probe{dev, strings.TrimPrefix(ResultFile, strings.TrimSuffix(p, "/")), []string{*fs.Format}})
	}
	for _, dev := range r.c.ProbeDevices {
		probes = append(probes, probe{dev, ResultFile, []string{"ext4", "xfs", "btrfs"}})
	}
	for _, p := range probes {
		found, err := fileOnDevice(p.dev, p.types, p.rel)
		if err != nil {
			return "", false, fmt.Errorf("checking %s for an earlier run: %w", p.dev, err)
		}
		if found {
			return p.dev, true, nil
		}
	}
	return "", false, nil
}

// fileOnDevice mounts dev read-only (trying each type) and reports whether
// rel exists in it. A device holding no filesystem of those types (the
// kernel says EINVAL) does not have it.
func fileOnDevice(dev string, types []string, rel string) (bool, error) {
	dir, err := os.MkdirTemp("", "ignite-probe-")
	if err != nil {
		return false, err
	}
	defer os.Remove(dir)
	for _, t := range types {
		err := unix.Mount(dev, dir, t, unix.MS_RDONLY, "")
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENODEV) {
			continue // not this type (or the kernel lacks it)
		}
		if err != nil {
			return false, fmt.Errorf("mounting %s (%s) read-only: %w", dev, t, err)
		}
		found, serr := lstatIn(dir, rel)
		if err := unix.Unmount(dir, 0); err != nil {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				return false, fmt.Errorf("unmounting the probe of %s: %w", dev, err)
			}
		}
		return found, serr
	}
	return false, nil
}

// lstatIn reports whether rel exists inside dir, resolving links inside it.
func lstatIn(dir, rel string) (bool, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false, err
	}
	defer root.Close()
	_, err = root.Lstat(strings.TrimPrefix(rel, "/"))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, os.ErrNotExist):
		return false, nil
	}
	return false, err
}

// remountRoot mounts the config's filesystem for / at Root, for a switch
// into it: again after the umount stage, or for a run that found the root
// already provisioned.
func (r *runner) remountRoot() error {
	for _, fs := range r.cfg.Storage.Filesystems {
		if fs.Path == nil || filepath.Clean(*fs.Path) != "/" || fs.Format == nil {
			continue
		}
		dev, err := stages.ResolveDevice(fs.Device)
		if err != nil {
			return stages.Fail("mounting the root for the switch", err)
		}
		args := []string{"-t", *fs.Format}
		var opts []string
		for _, o := range fs.MountOptions {
			opts = append(opts, string(o))
		}
		if len(opts) > 0 {
			args = append(args, "-o", strings.Join(opts, ","))
		}
		env := &stages.Env{Log: r.log}
		if _, err := env.Command(context.Background(), nil, "mount", append(args, dev, r.c.Root)...); err != nil {
			return stages.Fail("mounting "+dev+" at "+r.c.Root+" for the switch", err)
		}
		return nil
	}
	return stages.Failf("mounting the root for the switch", "the config has no filesystem with path \"/\" to switch into")
}
