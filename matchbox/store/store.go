// Package store is where catalog data lives. Today that is a data
// directory in matchbox's layout; Dir gives it to the catalog as an fs.FS
// and tells the server when its files change.
package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
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

// Fingerprint summarises the catalog files' names, sizes, modification
// times and inodes: if it changes, something a catalog was loaded from
// changed. It costs one stat per file.
func (d *Dir) Fingerprint() uint64 {
	h := fnv.New64a()
	for _, sub := range Subdirs {
		ents, err := os.ReadDir(filepath.Join(d.path, sub))
		if err != nil {
			fmt.Fprintf(h, "%s:%v\n", sub, errors.Is(err, fs.ErrNotExist))
			continue
		}
		for _, e := range ents {
			fi, err := e.Info()
			if err != nil {
				continue
			}
			var ino uint64
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				ino = st.Ino
			}
			fmt.Fprintf(h, "%s/%s %d %d %d\n", sub, e.Name(), fi.Size(), fi.ModTime().UnixNano(), ino)
		}
	}
	return h.Sum64()
}

// Watch calls changed (from this goroutine) after files in the data
// directory change, once per burst of changes: it waits until quiet has
// passed without another change, so an editor's write-rename-chmod or a
// `cp -r` triggers one reload. ready, if not nil, is called once the
// watches are in place: changes before that moment are not seen, so the
// caller checks for them there. It returns when ctx ends.
func (d *Dir) Watch(ctx context.Context, quiet time.Duration, ready, changed func()) error {
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
	if ready != nil {
		ready()
	}
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
				// Directly in the data directory only the catalog's own
				// subdirectories matter: other files there (the DHCP lease
				// file, a README) change without touching the catalog.
				if !slices.Contains(Subdirs, filepath.Base(ev.Name)) {
					continue
				}
				if ev.Has(fsnotify.Create) {
					_ = w.Add(ev.Name)
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
