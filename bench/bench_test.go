package bench

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox"
	"github.com/kindlingboot/kindling/matchbox/catalog"
)

// The benchmarks share one generated data directory of 10,000 machines,
// written on first use (only when a benchmark runs) and removed at exit.
var (
	bigOnce     sync.Once
	bigDir      string
	bigMachines []Machine
	bigErr      error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if bigDir != "" {
		os.RemoveAll(bigDir)
	}
	os.Exit(code)
}

// data10k returns the shared data directory and its machines.
func data10k(b *testing.B) (string, []Machine) {
	b.Helper()
	bigOnce.Do(func() {
		bigDir, bigErr = os.MkdirTemp("", "kindling-bench-")
		if bigErr != nil {
			return
		}
		bigMachines, bigErr = Generate(bigDir, Options{Machines: 10_000})
	})
	if bigErr != nil {
		b.Fatalf("generating data: %v", bigErr)
	}
	return bigDir, bigMachines
}

func load10k(b *testing.B) (*catalog.Catalog, []Machine) {
	b.Helper()
	dir, ms := data10k(b)
	c, err := catalog.Load(os.DirFS(dir), catalog.Options{})
	if err != nil {
		b.Fatalf("catalog.Load: %v", err)
	}
	return c, ms
}

// order is a fixed pseudo-random sequence of machine indexes, so every
// run of a benchmark visits machines in the same scattered order.
func order(n int) []int {
	r := rand.New(rand.NewPCG(1, 2))
	idx := make([]int, 1<<16)
	for i := range idx {
		idx[i] = r.IntN(n)
	}
	return idx
}

const host = "127.0.0.1:8080"

// request is what a machine sends: its MAC, as iPXE's ${mac:hexhyp}.
func request(m Machine) catalog.Request {
	return catalog.Request{
		Labels:   groups.Labels{"mac": m.MAC},
		RawQuery: "mac=" + m.HexHyp(),
		Host:     host,
	}
}

// BenchmarkLoad10k is start-up: read, parse and validate 10,000 group
// files plus the profiles and templates, index them, and try each
// template once (what matchbox.New does before serving).
func BenchmarkLoad10k(b *testing.B) {
	dir, ms := data10k(b)
	fsys := os.DirFS(dir)
	b.ReportAllocs()
	for b.Loop() {
		c, err := catalog.Load(fsys, catalog.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if g, _, _ := c.Counts(); g != len(ms) {
			b.Fatalf("loaded %d groups, want %d", g, len(ms))
		}
	}
}

// BenchmarkSelect10k is matching one machine's labels against 10,000
// groups, random MAC each time.
func BenchmarkSelect10k(b *testing.B) {
	c, ms := load10k(b)
	labels := make([]groups.Labels, len(ms))
	for i, m := range ms {
		labels[i] = groups.Labels{"mac": m.MAC}
	}
	idx := order(len(ms))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		j := idx[i&(len(idx)-1)]
		i++
		got, err := c.Select(labels[j])
		if err != nil || got.Group.ID != ms[j].Group {
			b.Fatalf("Select(%v) = %v, %v; want group %s", labels[j], got.Group, err, ms[j].Group)
		}
	}
}

// BenchmarkRenderIPXE is the iPXE script of a random machine whose script
// is already cached (every machine was rendered once before timing).
func BenchmarkRenderIPXE(b *testing.B) {
	c, ms := load10k(b)
	matches, reqs := prepare(b, c, ms)
	for i := range ms {
		if _, _, err := c.Render(catalog.IPXE, matches[i], reqs[i]); err != nil {
			b.Fatal(err)
		}
	}
	idx := order(len(ms))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		j := idx[i&(len(idx)-1)]
		i++
		out, cached, err := c.Render(catalog.IPXE, matches[j], reqs[j])
		if err != nil || !cached || len(out) == 0 {
			b.Fatalf("Render(IPXE, %s) = %d bytes, cached %v, %v", ms[j].Group, len(out), cached, err)
		}
	}
}

// BenchmarkRenderIgnition is a machine's Ignition config from its Butane
// template (ignition/installed.yaml or live.yaml, Go template → Butane →
// Ignition → validation). miss: each machine's first render; after all
// 10,000 machines the catalog is reloaded, off the clock, so every timed
// render is a miss. hit: random machines, all rendered before timing.
func BenchmarkRenderIgnition(b *testing.B) {
	dir, ms := data10k(b)
	b.Run("miss", func(b *testing.B) {
		var c *catalog.Catalog
		var matches []catalog.Match
		var reqs []catalog.Request
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			j := i % len(ms)
			if j == 0 {
				b.StopTimer()
				var err error
				if c, err = catalog.Load(os.DirFS(dir), catalog.Options{}); err != nil {
					b.Fatal(err)
				}
				matches, reqs = prepare(b, c, ms)
				b.StartTimer()
			}
			out, cached, err := c.Render(catalog.Ignition, matches[j], reqs[j])
			if err != nil || cached || len(out) == 0 {
				b.Fatalf("Render(Ignition, %s) = %d bytes, cached %v, %v; want a miss", ms[j].Group, len(out), cached, err)
			}
		}
	})
	b.Run("hit", func(b *testing.B) {
		c, _ := load10k(b)
		matches, reqs := prepare(b, c, ms)
		for i := range ms {
			if _, _, err := c.Render(catalog.Ignition, matches[i], reqs[i]); err != nil {
				b.Fatal(err)
			}
		}
		idx := order(len(ms))
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			j := idx[i&(len(idx)-1)]
			i++
			out, cached, err := c.Render(catalog.Ignition, matches[j], reqs[j])
			if err != nil || !cached || len(out) == 0 {
				b.Fatalf("Render(Ignition, %s) = %d bytes, cached %v, %v", ms[j].Group, len(out), cached, err)
			}
		}
	})
}

func prepare(b *testing.B, c *catalog.Catalog, ms []Machine) ([]catalog.Match, []catalog.Request) {
	b.Helper()
	matches := make([]catalog.Match, len(ms))
	reqs := make([]catalog.Request, len(ms))
	for i, m := range ms {
		reqs[i] = request(m)
		var err error
		if matches[i], err = c.Select(reqs[i].Labels); err != nil {
			b.Fatal(err)
		}
	}
	return matches, reqs
}

// BenchmarkHTTP is the whole machine-plane handler (routing, query
// parsing, labels, selection, cache, metrics, response) through
// matchbox.New(...).Handler() and httptest, without a network: /ipxe and
// /ignition (cache hits, every machine warmed first) for random machines,
// serially and with GOMAXPROCS parallel callers.
func BenchmarkHTTP(b *testing.B) {
	dir, ms := data10k(b)
	srv, err := matchbox.New(matchbox.Config{DataPath: dir})
	if err != nil {
		b.Fatal(err)
	}
	h := srv.Handler()
	idx := order(len(ms))
	for _, ep := range []string{"/ipxe", "/ignition"} {
		// Warm each endpoint only when one of its benchmarks runs, so a
		// profile of /ipxe holds no Butane renders.
		var us []string
		var warm sync.Once
		warmed := func(b *testing.B) []string {
			warm.Do(func() {
				for _, m := range ms {
					u := "http://" + host + ep + "?mac=" + m.HexHyp()
					us = append(us, u)
					if code := serve(h, u); code != http.StatusOK {
						b.Fatalf("warming GET %s = %d", u, code)
					}
				}
			})
			return us
		}
		name := strings.TrimPrefix(ep, "/")
		b.Run(name, func(b *testing.B) {
			us := warmed(b)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				u := us[idx[i&(len(idx)-1)]]
				i++
				if code := serve(h, u); code != http.StatusOK {
					b.Fatalf("GET %s = %d", u, code)
				}
			}
		})
		b.Run(name+"-parallel", func(b *testing.B) {
			us := warmed(b)
			b.ReportAllocs()
			var seed atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(seed.Add(7919))
				for pb.Next() {
					u := us[idx[i&(len(idx)-1)]]
					i++
					if code := serve(h, u); code != http.StatusOK {
						panic(fmt.Sprintf("GET %s = %d", u, code))
					}
				}
			})
		})
	}
}

func serve(h http.Handler, url string) int {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, url, nil))
	return rec.Code
}

// TestGenerate checks, quickly, that generated data loads and serves what
// the benchmarks measure: every machine gets its own iPXE script and its
// own Ignition config.
func TestGenerate(t *testing.T) {
	dir := t.TempDir()
	ms, err := Generate(dir, Options{Machines: 20, AssetBytes: 4096})
	if err != nil {
		t.Fatal(err)
	}
	macs, err := os.ReadFile(dir + "/macs.txt")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(string(macs), "\n"); got != len(ms) {
		t.Errorf("macs.txt has %d lines, want %d", got, len(ms))
	}
	srv, err := matchbox.New(matchbox.Config{DataPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	profiles := map[string]int{}
	for _, m := range ms {
		profiles[m.Profile]++
		for _, c := range []struct{ path, want string }{
			{"/ipxe", "coreos.live.rootfs_url=http://" + host + "/assets/"},
			{"/ignition", `"` + SSHKey + `"`},
		} {
			rec := httptest.NewRecorder()
			u := "http://" + host + c.path + "?mac=" + m.HexHyp()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, u, nil))
			if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), c.want) {
				t.Errorf("GET %s = %d %q, want 200 containing %q", u, rec.Code, rec.Body.String(), c.want)
			}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://"+host+"/ignition?mac="+m.HexHyp(), nil))
		if m.Profile == "install" && !strings.Contains(rec.Body.String(), "data:,"+m.Hostname) {
			t.Errorf("ignition of %s (%s) lacks its hostname %s: %s", m.Group, m.Profile, m.Hostname, rec.Body.String())
		}
	}
	if profiles["install"] != 10 || profiles["live"] != 10 {
		t.Errorf("profiles = %v, want half install, half live", profiles)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://"+host+"/assets/big.img", nil))
	if rec.Code != http.StatusOK || rec.Body.Len() != 4096 {
		t.Errorf("GET /assets/big.img = %d, %d bytes; want 200, 4096 bytes", rec.Code, rec.Body.Len())
	}
}
