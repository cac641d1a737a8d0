// Package catalog is the in-memory snapshot of a data directory: groups,
// profiles, Ignition/Butane configs, generic and script templates, indexed
// for matching. A Catalog is built and validated once, off the request
// path, and never changes afterwards; a reload builds a new one and the
// server swaps it in atomically. Requests never read the data directory.
package catalog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"path"
	"runtime"
	"sort"
	"strings"
	"text/template"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/render"
	"github.com/kindlingboot/kindling/profiles"
)

// Sentinel outcomes the web layer maps to status codes.
var (
	// ErrNoGroup: no group matches the machine's labels (404).
	ErrNoGroup = errors.New("no group matches")
	// ErrNotConfigured: the machine's profile has no such config (404).
	ErrNotConfigured = errors.New("not configured")
)

// Options tune loading. The zero value is what `kindling serve` uses.
type Options struct {
	// ButaneStrict makes Butane warnings errors, at load and render time.
	ButaneStrict bool
	// CacheEntries bounds the rendered-config cache; 0 means 100,000.
	CacheEntries int
	// Discovery names etcd discovery tokens for the template function
	// {{ discovery "NAME" SIZE }}; nil makes it yield a placeholder path
	// (kindling validate and select have no discovery service).
	Discovery func(name string, size int) (token string, err error)
	// AllowDangling makes a reference to something that does not exist — a
	// group's profile, a profile's ignition_id, generic_id or template — a
	// warning instead of a problem; machines get 404 for what is missing,
	// never another group. The control plane sets it: its clients write a
	// profile before its configs, and delete a profile before writing it
	// again, as matchbox's clients always have.
	AllowDangling bool
}

// Catalog is an immutable, validated snapshot of a data directory.
type Catalog struct {
	index     groupIndex
	groups    map[string]*groups.Group
	profiles  map[string]*Profile
	ignition  map[string]*ignitionFile
	generic   map[string]*template.Template
	templates map[string]*template.Template
	opts      Options
	cache     *cache
	renders   chan struct{}          // bounds concurrent cache-miss renders
	reserved  map[string]Reservation // by MAC, from group metadata
	checking  bool                   // set while Load's check renders: no side effects
	// sources holds each config file's bytes by data-directory path
	// (ignition/NAME, generic/NAME, templates/NAME), as written.
	sources map[string][]byte
	// fileOf and idOf record the groups and profiles whose file is not
	// ID.json ("groups/ID" → "groups/FILE.json" and back), so a write of
	// ID replaces the file that holds it. Usually empty.
	fileOf map[string]string
	idOf   map[string]string
	// reservers lists the groups with metadata "ip" in ID order, once
	// Apply has needed it (reserversKnown).
	reservers      []*groups.Group
	reserversKnown bool
	// Warnings lists what was skipped while loading (not errors).
	Warnings []Problem
}

// Profile is a profile with its boot templates compiled.
type Profile struct {
	profiles.Profile
	kernel *text
	initrd []*text
	args   []*text
	// uses says, per kind, whether the templates behind it read .request.
	uses [kinds]requestUse
	// missing marks the stand-in for a profile a group names that does not
	// exist (Options.AllowDangling): it renders nothing.
	missing bool
}

// text is a string that may be a template; a nil t means a literal.
type text struct {
	lit string
	t   *template.Template
	// bound: t calls a function bound to its catalog (members,
	// discovery), so a derived catalog needs its own copy (Apply).
	bound bool
}

func (x *text) render(vars map[string]any) (string, error) {
	if x.t == nil {
		return x.lit, nil
	}
	b, err := render.Execute(x.t, vars)
	return string(b), err
}

type ignitionFile struct {
	name   string
	static []byte // raw Ignition, or Butane without template actions, validated
	tmpl   *template.Template
	bound  bool // as text.bound
	// warnings are Butane's warnings for a static file (e.g. an unused
	// key: a misplaced field that would otherwise vanish silently).
	warnings string
}

// Problem is one thing wrong with one file of the data directory.
type Problem struct {
	// File is relative to the data directory, e.g. groups/node1.json.
	File string
	Err  error
}

func (p Problem) Error() string { return p.File + ": " + p.Err.Error() }

// LoadError lists every problem found in a data directory.
type LoadError struct{ Problems []Problem }

func (e *LoadError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d problem(s) in data directory:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

type loader struct {
	cat      *Catalog
	fsys     fs.FS
	problems []Problem
	warnings []Problem
}

func (l *loader) fail(file string, format string, args ...any) {
	l.problems = append(l.problems, Problem{File: file, Err: fmt.Errorf(format, args...)})
}

func (l *loader) warn(file string, format string, args ...any) {
	l.warnings = append(l.warnings, Problem{File: file, Err: fmt.Errorf(format, args...)})
}

// files lists the regular files of dir (none if it does not exist),
// warning about subdirectories, which are never read.
func (l *loader) files(dir string) []string {
	ents, err := fs.ReadDir(l.fsys, dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		l.fail(dir, "reading directory: %w", err)
		return nil
	}
	var names []string
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue // .gitkeep, editor swap files
		}
		if e.IsDir() {
			l.warn(path.Join(dir, name), "subdirectory ignored: only files directly in %s/ are loaded", dir)
			continue
		}
		names = append(names, name)
	}
	return names
}

// Load reads and validates a data directory given as an fs.FS (os.DirFS
// or an embedded tree). Every problem found is returned in a *LoadError;
// a catalog is returned only when there are none.
func Load(fsys fs.FS, opts Options) (*Catalog, error) {
	l := &loader{fsys: fsys}
	c := &Catalog{
		groups:    make(map[string]*groups.Group),
		profiles:  make(map[string]*Profile),
		ignition:  make(map[string]*ignitionFile),
		generic:   make(map[string]*template.Template),
		templates: make(map[string]*template.Template),
		opts:      opts,
		renders:   make(chan struct{}, runtime.GOMAXPROCS(0)),
		sources:   make(map[string][]byte),
		fileOf:    make(map[string]string),
		idOf:      make(map[string]string),
	}
	l.cat = c
	for _, name := range l.files("profiles") {
		file := "profiles/" + name
		if !strings.HasSuffix(name, ".json") {
			l.warn(file, "ignored: profile files end in .json")
			continue
		}
		p, err := l.profile(file)
		if err != nil {
			l.problems = append(l.problems, Problem{file, err})
			continue
		}
		if other, dup := c.profiles[p.ID]; dup {
			l.fail(file, "field \"id\": %q is also the id of another profile (%s)", p.ID, other.ID)
			continue
		}
		if p.ID+".json" != name {
			l.warn(file, "profile id %q differs from its file name; the API finds it as %s.json", p.ID, p.ID)
			c.rename("profiles", p.ID, name)
		}
		c.profiles[p.ID] = p
	}
	var gs []*groups.Group
	for _, name := range l.files("groups") {
		file := "groups/" + name
		if !strings.HasSuffix(name, ".json") {
			l.warn(file, "ignored: group files end in .json")
			continue
		}
		var g groups.Group
		if err := decodeJSON(l.fsys, file, &g, groupFields); err != nil {
			l.problems = append(l.problems, Problem{file, err})
			continue
		}
		if err := g.Normalize(); err != nil {
			l.problems = append(l.problems, Problem{file, err})
			if _, ok := c.profiles[g.Profile]; g.Profile != "" && !ok && !opts.AllowDangling {
				l.fail(file, "field \"profile\": no profile %q (profiles: %s)", g.Profile, keys(c.profiles))
			}
			continue
		}
		if _, dup := c.groups[g.ID]; dup {
			l.fail(file, "field \"id\": %q is the id of another group too", g.ID)
			continue
		}
		if _, ok := c.profiles[g.Profile]; !ok {
			if !opts.AllowDangling {
				l.fail(file, "field \"profile\": no profile %q (profiles: %s)", g.Profile, keys(c.profiles))
				continue
			}
			l.warn(file, "field \"profile\": no profile %q yet: machines this group matches get 404 until it exists", g.Profile)
		}
		if g.ID+".json" != name {
			l.warn(file, "group id %q differs from its file name; the API finds it as %s.json", g.ID, g.ID)
			c.rename("groups", g.ID, name)
		}
		c.groups[g.ID] = &g
		gs = append(gs, &g)
	}
	for _, name := range l.files("ignition") {
		file := "ignition/" + name
		src, err := fs.ReadFile(fsys, file)
		if err != nil {
			l.fail(file, "reading: %w", err)
			continue
		}
		f, err := c.loadIgnition(name, src, opts)
		if err != nil {
			l.problems = append(l.problems, Problem{file, err})
			continue
		}
		if f.warnings != "" {
			l.warn(file, "butane: %s", strings.ReplaceAll(f.warnings, "\n", "; "))
		}
		c.ignition[name] = f
		c.sources[file] = src
	}
	for dir, into := range map[string]map[string]*template.Template{"generic": c.generic, "templates": c.templates} {
		for _, name := range l.files(dir) {
			file := dir + "/" + name
			src, err := fs.ReadFile(fsys, file)
			if err != nil {
				l.fail(file, "reading: %w", err)
				continue
			}
			t, err := c.newTemplate(file, string(src))
			if err != nil {
				l.fail(file, "template does not parse: %w", err)
				continue
			}
			into[name] = t
			c.sources[file] = src
		}
	}
	// Cross references, in file order so the report is stable.
	for _, id := range sortedKeys(c.profiles) {
		for _, r := range c.link(c.profiles[id]) {
			l.dangling("profiles/"+id+".json", r)
		}
	}
	c.reserved = l.reservations(gs)
	if len(gs) == 0 && len(l.problems) == 0 {
		l.warn("groups", "no groups: every machine request will answer 404")
	}
	sortProblems(l.problems)
	sortProblems(l.warnings)
	c.Warnings = l.warnings
	if len(l.problems) > 0 {
		return nil, &LoadError{Problems: l.problems}
	}
	c.index = groups.NewIndex(gs)
	n := opts.CacheEntries
	if n <= 0 {
		n = 100_000
	}
	c.cache = newCache(n)
	// Try each template once, as a machine would ask for it, so a Butane
	// template that never yields a valid config fails here, not at boot.
	c.checking = true
	problems, warnings := c.check(false)
	c.checking = false
	c.Warnings = append(c.Warnings, warnings...)
	if len(problems) > 0 {
		return nil, &LoadError{Problems: problems}
	}
	return c, nil
}

func (l *loader) profile(file string) (*Profile, error) {
	src, err := fs.ReadFile(l.fsys, file)
	if err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	return l.cat.profile(src)
}

// profileFields lists the fields of a profile file, for messages.
const profileFields = "id, name, boot, ignition_id, generic_id, cloud_id, ipxe_template, grub_template"

// groupFields lists the fields of a group file, for messages.
const groupFields = "id, name, profile, selector, metadata"

// profile decodes, validates and compiles a profile file's content.
func (c *Catalog) profile(src []byte) (*Profile, error) {
	var p Profile
	if err := decodeBytes(src, &p.Profile, profileFields); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if b := p.Boot; b != nil {
		var err error
		if p.kernel, err = c.compile("boot.kernel", b.Kernel); err != nil {
			return nil, err
		}
		for i, s := range b.Initrd {
			t, err := c.compile(fmt.Sprintf("boot.initrd[%d]", i), s)
			if err != nil {
				return nil, err
			}
			p.initrd = append(p.initrd, t)
		}
		for i, s := range b.Args {
			t, err := c.compile(fmt.Sprintf("boot.args[%d]", i), s)
			if err != nil {
				return nil, err
			}
			p.args = append(p.args, t)
		}
	}
	return &p, nil
}

// ref is a file a profile names: field names it as file.
type ref struct{ field, file string }

// link works out what p's templates read of the request (p.uses) and
// returns the files p names that the catalog lacks.
func (c *Catalog) link(p *Profile) []ref {
	var missing []ref
	refs := []struct {
		field, name, dir string
		ok               bool
	}{
		{"ignition_id", p.IgnitionID, "ignition", c.ignition[p.IgnitionID] != nil},
		{"generic_id", p.GenericID, "generic", c.generic[p.GenericID] != nil},
		{"ipxe_template", p.IPXETemplate, "templates", c.templates[p.IPXETemplate] != nil},
		{"grub_template", p.GRUBTemplate, "templates", c.templates[p.GRUBTemplate] != nil},
	}
	for _, r := range refs {
		if r.name != "" && !r.ok {
			missing = append(missing, ref{r.field, r.dir + "/" + r.name})
		}
	}
	var boot []*template.Template
	if p.Boot != nil {
		for _, x := range append(append([]*text{p.kernel}, p.initrd...), p.args...) {
			boot = append(boot, x.t)
		}
	}
	p.uses = [kinds]requestUse{}
	p.uses[IPXE] = usesOf(append(boot, c.templates[p.IPXETemplate])...)
	p.uses[GRUB] = usesOf(append(boot, c.templates[p.GRUBTemplate])...)
	if f := c.ignition[p.IgnitionID]; f != nil {
		p.uses[Ignition] = usesOf(f.tmpl)
	}
	p.uses[Generic] = usesOf(c.generic[p.GenericID])
	p.uses[MetadataEnv] = requestUse{request: true, host: true}
	p.uses[MetadataJSON] = requestUse{request: true, host: true}
	return missing
}

// dangling reports a reference to a missing file: a problem, or with
// Options.AllowDangling a warning.
func (l *loader) dangling(file string, r ref) {
	if l.cat.opts.AllowDangling {
		l.warn(file, "field %q: %s does not exist yet: machines get 404 for it until it is written", r.field, r.file)
		return
	}
	l.fail(file, "field %q: %s does not exist or did not load", r.field, r.file)
}

// rename records that kind/id lives in file name (not id.json).
func (c *Catalog) rename(kind, id, name string) {
	c.fileOf[kind+"/"+id] = kind + "/" + name
	c.idOf[kind+"/"+name] = id
}

// newTemplate parses a machine-plane template with the catalog's cluster
// helpers available.
func (c *Catalog) newTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Funcs(c.funcs()).Parse(text)
}

func (c *Catalog) compile(field, s string) (*text, error) {
	if !strings.Contains(s, "{{") {
		return &text{lit: s}, nil
	}
	t, err := c.newTemplate(field, s)
	if err != nil {
		return nil, fmt.Errorf("field %q: template %q does not parse: %w", field, s, err)
	}
	return &text{t: t, bound: callsAny(catalogFuncs, t)}, nil
}

func (c *Catalog) loadIgnition(name string, src []byte, opts Options) (*ignitionFile, error) {
	f := &ignitionFile{name: name}
	if profiles.IsRawIgnition(name) {
		if _, err := render.CheckIgnition(src); err != nil {
			return nil, err
		}
		f.static = src
		return f, nil
	}
	if !bytes.Contains(src, []byte("{{")) {
		// Nothing machine-specific: transpile once, now.
		out, warnings, err := render.Butane(src, render.ButaneOptions{Strict: opts.ButaneStrict})
		if err != nil {
			return nil, err
		}
		f.static, f.warnings = out, warnings
		return f, nil
	}
	t, err := c.newTemplate("ignition/"+name, string(src))
	if err != nil {
		return nil, fmt.Errorf("butane template does not parse: %w", err)
	}
	f.tmpl, f.bound = t, callsAny(catalogFuncs, t)
	return f, nil
}

// decodeJSON decodes one JSON object from file strictly: unknown fields
// are errors (a typo such as "selectors" would otherwise make a default
// group), and syntax errors carry a line and column.
func decodeJSON(fsys fs.FS, file string, v any, valid string) error {
	src, err := fs.ReadFile(fsys, file)
	if err != nil {
		return fmt.Errorf("reading: %w", err)
	}
	return decodeBytes(src, v, valid)
}

// decodeBytes is decodeJSON of a file's content.
func decodeBytes(src []byte, v any, valid string) error {
	dec := json.NewDecoder(bytes.NewReader(src))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			// Offset counts the offending byte; point at it.
			line, col := position(src, syn.Offset-1)
			return fmt.Errorf("line %d, column %d: invalid JSON: %v", line, col, syn)
		case errors.As(err, &typ):
			return fmt.Errorf("field %q: %s is not valid here (want %s)", typ.Field, typ.Value, typ.Type)
		case errors.Is(err, io.EOF):
			return errors.New("empty file: want a JSON object")
		case strings.HasPrefix(err.Error(), "json: unknown field"):
			return fmt.Errorf("%s (valid fields: %s)", strings.TrimPrefix(err.Error(), "json: "), valid)
		}
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return errors.New("more than one JSON value in file")
	}
	return nil
}

func position(src []byte, off int64) (line, col int) {
	if off < 0 {
		off = 0
	}
	if off > int64(len(src)) {
		off = int64(len(src))
	}
	before := src[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	col = int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

func sortProblems(ps []Problem) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].File < ps[j].File })
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func keys[V any](m map[string]V) string {
	ks := sortedKeys(m)
	if len(ks) == 0 {
		return "none"
	}
	if len(ks) > 10 {
		return strings.Join(ks[:10], ", ") + fmt.Sprintf(", … %d more", len(ks)-10)
	}
	return strings.Join(ks, ", ")
}

// Reservation is a fixed DHCP address for one machine.
type Reservation struct {
	IP       net.IP
	Hostname string
	// Group is where it was declared.
	Group string
}

// reservations collects fixed addresses: a group whose selector names
// exactly one MAC may carry metadata "ip" (and "hostname"). Two MACs with
// one address, or one MAC with two addresses, are problems.
func (l *loader) reservations(gs []*groups.Group) map[string]Reservation {
	byMAC := make(map[string]Reservation)
	byIP := make(map[string]string)
	for _, g := range gs {
		raw, ok := g.Metadata["ip"]
		macs := g.Selector["mac"]
		if !ok {
			continue
		}
		file := "groups/" + g.ID + ".json"
		s, isString := raw.(string)
		ip := net.ParseIP(s)
		if !isString || ip == nil || ip.To4() == nil {
			l.fail(file, "field \"metadata.ip\": %v is not an IPv4 address (want e.g. \"10.0.0.21\")", raw)
			continue
		}
		if len(macs) != 1 {
			l.fail(file, "field \"metadata.ip\": a fixed address needs a selector naming exactly one mac, not %d", len(macs))
			continue
		}
		mac := macs[0]
		host, _ := g.Metadata["hostname"].(string)
		if old, dup := byMAC[mac]; dup {
			if !old.IP.Equal(ip) {
				l.fail(file, "field \"metadata.ip\": mac %s already has %s in group %q", mac, old.IP, old.Group)
			} else if old.Hostname == "" && host != "" {
				old.Hostname = host // two stages of one machine: the first name given wins
				byMAC[mac] = old
			}
			continue
		}
		if other, dup := byIP[ip.String()]; dup && other != mac {
			l.fail(file, "field \"metadata.ip\": %s is already reserved for mac %s", ip, other)
			continue
		}
		byMAC[mac] = Reservation{IP: ip.To4(), Hostname: host, Group: g.ID}
		byIP[ip.String()] = mac
	}
	return byMAC
}

// Reserved returns the fixed address declared for a MAC (lower-case colon
// form), if any.
func (c *Catalog) Reserved(mac string) (Reservation, bool) {
	r, ok := c.reserved[mac]
	return r, ok
}
