package stages

// passwd: users and groups, written into the target's /etc/passwd,
// /etc/shadow, /etc/group, /etc/gshadow (and /etc/subuid, /etc/subgid when
// the target has them).
//
// Upstream Ignition runs useradd, usermod, userdel, groupadd, groupmod and
// groupdel with --root. Kindling edits the files itself instead: the agent
// runs from an initramfs that has no shadow tools, and the edit is then
// one atomic replacement per file, planned and checked before anything is
// written. The edits follow what those tools do with the target's own
// /etc/login.defs and /etc/default/useradd (shadow 4.13, checked against
// the real tools in passwd_test.go):
//   - a new user gets the lowest uid above the highest one used in
//     UID_MIN..UID_MAX (system users: the highest below the lowest used in
//     SYS_UID_MIN..SYS_UID_MAX), a group of its own name when
//     USERGROUPS_ENAB is yes (gid = uid when free), else GROUP from
//     /etc/default/useradd; password "*" (locked) unless passwordHash is
//     given; shell and home base from /etc/default/useradd; a shadow line
//     with PASS_MIN_DAYS/PASS_MAX_DAYS/PASS_WARN_AGE (empty for system
//     users); a subordinate id range when /etc/subuid exists;
//   - its home is made with HOME_MODE (else 0777 minus UMASK) and filled
//     from /etc/skel, unless it exists already (then it is left alone);
//     when the target's login.defs sets neither, Kindling uses 0700;
//   - an existing user is changed only in the fields the config gives
//     (homeDir moves the home, uid and primaryGroup re-own the files in it
//     that had the old ids, groups replaces the supplementary groups);
//   - shouldExist=false removes the user, its own group when nothing else
//     uses it, its home (when the user owns it) and its mail spool;
//   - each file replaced keeps its mode and owner, and its previous
//     contents go to the backup file beside it (/etc/passwd-, …), as the
//     tools leave them.
// Not done: lastlog and faillog entries (--no-log-init is the same as
// not), SELinux labels.
//
// sshAuthorizedKeys go to ~/.ssh/authorized_keys.d/ignition (0600, the
// directories 0700, owned by the user), as upstream writes them; sshd
// reads that file only when AuthorizedKeysFile names it.
//
// Password hashes never appear in plans, logs or errors.

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// pwFile is one of the account files, held as lines so that everything
// the edit does not touch (comments, NIS entries, odd lines) stays as is.
type pwFile struct {
	path     string // "/etc/passwd"
	rel      string // where it is written
	exists   bool
	orig     []byte
	lines    []string
	mode     fs.FileMode
	uid, gid int
	dirty    bool
}

func (f *pwFile) find(name string) int {
	for i, l := range f.lines {
		if n, _, _ := strings.Cut(l, ":"); n == name {
			return i
		}
	}
	return -1
}

func (f *pwFile) fields(i int) []string { return strings.Split(f.lines[i], ":") }

func (f *pwFile) set(i int, fields []string) {
	f.lines[i] = strings.Join(fields, ":")
	f.dirty = true
}

func (f *pwFile) add(fields ...string) {
	f.lines = append(f.lines, strings.Join(fields, ":"))
	f.dirty = true
}

func (f *pwFile) del(name string) bool {
	if i := f.find(name); i >= 0 {
		f.lines = slices.Delete(f.lines, i, i+1)
		f.dirty = true
		return true
	}
	return false
}

func (f *pwFile) content() []byte {
	if len(f.lines) == 0 {
		return nil
	}
	return []byte(strings.Join(f.lines, "\n") + "\n")
}

// pwDB is the target's accounts as the run leaves them.
type pwDB struct {
	passwdFile, shadowFile, groupFile, gshadowFile, subuidFile, subgidFile *pwFile
	defs                                                                   map[string]string // /etc/login.defs
	useradd                                                                map[string]string // /etc/default/useradd
}

type pwUser struct {
	name           string
	uid, gid       int
	gecos, home    string
	shell, pwField string
}

type pwGroup struct {
	name    string
	gid     int
	members []string
}

// passwd loads the target's account files on first use.
func (r *filesRun) passwd() (*pwDB, error) {
	if r.db != nil {
		return r.db, nil
	}
	db := &pwDB{}
	for _, f := range []struct {
		p  **pwFile
		nm string
	}{{&db.passwdFile, "passwd"}, {&db.shadowFile, "shadow"}, {&db.groupFile, "group"}, {&db.gshadowFile, "gshadow"}, {&db.subuidFile, "subuid"}, {&db.subgidFile, "subgid"}} {
		pf, err := r.loadAccountFile("/etc/" + f.nm)
		if err != nil {
			return nil, Fail("reading /etc/"+f.nm+" of the target", err)
		}
		*f.p = pf
	}
	var err error
	if db.defs, err = r.readSettings("/etc/login.defs", false); err != nil {
		return nil, Fail("reading /etc/login.defs of the target", err)
	}
	if db.useradd, err = r.readSettings("/etc/default/useradd", true); err != nil {
		return nil, Fail("reading /etc/default/useradd of the target", err)
	}
	r.db = db
	return db, nil
}

func (r *filesRun) loadAccountFile(p string) (*pwFile, error) {
	rel, err := r.tree.resolve(p, false)
	if err != nil {
		return nil, err
	}
	f := &pwFile{path: p, rel: rel, mode: 0o644}
	n, err := r.tree.lstat(rel)
	if err != nil || !n.exists {
		return f, err
	}
	readRel := rel
	if n.isSymlink() {
		if readRel, err = r.tree.resolve(p, true); err != nil {
			return nil, err
		}
		if n, err = r.tree.lstat(readRel); err != nil {
			return nil, err
		}
	}
	if !n.isRegular() {
		return nil, fmt.Errorf("%s is a %s, not a file", p, n.kind())
	}
	data := n.data
	if !n.known {
		if data, err = r.root.ReadFile(readRel); err != nil {
			return nil, err
		}
	}
	f.exists, f.orig, f.mode, f.uid, f.gid = true, data, permBits(n.mode), n.uid, n.gid
	if s := strings.TrimSuffix(string(data), "\n"); s != "" {
		f.lines = strings.Split(s, "\n")
	}
	return f, nil
}

// readSettings reads login.defs ("KEY value") or default/useradd
// ("KEY=value"); a missing file is no settings.
func (r *filesRun) readSettings(p string, eq bool) (map[string]string, error) {
	m := map[string]string{}
	rel, err := r.tree.resolve(p, true)
	if err != nil {
		return nil, err
	}
	n, err := r.tree.lstat(rel)
	if err != nil || !n.isRegular() {
		return m, err
	}
	data := n.data
	if !n.known {
		if data, err = r.root.ReadFile(rel); err != nil {
			return nil, err
		}
	}
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		var k, v string
		var ok bool
		if eq {
			k, v, ok = strings.Cut(l, "=")
		} else {
			k, v, ok = strings.Cut(strings.ReplaceAll(l, "\t", " "), " ")
		}
		if !ok {
			continue
		}
		m[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"`)
	}
	return m, nil
}

func (db *pwDB) defInt(key string, def int) int {
	v, ok := db.defs[key]
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 0, 64)
	if err != nil {
		return def
	}
	return int(n)
}

func (db *pwDB) userGroups() bool { return strings.EqualFold(db.defs["USERGROUPS_ENAB"], "yes") }

func (db *pwDB) users() []pwUser {
	var us []pwUser
	for i := range db.passwdFile.lines {
		f := db.passwdFile.fields(i)
		if len(f) < 7 {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		us = append(us, pwUser{name: f[0], uid: uid, gid: gid, gecos: f[4], home: f[5], shell: f[6], pwField: f[1]})
	}
	return us
}

func (db *pwDB) groups() []pwGroup {
	var gs []pwGroup
	for i := range db.groupFile.lines {
		f := db.groupFile.fields(i)
		if len(f) < 4 {
			continue
		}
		gid, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		var members []string
		if f[3] != "" {
			members = strings.Split(f[3], ",")
		}
		gs = append(gs, pwGroup{name: f[0], gid: gid, members: members})
	}
	return gs
}

func (db *pwDB) user(name string) (pwUser, bool) {
	for _, u := range db.users() {
		if u.name == name {
			return u, true
		}
	}
	return pwUser{}, false
}

func (db *pwDB) userByUID(uid int) (pwUser, bool) {
	for _, u := range db.users() {
		if u.uid == uid {
			return u, true
		}
	}
	return pwUser{}, false
}

func (db *pwDB) group(name string) (pwGroup, bool) {
	for _, g := range db.groups() {
		if g.name == name {
			return g, true
		}
	}
	return pwGroup{}, false
}

func (db *pwDB) groupByGID(gid int) (pwGroup, bool) {
	for _, g := range db.groups() {
		if g.gid == gid {
			return g, true
		}
	}
	return pwGroup{}, false
}

// groupRef finds a group given by name or, failing that, by number, as
// the tools' -g and -G do.
func (db *pwDB) groupRef(ref string) (pwGroup, bool) {
	if g, ok := db.group(ref); ok {
		return g, true
	}
	if n, err := strconv.Atoi(ref); err == nil {
		return db.groupByGID(n)
	}
	return pwGroup{}, false
}

// newID picks a free uid or gid the way the shadow tools do.
func (db *pwDB) newID(kind string, sys bool, used func(int) bool, ids []int, preferred int) (int, error) {
	min, max := db.defInt(kind+"_MIN", 1000), db.defInt(kind+"_MAX", 60000)
	if sys {
		min, max = db.defInt("SYS_"+kind+"_MIN", 101), db.defInt("SYS_"+kind+"_MAX", db.defInt(kind+"_MIN", 1000)-1)
	}
	if min > max {
		return 0, fmt.Errorf("the target's login.defs gives an empty %s range %d..%d", kind, min, max)
	}
	if preferred >= min && preferred <= max && !used(preferred) {
		return preferred, nil
	}
	if sys {
		// Below the lowest id in use in the range, else any gap from the top.
		low := max
		for _, id := range ids {
			if id >= min && id <= low {
				low = id - 1
			}
		}
		if low < min {
			low = max
		}
		for id := low; id >= min; id-- {
			if !used(id) {
				return id, nil
			}
		}
		for id := max; id >= min; id-- {
			if !used(id) {
				return id, nil
			}
		}
	} else {
		// Above the highest id in use in the range, else any gap from the bottom.
		high := min
		for _, id := range ids {
			if id >= high && id <= max {
				high = id + 1
			}
		}
		if high > max {
			high = min
		}
		for id := high; id <= max; id++ {
			if !used(id) {
				return id, nil
			}
		}
		for id := min; id <= max; id++ {
			if !used(id) {
				return id, nil
			}
		}
	}
	return 0, fmt.Errorf("no free %s left in %d..%d", strings.ToLower(kind), min, max)
}

func (db *pwDB) newUID(sys bool) (int, error) {
	var ids []int
	for _, u := range db.users() {
		ids = append(ids, u.uid)
	}
	return db.newID("UID", sys, func(id int) bool { _, ok := db.userByUID(id); return ok }, ids, -1)
}

func (db *pwDB) newGID(sys bool, preferred int) (int, error) {
	var ids []int
	for _, g := range db.groups() {
		ids = append(ids, g.gid)
	}
	return db.newID("GID", sys, func(id int) bool { _, ok := db.groupByGID(id); return ok }, ids, preferred)
}

// validAccountName is the rule the shadow tools apply to new names: letters,
// digits, '_', '.', '-' (not first), an optional final '$', at most 32
// characters, not all digits, not "." or "..".
func validAccountName(s string) bool {
	if s == "" || len(s) > 32 || s == "." || s == ".." {
		return false
	}
	digits := true
	for i, c := range s {
		switch {
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_', c == '.':
			digits = false
		case c == '-' && i > 0, c == '$' && i > 0 && i == len(s)-1:
			digits = false
		default:
			return false
		}
	}
	return !digits
}

const accountNameRule = "letters, digits, '_', '.', '-' (not first) and a final '$', at most 32 characters, not all digits"

func shadowToday() string { return strconv.FormatInt(time.Now().Unix()/86400, 10) }

// ageField prints a shadow age: -1 is empty.
func ageField(n int) string {
	if n < 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func (db *pwDB) shadowLine(name, pw string, sys bool) []string {
	min, max, warn, inactive, expire := -1, -1, -1, -1, ""
	if !sys {
		min, max, warn = db.defInt("PASS_MIN_DAYS", -1), db.defInt("PASS_MAX_DAYS", -1), db.defInt("PASS_WARN_AGE", -1)
		if v, err := strconv.Atoi(db.useradd["INACTIVE"]); err == nil {
			inactive = v
		}
		if t, err := time.Parse("2006-01-02", db.useradd["EXPIRE"]); err == nil {
			expire = strconv.FormatInt(t.Unix()/86400, 10)
		}
	}
	return []string{name, pw, shadowToday(), ageField(min), ageField(max), ageField(warn), ageField(inactive), expire, ""}
}

// setPassword stores a user's password in /etc/shadow when the target has
// one (making the user's line if missing), else in /etc/passwd.
func (db *pwDB) setPassword(name, pw string) {
	if db.shadowFile.exists {
		if i := db.shadowFile.find(name); i >= 0 {
			f := db.shadowFile.fields(i)
			for len(f) < 9 {
				f = append(f, "")
			}
			f[1], f[2] = pw, shadowToday()
			db.shadowFile.set(i, f)
		} else {
			db.shadowFile.add(db.shadowLine(name, pw, false)...)
		}
		db.setUserField(name, 1, "x")
		return
	}
	db.setUserField(name, 1, pw)
}

func (db *pwDB) setUserField(name string, field int, v string) {
	i := db.passwdFile.find(name)
	f := db.passwdFile.fields(i)
	if f[field] != v {
		f[field] = v
		db.passwdFile.set(i, f)
	}
}

func (db *pwDB) addGroup(name string, gid int, pw string) {
	if db.gshadowFile.exists {
		db.groupFile.add(name, "x", strconv.Itoa(gid), "")
		if pw == "" {
			pw = "!"
		}
		db.gshadowFile.add(name, pw, "", "")
		return
	}
	if pw == "" {
		pw = "x"
	}
	db.groupFile.add(name, pw, strconv.Itoa(gid), "")
}

// setMember adds or removes user in group's member lists (/etc/group and,
// when it has the group, /etc/gshadow).
func (db *pwDB) setMember(group, user string, member bool) {
	edit := func(f *pwFile, field int) {
		i := f.find(group)
		if i < 0 {
			return
		}
		fs := f.fields(i)
		if len(fs) <= field {
			return
		}
		var ms []string
		if fs[field] != "" {
			ms = strings.Split(fs[field], ",")
		}
		has := slices.Contains(ms, user)
		switch {
		case member && !has:
			ms = append(ms, user)
		case !member && has:
			ms = slices.DeleteFunc(ms, func(m string) bool { return m == user })
		default:
			return
		}
		fs[field] = strings.Join(ms, ",")
		f.set(i, fs)
	}
	edit(db.groupFile, 3)
	if db.gshadowFile.exists {
		edit(db.gshadowFile, 3)
		if !member {
			edit(db.gshadowFile, 2) // administrators
		}
	}
}

// addSubIDs gives a new user a subordinate id range in f (/etc/subuid or
// /etc/subgid) when the target has the file: the lowest free range of
// SUB_UID_COUNT ids from SUB_UID_MIN.
func (db *pwDB) addSubIDs(f *pwFile, name, kind string) error {
	if !f.exists {
		return nil
	}
	min, max, count := db.defInt("SUB_"+kind+"_MIN", 100000), db.defInt("SUB_"+kind+"_MAX", 600100000), db.defInt("SUB_"+kind+"_COUNT", 65536)
	if count <= 0 {
		return nil
	}
	type span struct{ start, n int }
	var used []span
	for i := range f.lines {
		fs := f.fields(i)
		if len(fs) != 3 {
			continue
		}
		s, err1 := strconv.Atoi(fs[1])
		n, err2 := strconv.Atoi(fs[2])
		if err1 == nil && err2 == nil {
			used = append(used, span{s, n})
		}
	}
	start := min
	for moved := true; moved; {
		moved = false
		for _, u := range used {
			if start < u.start+u.n && u.start < start+count {
				start, moved = u.start+u.n, true
			}
		}
	}
	if start+count-1 > max {
		return fmt.Errorf("no free range of %d subordinate %ss left in %s", count, strings.ToLower(kind), f.path)
	}
	f.add(name, strconv.Itoa(start), strconv.Itoa(count))
	return nil
}

// ---- planning ----

func (r *filesRun) planPasswd(p types.Passwd) error {
	if len(p.Groups) == 0 && len(p.Users) == 0 {
		return nil
	}
	db, err := r.passwd()
	if err != nil {
		return err
	}
	mark := len(r.ops)
	for _, g := range p.Groups {
		if err := r.planGroup(db, g); err != nil {
			return err
		}
	}
	for _, u := range p.Users {
		if err := r.planUser(db, u); err != nil {
			return err
		}
	}
	// The account files are written first, then the homes and keys.
	later := slices.Clone(r.ops[mark:])
	r.ops = r.ops[:mark]
	if err := r.planAccountWrites(db); err != nil {
		return err
	}
	r.ops = append(r.ops, later...)
	return nil
}

func (r *filesRun) planAccountWrites(db *pwDB) error {
	dirty := false
	for _, f := range []*pwFile{db.groupFile, db.gshadowFile, db.passwdFile, db.shadowFile, db.subuidFile, db.subgidFile} {
		if !f.dirty {
			continue
		}
		dirty = true
		detail := "users and groups"
		if f.exists {
			detail += ", previous contents kept in " + f.path + "-"
			if err := r.planWrite("passwd", f.rel+"-", f.orig, true, f.mode, f.uid, f.gid, "backup of "+f.path); err != nil {
				return Fail("writing "+f.path+"-", err)
			}
		}
		if err := r.planWrite("passwd", f.rel, f.content(), true, f.mode, f.uid, f.gid, detail); err != nil {
			return Fail("writing "+f.path, err)
		}
	}
	if !dirty {
		return nil
	}
	// The lock file the shadow tools leave behind.
	rel, err := r.tree.resolve("/etc/.pwd.lock", false)
	if err != nil {
		return Fail("writing /etc/.pwd.lock", err)
	}
	if n, err := r.tree.lstat(rel); err != nil {
		return Fail("writing /etc/.pwd.lock", err)
	} else if !n.exists {
		return Fail("writing /etc/.pwd.lock", r.planWrite("passwd", rel, nil, true, 0o600, 0, 0, "lock file of the account files"))
	}
	return nil
}

func (r *filesRun) planGroup(db *pwDB, g types.PasswdGroup) error {
	target := "group " + g.Name
	cur, exists := db.group(g.Name)
	if cfgFalse(g.ShouldExist) {
		if !exists {
			r.note("passwd", "keep", target, "absent, as asked")
			return nil
		}
		for _, u := range db.users() {
			if u.gid == cur.gid {
				return Failf("deleting "+target, "it is the primary group of user %q", u.name)
			}
		}
		db.groupFile.del(g.Name)
		db.gshadowFile.del(g.Name)
		r.note("passwd", "delete", target, fmt.Sprintf("gid %d", cur.gid))
		return nil
	}
	if exists {
		var changes []string
		if g.Gid != nil && *g.Gid != cur.gid {
			if o, ok := db.groupByGID(*g.Gid); ok {
				return Failf("modifying "+target, "gid %d is already used by group %q", *g.Gid, o.name)
			}
			i := db.groupFile.find(g.Name)
			f := db.groupFile.fields(i)
			f[2] = strconv.Itoa(*g.Gid)
			db.groupFile.set(i, f)
			// The users whose primary group it is follow it.
			for _, u := range db.users() {
				if u.gid == cur.gid {
					db.setUserField(u.name, 3, strconv.Itoa(*g.Gid))
				}
			}
			changes = append(changes, fmt.Sprintf("gid %d → %d", cur.gid, *g.Gid))
		}
		if cfgSet(g.PasswordHash) {
			if i := db.gshadowFile.find(g.Name); db.gshadowFile.exists && i >= 0 {
				f := db.gshadowFile.fields(i)
				f[1] = *g.PasswordHash
				db.gshadowFile.set(i, f)
			} else {
				i := db.groupFile.find(g.Name)
				f := db.groupFile.fields(i)
				f[1] = *g.PasswordHash
				db.groupFile.set(i, f)
			}
			changes = append(changes, "password")
		}
		if len(changes) == 0 {
			r.note("passwd", "keep", target, fmt.Sprintf("exists with gid %d", cur.gid))
		} else {
			r.note("passwd", "modify", target, strings.Join(changes, ", "))
		}
		return nil
	}
	if !validAccountName(g.Name) {
		return Failf("creating group "+strconv.Quote(g.Name), "invalid group name (use %s)", accountNameRule)
	}
	var gid int
	if g.Gid != nil {
		if o, ok := db.groupByGID(*g.Gid); ok {
			return Failf("creating "+target, "gid %d is already used by group %q", *g.Gid, o.name)
		}
		gid = *g.Gid
	} else {
		var err error
		if gid, err = db.newGID(cfgTrue(g.System), -1); err != nil {
			return Fail("creating "+target, err)
		}
	}
	pw := ""
	if cfgSet(g.PasswordHash) {
		pw = *g.PasswordHash
	}
	db.addGroup(g.Name, gid, pw)
	detail := fmt.Sprintf("gid %d", gid)
	if cfgTrue(g.System) {
		detail += ", system"
	}
	if pw != "" {
		detail += ", password set"
	}
	r.note("passwd", "create", target, detail)
	return nil
}

func (r *filesRun) planUser(db *pwDB, u types.PasswdUser) error {
	target := "user " + u.Name
	cur, exists := db.user(u.Name)
	var err error
	switch {
	case cfgFalse(u.ShouldExist):
		if !exists {
			r.note("passwd", "keep", target, "absent, as asked")
			return nil
		}
		err = r.planUserDelete(db, cur)
	case exists:
		err = r.planUserModify(db, u, cur)
	default:
		err = r.planUserCreate(db, u)
	}
	if err != nil {
		return err
	}
	if cfgFalse(u.ShouldExist) || len(u.SSHAuthorizedKeys) == 0 {
		return nil
	}
	return Fail("writing SSH keys of "+target, r.planSSHKeys(db, u))
}

func (r *filesRun) planUserCreate(db *pwDB, u types.PasswdUser) error {
	op := "creating user " + strconv.Quote(u.Name)
	if !validAccountName(u.Name) {
		return Failf(op, "invalid user name (use %s)", accountNameRule)
	}
	sys := cfgTrue(u.System)
	var uid int
	if u.UID != nil {
		if o, ok := db.userByUID(*u.UID); ok {
			return Failf(op, "uid %d is already used by user %q", *u.UID, o.name)
		}
		uid = *u.UID
	} else {
		var err error
		if uid, err = db.newUID(sys); err != nil {
			return Fail(op, err)
		}
	}

	var gid int
	userGroup := false
	switch {
	case cfgSet(u.PrimaryGroup):
		g, ok := db.groupRef(*u.PrimaryGroup)
		if !ok {
			return Failf(op, "primary group %q does not exist in the target's /etc/group", *u.PrimaryGroup)
		}
		gid = g.gid
	case db.userGroups() && !cfgTrue(u.NoUserGroup):
		if _, ok := db.group(u.Name); ok {
			return Failf(op, "a group named %q exists already (set primaryGroup to use it)", u.Name)
		}
		var err error
		if gid, err = db.newGID(sys, uid); err != nil {
			return Fail(op, err)
		}
		userGroup = true
	default:
		def := db.useradd["GROUP"]
		if def == "" {
			def = "100"
		}
		if n, err := strconv.Atoi(def); err == nil {
			gid = n
		} else if g, ok := db.group(def); ok {
			gid = g.gid
		} else {
			return Failf(op, "the default group %q of the target's /etc/default/useradd does not exist", def)
		}
	}
	var supp []string
	for _, ref := range u.Groups {
		g, ok := db.groupRef(string(ref))
		if !ok {
			return Failf(op, "group %q (in groups) does not exist in the target's /etc/group", string(ref))
		}
		supp = append(supp, g.name)
	}

	home := path.Join(orDefault(db.useradd["HOME"], "/home"), u.Name)
	if cfgSet(u.HomeDir) {
		home = *u.HomeDir
	}
	shell, ok := db.useradd["SHELL"]
	if !ok {
		shell = "/bin/bash"
	}
	if cfgSet(u.Shell) {
		shell = *u.Shell
	}
	gecos := ""
	if cfgSet(u.Gecos) {
		gecos = *u.Gecos
	}
	pw := "*"
	if cfgSet(u.PasswordHash) {
		pw = *u.PasswordHash
	}
	for _, c := range []struct{ field, v string }{{"gecos", gecos}, {"homeDir", home}, {"shell", shell}} {
		if strings.ContainsAny(c.v, ":\n") {
			return Failf(op, "%s %q contains ':' or a newline", c.field, c.v)
		}
	}
	if strings.ContainsAny(pw, ":\n") {
		return Failf(op, "passwordHash contains ':' or a newline")
	}

	if userGroup {
		db.addGroup(u.Name, gid, "")
	}
	if db.shadowFile.exists {
		db.passwdFile.add(u.Name, "x", strconv.Itoa(uid), strconv.Itoa(gid), gecos, home, shell)
		db.shadowFile.add(db.shadowLine(u.Name, pw, sys)...)
	} else {
		db.passwdFile.add(u.Name, pw, strconv.Itoa(uid), strconv.Itoa(gid), gecos, home, shell)
	}
	for _, g := range supp {
		db.setMember(g, u.Name, true)
	}
	uidMin, uidMax := db.defInt("UID_MIN", 1000), db.defInt("UID_MAX", 60000)
	if !sys && uid >= uidMin && uid <= uidMax {
		if err := db.addSubIDs(db.subuidFile, u.Name, "UID"); err != nil {
			return Fail(op, err)
		}
		if err := db.addSubIDs(db.subgidFile, u.Name, "GID"); err != nil {
			return Fail(op, err)
		}
	}
	detail := fmt.Sprintf("uid %d, gid %d, home %s, shell %s", uid, gid, home, shell)
	if len(supp) > 0 {
		detail += ", groups " + strings.Join(supp, ",")
	}
	if sys {
		detail += ", system"
	}
	if pw == "*" {
		detail += ", password locked"
	} else {
		detail += ", password set"
	}
	r.note("passwd", "create", "user "+u.Name, detail)
	if userGroup {
		r.note("passwd", "create", "group "+u.Name, fmt.Sprintf("gid %d, the user's own group", gid))
	}

	if !cfgTrue(u.NoCreateHome) {
		if err := r.planHome(db, u.Name, home, uid, gid); err != nil {
			return Fail(op, err)
		}
	}
	if strings.EqualFold(db.useradd["CREATE_MAIL_SPOOL"], "yes") {
		if err := r.planMailSpool(db, u.Name, uid, gid); err != nil {
			return Fail(op, err)
		}
	}
	return nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// homeMode is the mode of new homes: HOME_MODE, else 0777 minus UMASK,
// else 0700.
func (db *pwDB) homeMode() fs.FileMode {
	if _, ok := db.defs["HOME_MODE"]; ok {
		return configMode(db.defInt("HOME_MODE", 0o700) & 0o7777)
	}
	if _, ok := db.defs["UMASK"]; ok {
		return fs.FileMode(0o777 &^ db.defInt("UMASK", 0o077)).Perm()
	}
	return 0o700
}

// planHome makes a new user's home and copies the target's skeleton
// directory into it; a home that exists is left as it is.
func (r *filesRun) planHome(db *pwDB, name, home string, uid, gid int) error {
	rel, err := r.tree.resolve(home, false)
	if err != nil {
		return err
	}
	n, err := r.tree.lstat(rel)
	if err != nil {
		return err
	}
	if n.exists {
		r.note("passwd", "keep", rootPath(rel), "home of "+name+" exists; left as it is")
		return nil
	}
	if err := r.planParents("passwd", rel, 0o755, 0, 0); err != nil {
		return err
	}
	r.planMkdir("passwd", rel, db.homeMode(), uid, gid)
	skel := orDefault(db.useradd["SKEL"], "/etc/skel")
	srel, err := r.tree.resolve(skel, true)
	if err != nil {
		return err
	}
	if sn, err := r.tree.lstat(srel); err != nil {
		return err
	} else if !sn.isDir() || sn.fresh {
		return nil
	}
	r.add("passwd", "copy", rootPath(rel), "from "+skel, "copying "+skel+" into "+rootPath(rel), func() error {
		return r.copyTree(srel, rel, uid, gid)
	})
	return nil
}

func (r *filesRun) planMailSpool(db *pwDB, name string, uid, gid int) error {
	dir := db.defs["MAIL_DIR"]
	if dir == "" {
		dir = "/var/mail"
	}
	drel, err := r.tree.resolve(dir, true)
	if err != nil {
		return err
	}
	if dn, err := r.tree.lstat(drel); err != nil || !dn.isDir() {
		return err // no spool directory: the tools only warn
	}
	rel := path.Join(drel, name)
	if n, err := r.tree.lstat(rel); err != nil || n.exists {
		return err
	}
	if g, ok := db.group("mail"); ok {
		gid = g.gid
	}
	return r.planWrite("passwd", rel, nil, true, 0o660, uid, gid, "mail spool of "+name)
}

func (r *filesRun) planUserModify(db *pwDB, u types.PasswdUser, cur pwUser) error {
	op := "modifying user " + strconv.Quote(u.Name)
	var changes []string
	newUID, newGID := cur.uid, cur.gid
	if u.UID != nil && *u.UID != cur.uid {
		if o, ok := db.userByUID(*u.UID); ok {
			return Failf(op, "uid %d is already used by user %q", *u.UID, o.name)
		}
		newUID = *u.UID
	}
	if cfgSet(u.PrimaryGroup) {
		g, ok := db.groupRef(*u.PrimaryGroup)
		if !ok {
			return Failf(op, "primary group %q does not exist in the target's /etc/group", *u.PrimaryGroup)
		}
		newGID = g.gid
	}
	var supp []string
	for _, ref := range u.Groups {
		g, ok := db.groupRef(string(ref))
		if !ok {
			return Failf(op, "group %q (in groups) does not exist in the target's /etc/group", string(ref))
		}
		supp = append(supp, g.name)
	}
	for _, c := range []struct {
		field string
		v     *string
	}{{"gecos", u.Gecos}, {"homeDir", u.HomeDir}, {"shell", u.Shell}} {
		if c.v != nil && strings.ContainsAny(*c.v, ":\n") {
			return Failf(op, "%s %q contains ':' or a newline", c.field, *c.v)
		}
	}
	if u.PasswordHash != nil && strings.ContainsAny(*u.PasswordHash, ":\n") {
		return Failf(op, "passwordHash contains ':' or a newline")
	}

	home := cur.home
	if cfgSet(u.HomeDir) && *u.HomeDir != cur.home {
		home = *u.HomeDir
		if err := r.planMoveHome(cur.home, home); err != nil {
			return Fail(op, err)
		}
		db.setUserField(u.Name, 5, home)
		changes = append(changes, "home "+home)
	}
	if u.PasswordHash != nil {
		pw := *u.PasswordHash
		if pw == "" {
			pw = "*"
		}
		db.setPassword(u.Name, pw)
		changes = append(changes, "password")
	}
	if newUID != cur.uid {
		db.setUserField(u.Name, 2, strconv.Itoa(newUID))
		changes = append(changes, fmt.Sprintf("uid %d → %d", cur.uid, newUID))
	}
	if cfgSet(u.Gecos) && *u.Gecos != cur.gecos {
		db.setUserField(u.Name, 4, *u.Gecos)
		changes = append(changes, "gecos")
	}
	if newGID != cur.gid {
		db.setUserField(u.Name, 3, strconv.Itoa(newGID))
		changes = append(changes, fmt.Sprintf("gid %d → %d", cur.gid, newGID))
	}
	if len(supp) > 0 {
		changed := false
		for _, g := range db.groups() {
			want := slices.Contains(supp, g.name)
			if want != slices.Contains(g.members, u.Name) {
				db.setMember(g.name, u.Name, want)
				changed = true
			}
		}
		if changed {
			changes = append(changes, "groups "+strings.Join(supp, ","))
		}
	}
	if cfgSet(u.Shell) && *u.Shell != cur.shell {
		db.setUserField(u.Name, 6, *u.Shell)
		changes = append(changes, "shell "+*u.Shell)
	}
	if newUID != cur.uid || newGID != cur.gid {
		rel, err := r.tree.resolve(home, false)
		if err != nil {
			return Fail(op, err)
		}
		if n, err := r.tree.lstat(rel); err != nil {
			return Fail(op, err)
		} else if n.isDir() {
			oldUID, oldGID := cur.uid, cur.gid
			r.add("passwd", "chown", rootPath(rel), fmt.Sprintf("files of %d:%d in the home become %d:%d", oldUID, oldGID, newUID, newGID),
				"re-owning the home "+rootPath(rel), func() error { return r.chownTree(rel, oldUID, newUID, oldGID, newGID) })
		}
	}
	if len(changes) == 0 {
		r.note("passwd", "keep", "user "+u.Name, "exists; nothing to change")
	} else {
		r.note("passwd", "modify", "user "+u.Name, strings.Join(changes, ", "))
	}
	return nil
}

// planMoveHome moves a home to its new place, as usermod --move-home
// does; with no old home there is nothing to move.
func (r *filesRun) planMoveHome(from, to string) error {
	orel, err := r.tree.resolve(from, false)
	if err != nil {
		return err
	}
	on, err := r.tree.lstat(orel)
	if err != nil || !on.isDir() {
		return err
	}
	nrel, err := r.tree.resolve(to, false)
	if err != nil {
		return err
	}
	if nn, err := r.tree.lstat(nrel); err != nil {
		return err
	} else if nn.exists {
		return fmt.Errorf("cannot move the home to %s: a %s exists there", to, nn.kind())
	}
	if err := r.planParents("passwd", nrel, 0o755, 0, 0); err != nil {
		return err
	}
	r.tree.remove(orel)
	on.fresh = true
	r.tree.set(nrel, on)
	r.add("passwd", "move", rootPath(orel), "to "+rootPath(nrel), "moving home "+rootPath(orel)+" to "+rootPath(nrel), func() error {
		r.touch(orel)
		r.touch(nrel)
		return r.root.Rename(orel, nrel)
	})
	return nil
}

func (r *filesRun) planUserDelete(db *pwDB, cur pwUser) error {
	db.passwdFile.del(cur.name)
	db.shadowFile.del(cur.name)
	for _, g := range db.groups() {
		db.setMember(g.name, cur.name, false)
	}
	if db.gshadowFile.exists {
		for i := range db.gshadowFile.lines {
			if f := db.gshadowFile.fields(i); len(f) >= 4 && slices.Contains(strings.Split(f[2], ","), cur.name) {
				db.setMember(f[0], cur.name, false)
			}
		}
	}
	db.subuidFile.del(cur.name)
	db.subgidFile.del(cur.name)
	r.note("passwd", "delete", "user "+cur.name, fmt.Sprintf("uid %d", cur.uid))
	// Its own group goes too, when nothing else uses it.
	if g, ok := db.group(cur.name); ok && db.userGroups() && g.gid == cur.gid && len(g.members) == 0 {
		used := false
		for _, o := range db.users() {
			used = used || o.gid == g.gid
		}
		if !used {
			db.groupFile.del(g.name)
			db.gshadowFile.del(g.name)
			r.note("passwd", "delete", "group "+g.name, fmt.Sprintf("gid %d, the user's own group", g.gid))
		}
	}
	for _, p := range []string{cur.home, path.Join(orDefault(db.defs["MAIL_DIR"], "/var/mail"), cur.name)} {
		if p == "" || p == "/" {
			continue
		}
		rel, err := r.tree.resolve(p, false)
		if err != nil {
			return Fail("deleting user "+cur.name, err)
		}
		n, err := r.tree.lstat(rel)
		if err != nil {
			return Fail("deleting user "+cur.name, err)
		}
		switch {
		case !n.exists || rel == ".":
		case n.uid != cur.uid:
			r.note("passwd", "keep", rootPath(rel), fmt.Sprintf("not owned by %s (uid %d); not removed", cur.name, cur.uid))
		default:
			r.tree.remove(rel)
			r.add("passwd", "delete", rootPath(rel), "of user "+cur.name, "removing "+rootPath(rel), func() error {
				r.touch(rel)
				return r.root.RemoveAll(rel)
			})
		}
	}
	return nil
}

// planSSHKeys writes a user's keys to ~/.ssh/authorized_keys.d/ignition;
// missing directories on the way are made 0700 and owned by the user.
func (r *filesRun) planSSHKeys(db *pwDB, u types.PasswdUser) error {
	usr, ok := db.user(u.Name)
	if !ok {
		return fmt.Errorf("user %q does not exist", u.Name)
	}
	rel, err := r.tree.resolve(path.Join(usr.home, ".ssh", "authorized_keys.d", "ignition"), false)
	if err != nil {
		return err
	}
	// Directories above a missing home are the system's (0755 root); the
	// home and what is below it are the user's.
	homeRel, err := r.tree.resolve(usr.home, true)
	if err != nil {
		return err
	}
	if err := r.planParents("passwd", homeRel, 0o755, 0, 0); err != nil {
		return err
	}
	if err := r.planParents("passwd", rel, 0o700, usr.uid, usr.gid); err != nil {
		return err
	}
	keys := make([]string, len(u.SSHAuthorizedKeys))
	for i, k := range u.SSHAuthorizedKeys {
		keys[i] = string(k)
	}
	data := strings.Join(keys, "\n")
	if !strings.HasSuffix(data, "\n") {
		data += "\n"
	}
	if err := r.planWrite("passwd", rel, []byte(data), true, 0o600, usr.uid, usr.gid,
		fmt.Sprintf("SSH keys of %s (%d), mode 0600, owner %d:%d", u.Name, len(keys), usr.uid, usr.gid)); err != nil {
		return err
	}
	if !r.sshChecked {
		r.sshChecked = true
		if cfgFile, ok := r.sshdIgnoresFragment(); ok {
			r.env.Logger().Warn("the target's sshd does not read ~/.ssh/authorized_keys.d/ignition; its AuthorizedKeysFile must name it for the keys to work", "path", cfgFile)
			r.note("passwd", "warn", cfgFile, "sshd's AuthorizedKeysFile does not name .ssh/authorized_keys.d/ignition: the SSH keys will not be used")
		}
	}
	return nil
}

// sshdIgnoresFragment reports whether the target has an sshd configuration
// that reads neither ~/.ssh/authorized_keys.d (AuthorizedKeysFile) nor
// keys through ssh-key-dir (AuthorizedKeysCommand), as Debian's default
// does. Unreadable configurations are not reported.
func (r *filesRun) sshdIgnoresFragment() (string, bool) {
	const main = "/etc/ssh/sshd_config"
	files := []string{main}
	if drel, err := r.tree.resolve("/etc/ssh/sshd_config.d", true); err == nil {
		if es, err := fs.ReadDir(r.root.FS(), drel); err == nil {
			for _, e := range es {
				if strings.HasSuffix(e.Name(), ".conf") {
					files = append(files, "/etc/ssh/sshd_config.d/"+e.Name())
				}
			}
		}
	}
	found := false
	for _, f := range files {
		rel, err := r.tree.resolve(f, true)
		if err != nil {
			return "", false
		}
		data, err := r.root.ReadFile(rel)
		if err != nil {
			if f == main {
				return "", false // no sshd, or not readable: nothing to say
			}
			continue
		}
		found = true
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 2 {
				continue
			}
			k, v := f[0], strings.Join(f[1:], " ")
			if (strings.EqualFold(k, "AuthorizedKeysFile") || strings.EqualFold(k, "AuthorizedKeysCommand")) &&
				(strings.Contains(v, "authorized_keys.d") || strings.Contains(v, "ssh-key-dir")) {
				return "", false
			}
		}
	}
	return main, found
}

// copyTree copies the skeleton directory src into the new home dst: files,
// directories and symbolic links, with their modes and times, owned by
// the user.
func (r *filesRun) copyTree(src, dst string, uid, gid int) error {
	type dirTime struct {
		rel   string
		mtime time.Time
	}
	var dirs []dirTime
	err := fs.WalkDir(r.root.FS(), src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == src {
			return nil
		}
		to := path.Join(dst, strings.TrimPrefix(p, src+"/"))
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			t, err := r.root.Readlink(p)
			if err != nil {
				return err
			}
			r.touch(to)
			if err := r.root.Symlink(t, to); err != nil {
				return err
			}
			return r.root.Lchown(to, uid, gid)
		case d.IsDir():
			if err := r.mkdir(to, permBits(info.Mode()), uid, gid); err != nil {
				return err
			}
			dirs = append(dirs, dirTime{to, info.ModTime()})
			return nil
		case d.Type().IsRegular():
			data, err := r.root.ReadFile(p)
			if err != nil {
				return err
			}
			r.touch(to)
			f, err := r.root.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, werr := f.Write(data)
			for _, e := range []error{werr, f.Chown(uid, gid), f.Chmod(permBits(info.Mode())), f.Close()} {
				if e != nil {
					return e
				}
			}
			return r.root.Chtimes(to, info.ModTime(), info.ModTime())
		default:
			return nil // sockets, fifos and devices are not copied
		}
	})
	if err != nil {
		return err
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := r.root.Chtimes(dirs[i].rel, dirs[i].mtime, dirs[i].mtime); err != nil {
			return err
		}
	}
	return nil
}

// chownTree gives the files under dir that belong to the old uid (gid) the
// new one, without following symbolic links.
func (r *filesRun) chownTree(dir string, oldUID, newUID, oldGID, newGID int) error {
	return fs.WalkDir(r.root.FS(), dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := r.root.Lstat(p)
		if err != nil {
			return err
		}
		cur, ok := statOwner(fi)
		if !ok {
			return nil
		}
		uid, gid := cur[0], cur[1]
		if uid == oldUID {
			uid = newUID
		}
		if gid == oldGID {
			gid = newGID
		}
		if uid == cur[0] && gid == cur[1] {
			return nil
		}
		return r.root.Lchown(p, uid, gid)
	})
}
