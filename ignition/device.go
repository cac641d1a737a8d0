package ignition

import (
	"context"
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
