package stages

// The files stage: passwd (passwd.go), storage files, directories and links
// (this file), systemd units (systemd.go). This file also holds what the
// three share: resolving config paths inside the target root, the overlay
// that tells later checks what earlier operations of the run will have
// made, and the two-phase run.
//
// Paths. Every path of the config is resolved the way upstream Ignition
// resolves it: each component but the last is followed if it is a symbolic
// link, as if the target root were "/" (an absolute link target starts
// over at the root, ".." stops at it); the last component is never
// followed. The resolved path is then used through an os.Root opened on
// the target, which refuses anything that would leave it, so a link
// swapped in behind our back cannot lead a write outside either. A
// symbolic link in the target pointing "outside" therefore lands inside
// the root, exactly where a chroot would put it, and never fails the run
// (Debian's /var/run -> /run is such a link).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// Files applies the passwd, storage-node and systemd parts of cfg to the
// target root env.Root, in upstream Ignition's order: groups, then users;
// then directories, files and symbolic links, shallowest first, then hard
// links; then units, drop-ins, masks and enablement.
//
// It runs in two phases. The first reads the target, fetches every
// resource and checks every precondition (an existing node without
// overwrite, an owner that does not exist, a hard link to a directory, a
// unit that cannot be enabled) and writes nothing, so a failure there
// leaves the root as it was. The second applies the planned operations in
// order; only I/O errors can fail it. In plan mode only the first phase
// runs (without fetching) and each operation is recorded in env.Plan.
func Files(ctx context.Context, env *Env, cfg types.Config) error {
	start := time.Now()
	root, err := os.OpenRoot(env.Root)
	if err != nil {
		return Fail("opening target root "+env.Root, err)
	}
	defer root.Close()
	r := &filesRun{ctx: ctx, env: env, root: root, tree: &fsTree{root: root, planned: map[string]*fsNode{}}, dirs: map[string]bool{}}

	if err := r.planPasswd(cfg.Passwd); err != nil {
		return err
	}
	if err := r.planNodes(cfg.Storage); err != nil {
		return err
	}
	if err := r.planUnits(cfg.Systemd); err != nil {
		return err
	}

	log := env.Logger()
	if env.Planning() {
		for _, o := range r.ops {
			env.Record(o.stage, o.verb, o.target, o.detail)
		}
		return nil
	}
	for _, o := range r.ops {
		if err := ctx.Err(); err != nil {
			return Fail(o.verb+" "+o.target, err)
		}
		log.Info(o.verb+" "+o.target, "stage", o.stage, "detail", o.detail)
		if o.do == nil {
			continue
		}
		if err := o.do(); err != nil {
			return Fail(o.desc, err)
		}
	}
	// Each file was synced as it was written; the directories that name
	// them are synced once here, so that all of it is on disk when Files
	// returns.
	for _, d := range slices.Sorted(maps.Keys(r.dirs)) {
		if err := r.syncDir(d); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return Fail("syncing "+rootPath(d), err)
		}
	}
	log.Debug("files stage applied", "operations", len(r.ops), "duration", time.Since(start))
	return nil
}

// filesRun is one run of Files: the target, the overlay and the planned
// operations.
type filesRun struct {
	ctx  context.Context
	env  *Env
	root *os.Root
	tree *fsTree
	db   *pwDB // loaded on first use; holds the users and groups as the run leaves them
	ops  []filesOp
	// dirs are the directories whose entries the run changed, synced once
	// at its end.
	dirs map[string]bool
	// sshChecked is set once the target's sshd configuration was checked.
	sshChecked bool
}

// touch notes that the entry rel was made, replaced or removed.
func (r *filesRun) touch(rel string) { r.dirs[path.Dir(rel)] = true }

// filesOp is one planned operation.
type filesOp struct {
	stage, verb, target, detail string
	desc                        string       // names the operation in an error: "writing file /etc/motd"
	do                          func() error // nil for a step whose work other operations do
}

func (r *filesRun) add(stage, verb, target, detail, desc string, do func() error) {
	r.ops = append(r.ops, filesOp{stage: stage, verb: verb, target: target, detail: detail, desc: desc, do: do})
}

// note adds a step that changes nothing by itself (a user created by the
// passwd writes, a node kept as it is).
func (r *filesRun) note(stage, verb, target, detail string) {
	r.add(stage, verb, target, detail, "", nil)
}

// ---- the overlay ----

// fsTree answers "what is at this path" for the target root as the
// operations planned so far will have left it.
type fsTree struct {
	root    *os.Root
	planned map[string]*fsNode // by path relative to the root
	nextID  int
}

// fsNode is what is at a path.
type fsNode struct {
	exists   bool
	mode     fs.FileMode // type bits and permissions
	uid, gid int
	target   string // of a symbolic link
	data     []byte // planned contents of a regular file, when known
	known    bool   // data is the file's contents
	fresh    bool   // a directory made by this run: nothing below it exists unless planned
	id       fileID
}

// fileID identifies a file for the hard-link checks: a device and inode on
// disk, or a number for a file this run will create.
type fileID struct {
	dev, ino uint64
	planned  int
}

func (n fsNode) isDir() bool     { return n.exists && n.mode.IsDir() }
func (n fsNode) isRegular() bool { return n.exists && n.mode.IsRegular() }
func (n fsNode) isSymlink() bool { return n.exists && n.mode&fs.ModeSymlink != 0 }

// kind names the type of a node for messages.
func (n fsNode) kind() string {
	switch {
	case !n.exists:
		return "nothing"
	case n.mode.IsRegular():
		return "file"
	case n.mode.IsDir():
		return "directory"
	case n.mode&fs.ModeSymlink != 0:
		return "symbolic link"
	default:
		return "special file"
	}
}

func (t *fsTree) lstat(rel string) (fsNode, error) {
	if n, ok := t.planned[rel]; ok {
		return *n, nil
	}
	for a := rel; a != "."; {
		a = path.Dir(a)
		if n, ok := t.planned[a]; ok && (!n.exists || n.fresh || !n.mode.IsDir()) {
			return fsNode{}, nil
		}
	}
	fi, err := t.root.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return fsNode{}, nil
	}
	if err != nil {
		return fsNode{}, err
	}
	n := fsNode{exists: true, mode: fi.Mode()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		n.uid, n.gid = int(st.Uid), int(st.Gid)
		n.id = fileID{dev: st.Dev, ino: st.Ino}
	}
	if n.isSymlink() {
		if n.target, err = t.root.Readlink(rel); err != nil {
			return fsNode{}, err
		}
	}
	return n, nil
}

// set records what an operation leaves at rel.
func (t *fsTree) set(rel string, n fsNode) {
	if n.exists && n.mode.IsRegular() && n.id == (fileID{}) {
		t.nextID++
		n.id = fileID{planned: t.nextID}
	}
	t.planned[rel] = &n
}

// remove records that rel and everything below it is gone.
func (t *fsTree) remove(rel string) {
	for p := range t.planned {
		if strings.HasPrefix(p, rel+"/") {
			delete(t.planned, p)
		}
	}
	t.planned[rel] = &fsNode{}
}

// maxSymlinks bounds the links followed while resolving one path, as the
// kernel does.
const maxSymlinks = 40

// resolve maps the absolute config path p to a path relative to the root
// ("." for the root itself). Every component but the last is followed
// when it is a symbolic link, as if the root were "/"; the last is
// followed too when followLast is set.
func (t *fsTree) resolve(p string, followLast bool) (string, error) {
	if !path.IsAbs(p) {
		return "", fmt.Errorf("path %q is not absolute", p)
	}
	todo := strings.Split(p, "/")
	var cur []string
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) > 0 {
				cur = cur[:len(cur)-1]
			}
			continue
		}
		if !followLast && !slices.ContainsFunc(todo, func(s string) bool { return s != "" && s != "." }) {
			cur = append(cur, c)
			continue
		}
		next := strings.Join(append(slices.Clip(cur), c), "/")
		n, err := t.lstat(next)
		if err != nil {
			return "", fmt.Errorf("resolving %s: %w", p, err)
		}
		switch {
		case n.isSymlink():
			if links++; links > maxSymlinks {
				return "", fmt.Errorf("resolving %s: too many levels of symbolic links", p)
			}
			if path.IsAbs(n.target) {
				cur = cur[:0]
			}
			todo = append(strings.Split(n.target, "/"), todo...)
		case n.exists && !n.mode.IsDir() && slices.ContainsFunc(todo, func(s string) bool { return s != "" && s != "." }):
			return "", fmt.Errorf("resolving %s: /%s is a %s, not a directory", p, next, n.kind())
		default:
			cur = append(cur, c)
		}
	}
	if len(cur) == 0 {
		return ".", nil
	}
	return strings.Join(cur, "/"), nil
}

// rootPath turns a path relative to the root back into the absolute path the
// target will see.
func rootPath(rel string) string {
	if rel == "." {
		return "/"
	}
	return "/" + rel
}

// ---- planning helpers shared by the three parts ----

// planParents plans the directories missing above rel, made with mode and
// owned by uid:gid (0755 root for nodes and units; 0700 and the user for
// ~/.ssh).
func (r *filesRun) planParents(stage, rel string, mode fs.FileMode, uid, gid int) error {
	var missing []string
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		n, err := r.tree.lstat(d)
		if err != nil {
			return err
		}
		if n.exists {
			if !n.isDir() {
				return fmt.Errorf("%s is a %s, not a directory", rootPath(d), n.kind())
			}
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		r.planMkdir(stage, missing[i], mode, uid, gid)
	}
	return nil
}

func (r *filesRun) planMkdir(stage, rel string, mode fs.FileMode, uid, gid int) {
	r.tree.set(rel, fsNode{exists: true, mode: fs.ModeDir | mode, uid: uid, gid: gid, fresh: true})
	r.add(stage, "mkdir", rootPath(rel), fmt.Sprintf("mode %s, owner %d:%d", octalMode(mode), uid, gid),
		"creating directory "+rootPath(rel), func() error { return r.mkdir(rel, mode, uid, gid) })
}

// planWrite plans the atomic replacement of whatever file or link is at rel
// by a regular file (missing parents made 0755 root).
func (r *filesRun) planWrite(stage, rel string, data []byte, known bool, mode fs.FileMode, uid, gid int, detail string) error {
	n, err := r.tree.lstat(rel)
	if err != nil {
		return err
	}
	if n.isDir() {
		return fmt.Errorf("a directory exists at %s", rootPath(rel))
	}
	if err := r.planParents(stage, rel, 0o755, 0, 0); err != nil {
		return err
	}
	r.tree.set(rel, fsNode{exists: true, mode: mode, uid: uid, gid: gid, data: data, known: known})
	if detail == "" {
		detail = fmt.Sprintf("mode %s, owner %d:%d", octalMode(mode), uid, gid)
		if known {
			detail += fmt.Sprintf(", %d bytes", len(data))
		}
	}
	r.add(stage, "write", rootPath(rel), detail, "writing "+rootPath(rel), func() error {
		return r.writeAtomic(rel, data, mode, uid, gid)
	})
	return nil
}

// fetch returns a resource's bytes. A nil source is no contents; an empty
// source is empty contents. In plan mode nothing is fetched and known is
// false.
func (r *filesRun) fetch(res types.Resource, what string) (data []byte, known bool, err error) {
	if res.Source == nil || *res.Source == "" {
		return nil, true, nil
	}
	if r.env.Planning() {
		return nil, false, nil
	}
	if r.env.Fetch == nil {
		return nil, false, fmt.Errorf("fetching %s from %s: no fetcher configured", what, sourceText(res))
	}
	data, err = r.env.Fetch.Fetch(r.ctx, res)
	if err != nil {
		return nil, false, fmt.Errorf("fetching %s: %w", what, err)
	}
	return data, true, nil
}

// sourceText describes a resource's source for plans and messages without
// its contents: data URLs are not shown, http URLs lose their query and
// credentials.
func sourceText(res types.Resource) string {
	if res.Source == nil || *res.Source == "" {
		return "no source"
	}
	u, err := url.Parse(*res.Source)
	if err != nil {
		return "an unparsable URL"
	}
	if u.Scheme == "data" {
		return "a data URL"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment = nil, "", false, ""
	return u.String()
}

// configMode converts a config mode (decimal in JSON; setuid 04000, setgid
// 02000 and sticky 01000 honoured as spec 3.6 says) to an fs.FileMode.
func configMode(m int) fs.FileMode {
	mode := fs.FileMode(m) & fs.ModePerm
	if m&0o4000 != 0 {
		mode |= fs.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= fs.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= fs.ModeSticky
	}
	return mode
}

// octalMode prints a mode as octal with the special bits, like chmod takes it.
func octalMode(m fs.FileMode) string {
	n := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		n |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		n |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		n |= 0o1000
	}
	return fmt.Sprintf("%04o", n)
}

func permBits(m fs.FileMode) fs.FileMode {
	return m & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}

func cfgTrue(b *bool) bool  { return b != nil && *b }
func cfgFalse(b *bool) bool { return b != nil && !*b }
func cfgSet(s *string) bool {
	return s != nil && *s != ""
}

// ---- storage: files, directories, links ----

// nodeEntry is one entry of storage.files, directories or links.
type nodeEntry struct {
	node types.Node
	rel  string
	file *types.File
	dir  *types.Directory
	link *types.Link
}

func (e nodeEntry) what() string {
	switch {
	case e.file != nil:
		return "file"
	case e.dir != nil:
		return "directory"
	case cfgTrue(e.link.Hard):
		return "hard link"
	default:
		return "symbolic link"
	}
}

func (r *filesRun) planNodes(st types.Storage) error {
	var entries, hard []nodeEntry
	seen := map[string]string{}
	add := func(e nodeEntry) error {
		rel, err := r.tree.resolve(e.node.Path, false)
		if err != nil {
			return Failf("creating "+e.what()+" "+e.node.Path, "%w", err)
		}
		if rel == "." {
			return Failf("creating "+e.what()+" "+e.node.Path, "the path is the root itself")
		}
		if other, ok := seen[rel]; ok {
			return Failf("creating "+e.what()+" "+e.node.Path, "it resolves to %s through symbolic links in the target, and so does %s", rootPath(rel), other)
		}
		seen[rel] = e.node.Path
		e.rel = rel
		if e.link != nil && cfgTrue(e.link.Hard) {
			hard = append(hard, e)
		} else {
			entries = append(entries, e)
		}
		return nil
	}
	for i := range st.Directories {
		if err := add(nodeEntry{node: st.Directories[i].Node, dir: &st.Directories[i]}); err != nil {
			return err
		}
	}
	for i := range st.Files {
		if err := add(nodeEntry{node: st.Files[i].Node, file: &st.Files[i]}); err != nil {
			return err
		}
	}
	for i := range st.Links {
		if err := add(nodeEntry{node: st.Links[i].Node, link: &st.Links[i]}); err != nil {
			return err
		}
	}
	// Shallowest first, so a file's directory entry is made before it;
	// hard links last, so they can point at anything the config makes.
	slices.SortStableFunc(entries, func(a, b nodeEntry) int {
		return strings.Count(a.rel, "/") - strings.Count(b.rel, "/")
	})
	for _, e := range append(entries, hard...) {
		var err error
		switch {
		case e.file != nil:
			err = r.planFile(e)
		case e.dir != nil:
			err = r.planDir(e)
		case cfgTrue(e.link.Hard):
			err = r.planHardLink(e)
		default:
			err = r.planSymlink(e)
		}
		if err != nil {
			return Fail("creating "+e.what()+" "+e.node.Path, err)
		}
	}
	return nil
}

// owner resolves a node's user and group: an id as given, a name through
// the target's /etc/passwd and /etc/group as this run leaves them, else
// the defaults.
func (r *filesRun) owner(n types.Node, defUID, defGID int) (int, int, error) {
	uid, gid := defUID, defGID
	if n.User.ID != nil {
		uid = *n.User.ID
	} else if cfgSet(n.User.Name) {
		db, err := r.passwd()
		if err != nil {
			return 0, 0, err
		}
		u, ok := db.user(*n.User.Name)
		if !ok {
			return 0, 0, fmt.Errorf("user %q does not exist in the target's /etc/passwd", *n.User.Name)
		}
		uid = u.uid
	}
	if n.Group.ID != nil {
		gid = *n.Group.ID
	} else if cfgSet(n.Group.Name) {
		db, err := r.passwd()
		if err != nil {
			return 0, 0, err
		}
		g, ok := db.group(*n.Group.Name)
		if !ok {
			return 0, 0, fmt.Errorf("group %q does not exist in the target's /etc/group", *n.Group.Name)
		}
		gid = g.gid
	}
	return uid, gid, nil
}

// planOverwrite plans the removal of whatever is at an entry's path when
// it has overwrite set, and returns the node the entry then finds.
func (r *filesRun) planOverwrite(e nodeEntry, n fsNode, byRename bool) fsNode {
	if !cfgTrue(e.node.Overwrite) || !n.exists {
		return n
	}
	if !byRename {
		r.tree.remove(e.rel)
		r.add("files", "delete", rootPath(e.rel), "overwrite: remove the existing "+n.kind(),
			"removing "+rootPath(e.rel)+" to overwrite it", func() error { r.touch(e.rel); return r.root.RemoveAll(e.rel) })
	}
	return fsNode{}
}

func (r *filesRun) planFile(e nodeEntry) error {
	f := e.file
	n, err := r.tree.lstat(e.rel)
	if err != nil {
		return err
	}
	hasSource := f.Contents.Source != nil
	// A regular file is replaced by renaming the new one over it: the
	// same result as removing it first, without a moment with no file.
	n = r.planOverwrite(e, n, n.isRegular() && hasSource)
	switch {
	case !n.exists:
	case !n.isRegular():
		return fmt.Errorf("a %s exists at %s and overwrite is false", n.kind(), rootPath(e.rel))
	case hasSource:
		return fmt.Errorf("a file exists at %s and overwrite is false", rootPath(e.rel))
	}

	var appended []byte
	known := true
	for i, a := range f.Append {
		data, ok, err := r.fetch(a, fmt.Sprintf("append[%d] of %s", i, e.node.Path))
		if err != nil {
			return err
		}
		appended = append(appended, data...)
		known = known && ok
	}

	if !n.exists {
		data, ok, err := r.fetch(f.Contents, "contents of "+e.node.Path)
		if err != nil {
			return err
		}
		known = known && ok
		uid, gid, err := r.owner(e.node, 0, 0)
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if f.Mode != nil {
			mode = configMode(*f.Mode)
		}
		all := append(slices.Clip(data), appended...)
		detail := fmt.Sprintf("mode %s, owner %d:%d, contents from %s", octalMode(mode), uid, gid, sourceText(f.Contents))
		if len(f.Append) > 0 {
			detail += fmt.Sprintf(" and %d appends", len(f.Append))
		}
		if known {
			detail += fmt.Sprintf(", %d bytes", len(all))
		}
		return r.planWrite("files", e.rel, all, known, mode, uid, gid, detail)
	}

	// An existing regular file without a contents source: kept, appended
	// to, and given the owner and mode asked for (the owner is always set,
	// as upstream does: a chown clears setuid, which only an explicit mode
	// restores).
	uid, gid, err := r.owner(e.node, n.uid, n.gid)
	if err != nil {
		return err
	}
	mode := permBits(n.mode)
	setMode := f.Mode != nil
	if setMode {
		mode = configMode(*f.Mode)
	}
	verb, detail := "keep", "existing file kept"
	switch {
	case len(f.Append) > 0:
		verb, detail = "append", fmt.Sprintf("%d appends", len(f.Append))
		if known {
			detail += fmt.Sprintf(", %d bytes", len(appended))
		}
	case uid != n.uid || gid != n.gid:
		verb, detail = "chown", fmt.Sprintf("owner %d:%d", uid, gid)
	case setMode && mode != permBits(n.mode):
		verb, detail = "chmod", "mode "+octalMode(mode)
	}
	nn := n
	nn.uid, nn.gid, nn.mode = uid, gid, n.mode.Type()|mode
	nn.data, nn.known = nil, false
	r.tree.set(e.rel, nn)
	rel := e.rel
	r.add("files", verb, rootPath(rel), detail, "updating file "+rootPath(rel), func() error {
		return r.updateFile(rel, appended, uid, gid, mode, setMode)
	})
	return nil
}

func (r *filesRun) planDir(e nodeEntry) error {
	d := e.dir
	n, err := r.tree.lstat(e.rel)
	if err != nil {
		return err
	}
	n = r.planOverwrite(e, n, false)
	if n.exists && !n.isDir() {
		return fmt.Errorf("a %s exists at %s and overwrite is false", n.kind(), rootPath(e.rel))
	}
	if !n.exists {
		uid, gid, err := r.owner(e.node, 0, 0)
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o755)
		if d.Mode != nil {
			mode = configMode(*d.Mode)
		}
		if err := r.planParents("files", e.rel, 0o755, 0, 0); err != nil {
			return err
		}
		r.planMkdir("files", e.rel, mode, uid, gid)
		return nil
	}
	uid, gid, err := r.owner(e.node, n.uid, n.gid)
	if err != nil {
		return err
	}
	mode := permBits(n.mode)
	if d.Mode != nil {
		mode = configMode(*d.Mode)
	}
	verb, detail := "keep", "existing directory kept"
	switch {
	case uid != n.uid || gid != n.gid:
		verb, detail = "chown", fmt.Sprintf("mode %s, owner %d:%d", octalMode(mode), uid, gid)
	case mode != permBits(n.mode):
		verb, detail = "chmod", fmt.Sprintf("mode %s, owner %d:%d", octalMode(mode), uid, gid)
	}
	nn := n
	nn.uid, nn.gid, nn.mode = uid, gid, fs.ModeDir|mode
	r.tree.set(e.rel, nn)
	rel := e.rel
	r.add("files", verb, rootPath(rel), detail, "setting owner and mode of directory "+rootPath(rel), func() error {
		return r.setOwnerMode(rel, uid, gid, mode, true, true)
	})
	return nil
}

func (r *filesRun) planSymlink(e nodeEntry) error {
	if e.link.Target == nil {
		return errors.New("the link has no target")
	}
	target := *e.link.Target
	n, err := r.tree.lstat(e.rel)
	if err != nil {
		return err
	}
	n = r.planOverwrite(e, n, false)
	if n.exists {
		if !n.isSymlink() {
			return fmt.Errorf("a %s exists at %s and overwrite is false", n.kind(), rootPath(e.rel))
		}
		if path.Clean(n.target) != path.Clean(target) {
			return fmt.Errorf("a symbolic link to %s exists at %s, not to %s, and overwrite is false", n.target, rootPath(e.rel), target)
		}
		r.note("files", "keep", rootPath(e.rel), "symbolic link to "+target+" exists")
		return nil
	}
	// Like upstream, a link without an owner gets the owner of what it
	// points at (looked up inside the root), or root.
	du, dg := 0, 0
	abs := target
	if !path.IsAbs(abs) {
		abs = path.Join(rootPath(path.Dir(e.rel)), target)
	}
	if trel, err := r.tree.resolve(abs, true); err == nil {
		if tn, err := r.tree.lstat(trel); err == nil && tn.exists {
			du, dg = tn.uid, tn.gid
		}
	}
	uid, gid, err := r.owner(e.node, du, dg)
	if err != nil {
		return err
	}
	if err := r.planParents("files", e.rel, 0o755, 0, 0); err != nil {
		return err
	}
	r.planSymlinkOp("files", e.rel, target, uid, gid)
	return nil
}

func (r *filesRun) planSymlinkOp(stage, rel, target string, uid, gid int) {
	r.tree.set(rel, fsNode{exists: true, mode: fs.ModeSymlink | 0o777, uid: uid, gid: gid, target: target})
	r.add(stage, "link", rootPath(rel), fmt.Sprintf("symbolic link to %s, owner %d:%d", target, uid, gid),
		"creating symbolic link "+rootPath(rel), func() error {
			r.touch(rel)
			if err := r.root.Symlink(target, rel); err != nil {
				return err
			}
			return r.root.Lchown(rel, uid, gid)
		})
}

func (r *filesRun) planHardLink(e nodeEntry) error {
	if e.link.Target == nil {
		return errors.New("the link has no target")
	}
	trel, err := r.tree.resolve(*e.link.Target, false)
	if err != nil {
		return fmt.Errorf("hard link target: %w", err)
	}
	tn, err := r.tree.lstat(trel)
	if err != nil {
		return err
	}
	n, err := r.tree.lstat(e.rel)
	if err != nil {
		return err
	}
	n = r.planOverwrite(e, n, false)
	if !tn.exists {
		return fmt.Errorf("the hard link target %s does not exist", *e.link.Target)
	}
	if n.exists {
		if n.id != tn.id {
			return fmt.Errorf("a %s that is not the target %s exists at %s and overwrite is false", n.kind(), *e.link.Target, rootPath(e.rel))
		}
		r.note("files", "keep", rootPath(e.rel), "hard link to "+*e.link.Target+" exists")
		return nil
	}
	if tn.isDir() {
		return fmt.Errorf("the hard link target %s is a directory", *e.link.Target)
	}
	if err := r.planParents("files", e.rel, 0o755, 0, 0); err != nil {
		return err
	}
	r.tree.set(e.rel, tn)
	rel := e.rel
	r.add("files", "link", rootPath(rel), "hard link to "+rootPath(trel), "creating hard link "+rootPath(rel), func() error {
		r.touch(rel)
		return r.root.Link(trel, rel)
	})
	return nil
}

// ---- operations on the target ----

// writeAtomic replaces rel by a regular file holding data: a temporary
// file in the same directory is written, owned, given its mode (after the
// chown, which would clear setuid), synced and renamed over rel.
func (r *filesRun) writeAtomic(rel string, data []byte, mode fs.FileMode, uid, gid int) error {
	dir := path.Dir(rel)
	var f *os.File
	var tmp string
	for i := 0; ; i++ {
		var b [8]byte
		_, _ = rand.Read(b[:])
		tmp = path.Join(dir, ".ignite-"+hex.EncodeToString(b[:]))
		var err error
		f, err = r.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrExist) || i >= 10 {
			return err
		}
	}
	done := false
	defer func() {
		if !done {
			_ = f.Close()
			_ = r.root.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chown(uid, gid); err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := r.root.Rename(tmp, rel); err != nil {
		return err
	}
	done = true
	r.touch(rel)
	return nil
}

func (r *filesRun) syncDir(dir string) error {
	d, err := r.root.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// openExisting opens rel, which must still be the node of type want that
// planning saw, without following a symbolic link in its place.
func (r *filesRun) openExisting(rel string, flag int, dir bool) (*os.File, error) {
	fi, err := r.root.Lstat(rel)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() != dir || (!dir && !fi.Mode().IsRegular()) {
		return nil, fmt.Errorf("%s is now a %s", rootPath(rel), fsNode{exists: true, mode: fi.Mode()}.kind())
	}
	f, err := r.root.OpenFile(rel, flag|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	// os.Root follows a final symbolic link even with O_NOFOLLOW (inside
	// the root); make sure what was opened is what was checked.
	gi, err := f.Stat()
	if err != nil || !os.SameFile(fi, gi) {
		f.Close()
		if err == nil {
			err = fmt.Errorf("%s changed while it was opened", rootPath(rel))
		}
		return nil, err
	}
	return f, nil
}

// updateFile appends to an existing regular file in place (keeping its
// inode, so its hard links see the change) and sets its owner and mode.
func (r *filesRun) updateFile(rel string, appended []byte, uid, gid int, mode fs.FileMode, setMode bool) error {
	flag := os.O_RDONLY
	if len(appended) > 0 {
		flag = os.O_WRONLY | os.O_APPEND
	}
	f, err := r.openExisting(rel, flag, false)
	if err != nil {
		return err
	}
	defer f.Close()
	if len(appended) > 0 {
		if _, err := f.Write(appended); err != nil {
			return err
		}
	}
	if err := f.Chown(uid, gid); err != nil {
		return err
	}
	if setMode {
		if err := f.Chmod(mode); err != nil {
			return err
		}
	}
	if len(appended) > 0 {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	return f.Close()
}

// setOwnerMode sets the owner and mode of an existing file or directory
// through a descriptor, so a link swapped in cannot redirect it.
func (r *filesRun) setOwnerMode(rel string, uid, gid int, mode fs.FileMode, setMode, dir bool) error {
	f, err := r.openExisting(rel, os.O_RDONLY, dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Chown(uid, gid); err != nil {
		return err
	}
	if setMode {
		if err := f.Chmod(mode); err != nil {
			return err
		}
	}
	return nil
}

// mkdir makes a directory with exactly mode and owner (the umask does not
// apply); a directory already there is given them.
func (r *filesRun) mkdir(rel string, mode fs.FileMode, uid, gid int) error {
	r.touch(rel)
	if err := r.root.Mkdir(rel, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return r.setOwnerMode(rel, uid, gid, mode, true, true)
}

// statOwner returns the uid and gid of a file.
func statOwner(fi fs.FileInfo) ([2]int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return [2]int{}, false
	}
	return [2]int{int(st.Uid), int(st.Gid)}, true
}
