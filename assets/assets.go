// Package assets serves the asset tree (kernels, initramfs, iPXE binaries,
// OS images) safely: every file is opened through an os.Root, so no name —
// "..", absolute, or a symlink pointing outside — can reach a file outside
// the tree, and directories are never listed.
package assets

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
)

// ErrNotFile is returned for names that are not regular files (directories,
// devices); the web layer answers 404, never a listing.
var ErrNotFile = errors.New("not a regular file")

// Root is an open asset tree.
type Root struct {
	dir  string
	root *os.Root
	// follow: symlinks inside the tree may point anywhere (see
	// OpenFollowingLinks); names still cannot leave it.
	follow bool
}

// Open opens the asset tree at dir, which must be an existing directory.
func Open(dir string) (*Root, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("opening assets directory %s: %w", dir, err)
	}
	return &Root{dir: dir, root: r}, nil
}

// OpenFollowingLinks opens a tree whose symlinks are trusted to point
// anywhere: Debian's /usr/lib/ipxe links its EFI binaries into /boot. A
// requested name still cannot climb out ("..", absolute names are
// cleaned away); only links the operator (or a package) put in the tree
// are followed.
func OpenFollowingLinks(dir string) (*Root, error) {
	r, err := Open(dir)
	if err != nil {
		return nil, err
	}
	r.follow = true
	return r, nil
}

// Dir is the directory the tree was opened at.
func (r *Root) Dir() string { return r.dir }

// Close releases the tree.
func (r *Root) Close() error { return r.root.Close() }

// Open opens the regular file at the slash-separated name, relative to the
// root. The caller closes the file.
func (r *Root) Open(name string) (*os.File, fs.FileInfo, error) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		return nil, nil, ErrNotFile
	}
	// O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
	// writer and hang the request; regular files ignore the flag.
	var f *os.File
	var err error
	if r.follow {
		f, err = os.OpenFile(filepath.Join(r.dir, filepath.FromSlash(name)), os.O_RDONLY|syscall.O_NONBLOCK, 0)
	} else {
		f, err = r.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	}
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", name, ErrNotFile)
	}
	return f, fi, nil
}

// ETag is a strong validator for a file: size and modification time. It
// changes whenever the file is replaced or rewritten.
func ETag(fi fs.FileInfo) string {
	return fmt.Sprintf(`"%x-%x"`, fi.Size(), fi.ModTime().UnixNano())
}
