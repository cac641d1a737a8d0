package catalog

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/render"
	"github.com/kindlingboot/kindling/profiles"
)

// Match is the outcome of selection: the machine's group and its profile.
type Match struct {
	Group   *groups.Group
	Profile *Profile
}

// Request is what a machine sent: its normalised labels, the raw query
// string and the host it asked (all template variables).
type Request struct {
	Labels   groups.Labels
	RawQuery string
	// Host is the Host the machine addressed (host:port), so templates can
	// point back at this server: {{.request.host}}.
	Host string
}

// Select finds the most specific group for labels, or ErrNoGroup.
func (c *Catalog) Select(l groups.Labels) (Match, error) {
	g := c.index.Select(l)
	if g == nil {
		return Match{}, fmt.Errorf("%w labels %v", ErrNoGroup, l)
	}
	p := c.profiles[g.Profile]
	if p == nil {
		// Only with Options.AllowDangling: a stand-in that renders an
		// error, so the machine never falls through to another group.
		p = &Profile{Profile: profiles.Profile{ID: g.Profile}, missing: true}
	}
	return Match{Group: g, Profile: p}, nil
}

// Explain says, for every group, whether it matched l and why it won or lost.
func (c *Catalog) Explain(l groups.Labels) []groups.Verdict {
	return groups.Explain(c.index.Groups(), l)
}

// Groups returns every group in ID order; callers must not modify them.
func (c *Catalog) Groups() []*groups.Group { return c.index.Groups() }

// Profile returns a profile by ID.
func (c *Catalog) Profile(id string) (*Profile, bool) {
	p, ok := c.profiles[id]
	return p, ok
}

// Counts reports how much the catalog holds.
func (c *Catalog) Counts() (groups, profiles, configs int) {
	return len(c.groups), len(c.profiles), len(c.ignition) + len(c.generic) + len(c.templates)
}

// Vars builds a machine's template variables, as matchbox does: the
// group's metadata, then each selector key set to the machine's value for
// it, then "request" holding "query" (the labels) and "raw_query".
func Vars(m Match, req Request) map[string]any {
	v := make(map[string]any, len(m.Group.Metadata)+len(m.Group.Selector)+1)
	for k, x := range m.Group.Metadata {
		v[k] = x
	}
	for k := range m.Group.Selector {
		v[k] = req.Labels[k]
	}
	q := make(map[string]any, len(req.Labels))
	for k, x := range req.Labels {
		q[k] = x
	}
	v["request"] = map[string]any{"query": q, "raw_query": req.RawQuery, "host": req.Host}
	return v
}

// Kind is something the catalog renders for a machine.
type Kind int

// What can be rendered.
const (
	IPXE Kind = iota
	GRUB
	Ignition
	Generic
	MetadataEnv
	MetadataJSON
	kinds
)

var kindNames = [...]string{"ipxe", "grub", "ignition", "generic", "metadata", "metadata-json"}

func (k Kind) String() string { return kindNames[k] }

// Render produces kind for a matched machine. Results are cached: the
// catalog is immutable, so the same inputs always give the same bytes. The
// key holds only the inputs the output can depend on — (kind, group), plus
// the raw query and host when the profile's templates read .request or the
// group selects with a list (then .mac and friends vary per machine), or
// just the host when they read only .request.host — so every request from a
// machine, whatever else its query says, hits one entry. Errors:
// ErrNotConfigured when the profile has no such config, render.ErrConfig
// (wrapped, with the reason) when a template or config fails.
func (c *Catalog) Render(kind Kind, m Match, req Request) (out []byte, cached bool, err error) {
	key := cacheKey{kind: kind, group: m.Group.ID}
	use := m.Profile.uses[kind]
	if use.request || m.Group.HasListSelector() {
		key.query, key.host = req.RawQuery, req.Host
	} else if use.host {
		key.host = req.Host
	}
	if b, ok := c.cache.get(key); ok {
		return b, true, nil
	}
	c.renders <- struct{}{} // no more renders at once than there are CPUs
	b, err := c.render(kind, m, req)
	<-c.renders
	if err != nil {
		return nil, false, err
	}
	c.cache.put(key, b)
	return b, false, nil
}

func (c *Catalog) render(kind Kind, m Match, req Request) ([]byte, error) {
	p := m.Profile
	if p.missing {
		return nil, fmt.Errorf("%w: group %q names profile %q, which does not exist", ErrNotConfigured, m.Group.ID, p.ID)
	}
	switch kind {
	case IPXE, GRUB:
		if p.Boot == nil {
			return nil, fmt.Errorf("%w: profile %q has no boot section", ErrNotConfigured, p.ID)
		}
		vars := Vars(m, req)
		boot, err := c.boot(p, vars)
		if err != nil {
			return nil, err
		}
		name := p.IPXETemplate
		if kind == GRUB {
			name = p.GRUBTemplate
		}
		if name == "" {
			if kind == IPXE {
				return render.IPXE(boot), nil
			}
			title := p.Name
			if title == "" {
				title = p.ID
			}
			return render.GRUB(title, boot), nil
		}
		t := c.templates[name]
		if t == nil {
			return nil, fmt.Errorf("%w: profile %q names templates/%s, which does not exist", ErrNotConfigured, p.ID, name)
		}
		vars["boot"] = map[string]any{"kernel": boot.Kernel, "initrd": boot.Initrd, "args": boot.Args}
		return configErr(render.Execute(t, vars))
	case Ignition:
		if p.IgnitionID == "" {
			return nil, fmt.Errorf("%w: profile %q has no ignition_id", ErrNotConfigured, p.ID)
		}
		f := c.ignition[p.IgnitionID]
		if f == nil {
			return nil, fmt.Errorf("%w: profile %q names ignition/%s, which does not exist", ErrNotConfigured, p.ID, p.IgnitionID)
		}
		if f.static != nil {
			return f.static, nil
		}
		src, err := render.Execute(f.tmpl, Vars(m, req))
		if err != nil {
			return nil, fmt.Errorf("%w: %v", render.ErrConfig, err)
		}
		out, _, err := render.Butane(src, render.ButaneOptions{Strict: c.opts.ButaneStrict})
		if err != nil {
			return nil, fmt.Errorf("ignition/%s rendered for group %q: %w", f.name, m.Group.ID, err)
		}
		return out, nil
	case Generic:
		if p.GenericID == "" {
			return nil, fmt.Errorf("%w: profile %q has no generic_id", ErrNotConfigured, p.ID)
		}
		t := c.generic[p.GenericID]
		if t == nil {
			return nil, fmt.Errorf("%w: profile %q names generic/%s, which does not exist", ErrNotConfigured, p.ID, p.GenericID)
		}
		return configErr(render.Execute(t, Vars(m, req)))
	case MetadataEnv:
		return render.MetadataEnv(Vars(m, req)), nil
	case MetadataJSON:
		return render.MetadataJSON(Vars(m, req))
	}
	return nil, fmt.Errorf("unknown kind %d", kind)
}

// Boot renders a profile's boot section with a machine's variables.
func (c *Catalog) Boot(m Match, req Request) (render.Boot, error) {
	if m.Profile.missing {
		return render.Boot{}, fmt.Errorf("%w: group %q names profile %q, which does not exist", ErrNotConfigured, m.Group.ID, m.Profile.ID)
	}
	if m.Profile.Boot == nil {
		return render.Boot{}, fmt.Errorf("%w: profile %q has no boot section", ErrNotConfigured, m.Profile.ID)
	}
	return c.boot(m.Profile, Vars(m, req))
}

func (c *Catalog) boot(p *Profile, vars map[string]any) (render.Boot, error) {
	var b render.Boot
	one := func(field string, t *text) (string, error) {
		s, err := t.render(vars)
		if err != nil {
			return "", fmt.Errorf("%w: profile %q: %v", render.ErrConfig, p.ID, err)
		}
		// A line break would end the kernel line and start a new script
		// command: a label like x=a%0Ashell must never inject one.
		if strings.ContainsAny(s, "\r\n") {
			return "", fmt.Errorf("%w: profile %q: %s rendered to %q, which holds a line break", render.ErrConfig, p.ID, field, s)
		}
		return s, nil
	}
	var err error
	if b.Kernel, err = one("boot.kernel", p.kernel); err != nil {
		return b, err
	}
	for i, t := range p.initrd {
		s, err := one(fmt.Sprintf("boot.initrd[%d]", i), t)
		if err != nil {
			return b, err
		}
		if strings.TrimSpace(s) != "" { // a template may leave an initrd out
			b.Initrd = append(b.Initrd, s)
		}
	}
	for i, t := range p.args {
		s, err := one(fmt.Sprintf("boot.args[%d]", i), t)
		if err != nil {
			return b, err
		}
		if s != "" {
			b.Args = append(b.Args, s)
		}
	}
	return b, nil
}

func configErr(b []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, fmt.Errorf("%w: %v", render.ErrConfig, err)
	}
	return b, nil
}

type cacheKey struct {
	kind  Kind
	group string
	query string
	host  string
}

// cache holds rendered bytes, read without locks. When full it is replaced
// by an empty one and refills: simple, bounded, and a full cache only
// happens under query-string churn.
type cache struct {
	max int64
	cur atomic.Pointer[cacheMap]
}

type cacheMap struct {
	m sync.Map // cacheKey → []byte
	n atomic.Int64
}

func newCache(max int) *cache {
	c := &cache{max: int64(max)}
	c.cur.Store(new(cacheMap))
	return c
}

func (c *cache) get(k cacheKey) ([]byte, bool) {
	v, ok := c.cur.Load().m.Load(k)
	if !ok {
		return nil, false
	}
	return v.([]byte), true
}

func (c *cache) put(k cacheKey, b []byte) {
	cm := c.cur.Load()
	if cm.n.Add(1) > c.max {
		fresh := new(cacheMap)
		if !c.cur.CompareAndSwap(cm, fresh) {
			fresh = c.cur.Load()
		}
		cm = fresh
		cm.n.Add(1)
	}
	cm.m.Store(k, b)
}

func (c *cache) len() int {
	n := 0
	c.cur.Load().m.Range(func(any, any) bool { n++; return true })
	return n
}
