package groups

import "sort"

// Index answers Select without scanning every group. Each group is filed
// under one anchor selector — the key whose values are shared by the fewest
// other groups, typically mac or uuid — so a request only checks the groups
// filed under the labels it carries, plus the default groups.
//
// An Index is immutable once built and safe for concurrent use.
type Index struct {
	buckets  map[string]map[string][]*Group // anchor key → value → groups, best first
	defaults []*Group                       // groups without selectors, best first
	all      []*Group                       // every group, ID order
}

// NewIndex indexes normalised groups.
func NewIndex(gs []*Group) *Index {
	freq := make(map[string]map[string]int)
	for _, g := range gs {
		for k, vs := range g.Selector {
			if freq[k] == nil {
				freq[k] = make(map[string]int)
			}
			for _, v := range vs {
				freq[k][v]++
			}
		}
	}
	ix := &Index{buckets: make(map[string]map[string][]*Group)}
	for _, g := range gs {
		ix.all = append(ix.all, g)
		if len(g.Selector) == 0 {
			ix.defaults = append(ix.defaults, g)
			continue
		}
		anchor, cost := "", -1
		for _, k := range g.sortedKeys() {
			c := 0
			for _, v := range g.Selector[k] {
				c += freq[k][v]
			}
			if cost < 0 || c < cost {
				anchor, cost = k, c
			}
		}
		if ix.buckets[anchor] == nil {
			ix.buckets[anchor] = make(map[string][]*Group)
		}
		for _, v := range g.Selector[anchor] {
			ix.buckets[anchor][v] = append(ix.buckets[anchor][v], g)
		}
	}
	for _, byValue := range ix.buckets {
		for _, b := range byValue {
			sort.Slice(b, func(i, j int) bool { return Better(b[i], b[j]) })
		}
	}
	sort.Slice(ix.defaults, func(i, j int) bool { return Better(ix.defaults[i], ix.defaults[j]) })
	sort.Slice(ix.all, func(i, j int) bool { return ix.all[i].ID < ix.all[j].ID })
	return ix
}

// Select returns the most specific group matching l, or nil; the same
// answer as the package-level Select over the same groups.
func (ix *Index) Select(l Labels) *Group {
	var best *Group
	for k, v := range l {
		for _, g := range ix.buckets[k][v] {
			if best != nil && !Better(g, best) {
				break // the bucket is sorted: nothing later can win
			}
			if g.Matches(l) {
				best = g
				break
			}
		}
	}
	if best == nil && len(ix.defaults) > 0 {
		best = ix.defaults[0]
	}
	return best
}

// Groups returns every indexed group in ID order. The slice is shared:
// callers must not modify it.
func (ix *Index) Groups() []*Group { return ix.all }
