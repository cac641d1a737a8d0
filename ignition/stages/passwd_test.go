package stages

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/google/go-cmp/cmp"
)

// ftShadowTools runs, against root, the shadow-utils commands upstream
// Ignition runs for the passwd section (the argument lists of its
// EnsureGroup, EnsureUser and SetPasswordHash). SSH keys are not part of it.
func ftShadowTools(t *testing.T, root string, p types.Passwd) {
	t.Helper()
	exists := func(file, name string) bool {
		data, _ := os.ReadFile(filepath.Join(root, "etc", file))
		for _, l := range strings.Split(string(data), "\n") {
			if n, _, _ := strings.Cut(l, ":"); n == name {
				return true
			}
		}
		return false
	}
	run := func(tool string, args ...string) {
		t.Helper()
		out, err := exec.Command(tool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
		}
	}
	for _, g := range p.Groups {
		ex := exists("group", g.Name)
		if cfgFalse(g.ShouldExist) {
			if ex {
				run("groupdel", "--root", root, g.Name)
			}
			continue
		}
		args := []string{"--root", root}
		if g.Gid != nil {
			args = append(args, "--gid", strconv.Itoa(*g.Gid))
		}
		if cfgSet(g.PasswordHash) {
			args = append(args, "--password", *g.PasswordHash)
		}
		if ex {
			run("groupmod", append(args, g.Name)...)
			continue
		}
		if cfgTrue(g.System) {
			args = append(args, "--system")
		}
		run("groupadd", append(args, g.Name)...)
	}
	for _, u := range p.Users {
		ex := exists("passwd", u.Name)
		if cfgFalse(u.ShouldExist) {
			if ex {
				run("userdel", "--remove", "--root", root, u.Name)
			}
			continue
		}
		args := []string{"--root", root}
		tool := "useradd"
		if ex {
			tool = "usermod"
			if cfgSet(u.HomeDir) {
				args = append(args, "--home", *u.HomeDir, "--move-home")
			}
		} else {
			if cfgSet(u.HomeDir) {
				args = append(args, "--home-dir", *u.HomeDir)
			}
			if cfgTrue(u.NoCreateHome) {
				args = append(args, "--no-create-home")
			} else {
				args = append(args, "--create-home")
			}
			for _, f := range []struct {
				b    *bool
				flag string
			}{{u.NoUserGroup, "--no-user-group"}, {u.System, "--system"}, {u.NoLogInit, "--no-log-init"}} {
				if cfgTrue(f.b) {
					args = append(args, f.flag)
				}
			}
		}
		switch {
		case cfgSet(u.PasswordHash):
			args = append(args, "--password", *u.PasswordHash)
		case u.PasswordHash != nil || !ex:
			args = append(args, "--password", "*")
		}
		if u.UID != nil {
			args = append(args, "--uid", strconv.Itoa(*u.UID))
		}
		if cfgSet(u.Gecos) {
			args = append(args, "--comment", *u.Gecos)
		}
		if cfgSet(u.PrimaryGroup) {
			args = append(args, "--gid", *u.PrimaryGroup)
		}
		if len(u.Groups) > 0 {
			var gs []string
			for _, g := range u.Groups {
				gs = append(gs, string(g))
			}
			args = append(args, "--groups", strings.Join(gs, ","))
		}
		if cfgSet(u.Shell) {
			args = append(args, "--shell", *u.Shell)
		}
		run(tool, append(args, u.Name)...)
		if u.PasswordHash != nil {
			pw := *u.PasswordHash
			if pw == "" {
				pw = "*"
			}
			run("usermod", "--root", root, "--password", pw, u.Name)
		}
	}
}

// ftAccountsView is what must be equal after the tools and after Files:
// the account files, and every node's type, mode, owner and contents
// (not inodes, times or the backup files, which depend on how many tool
// runs there were).
func ftAccountsView(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if strings.HasPrefix(rel, "etc/") && strings.HasSuffix(rel, "-") {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("%v %d:%d", fi.Mode(), st.Uid, st.Gid)
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, _ := os.Readlink(p)
			s += " -> " + tgt
		case fi.Mode().IsRegular():
			data, _ := os.ReadFile(p)
			if strings.HasPrefix(rel, "etc/") {
				s += "\n" + string(data)
			} else {
				sum := sha256.Sum256(data)
				s += " sha256=" + hex.EncodeToString(sum[:8])
			}
		}
		m[rel] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPasswdMatchesShadowTools applies passwd sections with Files and, on
// a twin root, with the shadow tools as upstream Ignition runs them, and
// wants the same account files, homes and owners.
func TestPasswdMatchesShadowTools(t *testing.T) {
	ftNeedRoot(t)
	for _, tool := range []string{"useradd", "usermod", "userdel", "groupadd", "groupmod", "groupdel"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found: the shadow tools (Debian package passwd) are this test's oracle", tool)
		}
	}
	debian := ftTypicalRoot()
	minimal := []ftNode{
		{path: "etc/passwd", data: "root:x:0:0:root:/root:/bin/bash\n"},
		{path: "etc/group", data: "root:x:0:\nusers:x:100:\n"},
		{path: "root", dir: true, mode: 0o700},
	}
	tests := []struct {
		name  string
		base  []ftNode
		extra []ftNode
		pre   string // applied with the tools to the root both start from
		cfg   string
		// kindling changes the tools' result where Kindling differs on
		// purpose.
		kindling func(view map[string]string)
	}{{
		name: "new groups",
		base: debian,
		cfg: `"passwd":{"groups":[{"name":"plain"},{"name":"fixed","gid":4242},{"name":"sys","system":true},
			{"name":"secret","passwordHash":"$6$grouphash"},{"name":"sys2","system":true,"gid":555}]}`,
	}, {
		name: "new users",
		base: debian,
		cfg: `"passwd":{"groups":[{"name":"dev"},{"name":"ops","gid":3000}],"users":[
			{"name":"core","passwordHash":"$6$abc$def","groups":["sudo","dev"],"gecos":"CoreOS Admin"},
			{"name":"svc","system":true},
			{"name":"svc2","system":true,"noCreateHome":true,"shell":"/usr/sbin/nologin"},
			{"name":"nogrp","noUserGroup":true},
			{"name":"fixed","uid":2000,"primaryGroup":"ops","shell":"/bin/bash"},
			{"name":"gidnum","primaryGroup":"3000","groups":["27"]},
			{"name":"elsewhere","homeDir":"/srv/elsewhere","noLogInit":true},
			{"name":"nohome","noCreateHome":true,"passwordHash":""}]}`,
	}, {
		name:  "existing home is left alone",
		base:  debian,
		extra: []ftNode{{path: "home/had", dir: true, uid: 0, gid: 0}, {path: "home/had/file", data: "mine"}},
		cfg:   `"passwd":{"users":[{"name":"had"}]}`,
	}, {
		name: "existing users modified",
		base: debian,
		pre: `"passwd":{"groups":[{"name":"g1"},{"name":"g2"},{"name":"g3"}],"users":[
			{"name":"mod","groups":["g1","g2"]},{"name":"same"},{"name":"movehome"}]}`,
		cfg: `"passwd":{"users":[
			{"name":"mod","uid":1500,"primaryGroup":"g3","groups":["g2","sudo"],"gecos":"Modified","shell":"/bin/bash","passwordHash":"$6$new"},
			{"name":"same"},
			{"name":"movehome","homeDir":"/home/moved"},
			{"name":"root","passwordHash":"$6$rootpw"}]}`,
	}, {
		name: "users and groups deleted",
		base: debian,
		pre: `"passwd":{"groups":[{"name":"gone"},{"name":"shared"}],"users":[
			{"name":"bob","groups":["shared"]},{"name":"alice","groups":["bob","shared"]},{"name":"carol","groups":["shared"]}]}`,
		cfg: `"passwd":{"groups":[{"name":"gone","shouldExist":false},{"name":"never","shouldExist":false}],
			"users":[{"name":"carol","shouldExist":false},{"name":"bob","shouldExist":false},{"name":"nobody-here","shouldExist":false}]}`,
	}, {
		name: "group gid changed moves its users' primary group",
		base: debian,
		pre:  `"passwd":{"groups":[{"name":"team"}],"users":[{"name":"member","primaryGroup":"team"}]}`,
		cfg:  `"passwd":{"groups":[{"name":"team","gid":7777,"passwordHash":"$6$teampw"},{"name":"sudo"}]}`,
	}, {
		name: "no user groups, no shadow files, no login.defs",
		base: minimal,
		cfg: `"passwd":{"groups":[{"name":"staff","passwordHash":"$6$g"}],"users":[
			{"name":"plain"},{"name":"sys","system":true},{"name":"pw","passwordHash":"$6$p","groups":["staff"]}]}`,
		// With neither HOME_MODE nor UMASK in the target's login.defs,
		// useradd falls back to its built-in umask 022 (homes 0755);
		// Kindling makes them private.
		kindling: func(view map[string]string) {
			for _, h := range []string{"home/plain", "home/pw", "home/sys"} {
				view[h] = strings.Replace(view[h], "drwxr-xr-x", "drwx------", 1)
			}
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oracle, ours := t.TempDir(), t.TempDir()
			ftMake(t, oracle, tc.base...)
			ftMake(t, oracle, tc.extra...)
			if tc.pre != "" {
				ftShadowTools(t, oracle, ftConfig(t, tc.pre).Passwd)
			}
			if out, err := exec.Command("cp", "-a", oracle+"/.", ours).CombinedOutput(); err != nil {
				t.Fatalf("cp -a: %v\n%s", err, out)
			}
			cfg := ftConfig(t, tc.cfg)
			ftShadowTools(t, oracle, cfg.Passwd)
			if err := Files(context.Background(), ftEnv(ours, nil, nil), cfg); err != nil {
				t.Fatalf("Files() = %v", err)
			}
			want := ftAccountsView(t, oracle)
			if tc.kindling != nil {
				tc.kindling(want)
			}
			if d := cmp.Diff(want, ftAccountsView(t, ours)); d != "" {
				t.Errorf("Files() and the shadow tools differ (-tools +Files):\n%s", d)
			}
		})
	}
}

func TestPasswdSSHKeys(t *testing.T) {
	ftNeedRoot(t)
	root := t.TempDir()
	ftMake(t, root, ftTypicalRoot()...)
	ftMake(t, root,
		ftNode{path: "etc/ssh/sshd_config", data: "Include /etc/ssh/sshd_config.d/*.conf\n#AuthorizedKeysFile	.ssh/authorized_keys .ssh/authorized_keys2\n"},
		ftNode{path: "etc/ssh/sshd_config.d/10-other.conf", data: "PasswordAuthentication no\n"},
		ftNode{path: "root/.ssh", dir: true, mode: 0o700},
		ftNode{path: "root/.ssh/authorized_keys.d/ignition", data: "old-key\n", mode: 0o644},
	)
	cfg := ftConfig(t, `"passwd":{"users":[
		{"name":"root","sshAuthorizedKeys":["ssh-ed25519 AAAA root@a","ssh-rsa BBBB root@b"]},
		{"name":"keyonly","noCreateHome":true,"homeDir":"/var/lib/keyonly","sshAuthorizedKeys":["ssh-ed25519 CCCC k\n"]}]}`)
	var logs bytes.Buffer
	if err := Files(context.Background(), ftEnv(root, nil, &logs), cfg); err != nil {
		t.Fatalf("Files() = %v", err)
	}
	// Debian's sshd reads only ~/.ssh/authorized_keys{,2}: say so, once.
	if n := strings.Count(logs.String(), "does not read ~/.ssh/authorized_keys.d/ignition"); n != 1 {
		t.Errorf("the log warns %d times about sshd ignoring the keys, want once:\n%s", n, logs.String())
	}
	// With the fragment named, no warning.
	root2 := t.TempDir()
	ftMake(t, root2, ftTypicalRoot()...)
	ftMake(t, root2,
		ftNode{path: "etc/ssh/sshd_config", data: "Include /etc/ssh/sshd_config.d/*.conf\n"},
		ftNode{path: "etc/ssh/sshd_config.d/40-keys.conf", data: "AuthorizedKeysFile\t.ssh/authorized_keys .ssh/authorized_keys.d/ignition\n"})
	logs.Reset()
	if err := Files(context.Background(), ftEnv(root2, nil, &logs), cfg); err != nil {
		t.Fatalf("Files() = %v", err)
	}
	if strings.Contains(logs.String(), "does not read") {
		t.Errorf("the log warns though sshd reads the keys:\n%s", logs.String())
	}
	ftCheck(t, root, []ftWant{
		{path: "root", kind: 'd', mode: 0o700},
		{path: "root/.ssh", kind: 'd', mode: 0o700},
		{path: "root/.ssh/authorized_keys.d", kind: 'd', mode: 0o755}, // existed: left as it was
		{path: "root/.ssh/authorized_keys.d/ignition", kind: 'f', mode: 0o600, data: "ssh-ed25519 AAAA root@a\nssh-rsa BBBB root@b\n"},
		// A user made without a home still gets its keys: the missing
		// directories are made 0700 and belong to it.
		{path: "var/lib", kind: 'd', mode: 0o755},
		{path: "var/lib/keyonly", kind: 'd', mode: 0o700, uid: 1000, gid: 1000},
		{path: "var/lib/keyonly/.ssh/authorized_keys.d/ignition", kind: 'f', mode: 0o600, uid: 1000, gid: 1000, data: "ssh-ed25519 CCCC k\n"},
	})
}

func TestNewID(t *testing.T) {
	db := &pwDB{defs: map[string]string{"UID_MIN": "1000", "UID_MAX": "1005", "SYS_UID_MIN": "100", "SYS_UID_MAX": "105"}}
	tests := []struct {
		name      string
		sys       bool
		used      []int
		preferred int
		want      int
		wantErr   bool
	}{
		{"empty range starts at UID_MIN", false, []int{0, 65534}, -1, 1000, false},
		{"above the highest in use", false, []int{0, 1000, 1003}, -1, 1004, false},
		{"a gap when the top is taken", false, []int{1000, 1002, 1005}, -1, 1001, false},
		{"system: below the lowest in use", true, []int{0, 103, 105}, -1, 102, false},
		{"system: from the top when empty", true, nil, -1, 105, false},
		{"system: a gap when the bottom is taken", true, []int{100, 102, 105}, -1, 104, false},
		{"preferred when free and in range", false, []int{1000}, 1004, 1004, false},
		{"preferred taken", false, []int{1000, 1004}, 1004, 1005, false},
		{"preferred out of range", false, []int{1000}, 50, 1001, false},
		{"full", false, []int{1000, 1001, 1002, 1003, 1004, 1005}, -1, 0, true},
	}
	for _, tc := range tests {
		used := map[int]bool{}
		for _, id := range tc.used {
			used[id] = true
		}
		got, err := db.newID("UID", tc.sys, func(id int) bool { return used[id] }, tc.used, tc.preferred)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: newID(sys=%v, used=%v, preferred=%d) = %d, %v, want %d (error %v)", tc.name, tc.sys, tc.used, tc.preferred, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestValidAccountName(t *testing.T) {
	for name, want := range map[string]bool{
		"core": true, "svc-app": true, "_apt": true, "systemd-network": true, "a.b": true, "Admin": true, "machine$": true, "u1": true,
		"": false, "-rf": false, "123": false, ".": false, "..": false, "bad:name": false, "a b": false, "a,b": false, "a\nb": false,
		"a/b": false, "$x": false, strings.Repeat("x", 33): false,
	} {
		if got := validAccountName(name); got != want {
			t.Errorf("validAccountName(%q) = %v, want %v", name, got, want)
		}
	}
}
