package catalog

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/kindlingboot/kindling/groups"
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
	tried := make(map[string]bool)
	for _, g := range c.index.Groups() {
		p := c.profiles[g.Profile]
		l := make(groups.Labels, len(g.Selector))
		q := url.Values{}
		for k, vs := range g.Selector {
			l[k] = vs[0]
			q.Set(k, vs[0])
		}
		m := Match{Group: g, Profile: p}
		req := Request{Labels: l, RawQuery: q.Encode(), Host: "kindling.invalid:8080"}
		for _, k := range []struct {
			kind Kind
			name string
		}{
			{IPXE, "profiles/" + p.ID + ".json boot"},
			{GRUB, "profiles/" + p.ID + ".json boot"},
			{Ignition, "ignition/" + p.IgnitionID},
			{Generic, "generic/" + p.GenericID},
		} {
			if !all {
				key := fmt.Sprint(k.kind, k.name, p.IPXETemplate, p.GRUBTemplate)
				if tried[key] {
					continue
				}
				tried[key] = true
			}
			_, err := c.render(k.kind, m, req)
			if err == nil || errors.Is(err, ErrNotConfigured) {
				continue
			}
			labels := q.Encode()
			if labels == "" {
				labels = "none"
			}
			pr := Problem{File: "groups/" + g.ID + ".json", Err: fmt.Errorf("rendering %s for this group (labels: %s): %w", k.name, labels, err)}
			if strings.Contains(err.Error(), "map has no entry for key") {
				warnings = append(warnings, pr)
			} else {
				problems = append(problems, pr)
			}
		}
	}
	return problems, warnings
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
