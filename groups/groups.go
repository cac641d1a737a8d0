// Package groups holds the Group type, label normalisation and group
// selection: which group a machine belongs to, given the labels it sent.
//
// Matching rules (the compatibility contract, with matchbox's known flaws fixed):
//   - a group matches when every selector key is present in the labels with
//     one of the selector's values (a selector value may be a list: any of);
//   - a selector value "" matches only a label that is present and empty,
//     never an absent label;
//   - label keys are case-insensitive; mac values are canonicalised to
//     lower-case colon form and uuid values compared case-insensitively;
//   - among matching groups the one with the most selector keys wins; ties go
//     to the group whose ID sorts first, so the answer never depends on file
//     order or map iteration.
//
// The package is pure: it imports only the standard library.
package groups

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
)

// Group maps machines, by their labels, to a profile.
type Group struct {
	// ID names the group; it is the file name (without .json) in groups/.
	ID string `json:"id"`
	// Name is a human description; empty is fine.
	Name string `json:"name,omitempty"`
	// Profile is the ID of the profile machines in this group boot.
	Profile string `json:"profile"`
	// Selector is the set of labels a machine must carry. An empty selector
	// matches every machine (a default group).
	Selector Selector `json:"selector,omitempty"`
	// Metadata is free-form JSON made available to templates.
	Metadata map[string]any `json:"metadata,omitempty"`
}

// Selector maps a label key to the values it accepts (any of them).
// In JSON each value may be a string or a list of strings.
type Selector map[string][]string

// UnmarshalJSON accepts {"k": "v"} and {"k": ["v1", "v2"]}.
func (s *Selector) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("selector must be an object of label to string or list of strings: %w", err)
	}
	out := make(Selector, len(raw))
	for k, v := range raw {
		var one string
		if err := json.Unmarshal(v, &one); err == nil {
			out[k] = []string{one}
			continue
		}
		var many []string
		if err := json.Unmarshal(v, &many); err != nil {
			return fmt.Errorf("selector %q: value %s is neither a string nor a list of strings", k, v)
		}
		if len(many) == 0 {
			return fmt.Errorf("selector %q: empty list matches nothing; give at least one value", k)
		}
		out[k] = many
	}
	*s = out
	return nil
}

// MarshalJSON writes single values as strings, so a matchbox-style group
// round-trips unchanged.
func (s Selector) MarshalJSON() ([]byte, error) {
	raw := make(map[string]any, len(s))
	for k, vs := range s {
		if len(vs) == 1 {
			raw[k] = vs[0]
		} else {
			raw[k] = vs
		}
	}
	return json.Marshal(raw)
}

// Labels are what a machine says about itself, normalised.
type Labels map[string]string

// ErrBadLabel is returned when a label value cannot be normalised (a
// malformed MAC); callers answer it with 400, never a fallback group.
var ErrBadLabel = errors.New("bad label")

// idPattern is what group and profile IDs may look like: they are file
// names, so they can never name a path outside their directory.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ValidID reports whether id is usable as a group or profile ID.
func ValidID(id string) bool { return idPattern.MatchString(id) && !strings.Contains(id, "..") }

// IDRule describes ValidID for error messages.
const IDRule = "letters, digits, '.', '_' and '-', starting with a letter or digit, no '..'"

// NormalizeKey lower-cases a label key.
func NormalizeKey(k string) string { return strings.ToLower(k) }

// NormalizeValue canonicalises the value of label key k (already
// normalised): mac becomes lower-case colon-separated, uuid lower-case.
func NormalizeValue(k, v string) (string, error) {
	switch k {
	case "mac":
		hw, err := net.ParseMAC(v)
		if err != nil {
			return "", fmt.Errorf("%w: mac %q is not a MAC address (want e.g. 52:54:00:a1:9c:ae or 52-54-00-a1-9c-ae)", ErrBadLabel, v)
		}
		return hw.String(), nil
	case "uuid":
		return strings.ToLower(v), nil
	}
	return v, nil
}

// FromQuery builds labels from query parameters: every parameter is a
// label, keys are case-insensitive, the first value of a repeated key wins.
// Two spellings of one key with different values are an error, as is a
// malformed MAC.
func FromQuery(q map[string][]string) (Labels, error) {
	l := make(Labels, len(q))
	for k, vs := range q {
		if len(vs) == 0 {
			continue
		}
		nk := NormalizeKey(k)
		v, err := NormalizeValue(nk, vs[0])
		if err != nil {
			return nil, err
		}
		if old, ok := l[nk]; ok && old != v {
			// Sorted, so the message never depends on map order.
			a, b := min(old, v), max(old, v)
			return nil, fmt.Errorf("%w: label %q given twice with different values (%q, %q)", ErrBadLabel, nk, a, b)
		}
		l[nk] = v
	}
	return l, nil
}

// Normalize canonicalises the group's selector in place (see NormalizeValue)
// and checks the group is well formed. The error names the field at fault.
func (g *Group) Normalize() error {
	if g.ID == "" {
		return errors.New(`field "id": missing; every group needs an id`)
	}
	if !ValidID(g.ID) {
		return fmt.Errorf("field \"id\": %q is not a valid id (%s)", g.ID, IDRule)
	}
	if g.Profile == "" {
		return errors.New(`field "profile": missing; a group must name the profile its machines boot`)
	}
	sel := make(Selector, len(g.Selector))
	for k, vs := range g.Selector {
		nk := NormalizeKey(k)
		if _, dup := sel[nk]; dup {
			return fmt.Errorf("field \"selector\": key %q appears twice (keys are case-insensitive)", nk)
		}
		out := make([]string, 0, len(vs))
		seen := make(map[string]bool, len(vs))
		for _, v := range vs {
			nv, err := NormalizeValue(nk, v)
			if err != nil {
				return fmt.Errorf("field \"selector.%s\": %w", k, err)
			}
			if !seen[nv] {
				seen[nv] = true
				out = append(out, nv)
			}
		}
		sort.Strings(out)
		sel[nk] = out
	}
	g.Selector = sel
	return nil
}

// Matches reports whether labels satisfy every selector of g. The group
// must have been normalised.
func (g *Group) Matches(l Labels) bool {
	for k, vs := range g.Selector {
		v, present := l[k]
		if !present || !contains(vs, v) {
			return false
		}
	}
	return true
}

// mismatch returns the first selector key (in sorted order) that labels do
// not satisfy, or ok.
func (g *Group) mismatch(l Labels) (key string, ok bool) {
	for _, k := range g.sortedKeys() {
		v, present := l[k]
		if !present || !contains(g.Selector[k], v) {
			return k, false
		}
	}
	return "", true
}

func (g *Group) sortedKeys() []string {
	keys := make([]string, 0, len(g.Selector))
	for k := range g.Selector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func contains(vs []string, v string) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}

// HasListSelector reports whether some selector accepts several values, so
// machines in the group differ in the value they matched with.
func (g *Group) HasListSelector() bool {
	for _, vs := range g.Selector {
		if len(vs) > 1 {
			return true
		}
	}
	return false
}

// Better reports whether a should win over b when both match: more
// selector keys first, then the smaller ID.
func Better(a, b *Group) bool {
	if len(a.Selector) != len(b.Selector) {
		return len(a.Selector) > len(b.Selector)
	}
	return a.ID < b.ID
}

// Select returns the most specific group in gs that matches l, or nil.
// It scans every group; Index does the same job without the scan.
func Select(gs []*Group, l Labels) *Group {
	var best *Group
	for _, g := range gs {
		if g.Matches(l) && (best == nil || Better(g, best)) {
			best = g
		}
	}
	return best
}

// Verdict is one group's outcome in an explanation.
type Verdict struct {
	Group *Group
	// Matched is true when every selector was satisfied.
	Matched bool
	// Reason says why the group did not match, or, for a matching group
	// that lost, why another won. Empty for the winner.
	Reason string
}

// Explain evaluates every group against l and says why each matched or
// not. The winner (if any) comes first, then the other matching groups,
// then the rest, in ID order.
func Explain(gs []*Group, l Labels) []Verdict {
	winner := Select(gs, l)
	sorted := append([]*Group(nil), gs...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	var first, matched, rest []Verdict
	for _, g := range sorted {
		key, ok := g.mismatch(l)
		switch {
		case g == winner:
			first = append(first, Verdict{Group: g, Matched: true})
		case ok:
			why := fmt.Sprintf("matched, but %q wins: ", winner.ID)
			if len(winner.Selector) > len(g.Selector) {
				why += fmt.Sprintf("it has more selectors (%d > %d)", len(winner.Selector), len(g.Selector))
			} else {
				why += fmt.Sprintf("same number of selectors (%d), and its id sorts first", len(g.Selector))
			}
			matched = append(matched, Verdict{Group: g, Matched: true, Reason: why})
		default:
			want := g.Selector[key]
			var why string
			if v, present := l[key]; !present {
				why = fmt.Sprintf("selector %s=%s: label %q is absent", key, strings.Join(want, "|"), key)
			} else {
				why = fmt.Sprintf("selector %s=%s: label is %q", key, strings.Join(want, "|"), v)
			}
			rest = append(rest, Verdict{Group: g, Reason: why})
		}
	}
	return append(append(first, matched...), rest...)
}
