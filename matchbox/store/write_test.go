package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The subdirectory is created on the first write.
	if err := d.WriteFile("groups/a.json", []byte("one")); err != nil {
		t.Fatalf("WriteFile(groups/a.json): %v", err)
	}
	if err := d.WriteFile("groups/a.json", []byte("two")); err != nil {
		t.Fatalf("WriteFile(groups/a.json) again: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "groups", "a.json"))
	if err != nil || string(b) != "two" {
		t.Errorf("groups/a.json = %q, %v; want \"two\"", b, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "groups", "a.json"))
	if err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("groups/a.json mode = %v, %v; want 0644", fi.Mode().Perm(), err)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "groups"))
	if len(ents) != 1 {
		t.Errorf("groups/ holds %d entries after two writes, want 1 (no temporary file left)", len(ents))
	}
	if err := d.Remove("groups/a.json"); err != nil {
		t.Errorf("Remove(groups/a.json): %v", err)
	}
	if err := d.Remove("groups/a.json"); err != nil {
		t.Errorf("Remove(groups/a.json) of a missing file: %v, want nil", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "groups", "a.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("groups/a.json after Remove: %v, want it gone", err)
	}
}

func TestWriteFileRefusesPaths(t *testing.T) {
	dir := t.TempDir()
	d, err := OpenDir(filepath.Join(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{
		"a.json", "assets/x", "groups/../x.json", "groups/a/b.json", "groups/", "groups/.", "groups/..",
		"groups/.hidden", "../groups/a.json", "/groups/a.json", "groups\\a.json", "groups/a\\..\\b",
	} {
		if err := d.WriteFile(name, []byte("x")); err == nil {
			t.Errorf("WriteFile(%q) = nil, want an error", name)
		}
		if err := d.Remove(name); err == nil {
			t.Errorf("Remove(%q) = nil, want an error", name)
		}
	}
	var left []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("refused writes left files: %v", left)
	}
}

// TestWriteFileFails: a write that cannot finish (here the rename: the
// name is taken by a directory) leaves what was there and no temporary
// file.
func TestWriteFileFails(t *testing.T) {
	dir := t.TempDir()
	d, _ := OpenDir(dir)
	os.MkdirAll(filepath.Join(dir, "profiles", "p.json"), 0o755)
	if err := d.WriteFile("profiles/p.json", []byte("new")); err == nil {
		t.Fatal("WriteFile over a directory succeeded")
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "profiles"))
	if len(ents) != 1 || !ents[0].IsDir() {
		t.Errorf("profiles/ after a failed write holds %v, want only the directory p.json", ents)
	}
	// A data directory whose part is a file is refused, not overwritten.
	os.WriteFile(filepath.Join(dir, "generic"), []byte("x"), 0o644)
	if err := d.WriteFile("generic/g", []byte("x")); err == nil || !strings.Contains(err.Error(), "generic is not a directory") {
		t.Errorf("WriteFile(generic/g) with generic a file: %v", err)
	}
}

func TestRemoveTemps(t *testing.T) {
	dir := t.TempDir()
	d, _ := OpenDir(dir)
	for _, f := range []string{"groups/" + tempPrefix + "a.json-123", "ignition/" + tempPrefix + "x.ign-9", "groups/keep.json", "groups/.gitkeep"} {
		p := filepath.Join(dir, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o644)
	}
	if err := d.RemoveTemps(); err != nil {
		t.Fatalf("RemoveTemps: %v", err)
	}
	var names []string
	for _, sub := range []string{"groups", "ignition"} {
		ents, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, e := range ents {
			names = append(names, sub+"/"+e.Name())
		}
	}
	if got := strings.Join(names, " "); got != "groups/.gitkeep groups/keep.json" {
		t.Errorf("after RemoveTemps: %s; want groups/.gitkeep groups/keep.json", got)
	}
}

// TestStamp: a writer that adds FileStamp differences to a Stamp taken
// before its writes holds the Stamp of the directory after them; a change
// by anyone else shows.
func TestStamp(t *testing.T) {
	dir := t.TempDir()
	d, _ := OpenDir(dir)
	d.WriteFile("groups/a.json", []byte("a"))
	d.WriteFile("profiles/p.json", []byte("p"))
	stamp := d.Stamp()
	for _, w := range []struct {
		name string
		data []byte
	}{
		{"groups/b.json", []byte("b")},
		{"groups/a.json", []byte("a2")},
		{"profiles/p.json", nil},
		{"ignition/x.ign", []byte("{}")},
	} {
		before := d.FileStamp(w.name)
		var err error
		if w.data == nil {
			err = d.Remove(w.name)
		} else {
			err = d.WriteFile(w.name, w.data)
		}
		if err != nil {
			t.Fatal(err)
		}
		stamp += d.FileStamp(w.name) - before
		if got := d.Stamp(); got != stamp {
			t.Fatalf("after writing %s: Stamp() = %x, kept %x", w.name, got, stamp)
		}
	}
	// Files the loader skips do not count; anything else does.
	os.WriteFile(filepath.Join(dir, "groups", ".swp"), []byte("x"), 0o644)
	if d.Stamp() != stamp {
		t.Error("a dotfile changed Stamp")
	}
	os.WriteFile(filepath.Join(dir, "groups", "c.json"), []byte("c"), 0o644)
	if d.Stamp() == stamp {
		t.Error("a new file left Stamp unchanged")
	}
}
