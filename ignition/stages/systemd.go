package stages

// systemd: units, drop-ins, masks and enablement.
//
// As upstream Ignition: a unit's non-empty contents go to
// /etc/systemd/system/NAME, each drop-in with contents (even empty) to
// /etc/systemd/system/NAME.d/DROPIN, both 0644 root and replaced
// atomically; mask makes NAME a symbolic link to /dev/null (mask=false
// removes such a link); enabled appends "enable NAME" (or, for enabled=false
// on a unit that systemctl would call enabled or static, "disable NAME")
// to /etc/systemd/system-preset/20-ignition.preset, one line per unit
// sorted by name, instances of one template on one line
// ("enable getty@.service tty2 tty3").
//
// Beyond upstream, so that a unit is enabled on a system that never runs
// `systemctl preset-all` (upstream relies on systemd's first-boot preset):
// enabling also makes the symbolic links `systemctl enable` makes from the
// unit's [Install] section — WantedBy= (.wants/), RequiredBy= (.requires/),
// UpheldBy= (.upholds/), Alias=, and the units in Also= — pointing at the
// unit file where it was found (/etc/systemd/system, /usr/local/lib,
// /usr/lib or /lib/systemd/system of the target). A template is enabled
// with its DefaultInstance, an instance with its own name; specifiers %n
// %N %p %i %j %% are expanded. enabled=false removes those links (and
// .wants/.requires/.upholds links to the unit) from /etc/systemd/system.
// Drop-ins are not read for [Install] (systemctl does not either).
//
// Also beyond upstream (which silently writes the preset line): enabling a
// unit that the config gives no contents and that exists nowhere in the
// target is an error naming it.

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"

	"github.com/coreos/ignition/v2/config/v3_6/types"
)

const (
	unitDir    = "/etc/systemd/system"
	presetFile = "/etc/systemd/system-preset/20-ignition.preset"
)

// unitSearchPath is where a unit file is looked for, in systemd's order.
var unitSearchPath = []string{"/etc/systemd/system", "/usr/local/lib/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

func (r *filesRun) planUnits(sd types.Systemd) error {
	type preset struct {
		unit      string
		enabled   bool
		instance  bool
		instances []string
	}
	presets := map[string]*preset{}
	for _, u := range sd.Units {
		if err := r.planUnitFiles(u); err != nil {
			return Fail("writing unit "+u.Name, err)
		}
		if u.Enabled == nil {
			continue
		}
		state := "disabled"
		if *u.Enabled {
			state = "enabled"
		}
		if strings.Contains(u.Name, "@") {
			tmpl, inst := splitInstance(u.Name)
			key := tmpl + "-" + state
			if p, ok := presets[key]; ok {
				p.instances = append(p.instances, inst)
			} else {
				presets[key] = &preset{unit: tmpl, enabled: *u.Enabled, instance: true, instances: []string{inst}}
			}
		} else {
			presets[u.Name+"-"+state] = &preset{unit: u.Name, enabled: *u.Enabled}
		}
	}

	// Disabling first: whether a unit counts as enabled decides its
	// preset line, and its links go.
	disable := map[string]bool{}
	for _, u := range sd.Units {
		if cfgFalse(u.Enabled) {
			on, err := r.planDisable(u.Name, map[string]bool{})
			if err != nil {
				return Fail("disabling unit "+u.Name, err)
			}
			disable[u.Name] = on
			if on {
				r.note("systemd", "disable", u.Name, "its enablement links removed from "+unitDir)
			} else {
				r.note("systemd", "keep", u.Name, "not enabled (or missing, or masked): nothing to disable")
			}
		}
	}

	var lines []string
	keys := make([]string, 0, len(presets))
	for k := range presets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := presets[k]
		unit := p.unit
		if p.instance {
			unit += " " + strings.Join(p.instances, " ")
		}
		switch {
		case p.enabled:
			lines = append(lines, "enable "+unit)
		case !p.instance && disable[p.unit]:
			// Upstream asks `systemctl is-enabled` first and writes
			// nothing for a unit that is disabled, masked or missing;
			// it never manages that for instances.
			lines = append(lines, "disable "+unit)
		}
	}
	if len(lines) > 0 {
		if err := r.planPreset(lines); err != nil {
			return Fail("writing "+presetFile, err)
		}
	}

	for _, u := range sd.Units {
		if cfgTrue(u.Enabled) {
			r.note("systemd", "enable", u.Name, "a preset line, and the links of its [Install] section")
			if err := r.planEnable(u.Name, true, map[string]bool{}); err != nil {
				return Fail("enabling unit "+u.Name, err)
			}
		}
	}
	return nil
}

// splitInstance splits "getty@tty2.service" into "getty@.service" and
// "tty2".
func splitInstance(name string) (template, instance string) {
	at := strings.Index(name, "@")
	dot := strings.LastIndex(name, ".")
	if at < 0 || dot < at {
		return name, ""
	}
	return name[:at+1] + name[dot:], name[at+1 : dot]
}

func (r *filesRun) planUnitFiles(u types.Unit) error {
	for _, d := range u.Dropins {
		if d.Contents == nil {
			continue
		}
		rel, err := r.tree.resolve(path.Join(unitDir, u.Name+".d", d.Name), false)
		if err != nil {
			return err
		}
		data := []byte(*d.Contents)
		if err := r.planWrite("systemd", rel, data, true, 0o644, 0, 0, fmt.Sprintf("drop-in, %d bytes", len(data))); err != nil {
			return err
		}
	}
	rel, err := r.tree.resolve(path.Join(unitDir, u.Name), false)
	if err != nil {
		return err
	}
	if cfgSet(u.Contents) {
		data := []byte(*u.Contents)
		if err := r.planWrite("systemd", rel, data, true, 0o644, 0, 0, fmt.Sprintf("unit, %d bytes", len(data))); err != nil {
			return err
		}
	}
	if u.Mask == nil {
		return nil
	}
	n, err := r.tree.lstat(rel)
	if err != nil {
		return err
	}
	masked := n.isSymlink() && n.target == "/dev/null"
	switch {
	case *u.Mask && masked:
		r.note("systemd", "keep", u.Name, "masked already")
	case *u.Mask:
		if n.exists {
			r.tree.remove(rel)
			r.add("systemd", "delete", rootPath(rel), "replaced by the mask", "removing "+rootPath(rel)+" to mask "+u.Name,
				func() error { r.touch(rel); return r.root.RemoveAll(rel) })
		}
		if err := r.planParents("systemd", rel, 0o755, 0, 0); err != nil {
			return err
		}
		r.tree.set(rel, fsNode{exists: true, mode: fs.ModeSymlink | 0o777, target: "/dev/null"})
		r.add("systemd", "mask", u.Name, rootPath(rel)+" → /dev/null", "masking "+u.Name, func() error {
			r.touch(rel)
			return r.root.Symlink("/dev/null", rel)
		})
	case masked:
		r.tree.remove(rel)
		r.add("systemd", "unmask", u.Name, "remove "+rootPath(rel), "unmasking "+u.Name, func() error {
			r.touch(rel)
			return r.root.Remove(rel)
		})
	}
	return nil
}

// planPreset appends lines to the preset file (replacing it atomically,
// keeping its mode and owner).
func (r *filesRun) planPreset(lines []string) error {
	rel, err := r.tree.resolve(presetFile, false)
	if err != nil {
		return err
	}
	n, err := r.tree.lstat(rel)
	if err != nil {
		return err
	}
	var data []byte
	known := true
	mode, uid, gid := fs.FileMode(0o644), 0, 0
	switch {
	case !n.exists:
	case !n.isRegular():
		return fmt.Errorf("a %s exists at %s", n.kind(), presetFile)
	case n.known:
		data = slices.Clone(n.data)
		mode, uid, gid = permBits(n.mode), n.uid, n.gid
	case n.id.planned != 0:
		known = false
	default:
		if data, err = r.root.ReadFile(rel); err != nil {
			return err
		}
		mode, uid, gid = permBits(n.mode), n.uid, n.gid
	}
	data = append(data, strings.Join(lines, "\n")+"\n"...)
	return r.planWrite("systemd", rel, data, known, mode, uid, gid, strings.Join(lines, "; "))
}

// unitFile is a unit file found in the target.
type unitFile struct {
	name   string // the name it was found under: the unit, or its template
	path   string // where, in the search path: what enablement links point at
	data   []byte
	known  bool
	masked bool
}

// findUnit looks a unit up in the search path (an instance's own file
// first, then its template's), as this run leaves the target.
func (r *filesRun) findUnit(name string) (unitFile, bool, error) {
	names := []string{name}
	if tmpl, inst := splitInstance(name); inst != "" {
		names = append(names, tmpl)
	}
	for _, nm := range names {
		for _, dir := range unitSearchPath {
			p := dir + "/" + nm
			rel, err := r.tree.resolve(p, false)
			if err != nil {
				return unitFile{}, false, err
			}
			n, err := r.tree.lstat(rel)
			if err != nil {
				return unitFile{}, false, err
			}
			if !n.exists {
				continue
			}
			uf := unitFile{name: nm, path: p}
			if n.isSymlink() {
				if n.target == "/dev/null" {
					uf.masked = true
					return uf, true, nil
				}
				if rel, err = r.tree.resolve(p, true); err != nil {
					return unitFile{}, false, err
				}
				if n, err = r.tree.lstat(rel); err != nil {
					return unitFile{}, false, err
				}
				if !n.exists {
					continue // a dangling link is no unit
				}
			}
			switch {
			case rel == "dev/null":
				uf.masked = true
			case !n.isRegular():
				continue
			case n.known:
				uf.data, uf.known = n.data, true
			case n.id.planned != 0:
				// Written by this run from a resource not fetched in plan mode.
			default:
				if uf.data, err = r.root.ReadFile(rel); err != nil {
					return unitFile{}, false, err
				}
				uf.known = true
			}
			// systemd treats an empty unit file as masked.
			uf.masked = uf.masked || (uf.known && len(strings.TrimSpace(string(uf.data))) == 0)
			return uf, true, nil
		}
	}
	return unitFile{}, false, nil
}

// unitInstall is a unit's [Install] section.
type unitInstall struct {
	wantedBy, requiredBy, upheldBy, alias, also []string
	defaultInstance                             string
}

func (in unitInstall) empty() bool {
	return len(in.wantedBy)+len(in.requiredBy)+len(in.upheldBy)+len(in.alias)+len(in.also) == 0
}

// parseInstall reads the [Install] section of a unit file: comments (# ;),
// continuation lines, lists split on white space, an empty assignment
// clearing a list.
func parseInstall(data []byte) unitInstall {
	var in unitInstall
	section := ""
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if l == "" || l[0] == '#' || l[0] == ';' {
			continue
		}
		for strings.HasSuffix(l, `\`) && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(lines[i])
			if next != "" && (next[0] == '#' || next[0] == ';') {
				continue
			}
			l = strings.TrimSuffix(l, `\`) + " " + next
		}
		l = strings.TrimSuffix(l, `\`)
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			section = l[1 : len(l)-1]
			continue
		}
		if section != "Install" {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		list := func(dst *[]string) {
			if v == "" {
				*dst = nil
				return
			}
			*dst = append(*dst, strings.Fields(v)...)
		}
		switch k {
		case "WantedBy":
			list(&in.wantedBy)
		case "RequiredBy":
			list(&in.requiredBy)
		case "UpheldBy":
			list(&in.upheldBy)
		case "Alias":
			list(&in.alias)
		case "Also":
			list(&in.also)
		case "DefaultInstance":
			in.defaultInstance = v
		}
	}
	return in
}

// expandSpecifiers expands the specifiers systemctl expands in [Install]
// for the unit name.
func expandSpecifiers(s, name string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	noSuffix := name
	if dot := strings.LastIndex(name, "."); dot >= 0 {
		noSuffix = name[:dot]
	}
	prefix, instance, _ := strings.Cut(noSuffix, "@")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i++; i == len(s) {
			return "", fmt.Errorf("%q ends in a lone %%", s)
		}
		switch s[i] {
		case 'n':
			b.WriteString(name)
		case 'N':
			b.WriteString(noSuffix)
		case 'p':
			b.WriteString(prefix)
		case 'i':
			b.WriteString(instance)
		case 'j':
			b.WriteString(prefix[strings.LastIndex(prefix, "-")+1:])
		case '%':
			b.WriteByte('%')
		default:
			return "", fmt.Errorf("specifier %%%c in %q is not supported", s[i], s)
		}
	}
	return b.String(), nil
}

// planEnable makes the links `systemctl enable` would make for a unit.
func (r *filesRun) planEnable(name string, top bool, seen map[string]bool) error {
	if seen[name] {
		return nil
	}
	seen[name] = true
	log := r.env.Logger()
	uf, ok, err := r.findUnit(name)
	if err != nil {
		return err
	}
	if !ok {
		if top {
			return fmt.Errorf("unit %s does not exist in the target (looked in %s) and the config gives it no contents", name, strings.Join(unitSearchPath, ", "))
		}
		log.Warn("unit named in Also= does not exist; not enabled", "unit", name)
		return nil
	}
	if uf.masked {
		log.Warn("unit is masked; its preset is written but no links are made", "unit", name)
		r.note("systemd", "keep", name, "masked; no enablement links")
		return nil
	}
	if !uf.known {
		r.note("systemd", "keep", name, "links from [Install] of "+uf.path+" once its contents are fetched")
		return nil
	}
	in := parseInstall(uf.data)
	eff := name
	if tmpl, inst := splitInstance(name); strings.Contains(name, "@") && inst == "" {
		if in.defaultInstance == "" {
			r.note("systemd", "keep", name, "a template without DefaultInstance: no links, the preset only")
			in.wantedBy, in.requiredBy, in.upheldBy, in.alias = nil, nil, nil, nil
		} else {
			eff = strings.Replace(tmpl, "@.", "@"+in.defaultInstance+".", 1)
		}
	}
	if in.empty() {
		r.note("systemd", "keep", name, "no [Install] section in "+uf.path+": no links, the preset only")
		return nil
	}
	for _, l := range []struct {
		dir  string
		list []string
	}{{".wants", in.wantedBy}, {".requires", in.requiredBy}, {".upholds", in.upheldBy}} {
		for _, t := range l.list {
			t, err := expandSpecifiers(t, eff)
			if err != nil {
				log.Warn("install target skipped", "unit", name, "err", err)
				continue
			}
			if err := r.planUnitLink(path.Join(unitDir, t+l.dir, eff), uf.path, true); err != nil {
				return err
			}
		}
	}
	for _, a := range in.alias {
		a, err := expandSpecifiers(a, eff)
		if err != nil {
			log.Warn("alias skipped", "unit", name, "err", err)
			continue
		}
		if err := r.planUnitLink(path.Join(unitDir, a), uf.path, false); err != nil {
			return err
		}
	}
	for _, a := range in.also {
		a, err := expandSpecifiers(a, eff)
		if err != nil {
			log.Warn("Also= unit skipped", "unit", name, "err", err)
			continue
		}
		if err := r.planEnable(a, false, seen); err != nil {
			return err
		}
	}
	return nil
}

// planUnitLink makes an enablement link. A link already there to the same
// file is kept; a .wants/.requires/.upholds link (whose name is the unit's)
// to another file is replaced; anything else in the way is kept, with a
// warning, as systemctl refuses to overwrite it.
func (r *filesRun) planUnitLink(p, target string, replace bool) error {
	rel, err := r.tree.resolve(p, false)
	if err != nil {
		return err
	}
	n, err := r.tree.lstat(rel)
	if err != nil {
		return err
	}
	switch {
	case n.isSymlink() && n.target == target:
		r.note("systemd", "keep", rootPath(rel), "links to "+target+" already")
		return nil
	case n.isSymlink() && replace:
		r.tree.remove(rel)
		r.add("systemd", "delete", rootPath(rel), "stale link to "+n.target, "removing "+rootPath(rel), func() error {
			r.touch(rel)
			return r.root.Remove(rel)
		})
	case n.exists:
		r.env.Logger().Warn("enablement link not made: something else is in the way", "path", rootPath(rel), "kind", n.kind())
		r.note("systemd", "keep", rootPath(rel), "a "+n.kind()+" is in the way of the link to "+target)
		return nil
	}
	if err := r.planParents("systemd", rel, 0o755, 0, 0); err != nil {
		return err
	}
	r.planSymlinkOp("systemd", rel, target, 0, 0)
	return nil
}

// planDisable removes a unit's enablement links from /etc/systemd/system
// and reports whether `systemctl is-enabled` would have succeeded (the
// unit was enabled, or is static or indirect), which decides its preset
// line.
func (r *filesRun) planDisable(name string, seen map[string]bool) (bool, error) {
	if seen[name] {
		return false, nil
	}
	seen[name] = true
	uf, ok, err := r.findUnit(name)
	if err != nil || !ok || uf.masked {
		return false, err
	}
	var in unitInstall
	if uf.known {
		in = parseInstall(uf.data)
	}
	tmpl, inst := splitInstance(name)
	isTemplate := strings.Contains(name, "@") && inst == ""
	// A link is the unit's when it has its name, or points at its file;
	// an instance's file is its template's, shared with other instances,
	// so for an instance only the name counts.
	owned := func(linkName, target string) bool {
		switch {
		case linkName == name:
			return true
		case inst != "":
			return false
		case target == uf.path:
			return true
		case isTemplate:
			lt, li := splitInstance(linkName)
			return lt == tmpl && li != "" && path.Base(target) == uf.name
		}
		return false
	}

	dir, err := r.tree.resolve(unitDir, true)
	if err != nil {
		return false, err
	}
	var remove []string
	entries, err := fs.ReadDir(r.root.FS(), dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	for _, e := range entries {
		if !e.IsDir() || !(strings.HasSuffix(e.Name(), ".wants") || strings.HasSuffix(e.Name(), ".requires") || strings.HasSuffix(e.Name(), ".upholds")) {
			continue
		}
		sub := path.Join(dir, e.Name())
		links, err := fs.ReadDir(r.root.FS(), sub)
		if err != nil {
			return false, err
		}
		for _, l := range links {
			rel := path.Join(sub, l.Name())
			n, err := r.tree.lstat(rel)
			if err != nil {
				return false, err
			}
			if n.isSymlink() && owned(l.Name(), n.target) {
				remove = append(remove, rel)
			}
		}
	}
	for _, a := range in.alias {
		a, err := expandSpecifiers(a, name)
		if err != nil {
			continue
		}
		rel := path.Join(dir, a)
		n, err := r.tree.lstat(rel)
		if err != nil {
			return false, err
		}
		if n.isSymlink() && (n.target == uf.path || path.Base(n.target) == uf.name) {
			remove = append(remove, rel)
		}
	}
	for _, rel := range remove {
		r.tree.remove(rel)
		r.add("systemd", "unlink", rootPath(rel), "enablement link of "+name, "removing "+rootPath(rel), func() error {
			r.touch(rel)
			return r.root.Remove(rel)
		})
	}
	for _, a := range in.also {
		if a, err := expandSpecifiers(a, name); err == nil {
			if _, err := r.planDisable(a, seen); err != nil {
				return false, err
			}
		}
	}
	static := len(in.wantedBy)+len(in.requiredBy)+len(in.upheldBy)+len(in.alias) == 0
	indirect := isTemplate && in.defaultInstance == ""
	return len(remove) > 0 || static || indirect, nil
}
