package initramfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// archive writes entries with the Writer and returns the archive.
func archive(t *testing.T, entries []struct {
	h    Header
	data string
}) []byte {
	t.Helper()
	var b bytes.Buffer
	w := NewWriter(&b)
	for _, e := range entries {
		h := e.h
		h.Size = int64(len(e.data))
		if err := w.WriteHeader(&h); err != nil {
			t.Fatalf("WriteHeader(%s) = %v", h.Name, err)
		}
		if _, err := w.Write([]byte(e.data)); err != nil {
			t.Fatalf("Write(%s) = %v", h.Name, err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	return b.Bytes()
}

var sampleEntries = []struct {
	h    Header
	data string
}{
	{Header{Name: "dev", Mode: ModeDir | 0o755}, ""},
	{Header{Name: "dev/console", Mode: ModeCharDev | 0o600, DevMajor: 5, DevMinor: 1}, ""},
	{Header{Name: "etc", Mode: ModeDir | 0o755}, ""},
	{Header{Name: "etc/a", Mode: ModeRegular | 0o644, ModTime: 1700000000}, "x"},
	{Header{Name: "etc/four", Mode: ModeRegular | 0o600}, "1234"},
	{Header{Name: "etc/odd name with spaces", Mode: ModeRegular | 0o755}, "hello\nworld\n"},
	{Header{Name: "etc/empty", Mode: ModeRegular | 0o644}, ""},
	{Header{Name: "etc/link", Mode: ModeSymlink | 0o777}, "four"},
}

// TestWriterCpio reads the archive back with GNU cpio, the reference
// for the newc format besides the kernel (which the QEMU test covers).
func TestWriterCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed (Debian package cpio)")
	}
	a := archive(t, sampleEntries)
	if len(a)%4 != 0 {
		t.Errorf("archive length %d, want a multiple of 4", len(a))
	}
	cmd := exec.Command(cpio, "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(a)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v\n%s", err, out)
	}
	var want []string
	for _, e := range sampleEntries {
		want = append(want, e.h.Name)
	}
	if got := strings.Split(strings.TrimSpace(string(out)), "\n"); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("cpio -t = %q, want %q", got, want)
	}

	cmd = exec.Command(cpio, "-tv", "--quiet")
	cmd.Stdin = bytes.NewReader(a)
	out, err = cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -tv: %v\n%s", err, out)
	}
	for _, want := range []string{"crw-------", "5,   1", "dev/console", "lrwxrwxrwx", "etc/link -> four", "-rwxr-xr-x", "12 Jan  1  1970 etc/odd name with spaces"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cpio -tv output lacks %q:\n%s", want, out)
		}
	}

	dir := t.TempDir()
	cmd = exec.Command(cpio, "-i", "-d", "--quiet", "--no-absolute-filenames")
	cmd.Dir = dir
	// Device nodes need root to be created; extract everything else.
	cmd.Stdin = bytes.NewReader(archive(t, sampleEntries[2:]))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	for _, e := range sampleEntries[2:] {
		p := filepath.Join(dir, e.h.Name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Errorf("extracted %s: %v", e.h.Name, err)
			continue
		}
		if got, want := uint32(fi.Mode().Perm()), e.h.Mode&0o777; got != want {
			t.Errorf("extracted %s mode %o, want %o", e.h.Name, got, want)
		}
		switch e.h.Mode & modeType {
		case ModeRegular:
			if b, _ := os.ReadFile(p); string(b) != e.data {
				t.Errorf("extracted %s = %q, want %q", e.h.Name, b, e.data)
			}
		case ModeSymlink:
			if l, _ := os.Readlink(p); l != e.data {
				t.Errorf("extracted %s -> %q, want -> %q", e.h.Name, l, e.data)
			}
		}
	}
}

func TestWriterErrors(t *testing.T) {
	tests := []struct {
		name string
		do   func(w *Writer) error
		want string
	}{
		{"write beyond size", func(w *Writer) error {
			w.WriteHeader(&Header{Name: "a", Mode: ModeRegular, Size: 1})
			_, err := w.Write([]byte("ab"))
			return err
		}, "beyond"},
		{"short entry", func(w *Writer) error {
			w.WriteHeader(&Header{Name: "a", Mode: ModeRegular, Size: 3})
			w.Write([]byte("a"))
			return w.WriteHeader(&Header{Name: "b", Mode: ModeRegular})
		}, "2 bytes short"},
		{"short at close", func(w *Writer) error {
			w.WriteHeader(&Header{Name: "a", Mode: ModeRegular, Size: 3})
			return w.Close()
		}, "3 bytes short"},
		{"empty name", func(w *Writer) error { return w.WriteHeader(&Header{Name: "/", Mode: ModeDir}) }, "non-empty path"},
		{"directory with data", func(w *Writer) error { return w.WriteHeader(&Header{Name: "d", Mode: ModeDir, Size: 1}) }, "no data"},
		{"too large", func(w *Writer) error { return w.WriteHeader(&Header{Name: "f", Mode: ModeRegular, Size: 1 << 32}) }, "32-bit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do(NewWriter(&bytes.Buffer{}))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.want)
			}
		})
	}
}
