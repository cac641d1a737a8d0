package matchbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/store"
)

// reloads counts the successful reloads.
func reloads(s *Server) float64 {
	var m dto.Metric
	s.metrics.CatalogReloads.WithLabelValues("success").Write(&m)
	return m.GetCounter().GetValue()
}

// serveServer runs s on 127.0.0.1:0 until stop.
func serveServer(t *testing.T, s *Server) (base string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.cfg.Listener = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	return "http://" + ln.Addr().String(), func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}
}

func testFS() fstest.MapFS {
	return fstest.MapFS{
		"profiles/p.json":     {Data: []byte(`{"id":"p","boot":{"kernel":"/k"}}`)},
		"groups/default.json": {Data: []byte(`{"id":"default","profile":"p"}`)},
	}
}

func putGroup(id, mac string) func(*catalog.Catalog) (catalog.Change, error) {
	return func(c *catalog.Catalog) (catalog.Change, error) {
		return catalog.Change{File: c.GroupFile(id), Data: fmt.Appendf(nil, `{"id":%q,"profile":"p","selector":{"mac":%q},"metadata":{"v":"w"}}`, id, mac)}, nil
	}
}

// TestUpdateNoReloadOfOwnWrites: the watcher sees the control plane's
// writes but does not reload for them; someone else's change is reloaded.
func TestUpdateNoReloadOfOwnWrites(t *testing.T) {
	dir := dataDir(t)
	s, err := New(Config{DataPath: dir, WatchQuiet: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	base, stop := serveServer(t, s)
	defer stop()
	for i := range 5 {
		mac := fmt.Sprintf("52:54:00:00:00:%02x", i+1)
		if _, err := s.Update(putGroup(fmt.Sprintf("g%d", i), mac)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		if status, body := get(t, base+"/ipxe?mac="+mac); status != 200 || !strings.Contains(body, "v=w") {
			t.Fatalf("GET /ipxe right after Update = %d %q", status, body)
		}
	}
	time.Sleep(300 * time.Millisecond) // many quiet periods
	if n := reloads(s); n != 0 {
		t.Errorf("%v reloads after the control plane's own writes, want 0", n)
	}
	write(t, dir, "groups/h.json", `{"id":"h","profile":"p","selector":{"os":"x"},"metadata":{"v":"hand"}}`)
	eventually(t, "a reload of a hand-written file", func() bool {
		_, body := get(t, base+"/ipxe?os=x")
		return strings.Contains(body, "v=hand")
	})
	if n := reloads(s); n != 1 {
		t.Errorf("%v reloads after one outside change, want 1", n)
	}
}

// TestUpdateAndReloadRace: reloads running while writes return never
// hide a write that returned.
func TestUpdateAndReloadRace(t *testing.T) {
	dir := dataDir(t)
	for i := range 300 { // a catalog that takes a while to load
		write(t, dir, fmt.Sprintf("groups/x%d.json", i), fmt.Sprintf(`{"id":"x%d","profile":"p","selector":{"mac":"52:54:00:01:%02x:%02x"},"metadata":{"v":"x"}}`, i, i>>8, i&0xff))
	}
	s, err := New(Config{DataPath: dir, NoWatch: true})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(done)
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
				if err := s.Reload(); err != nil {
					t.Errorf("Reload: %v", err)
					return
				}
			}
		}
	}()
	for i := range 40 {
		id, mac := fmt.Sprintf("g%d", i), fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff)
		if _, err := s.Update(putGroup(id, mac)); err != nil {
			t.Fatalf("Update: %v", err)
		}
		// Watch for a while: a reload that read the directory before the
		// write must not swap in its older catalog afterwards.
		for range 20 {
			if _, ok := s.Catalog().Group(id); !ok {
				t.Fatalf("after writing %s, it is not served", id)
			}
			time.Sleep(100 * time.Microsecond)
		}
		m, err := s.Catalog().Select(groups.Labels{"mac": mac})
		if err != nil || m.Group.ID != id {
			t.Fatalf("Select(%s) right after Update = %v, %v", mac, m.Group, err)
		}
	}
}

func TestUpdateErrors(t *testing.T) {
	s, err := New(Config{Data: testFS()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(putGroup("x", "52:54:00:00:00:01")); !errors.Is(err, store.ErrReadOnly) {
		t.Errorf("Update on embedded data = %v, want ErrReadOnly", err)
	}
	s, err = New(Config{DataPath: dataDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	var le *catalog.LoadError
	if _, err := s.Update(putGroup("x", "zz")); !errors.As(err, &le) {
		t.Errorf("Update with a bad MAC = %v, want a *catalog.LoadError", err)
	}
	mine := errors.New("mine")
	if _, err := s.Update(func(*catalog.Catalog) (catalog.Change, error) { return catalog.Change{}, mine }); err != mine {
		t.Errorf("Update with a failing edit = %v, want its error", err)
	}
}
