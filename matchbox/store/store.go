// Package store is where catalog data lives. Today that is a data
// directory in matchbox's layout; Dir gives it to the catalog as an fs.FS
// and tells the server when its files change.
package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Subdirs are the data directory's parts that make up a catalog.
var Subdirs = []string{"groups", "profiles", "ignition", "generic", "templates"}

// Dir is a data directory on disk.
type Dir struct {
	path string
}

// OpenDir checks that path is a directory.
func OpenDir(path string) (*Dir, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("data directory %s: not a directory", path)
	}
	return &Dir{path: path}, nil
}

// Path is the directory's path.
func (d *Dir) Path() string { return d.path }

// FS is the directory as a file system for catalog.Load.
func (d *Dir) FS() fs.FS { return os.DirFS(d.path) }

// Watch calls changed (from this goroutine) after files in the data
// directory change, once per burst of changes: it waits until quiet has
// passed without another change, so an editor's write-rename-chmod or a
// `cp -r` triggers one reload. It returns when ctx ends.
func (d *Dir) Watch(ctx context.Context, quiet time.Duration, changed func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watching %s: %w", d.path, err)
	}
	defer w.Close()
	if err := w.Add(d.path); err != nil {
		return fmt.Errorf("watching %s: %w", d.path, err)
	}
	for _, sub := range Subdirs {
		// A missing part may appear later: the root's watch sees it.
		if err := w.Add(filepath.Join(d.path, sub)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("watching %s: %w", filepath.Join(d.path, sub), err)
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			if filepath.Dir(ev.Name) == filepath.Clean(d.path) {
				base := filepath.Base(ev.Name)
				for _, sub := range Subdirs {
					if base == sub && ev.Has(fsnotify.Create) {
						_ = w.Add(ev.Name)
					}
				}
			}
			timer.Reset(quiet)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// Overflow and friends: a reload re-reads everything anyway.
			_ = err
			timer.Reset(quiet)
		case <-timer.C:
			changed()
		}
	}
}
