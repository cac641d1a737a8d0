package catalog

import (
	"maps"
	"slices"
	"sort"
	"strings"

	"github.com/kindlingboot/kindling/groups"
)

// groupIndex answers selection: *groups.Index, built by Load, or
// *liveIndex, kept up to date by Apply.
type groupIndex interface {
	// Select returns the most specific group matching l, or nil.
	Select(l groups.Labels) *groups.Group
	// Groups returns every group in ID order; callers must not modify it.
	Groups() []*groups.Group
}

// liveIndex is a selector index that one write updates without
// re-indexing every group: like groups.Index, each group is filed under
// one anchor selector key (the one whose buckets hold the fewest groups)
// and Select checks only the buckets of the labels a machine sent, plus
// the default groups. An update copies the maps and slices it changes and
// shares the rest with the index it came from, which stays valid: both
// are immutable once built. Any anchor gives the same answers; the choice
// only keeps buckets small.
type liveIndex struct {
	buckets  map[string]map[string][]*groups.Group // anchor key → value → groups, best first
	defaults []*groups.Group                       // groups without selectors, best first
	all      []*groups.Group                       // every group, ID order
}

// toLive returns ix as a liveIndex, building one if it is not.
func toLive(ix groupIndex) *liveIndex {
	if l, ok := ix.(*liveIndex); ok {
		return l
	}
	n := &liveIndex{buckets: make(map[string]map[string][]*groups.Group)}
	if ix == nil {
		return n
	}
	n.all = slices.Clone(ix.Groups())
	for _, g := range n.all {
		n.file(g, n.buckets)
	}
	return n
}

func (ix *liveIndex) Groups() []*groups.Group { return ix.all }

// Select is groups.Index's: the buckets are sorted best first, so the
// first match in each is that bucket's answer.
func (ix *liveIndex) Select(l groups.Labels) *groups.Group {
	var best *groups.Group
	for k, v := range l {
		for _, g := range ix.buckets[k][v] {
			if best != nil && !groups.Better(g, best) {
				break
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

// update returns the index with old removed and new added (either may be
// nil); ix does not change.
func (ix *liveIndex) update(old, new *groups.Group) *liveIndex {
	n := &liveIndex{buckets: maps.Clone(ix.buckets), defaults: ix.defaults, all: ix.all}
	cloned := make(map[string]bool)
	inner := func(k string) map[string][]*groups.Group {
		if !cloned[k] {
			cloned[k] = true
			if m := n.buckets[k]; m != nil {
				n.buckets[k] = maps.Clone(m)
			} else {
				n.buckets[k] = make(map[string][]*groups.Group)
			}
		}
		return n.buckets[k]
	}
	if old != nil {
		if i, ok := n.position(old.ID); ok && n.all[i] == old {
			n.all = slices.Delete(slices.Clone(n.all), i, i+1)
		}
		if len(old.Selector) == 0 {
			n.defaults = slices.DeleteFunc(slices.Clone(n.defaults), func(g *groups.Group) bool { return g == old })
		}
		for k, vs := range old.Selector {
			for _, v := range vs {
				b := n.buckets[k][v]
				if !slices.Contains(b, old) {
					continue
				}
				b = slices.DeleteFunc(slices.Clone(b), func(g *groups.Group) bool { return g == old })
				if m := inner(k); len(b) == 0 {
					delete(m, v)
				} else {
					m[v] = b
				}
			}
		}
	}
	if new != nil {
		i, _ := n.position(new.ID)
		n.all = slices.Insert(slices.Clone(n.all), i, new)
		if len(new.Selector) == 0 {
			n.defaults = insertBest(n.defaults, new)
		} else {
			k := n.anchor(new)
			m := inner(k)
			for _, v := range new.Selector[k] {
				m[v] = insertBest(m[v], new)
			}
		}
	}
	for k := range cloned {
		if len(n.buckets[k]) == 0 {
			delete(n.buckets, k)
		}
	}
	return n
}

// file adds g to buckets in place (while building).
func (ix *liveIndex) file(g *groups.Group, buckets map[string]map[string][]*groups.Group) {
	if len(g.Selector) == 0 {
		ix.defaults = insertBest(ix.defaults, g)
		return
	}
	k := ix.anchor(g)
	if buckets[k] == nil {
		buckets[k] = make(map[string][]*groups.Group)
	}
	for _, v := range g.Selector[k] {
		buckets[k][v] = insertBest(buckets[k][v], g)
	}
}

// anchor is the key of g's selector whose buckets hold the fewest groups
// (the first in key order on a tie).
func (ix *liveIndex) anchor(g *groups.Group) string {
	keys := make([]string, 0, len(g.Selector))
	for k := range g.Selector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	best, cost := "", -1
	for _, k := range keys {
		c := 0
		for _, v := range g.Selector[k] {
			c += len(ix.buckets[k][v])
		}
		if cost < 0 || c < cost {
			best, cost = k, c
		}
	}
	return best
}

// position is where id is, or would be, in all.
func (ix *liveIndex) position(id string) (int, bool) {
	return slices.BinarySearchFunc(ix.all, id, func(g *groups.Group, id string) int { return strings.Compare(g.ID, id) })
}

// insertBest returns a new slice: gs (best first) with g in its place.
func insertBest(gs []*groups.Group, g *groups.Group) []*groups.Group {
	i := sort.Search(len(gs), func(i int) bool { return groups.Better(g, gs[i]) })
	return slices.Insert(slices.Clone(gs), i, g)
}
