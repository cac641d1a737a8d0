package web_test

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kindlingboot/kindling/assets"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/web"
)

var update = flag.Bool("update", false, "rewrite testdata/**/*.golden with the current responses")

// testHost is the Host every request sends unless a test says otherwise,
// so {{.request.host}} renders the same in every golden file.
const testHost = "kindling.test:8080"

// golden compares got with testdata/name.golden, or rewrites it with -update.
func golden(t *testing.T, name, call string, got string) {
	t.Helper()
	path := filepath.Join("testdata", filepath.FromSlash(name)+".golden")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: reading golden file: %v (run go test ./matchbox/web -update to create it)", call, err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs from %s (-want +got):\n%s", call, path, diff)
	}
}

// files builds a data directory in memory.
func files(m map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, data := range m {
		fsys[name] = &fstest.MapFile{Data: []byte(data), Mode: 0o644}
	}
	return fsys
}

// load loads a data directory; any problem fails the test.
func load(t *testing.T, fsys fs.FS) *catalog.Catalog {
	t.Helper()
	c, err := catalog.Load(fsys, catalog.Options{})
	if err != nil {
		t.Fatalf("catalog.Load: %v", err)
	}
	return c
}

// server is a handler behind a real listener on 127.0.0.1.
type server struct {
	t      *testing.T
	URL    string // http://127.0.0.1:port
	Addr   string // 127.0.0.1:port
	client *http.Client
}

// start serves the handler for cfg on 127.0.0.1:0 until the test ends.
func start(t *testing.T, cfg web.Config) *server {
	t.Helper()
	return startHandler(t, web.NewHandler(cfg))
}

func startHandler(t *testing.T, h http.Handler) *server {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	client := ts.Client()
	client.Timeout = 5 * time.Second
	return &server{t: t, URL: ts.URL, Addr: ts.Listener.Addr().String(), client: client}
}

// startCatalog serves a catalog loaded from fsys.
func startCatalog(t *testing.T, fsys fs.FS) *server {
	t.Helper()
	c := load(t, fsys)
	return start(t, web.Config{Catalog: func() *catalog.Catalog { return c }})
}

type response struct {
	code   int
	header http.Header
	body   string
}

// do sends a request; header holds key, value pairs ("Host" sets the
// Host; without it testHost is sent).
func (s *server) do(method, target string, header ...string) response {
	s.t.Helper()
	req, err := http.NewRequest(method, s.URL+target, nil)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, target, err)
	}
	req.Host = testHost
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		s.t.Fatalf("%s %s: reading body: %v", method, target, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (s *server) get(target string, header ...string) response {
	s.t.Helper()
	return s.do(http.MethodGet, target, header...)
}

// metrics fetches /metrics and keeps only Kindling's own series, so
// failure messages stay readable.
func (s *server) metrics() response {
	s.t.Helper()
	r := s.get("/metrics")
	var keep []string
	for _, line := range strings.Split(r.body, "\n") {
		if strings.HasPrefix(line, "kindling_") || strings.HasPrefix(line, "# TYPE kindling_") {
			keep = append(keep, line)
		}
	}
	r.body = strings.Join(keep, "\n") + "\n"
	return r
}

// raw sends the request line as written (no client-side cleaning of
// "..", no re-escaping) and returns the response.
func (s *server) raw(method, target string) response {
	s.t.Helper()
	conn, err := net.DialTimeout("tcp", s.Addr, 5*time.Second)
	if err != nil {
		s.t.Fatalf("dialing %s: %v", s.Addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", method, target, testHost)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		s.t.Fatalf("%s %s: reading response: %v", method, target, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		s.t.Fatalf("%s %s: reading body: %v", method, target, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: string(body)}
}

// want checks the status and that the body contains every string.
func (r response) want(t *testing.T, call string, code int, contains ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s = %d %q, want status %d", call, r.code, r.body, code)
		return
	}
	for _, c := range contains {
		if !strings.Contains(r.body, c) {
			t.Errorf("%s = %d %q, want the body to contain %q", call, r.code, r.body, c)
		}
	}
}

// wantNot checks the body contains none of the strings.
func (r response) wantNot(t *testing.T, call string, absent ...string) {
	t.Helper()
	for _, a := range absent {
		if strings.Contains(r.body, a) {
			t.Errorf("%s = %d %q, want no %q in the body", call, r.code, r.body, a)
		}
	}
}

// assetsRoot opens dir as the asset tree for the test.
func assetsRoot(t *testing.T, dir string) *assets.Root {
	t.Helper()
	r, err := assets.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}
