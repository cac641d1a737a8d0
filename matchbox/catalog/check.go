package catalog

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/render"
)

// check renders each group's configs with labels made from its own
// selectors (the first value of each), as a machine in that group would
// ask. With all false only the first group using each template is tried,
// which keeps start-up fast with thousands of groups; with all true every
// group is (kindling validate).
//
// A template that refers to a key the synthetic request lacks (typically a
// label the group does not select on) is only a warning: real machines may
// send it. Any other failure is a problem.
func (c *Catalog) check(all bool) (problems, warnings []Problem) {
	return c.checkGroups(c.index.Groups(), all, nil)
}

// checkGroups is check of the groups gs (in ID order) restricted to the
// templates want accepts (nil: all). A template is known by the profile
// and kind rendering it, so with all false, where only the first group of
// each template is tried, a profile's later groups are skipped at once:
// checking some templates of thousands of groups costs one render each.
func (c *Catalog) checkGroups(gs []*groups.Group, all bool, want func(p *Profile, kind Kind) bool) (problems, warnings []Problem) {
	// A template is (kind, what it renders, custom scripts): the profile
	// for boot scripts, the file for Ignition and generic.
	type template struct {
		kind             Kind
		what, ipxe, grub string
	}
	tried := make(map[template]bool)
	done := make(map[string]bool) // profiles whose templates were all tried (all false)
	for _, g := range gs {
		if done[g.Profile] {
			continue
		}
		p := c.profiles[g.Profile]
		if p == nil {
			continue // a dangling reference (Options.AllowDangling): nothing to render
		}
		if !all {
			done[p.ID] = true // after this group, every template of p has been tried
		}
		var (
			m   Match
			req Request
			q   url.Values
		)
		for _, k := range []struct {
			kind Kind
			what string
		}{
			{IPXE, p.ID},
			{GRUB, p.ID},
			{Ignition, p.IgnitionID},
			{Generic, p.GenericID},
		} {
			if want != nil && !want(p, k.kind) {
				continue
			}
			if !all {
				key := template{k.kind, k.what, p.IPXETemplate, p.GRUBTemplate}
				if tried[key] {
					continue
				}
				tried[key] = true
			}
			if m.Group == nil {
				l := make(groups.Labels, len(g.Selector))
				q = url.Values{}
				for k, vs := range g.Selector {
					l[k] = vs[0]
					q.Set(k, vs[0])
				}
				m = Match{Group: g, Profile: p}
				req = Request{Labels: l, RawQuery: q.Encode(), Host: "kindling.invalid:8080"}
			}
			_, err := c.render(k.kind, m, req)
			if err == nil && k.kind == Ignition {
				if w := c.butaneWarnings(p.IgnitionID, m, req); w != "" {
					warnings = append(warnings, Problem{File: "groups/" + g.ID + ".json", Err: fmt.Errorf("rendering ignition/%s for this group: butane: %s", p.IgnitionID, w)})
				}
			}
			if err == nil || errors.Is(err, ErrNotConfigured) {
				continue
			}
			labels := q.Encode()
			if labels == "" {
				labels = "none"
			}
			name := "profiles/" + p.ID + ".json boot"
			switch k.kind {
			case Ignition:
				name = "ignition/" + p.IgnitionID
			case Generic:
				name = "generic/" + p.GenericID
			}
			pr := Problem{File: "groups/" + g.ID + ".json", Err: fmt.Errorf("rendering %s for this group (labels: %s): %w", name, labels, err)}
			if strings.Contains(err.Error(), "map has no entry for key") {
				warnings = append(warnings, pr)
			} else {
				problems = append(problems, pr)
			}
		}
	}
	return problems, warnings
}

// butaneWarnings are Butane's warnings (e.g. an unused key: a misplaced
// field that would vanish silently) for a templated config as rendered for
// m; static files report theirs at load.
func (c *Catalog) butaneWarnings(name string, m Match, req Request) string {
	f := c.ignition[name]
	if f == nil || f.tmpl == nil {
		return ""
	}
	src, err := render.Execute(f.tmpl, Vars(m, req))
	if err != nil {
		return ""
	}
	_, w, _ := render.Butane(src, render.ButaneOptions{})
	return strings.ReplaceAll(w, "\n", "; ")
}

// Check renders every group's configs as its machines would ask for them
// and returns what fails (problems) and what may fail (warnings); see
// kindling validate.
func (c *Catalog) Check() (problems, warnings []Problem) {
	c.checking = true
	defer func() { c.checking = false }()
	problems, warnings = c.check(true)
	sort.SliceStable(problems, func(i, j int) bool { return problems[i].File < problems[j].File })
	sort.SliceStable(warnings, func(i, j int) bool { return warnings[i].File < warnings[j].File })
	return problems, warnings
}
