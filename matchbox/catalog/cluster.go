package catalog

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/kindlingboot/kindling/groups"
)

// Cluster helpers let one template describe a whole cluster from the
// groups themselves, instead of copying an initial-cluster string into
// every group's metadata:
//
//	{{ join "," (printEach "%s=http://%s:2380" "name" "ip" (members "cluster=prod-etcd")) }}
//
// members selects groups by a metadata value (or a single-valued
// selector); the result is sorted by group id, so it is the same on every
// machine and every render. A member lacking a field is an error naming
// the group, never an empty string.

// Member is one group seen as a cluster member: its metadata, its
// single-valued selectors (so "mac" works), and "id", the group's id,
// unless the metadata has its own "id".
type Member map[string]any

// funcs are the catalog's template functions, bound to c: they read the
// catalog's groups when the template runs (after Load has indexed them).
func (c *Catalog) funcs() template.FuncMap {
	return template.FuncMap{
		"members":   c.members,
		"field":     field,
		"printEach": printEach,
		"join":      join,
		"discovery": c.discovery,
	}
}

// discovery is the path of the named cluster's etcd discovery token,
// created for size members on first use:
//
//	--discovery http://{{.request.host}}{{ discovery "prod-etcd" 3 }}
func (c *Catalog) discovery(name string, size int) (string, error) {
	// Loading tries templates once (check); that must not create tokens.
	if c.opts.Discovery == nil || c.checking {
		return "/discovery/" + name + "-not-created-outside-serve", nil
	}
	id, err := c.opts.Discovery(name, size)
	if err != nil {
		return "", err
	}
	return "/discovery/" + id, nil
}

// members returns the groups whose metadata (or single-valued selector)
// key has value, given as "key=value", sorted by group id. Groups that
// select the same single MAC are one machine (two install stages, or two
// bootstrap variants), counted once: the first by id. No match is an
// error: a cluster of nobody is a typo.
func (c *Catalog) members(sel string) ([]Member, error) {
	key, value, ok := strings.Cut(sel, "=")
	if !ok || key == "" {
		return nil, fmt.Errorf("members %q: want key=value, e.g. members \"cluster=prod-etcd\"", sel)
	}
	var out []Member
	seen := make(map[string]bool)
	for _, g := range c.index.Groups() { // ID order
		if !hasValue(g, key, value) {
			continue
		}
		if macs := g.Selector["mac"]; len(macs) == 1 {
			if seen[macs[0]] {
				continue
			}
			seen[macs[0]] = true
		}
		m := Member{}
		for k, vs := range g.Selector {
			if len(vs) == 1 {
				m[k] = vs[0]
			}
		}
		for k, v := range g.Metadata {
			m[k] = v
		}
		if _, taken := m["id"]; !taken {
			m["id"] = g.ID
		}
		m[memberGroup] = g.ID
		out = append(out, m)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("members %q: no group has %s=%s in its metadata or selector", sel, key, value)
	}
	return out, nil
}

// memberGroup keeps the group id for error messages under a key no
// metadata can have.
const memberGroup = "\x00group"

func hasValue(g *groups.Group, key, value string) bool {
	if v, ok := g.Metadata[key]; ok && fmt.Sprint(v) == value {
		return true
	}
	vs := g.Selector[groups.NormalizeKey(key)]
	return len(vs) == 1 && vs[0] == value
}

// field returns each member's value for name (dotted for nested
// metadata: "etcd.name").
func field(name string, ms []Member) ([]string, error) {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		v, err := lookup(m, name)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// printEach formats each member with format, filling its verbs from the
// named fields in order.
func printEach(format string, args ...any) ([]string, error) {
	if len(args) == 0 {
		return nil, errors.New("printEach: want a format, field names and a member list")
	}
	ms, ok := args[len(args)-1].([]Member)
	if !ok {
		return nil, fmt.Errorf("printEach: the last argument must be a member list (from members), not %T", args[len(args)-1])
	}
	var names []string
	for _, a := range args[:len(args)-1] {
		s, ok := a.(string)
		if !ok {
			return nil, fmt.Errorf("printEach: field names must be strings, not %T", a)
		}
		names = append(names, s)
	}
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		vals := make([]any, len(names))
		for i, n := range names {
			v, err := lookup(m, n)
			if err != nil {
				return nil, err
			}
			vals[i] = v
		}
		out = append(out, fmt.Sprintf(format, vals...))
	}
	return out, nil
}

func join(sep string, items []string) string {
	s := append([]string(nil), items...)
	return strings.Join(s, sep)
}

func lookup(m Member, name string) (string, error) {
	var cur any = map[string]any(m)
	for _, part := range strings.Split(name, ".") {
		obj, ok := cur.(map[string]any)
		if !ok {
			cur = nil
			break
		}
		cur = obj[part]
	}
	if cur == nil {
		return "", fmt.Errorf("group %q has no %q in its metadata (needed by a cluster template)", m[memberGroup], name)
	}
	return fmt.Sprint(cur), nil
}
