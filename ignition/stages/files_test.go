package stages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coreos/ignition/v2/config/v3_6"
	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/google/go-cmp/cmp"
)

// ---- helpers shared by files_test.go, passwd_test.go, systemd_test.go ----

// ftFetch is a fake Fetcher: source URL → contents.
type ftFetch map[string]string

func (f ftFetch) Fetch(_ context.Context, r types.Resource) ([]byte, error) {
	if r.Source == nil {
		return nil, nil
	}
	s, ok := f[*r.Source]
	if !ok {
		return nil, fmt.Errorf("GET %s: 404 Not Found", *r.Source)
	}
	return []byte(s), nil
}

// ftConfig parses a config given without its ignition section, validated
// by upstream's parser as the agent's is.
func ftConfig(t testing.TB, body string) types.Config {
	t.Helper()
	raw := `{"ignition":{"version":"3.6.0"}`
	if body != "" {
		raw += "," + body
	}
	raw += "}"
	cfg, rpt, err := v3_6.ParseCompatibleVersion([]byte(raw))
	if err != nil || rpt.IsFatal() {
		t.Fatalf("ParseCompatibleVersion(%s) = %v, %v", raw, rpt, err)
	}
	return cfg
}

// ftNode is something to put into a test root before the run.
type ftNode struct {
	path     string
	dir      bool
	data     string
	link     string // a symbolic link to this
	mode     fs.FileMode
	uid, gid int
}

func ftMake(t testing.TB, root string, nodes ...ftNode) {
	t.Helper()
	for _, n := range nodes {
		p := filepath.Join(root, n.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case n.dir:
			err = os.Mkdir(p, 0o755)
		case n.link != "":
			err = os.Symlink(n.link, p)
		default:
			err = os.WriteFile(p, []byte(n.data), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(p, n.uid, n.gid); err != nil && os.Geteuid() == 0 {
			t.Fatal(err)
		}
		if n.link == "" && n.mode != 0 {
			if err := os.Chmod(p, n.mode); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// ftSnapshot describes every node under dir (type, mode, owner, inode,
// mtime, contents or link target) so that a test can tell nothing changed.
func ftSnapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("%v %d:%d ino=%d mtime=%d", fi.Mode(), st.Uid, st.Gid, st.Ino, fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			s += " -> " + tgt
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			s += " sha256=" + hex.EncodeToString(sum[:8])
		}
		rel, _ := filepath.Rel(dir, p)
		m[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ftWant is what a path must be after the run.
type ftWant struct {
	path     string
	kind     byte // 'f' file, 'd' directory, 'l' symbolic link, '-' absent
	data     string
	mode     fs.FileMode // type bits excluded; special bits included; 0 = not checked
	uid, gid int         // always checked
	target   string
	sameAs   string // a hard link: same inode as this path
}

func ftCheck(t testing.TB, root string, wants []ftWant) {
	t.Helper()
	for _, w := range wants {
		p := filepath.Join(root, w.path)
		fi, err := os.Lstat(p)
		if w.kind == '-' {
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Lstat(%s) = %v, want it absent", w.path, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Lstat(%s): %v", w.path, err)
			continue
		}
		st := fi.Sys().(*syscall.Stat_t)
		switch w.kind {
		case 'f':
			if !fi.Mode().IsRegular() {
				t.Errorf("%s is %v, want a regular file", w.path, fi.Mode())
				continue
			}
			if got, _ := os.ReadFile(p); string(got) != w.data {
				t.Errorf("contents of %s = %q, want %q", w.path, got, w.data)
			}
		case 'd':
			if !fi.IsDir() {
				t.Errorf("%s is %v, want a directory", w.path, fi.Mode())
			}
		case 'l':
			tgt, err := os.Readlink(p)
			if err != nil || tgt != w.target {
				t.Errorf("Readlink(%s) = %q, %v, want %q", w.path, tgt, err, w.target)
			}
		}
		if w.mode != 0 {
			if got := permBits(fi.Mode()); got != w.mode {
				t.Errorf("mode of %s = %v, want %v", w.path, got, w.mode)
			}
		}
		if int(st.Uid) != w.uid || int(st.Gid) != w.gid {
			t.Errorf("owner of %s = %d:%d, want %d:%d", w.path, st.Uid, st.Gid, w.uid, w.gid)
		}
		if w.sameAs != "" {
			o, err := os.Lstat(filepath.Join(root, w.sameAs))
			if err != nil || !os.SameFile(fi, o) {
				t.Errorf("%s and %s are not the same file (err %v)", w.path, w.sameAs, err)
			}
		}
	}
}

// ftEnv is an Env on root whose log lines go to buf.
func ftEnv(root string, fetch Fetcher, buf *bytes.Buffer) *Env {
	var log *slog.Logger
	if buf != nil {
		log = slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return &Env{Root: root, Fetch: fetch, Log: log}
}

func ftNeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the stage sets owners (chown) as it must on a real target")
	}
}

// ftDataURLs fetches data URLs (RFC 2397), all the typical config uses.
type ftDataURLs struct{}

func (ftDataURLs) Fetch(_ context.Context, r types.Resource) ([]byte, error) {
	rest, ok := strings.CutPrefix(*r.Source, "data:")
	if !ok {
		return nil, fmt.Errorf("%s is not a data URL", *r.Source)
	}
	meta, data, _ := strings.Cut(rest, ",")
	if strings.HasSuffix(meta, ";base64") {
		return base64.StdEncoding.DecodeString(data)
	}
	s, err := url.PathUnescape(data)
	return []byte(s), err
}

// ---- files, directories, links ----

func TestFilesApply(t *testing.T) {
	ftNeedRoot(t)
	fetch := ftFetch{
		"http://h/motd":   "hello\n",
		"http://h/a1":     "one\n",
		"http://h/a2":     "two\n",
		"http://h/new":    "new contents\n",
		"http://h/script": "#!/bin/sh\n",
	}
	passwdFiles := []ftNode{
		{path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/bash\ncore:x:1000:1000::/home/core:/bin/bash\n"},
		{path: "etc/group", data: "root:x:0:\ncore:x:1000:\nwheel:x:10:core\n"},
	}
	tests := []struct {
		name  string
		setup []ftNode
		cfg   string
		want  []ftWant
	}{{
		name: "file from source, default mode and owner, parents made 0755 root",
		cfg:  `"storage":{"files":[{"path":"/a/b/c/motd","contents":{"source":"http://h/motd"}}]}`,
		want: []ftWant{
			{path: "a", kind: 'd', mode: 0o755}, {path: "a/b", kind: 'd', mode: 0o755}, {path: "a/b/c", kind: 'd', mode: 0o755},
			{path: "a/b/c/motd", kind: 'f', data: "hello\n", mode: 0o644},
		},
	}, {
		name: "data URL contents, decimal mode with setuid (3.6)",
		cfg:  `"storage":{"files":[{"path":"/usr/bin/x","mode":2541,"contents":{"source":"http://h/script"}}]}`,
		want: []ftWant{{path: "usr/bin/x", kind: 'f', data: "#!/bin/sh\n", mode: 0o755 | fs.ModeSetuid}},
	}, {
		name: "setuid kept after chown to a user",
		cfg:  `"storage":{"files":[{"path":"/x","mode":3565,"user":{"id":1000},"group":{"id":1000},"contents":{"source":"http://h/script"}}]}`,
		want: []ftWant{{path: "x", kind: 'f', data: "#!/bin/sh\n", mode: 0o755 | fs.ModeSetuid | fs.ModeSetgid, uid: 1000, gid: 1000}},
	}, {
		name: "no contents and nothing there: an empty file 0644",
		cfg:  `"storage":{"files":[{"path":"/etc/empty"}]}`,
		want: []ftWant{{path: "etc/empty", kind: 'f', data: "", mode: 0o644}},
	}, {
		name: "contents then appends in order",
		cfg:  `"storage":{"files":[{"path":"/f","contents":{"source":"http://h/motd"},"append":[{"source":"http://h/a1"},{"source":"http://h/a2"}]}]}`,
		want: []ftWant{{path: "f", kind: 'f', data: "hello\none\ntwo\n", mode: 0o644}},
	}, {
		name:  "append to an existing file keeps it, its mode, owner and inode",
		setup: []ftNode{{path: "etc/hosts", data: "127.0.0.1 localhost\n", mode: 0o600, uid: 5, gid: 6}, {path: "hosts-link", link: "etc/hosts"}},
		cfg:   `"storage":{"files":[{"path":"/etc/hosts","append":[{"source":"http://h/a1"}]}]}`,
		want:  []ftWant{{path: "etc/hosts", kind: 'f', data: "127.0.0.1 localhost\none\n", mode: 0o600, uid: 5, gid: 6}},
	}, {
		name:  "existing file without contents: kept, mode and owner set",
		setup: []ftNode{{path: "etc/keep", data: "kept\n", mode: 0o644}},
		cfg:   `"storage":{"files":[{"path":"/etc/keep","mode":384,"user":{"id":7},"group":{"id":8}}]}`,
		want:  []ftWant{{path: "etc/keep", kind: 'f', data: "kept\n", mode: 0o600, uid: 7, gid: 8}},
	}, {
		name:  "overwrite replaces a file: new mode and owner default again",
		setup: []ftNode{{path: "etc/motd", data: "old\n", mode: 0o600, uid: 1000, gid: 1000}},
		cfg:   `"storage":{"files":[{"path":"/etc/motd","overwrite":true,"contents":{"source":"http://h/new"}}]}`,
		want:  []ftWant{{path: "etc/motd", kind: 'f', data: "new contents\n", mode: 0o644}},
	}, {
		name:  "overwrite replaces a directory and a symbolic link",
		setup: []ftNode{{path: "d/inside", data: "x"}, {path: "l", link: "/etc/passwd"}},
		cfg: `"storage":{"files":[{"path":"/d","overwrite":true,"contents":{"source":"http://h/new"}},
			{"path":"/l","overwrite":true,"contents":{"source":"http://h/motd"}}]}`,
		want: []ftWant{{path: "d", kind: 'f', data: "new contents\n"}, {path: "l", kind: 'f', data: "hello\n"}},
	}, {
		name:  "owner by name from the target's passwd and group",
		setup: passwdFiles,
		cfg: `"storage":{"files":[{"path":"/home/core/f","user":{"name":"core"},"group":{"name":"wheel"}}],
			"directories":[{"path":"/srv/core","user":{"name":"core"},"group":{"name":"core"},"mode":448}]}`,
		want: []ftWant{
			{path: "home/core/f", kind: 'f', uid: 1000, gid: 10, mode: 0o644},
			{path: "home/core", kind: 'd', mode: 0o755},
			{path: "srv/core", kind: 'd', uid: 1000, gid: 1000, mode: 0o700},
		},
	}, {
		name:  "owner by name of a user this run creates",
		setup: append(passwdFiles, ftNode{path: "etc/login.defs", data: "UID_MIN 1000\nUSERGROUPS_ENAB yes\nUMASK 022\n"}),
		cfg: `"passwd":{"users":[{"name":"svc","noCreateHome":true}]},
			"storage":{"files":[{"path":"/var/lib/svc/state","user":{"name":"svc"},"group":{"name":"svc"}}]}`,
		want: []ftWant{{path: "var/lib/svc/state", kind: 'f', uid: 1001, gid: 1001}},
	}, {
		name: "directories: new with sticky and setgid; existing keeps contents",
		setup: []ftNode{
			{path: "var/data/file", data: "stays", uid: 3, gid: 3},
		},
		cfg: `"storage":{"directories":[{"path":"/tmp2","mode":1023},{"path":"/shared","mode":1528},{"path":"/var/data","mode":448,"user":{"id":9}}]}`,
		want: []ftWant{
			{path: "tmp2", kind: 'd', mode: 0o777 | fs.ModeSticky},
			{path: "shared", kind: 'd', mode: 0o770 | fs.ModeSetgid},
			{path: "var/data", kind: 'd', mode: 0o700, uid: 9},
			{path: "var/data/file", kind: 'f', data: "stays", uid: 3, gid: 3},
		},
	}, {
		name:  "directory overwrite replaces a file",
		setup: []ftNode{{path: "opt/x", data: "file"}},
		cfg:   `"storage":{"directories":[{"path":"/opt/x","overwrite":true}]}`,
		want:  []ftWant{{path: "opt/x", kind: 'd', mode: 0o755}},
	}, {
		name:  "symbolic links: new, existing with the same target, overwritten",
		setup: []ftNode{{path: "etc/same", link: "/usr/share/x/"}, {path: "etc/other", link: "/old"}, {path: "usr/share/zoneinfo/UTC", data: "tz", uid: 4, gid: 4}},
		cfg: `"storage":{"links":[{"path":"/etc/localtime","target":"../usr/share/zoneinfo/UTC"},
			{"path":"/etc/same","target":"/usr/share/x"},
			{"path":"/etc/other","target":"/new","overwrite":true},
			{"path":"/etc/owned","target":"/nowhere","user":{"id":11},"group":{"id":12}}]}`,
		want: []ftWant{
			// Like upstream, a link with no owner takes its target's.
			{path: "etc/localtime", kind: 'l', target: "../usr/share/zoneinfo/UTC", uid: 4, gid: 4},
			{path: "etc/same", kind: 'l', target: "/usr/share/x/"},
			{path: "etc/other", kind: 'l', target: "/new"},
			{path: "etc/owned", kind: 'l', target: "/nowhere", uid: 11, gid: 12},
		},
	}, {
		name: "hard links last: to a deeper file the config makes after them, and an existing one",
		setup: []ftNode{
			{path: "srv/orig", data: "o"},
			{path: "srv/already", data: "o"},
		},
		cfg: `"storage":{"links":[{"path":"/h1","target":"/deep/er/file","hard":true},
				{"path":"/h2","target":"/srv/orig","hard":true}],
			"files":[{"path":"/deep/er/file","contents":{"source":"http://h/motd"}}]}`,
		want: []ftWant{
			{path: "h1", kind: 'f', data: "hello\n", sameAs: "deep/er/file"},
			{path: "h2", kind: 'f', data: "o", sameAs: "srv/orig"},
		},
	}, {
		name:  "existing hard link to the same inode is accepted",
		setup: []ftNode{{path: "srv/orig", data: "o"}},
		cfg:   `"storage":{"links":[{"path":"/srv/h","target":"/srv/orig","hard":true},{"path":"/srv/h2","target":"/srv/h","hard":true}]}`,
		want:  []ftWant{{path: "srv/h", kind: 'f', data: "o", sameAs: "srv/orig"}, {path: "srv/h2", kind: 'f', data: "o", sameAs: "srv/orig"}},
	}, {
		name: "intermediate symbolic links resolve inside the root, as under chroot",
		setup: []ftNode{
			{path: "run", dir: true},
			{path: "var/run", link: "/run"},              // absolute, as on Debian
			{path: "etc/up", link: "../../../../../etc"}, // climbs past the root
			{path: "lib", link: "usr/lib"},               // merged /usr
			{path: "usr/lib", dir: true},
		},
		cfg: `"storage":{"files":[{"path":"/var/run/x.pid","contents":{"source":"http://h/a1"}},
			{"path":"/etc/up/y","contents":{"source":"http://h/a2"}},
			{"path":"/lib/z","contents":{"source":"http://h/motd"}}]}`,
		want: []ftWant{
			{path: "run/x.pid", kind: 'f', data: "one\n"},
			{path: "var/run", kind: 'l', target: "/run"},
			{path: "etc/y", kind: 'f', data: "two\n"},
			{path: "usr/lib/z", kind: 'f', data: "hello\n"},
		},
	}, {
		name:  "the last component is never followed: overwrite replaces the link itself",
		setup: []ftNode{{path: "etc/resolv.conf", link: "../run/resolv.conf"}, {path: "run/resolv.conf", data: "nameserver 1.1.1.1\n"}},
		cfg:   `"storage":{"files":[{"path":"/etc/resolv.conf","overwrite":true,"contents":{"source":"http://h/new"}}]}`,
		want: []ftWant{
			{path: "etc/resolv.conf", kind: 'f', data: "new contents\n"},
			{path: "run/resolv.conf", kind: 'f', data: "nameserver 1.1.1.1\n"},
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			ftMake(t, root, tc.setup...)
			if err := Files(context.Background(), ftEnv(root, fetch, nil), ftConfig(t, tc.cfg)); err != nil {
				t.Fatalf("Files() = %v", err)
			}
			ftCheck(t, root, tc.want)
		})
	}
}

// TestFilesOutsideRoot: symbolic links in the target pointing outside it
// (absolute, relative, as the path's directory or as the link written
// through) never lead a write outside the root.
func TestFilesOutsideRoot(t *testing.T) {
	ftNeedRoot(t)
	outside := t.TempDir()
	ftMake(t, outside, ftNode{path: "victim", data: "untouched"})
	before := ftSnapshot(t, outside)
	up := strings.Repeat("../", 20) + strings.TrimPrefix(outside, "/")
	root := t.TempDir()
	ftMake(t, root,
		ftNode{path: "etc/abs", link: outside},
		ftNode{path: "etc/rel", link: up},
		ftNode{path: "etc/victim-link", link: outside + "/victim"},
		ftNode{path: "etc/victim-rel", link: up + "/victim"},
	)
	cfg := ftConfig(t, `"storage":{
		"files":[{"path":"/etc/abs/a","contents":{"source":"http://h/x"}},
			{"path":"/etc/rel/b","contents":{"source":"http://h/x"}},
			{"path":"/etc/victim-link","overwrite":true,"contents":{"source":"http://h/x"}},
			{"path":"/etc/victim-rel","append":[{"source":"http://h/x"}],"overwrite":false}],
		"directories":[{"path":"/etc/abs/d"}],
		"links":[{"path":"/etc/rel/l","target":"/etc/shadow"},{"path":"/etc/abs/h","target":"/etc/victim-link","hard":true}]}`)
	rootBefore := ftSnapshot(t, root)
	err := Files(context.Background(), ftEnv(root, ftFetch{"http://h/x": "x"}, nil), cfg)
	// The append to a link is refused (not a regular file), after nothing
	// was written: check that first, then apply without it.
	if err == nil || !strings.Contains(err.Error(), "symbolic link exists at /etc/victim-rel") {
		t.Fatalf("Files() = %v, want the append to a symbolic link refused", err)
	}
	if d := cmp.Diff(rootBefore, ftSnapshot(t, root)); d != "" {
		t.Errorf("the refused run changed the root (-before +after):\n%s", d)
	}
	cfg.Storage.Files = cfg.Storage.Files[:3]
	if err := Files(context.Background(), ftEnv(root, ftFetch{"http://h/x": "x"}, nil), cfg); err != nil {
		t.Fatalf("Files() = %v", err)
	}
	if d := cmp.Diff(before, ftSnapshot(t, outside)); d != "" {
		t.Errorf("the directory outside the root changed (-before +after):\n%s", d)
	}
	inside := strings.TrimPrefix(outside, "/")
	ftCheck(t, root, []ftWant{
		{path: inside + "/a", kind: 'f', data: "x"},
		{path: inside + "/b", kind: 'f', data: "x"},
		{path: inside + "/d", kind: 'd'},
		{path: inside + "/l", kind: 'l', target: "/etc/shadow"},
		{path: "etc/victim-link", kind: 'f', data: "x"},
		{path: inside + "/h", kind: 'f', data: "x", sameAs: "etc/victim-link"},
		{path: "etc/victim-rel", kind: 'l', target: up + "/victim"},
	})
}

// TestFilesRefused: each config fails, names what failed, and leaves the
// root exactly as it was, though it has entries that would succeed before
// the failing one.
func TestFilesRefused(t *testing.T) {
	ftNeedRoot(t)
	fetch := ftFetch{"http://h/x": "SECRET-CONTENTS"}
	ok := `{"path":"/aaa/first","contents":{"source":"http://h/x"}}`
	setup := []ftNode{
		{path: "etc/existing", data: "old"},
		{path: "etc/dir", dir: true},
		{path: "etc/link", link: "/somewhere"},
		{path: "etc/plain", data: "f"},
		{path: "etc/loop1", link: "loop2"},
		{path: "etc/loop2", link: "loop1"},
		{path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/bash\ncore:x:1000:1000::/home/core:/bin/bash\n"},
		{path: "etc/group", data: "root:x:0:\ncore:x:1000:\n"},
		{path: "etc/shadow", data: "root:*:19000:0:99999:7:::\ncore:*:19000:0:99999:7:::\n", mode: 0o640},
		{path: "usr/lib/systemd/system/present.service", data: "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n"},
		{path: "b", link: "a"},
		{path: "a", dir: true},
	}
	tests := []struct {
		name, cfg, wantErr string
	}{
		{"existing file without overwrite, with a contents source",
			`"storage":{"files":[` + ok + `,{"path":"/etc/existing","contents":{"source":"http://h/x"}}]}`,
			"creating file /etc/existing: a file exists at /etc/existing and overwrite is false"},
		{"a directory where a file is wanted",
			`"storage":{"files":[` + ok + `,{"path":"/etc/dir"}]}`,
			"a directory exists at /etc/dir and overwrite is false"},
		{"a symbolic link where a directory is wanted",
			`"storage":{"files":[` + ok + `],"directories":[{"path":"/etc/link"}]}`,
			"a symbolic link exists at /etc/link and overwrite is false"},
		{"a symbolic link to elsewhere where one is wanted",
			`"storage":{"files":[` + ok + `],"links":[{"path":"/etc/link","target":"/other"}]}`,
			"a symbolic link to /somewhere exists at /etc/link, not to /other, and overwrite is false"},
		{"owner name missing from the target",
			`"storage":{"files":[` + ok + `,{"path":"/etc/f","user":{"name":"nosuchuser"}}]}`,
			`creating file /etc/f: user "nosuchuser" does not exist in the target's /etc/passwd`},
		{"group name missing from the target",
			`"storage":{"files":[` + ok + `],"directories":[{"path":"/srv/x","group":{"name":"nosuchgroup"}}]}`,
			`group "nosuchgroup" does not exist in the target's /etc/group`},
		{"bad user name",
			`"passwd":{"users":[{"name":"ok-user"},{"name":"bad:name"}]},"storage":{"files":[` + ok + `]}`,
			`creating user "bad:name": invalid user name`},
		{"user name starting with a dash",
			`"passwd":{"users":[{"name":"-rf"}]},"storage":{"files":[` + ok + `]}`,
			`creating user "-rf": invalid user name`},
		{"uid already used",
			`"passwd":{"users":[{"name":"dup","uid":1000,"passwordHash":"$6$SECRET-HASH"}]},"storage":{"files":[` + ok + `]}`,
			`creating user "dup": uid 1000 is already used by user "core"`},
		{"primary group missing",
			`"passwd":{"users":[{"name":"pg","primaryGroup":"nope"}]}`,
			`primary group "nope" does not exist`},
		{"supplementary group missing",
			`"passwd":{"users":[{"name":"sg","groups":["core","nope"]}]}`,
			`group "nope" (in groups) does not exist`},
		{"enabling a unit that exists nowhere",
			`"storage":{"files":[` + ok + `]},"systemd":{"units":[{"name":"present.service","enabled":true},{"name":"missing.service","enabled":true}]}`,
			"enabling unit missing.service: unit missing.service does not exist in the target"},
		{"hard link to a directory",
			`"storage":{"files":[` + ok + `],"links":[{"path":"/hl","target":"/etc/dir","hard":true}]}`,
			"creating hard link /hl: the hard link target /etc/dir is a directory"},
		{"hard link to nothing",
			`"storage":{"files":[` + ok + `],"links":[{"path":"/hl","target":"/nothing","hard":true}]}`,
			"the hard link target /nothing does not exist"},
		{"existing hard link to another file",
			`"storage":{"files":[` + ok + `],"links":[{"path":"/etc/plain","target":"/etc/existing","hard":true}]}`,
			"a file that is not the target /etc/existing exists at /etc/plain"},
		{"fetch failure",
			`"storage":{"files":[` + ok + `,{"path":"/etc/g","contents":{"source":"http://h/404"}}]}`,
			"creating file /etc/g: fetching contents of /etc/g: GET http://h/404: 404 Not Found"},
		{"symbolic link loop in the path",
			`"storage":{"files":[` + ok + `,{"path":"/etc/loop1/x"}]}`,
			"too many levels of symbolic links"},
		{"a file in the middle of the path",
			`"storage":{"files":[` + ok + `,{"path":"/etc/plain/x"}]}`,
			"/etc/plain is a file, not a directory"},
		{"two entries resolving to one path",
			`"storage":{"files":[` + ok + `,{"path":"/a/x"},{"path":"/b/x"}]}`,
			"resolves to /a/x through symbolic links in the target, and so does /a/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			ftMake(t, root, setup...)
			before := ftSnapshot(t, root)
			var logs bytes.Buffer
			err := Files(context.Background(), ftEnv(root, fetch, &logs), ftConfig(t, tc.cfg))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Files() = %v, want an error containing %q", err, tc.wantErr)
			}
			var oe *OpError
			if !errors.As(err, &oe) {
				t.Errorf("Files() error %T is not an *OpError", err)
			}
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(logs.String(), "SECRET") {
				t.Errorf("contents leaked into the error or the log: %v\n%s", err, logs.String())
			}
			if d := cmp.Diff(before, ftSnapshot(t, root)); d != "" {
				t.Errorf("the root changed (-before +after):\n%s", d)
			}
		})
	}
}

func TestResolve(t *testing.T) {
	root := t.TempDir()
	ftMake(t, root,
		ftNode{path: "usr/lib", dir: true},
		ftNode{path: "lib", link: "usr/lib"},
		ftNode{path: "var/run", link: "/run"},
		ftNode{path: "etc/up", link: "../../../.."},
		ftNode{path: "etc/file", data: "x"},
		ftNode{path: "etc/last", link: "/target"},
		ftNode{path: "chain1", link: "/chain2/x"},
		ftNode{path: "chain2", link: "lib"},
	)
	r, err := os.OpenRoot(root)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tree := &fsTree{root: r, planned: map[string]*fsNode{}}
	tests := []struct {
		in         string
		followLast bool
		want       string
		wantErr    string
	}{
		{"/", false, ".", ""},
		{"/etc/motd", false, "etc/motd", ""},
		{"/lib/systemd/system/x.service", false, "usr/lib/systemd/system/x.service", ""},
		{"/var/run/x", false, "run/x", ""},
		{"/etc/up/etc/passwd", false, "etc/passwd", ""},
		{"/etc/up/../../x", false, "x", ""},
		{"/etc/last", false, "etc/last", ""},
		{"/etc/last", true, "target", ""},
		{"/chain1/y", false, "usr/lib/x/y", ""},
		{"/lib", false, "lib", ""},
		{"/lib", true, "usr/lib", ""},
		{"/etc/file/x", false, "", "/etc/file is a file, not a directory"},
		{"relative", false, "", "is not absolute"},
	}
	for _, tc := range tests {
		got, err := tree.resolve(tc.in, tc.followLast)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("resolve(%q, %v) = %q, %v, want error containing %q", tc.in, tc.followLast, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("resolve(%q, %v) = %q, %v, want %q", tc.in, tc.followLast, got, err, tc.want)
		}
	}
}

// TestFilesPlanTouchesNothing: plan mode reads the target, records every
// change, writes nothing and leaks no secret.
func TestFilesPlanTouchesNothing(t *testing.T) {
	root := t.TempDir()
	ftMake(t, root, ftTypicalRoot()...)
	ftMake(t, root, ftNode{path: "etc/motd", data: "old"})
	before := ftSnapshot(t, root)
	env := ftEnv(root, ftFetch{}, nil) // nothing may be fetched
	env.Plan = &Plan{}
	if err := Files(context.Background(), env, ftConfig(t, ftTypicalConfig())); err != nil {
		t.Fatalf("Files(plan) = %v", err)
	}
	if d := cmp.Diff(before, ftSnapshot(t, root)); d != "" {
		t.Errorf("plan changed the root (-before +after):\n%s", d)
	}
	got := map[string]bool{}
	for _, a := range env.Plan.Actions {
		got[a.Stage+" "+a.Verb+" "+a.Target] = true
		if s := fmt.Sprint(a); strings.Contains(s, "$6$") || strings.Contains(s, "ssh-ed25519") || strings.Contains(s, "SECRET") {
			t.Errorf("plan action %+v holds a secret", a)
		}
	}
	for _, want := range []string{
		"passwd write /etc/passwd", "passwd write /etc/shadow", "passwd write /etc/group",
		"passwd create user core", "passwd create user svc", "passwd create group core",
		"passwd mkdir /home/core", "passwd write /home/core/.ssh/authorized_keys.d/ignition",
		"files write /etc/app/conf00", "files write /etc/motd", "files mkdir /etc/app",
		"files link /usr/local/bin/app", "files link /etc/app/hard",
		"systemd write /etc/systemd/system/app.service", "systemd write /etc/systemd/system/app.service.d/10-env.conf",
		"systemd write /etc/systemd/system-preset/20-ignition.preset",
		"systemd link /etc/systemd/system/multi-user.target.wants/app.service",
		"systemd mask debug-shell.service",
	} {
		if !got[want] {
			t.Errorf("plan lacks %q; it has:\n%s", want, ftActions(env.Plan))
		}
	}
}

func ftActions(p *Plan) string {
	var b strings.Builder
	for _, a := range p.Actions {
		fmt.Fprintf(&b, "  %s %s %s (%s)\n", a.Stage, a.Verb, a.Target, a.Detail)
	}
	return b.String()
}

// ftTypicalRoot is a small Debian-like target.
func ftTypicalRoot() []ftNode {
	return []ftNode{
		{path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
		{path: "etc/group", data: "root:x:0:\ndaemon:x:1:\nsudo:x:27:\nusers:x:100:\nnogroup:x:65534:\n"},
		{path: "etc/shadow", data: "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", mode: 0o640},
		{path: "etc/gshadow", data: "root:*::\ndaemon:*::\nsudo:*::\nusers:*::\nnogroup:*::\n", mode: 0o640},
		{path: "etc/subuid", data: ""},
		{path: "etc/subgid", data: ""},
		{path: "etc/login.defs", data: "MAIL_DIR /var/mail\nUMASK 022\nPASS_MAX_DAYS 99999\nPASS_MIN_DAYS 0\nPASS_WARN_AGE 7\nUID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nUSERGROUPS_ENAB yes\n"},
		{path: "etc/default/useradd", data: "SHELL=/bin/sh\n"},
		{path: "etc/skel/.profile", data: "# profile\n"},
		{path: "etc/skel/.bashrc", data: "# bashrc\n"},
		{path: "root", dir: true, mode: 0o700},
		{path: "home", dir: true},
		{path: "usr/lib", dir: true},
		{path: "lib", link: "usr/lib"},
		{path: "usr/lib/systemd/system/ssh.service", data: "[Unit]\nDescription=OpenSSH\n[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n"},
		{path: "usr/lib/systemd/system/debug-shell.service", data: "[Service]\nExecStart=/bin/sh\n"},
	}
}

// ftTypicalConfig is 20 files, 2 users and 3 units (plus a directory and
// two links), like a real first-boot config.
func ftTypicalConfig() string {
	var files []string
	for i := range 18 {
		files = append(files, fmt.Sprintf(`{"path":"/etc/app/conf%02d","mode":420,"contents":{"source":"data:,setting%%3D%d"}}`, i, i))
	}
	files = append(files,
		`{"path":"/etc/motd","overwrite":true,"contents":{"source":"data:,welcome"}}`,
		`{"path":"/usr/local/bin/app-run","mode":493,"user":{"name":"svc"},"contents":{"source":"data:,%23!/bin/sh%0Aexec%20true%0A"}}`)
	return `"passwd":{"users":[
			{"name":"core","passwordHash":"$6$rounds=4096$SECRET$hash","sshAuthorizedKeys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey core@example"],"groups":["sudo"]},
			{"name":"svc","system":true,"noCreateHome":true,"shell":"/usr/sbin/nologin"}]},
		"storage":{"files":[` + strings.Join(files, ",") + `],
			"directories":[{"path":"/var/lib/app","user":{"name":"svc"},"mode":488}],
			"links":[{"path":"/usr/local/bin/app","target":"app-run"},{"path":"/etc/app/hard","target":"/etc/app/conf00","hard":true}]},
		"systemd":{"units":[
			{"name":"app.service","enabled":true,"contents":"[Unit]\nDescription=App\n[Service]\nUser=svc\nExecStart=/usr/local/bin/app\n[Install]\nWantedBy=multi-user.target\n",
			 "dropins":[{"name":"10-env.conf","contents":"[Service]\nEnvironment=A=1\n"}]},
			{"name":"ssh.service","enabled":true},
			{"name":"debug-shell.service","mask":true}]}`
}

// TestFilesTypical applies the typical config and checks the result; run
// with -v for the time it takes.
func TestFilesTypical(t *testing.T) {
	ftNeedRoot(t)
	root := t.TempDir()
	ftMake(t, root, ftTypicalRoot()...)
	cfg := ftConfig(t, ftTypicalConfig())
	var logs bytes.Buffer
	start := time.Now()
	if err := Files(context.Background(), ftEnv(root, ftDataURLs{}, &logs), cfg); err != nil {
		t.Fatalf("Files() = %v", err)
	}
	t.Logf("typical config (20 files, 2 users, 3 units, 1 directory, 2 links) applied in %v", time.Since(start))
	if strings.Contains(logs.String(), "SECRET") || strings.Contains(logs.String(), "AAAAC3") {
		t.Errorf("a secret is in the log:\n%s", logs.String())
	}
	ftCheck(t, root, []ftWant{
		{path: "etc/app/conf07", kind: 'f', data: "setting=7", mode: 0o644},
		{path: "etc/app/hard", kind: 'f', data: "setting=0", sameAs: "etc/app/conf00"},
		{path: "usr/local/bin/app-run", kind: 'f', data: "#!/bin/sh\nexec true\n", mode: 0o755, uid: 999},
		{path: "usr/local/bin/app", kind: 'l', target: "app-run", uid: 999},
		{path: "var/lib/app", kind: 'd', mode: 0o750, uid: 999},
		{path: "home/core", kind: 'd', mode: 0o755, uid: 1000, gid: 1000},
		{path: "home/core/.profile", kind: 'f', data: "# profile\n", uid: 1000, gid: 1000},
		{path: "home/core/.ssh", kind: 'd', mode: 0o700, uid: 1000, gid: 1000},
		{path: "home/core/.ssh/authorized_keys.d/ignition", kind: 'f', mode: 0o600, uid: 1000, gid: 1000,
			data: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKey core@example\n"},
		{path: "home/svc", kind: '-'},
		{path: "etc/systemd/system/multi-user.target.wants/app.service", kind: 'l', target: "/etc/systemd/system/app.service"},
		{path: "etc/systemd/system/multi-user.target.wants/ssh.service", kind: 'l', target: "/usr/lib/systemd/system/ssh.service"},
		{path: "etc/systemd/system/sshd.service", kind: 'l', target: "/usr/lib/systemd/system/ssh.service"},
		{path: "etc/systemd/system/debug-shell.service", kind: 'l', target: "/dev/null"},
		{path: "etc/systemd/system-preset/20-ignition.preset", kind: 'f', data: "enable app.service\nenable ssh.service\n", mode: 0o644},
	})
	data, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(data), "core:x:1000:1000::/home/core:/bin/sh\n") || !strings.Contains(string(data), "svc:x:999:999::/home/svc:/usr/sbin/nologin\n") {
		t.Errorf("/etc/passwd = %q", data)
	}
}

func BenchmarkFilesTypical(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (chown)")
	}
	cfg := ftConfig(b, ftTypicalConfig())
	for b.Loop() {
		b.StopTimer()
		root := b.TempDir()
		ftMake(b, root, ftTypicalRoot()...)
		b.StartTimer()
		if err := Files(context.Background(), ftEnv(root, ftDataURLs{}, nil), cfg); err != nil {
			b.Fatal(err)
		}
	}
}
