package store

import (
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// ErrReadOnly is returned for a write when the catalog does not come from
// a data directory (the embedded example).
var ErrReadOnly = errors.New("the catalog is read-only: start kindling serve with -data-path DIR")

// tempPrefix starts the names of files being written: the loader skips
// names starting with '.', so a crash mid-write leaves nothing it reads.
const tempPrefix = ".kindling-tmp-"

// checkName accepts SUBDIR/NAME with SUBDIR one of Subdirs and NAME one
// plain file name: a write can never reach outside its subdirectory.
func checkName(name string) (sub, base string, err error) {
	sub, base, ok := strings.Cut(name, "/")
	switch {
	case !ok || !slices.Contains(Subdirs, sub):
		return "", "", fmt.Errorf("file %q: want SUBDIR/NAME with SUBDIR one of %s", name, strings.Join(Subdirs, ", "))
	case base == "" || base == "." || base == ".." || strings.ContainsAny(base, "/\\\x00") || strings.HasPrefix(base, "."):
		return "", "", fmt.Errorf("file %q: %q is not a plain file name (no '/', not starting with '.')", name, base)
	}
	return sub, base, nil
}

// WriteFile replaces the data-directory file name (e.g. groups/node1.json)
// with data atomically: data goes to a temporary file in the same
// directory, which is synced and renamed over name, then the directory is
// synced. A crash leaves the old content or the new, never a mix, and a
// returned nil means the new content survives a power loss. The
// subdirectory is created when missing. Writers of one name must not run
// concurrently (the control plane serialises all writes).
func (d *Dir) WriteFile(name string, data []byte) error {
	sub, base, err := checkName(name)
	if err != nil {
		return err
	}
	dir := filepath.Join(d.path, sub)
	if err := d.ensureSubdir(sub); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, tempPrefix+base+"-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	tmp := f.Name()
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	// CreateTemp makes 0600 files; data files are read by people and tools.
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing %s: syncing: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, base)); err != nil {
		return fmt.Errorf("writing %s: %w", name, err)
	}
	done = true
	return syncDir(dir)
}

// Remove deletes the data-directory file name and syncs its directory. A
// file that does not exist is not an error.
func (d *Dir) Remove(name string) error {
	sub, base, err := checkName(name)
	if err != nil {
		return err
	}
	dir := filepath.Join(d.path, sub)
	if err := os.Remove(filepath.Join(dir, base)); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("removing %s: %w", name, err)
	}
	return syncDir(dir)
}

// RemoveTemps deletes temporary files a crash mid-write left behind. Call
// it before any write starts.
func (d *Dir) RemoveTemps() error {
	var errs []error
	for _, sub := range Subdirs {
		ents, err := os.ReadDir(filepath.Join(d.path, sub))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tempPrefix) && e.Type().IsRegular() {
				if err := os.Remove(filepath.Join(d.path, sub, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// ensureSubdir creates DATA/sub if it is missing, durably.
func (d *Dir) ensureSubdir(sub string) error {
	dir := filepath.Join(d.path, sub)
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return fmt.Errorf("data directory: %s is not a directory", sub)
		}
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("data directory: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("data directory: creating %s: %w", sub, err)
	}
	return syncDir(d.path)
}

// syncDir makes a directory's entries (a rename, a removal) durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("syncing directory: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", filepath.Base(dir), err)
	}
	return nil
}

// Stamp summarises the files a catalog is loaded from (those in Subdirs
// not starting with '.', which the loader skips) by name, size,
// modification time and inode. It is a sum of one hash per file, so a
// writer can keep it current without listing the directory:
// after a write of name, stamp - before + after, where before and after
// are FileStamp(name) around the write. If Stamp differs from the kept
// value, someone else changed the directory. It costs one stat per file.
func (d *Dir) Stamp() uint64 {
	var sum uint64
	for _, sub := range Subdirs {
		ents, err := os.ReadDir(filepath.Join(d.path, sub))
		if err != nil {
			continue
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") || e.IsDir() {
				continue
			}
			if fi, err := e.Info(); err == nil {
				sum += fileHash(sub+"/"+e.Name(), fi)
			}
		}
	}
	return sum
}

// FileStamp is one file's part of Stamp (name as for WriteFile); 0 when
// it does not exist.
func (d *Dir) FileStamp(name string) uint64 {
	if _, _, err := checkName(name); err != nil {
		return 0
	}
	fi, err := os.Lstat(filepath.Join(d.path, filepath.FromSlash(name)))
	if err != nil || fi.IsDir() {
		return 0
	}
	return fileHash(name, fi)
}

func fileHash(name string, fi fs.FileInfo) uint64 {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = st.Ino
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%s %d %d %d", name, fi.Size(), fi.ModTime().UnixNano(), ino)
	return h.Sum64()
}
