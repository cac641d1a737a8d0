package catalog

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"

	"github.com/kindlingboot/kindling/groups"
)

// TestLiveIndex checks liveIndex against groups.Select (a scan of every
// group) through random adds, replacements and removals, and that an
// update leaves the index it came from unchanged.
func TestLiveIndex(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	values := map[string][]string{
		"mac":  {"52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03", "52:54:00:00:00:04"},
		"os":   {"installed", ""},
		"arch": {"x86_64", "arm64"},
		"role": {"etcd", "worker", "lb"},
	}
	keys := []string{"mac", "os", "arch", "role"}
	randGroup := func(id string) *groups.Group {
		g := &groups.Group{ID: id, Profile: "p", Selector: groups.Selector{}}
		for _, k := range keys {
			if r.IntN(3) == 0 {
				continue
			}
			vs := values[k]
			n := 1 + r.IntN(2)
			var pick []string
			for range n {
				pick = append(pick, vs[r.IntN(len(vs))])
			}
			sort.Strings(pick)
			g.Selector[k] = slices.Compact(pick)
		}
		return g
	}
	randLabels := func() groups.Labels {
		l := groups.Labels{}
		for _, k := range keys {
			if r.IntN(4) != 0 {
				l[k] = values[k][r.IntN(len(values[k]))]
			}
		}
		return l
	}
	current := map[string]*groups.Group{}
	var gs []*groups.Group
	for i := range 30 {
		g := randGroup(fmt.Sprintf("g%02d", i))
		current[g.ID] = g
		gs = append(gs, g)
	}
	ix := toLive(groups.NewIndex(gs))
	for step := range 2000 {
		id := fmt.Sprintf("g%02d", r.IntN(40))
		old := current[id]
		var nw *groups.Group
		if r.IntN(4) != 0 {
			nw = randGroup(id)
		}
		before := slices.Clone(ix.Groups())
		probe := randLabels()
		beforeSel := ix.Select(probe)
		next := ix.update(old, nw)
		if !slices.Equal(before, ix.Groups()) || ix.Select(probe) != beforeSel {
			t.Fatalf("step %d: update changed the index it came from", step)
		}
		ix = next
		if nw == nil {
			delete(current, id)
		} else {
			current[id] = nw
		}
		all := make([]*groups.Group, 0, len(current))
		for _, g := range current {
			all = append(all, g)
		}
		sort.Slice(all, func(i, j int) bool { return all[i].ID < all[j].ID })
		if got := ix.Groups(); !slices.Equal(got, all) {
			t.Fatalf("step %d: Groups() = %d groups, want %d in ID order", step, len(got), len(all))
		}
		for range 20 {
			l := randLabels()
			want, got := groups.Select(all, l), ix.Select(l)
			if want != got {
				t.Fatalf("step %d: Select(%v) = %v, want %v (scan)", step, l, got, want)
			}
		}
	}
}
