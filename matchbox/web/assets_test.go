package web_test

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/web"
)

// secret is what lives outside the asset tree; no response may hold it.
const secret = "TOP-SECRET-OUTSIDE-THE-ASSET-TREE"

// assetTree makes, under a temporary directory:
//
//	secret.txt                    outside the tree
//	outside/secret.txt            outside the tree
//	assets/kernel.img             256 KiB of patterned bytes
//	assets/dir/inner.txt          a file in a subdirectory
//	assets/empty                  an empty file
//	assets/with space.img         a name to escape
//	assets/flatcar/1.2.3/image    a versioned release …
//	assets/flatcar/current        … and a symlink to it (inside the tree)
//	assets/kernel-link            a symlink to kernel.img
//	assets/escape-rel             a symlink to ../secret.txt
//	assets/escape-abs             a symlink to the absolute path of secret.txt
//	assets/escape-dir             a symlink to ../outside
func assetTree(t *testing.T) (dir string, kernel []byte) {
	t.Helper()
	base := t.TempDir()
	dir = filepath.Join(base, "assets")
	kernel = make([]byte, 256<<10)
	for i := range kernel {
		kernel[i] = byte(i*7 + i/256)
	}
	write := func(name string, data []byte) {
		t.Helper()
		p := filepath.Join(base, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	link := func(target, name string) {
		t.Helper()
		if err := os.Symlink(target, filepath.Join(base, filepath.FromSlash(name))); err != nil {
			t.Fatal(err)
		}
	}
	write("secret.txt", []byte(secret))
	write("outside/secret.txt", []byte(secret))
	write("assets/kernel.img", kernel)
	write("assets/dir/inner.txt", []byte("inner\n"))
	write("assets/empty", nil)
	write("assets/with space.img", []byte("space\n"))
	write("assets/flatcar/1.2.3/image", []byte("flatcar 1.2.3\n"))
	link("1.2.3", "assets/flatcar/current")
	link("kernel.img", "assets/kernel-link")
	link("../secret.txt", "assets/escape-rel")
	link(filepath.Join(base, "secret.txt"), "assets/escape-abs")
	link("../outside", "assets/escape-dir")
	return dir, kernel
}

func startAssets(t *testing.T, dir string) *server {
	t.Helper()
	c := load(t, files(selectData))
	return start(t, web.Config{Catalog: func() *catalog.Catalog { return c }, Assets: assetsRoot(t, dir)})
}

func TestAssetServed(t *testing.T) {
	dir, kernel := assetTree(t)
	s := startAssets(t, dir)
	r := s.get("/assets/kernel.img")
	call := "GET /assets/kernel.img"
	if r.code != http.StatusOK || r.body != string(kernel) {
		t.Fatalf("%s = %d, %d bytes; want 200 and the file's %d bytes", call, r.code, len(r.body), len(kernel))
	}
	if got := r.header.Get("Content-Length"); got != fmt.Sprint(len(kernel)) {
		t.Errorf("%s Content-Length = %q, want %d", call, got, len(kernel))
	}
	if r.header.Get("ETag") == "" {
		t.Errorf("%s ETag missing, want a validator", call)
	}
	fi, err := os.Stat(filepath.Join(dir, "kernel.img"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.header.Get("Last-Modified"), fi.ModTime().UTC().Format(http.TimeFormat); got != want {
		t.Errorf("%s Last-Modified = %q, want %q", call, got, want)
	}
	if got := r.header.Get("Accept-Ranges"); got != "bytes" {
		t.Errorf("%s Accept-Ranges = %q, want bytes", call, got)
	}

	tests := []struct {
		path string
		want string
	}{
		{"/assets/dir/inner.txt", "inner\n"},
		{"/assets/empty", ""},
		{"/assets/with%20space.img", "space\n"},
		{"/assets/flatcar/current/image", "flatcar 1.2.3\n"},
		{"/assets/kernel-link", string(kernel)},
		{"/assets//dir//inner.txt", "inner\n"},
		{"/assets/dir/./inner.txt", "inner\n"},
		{"/assets/a+b.img", "plus\n"},
		{"/assets/a%2bb.img", "plus\n"},
	}
	if err := os.WriteFile(filepath.Join(dir, "a+b.img"), []byte("plus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		r := s.get(tt.path)
		if r.code != http.StatusOK || r.body != tt.want {
			t.Errorf("GET %s = %d, %d bytes %.40q; want 200, %d bytes", tt.path, r.code, len(r.body), r.body, len(tt.want))
		}
	}
}

func TestAssetRange(t *testing.T) {
	dir, kernel := assetTree(t)
	s := startAssets(t, dir)
	n := len(kernel)
	tests := []struct {
		rng        string
		code       int
		start, end int // the slice of kernel wanted, for 206
	}{
		{"bytes=0-0", http.StatusPartialContent, 0, 1},
		{"bytes=10-19", http.StatusPartialContent, 10, 20},
		{"bytes=1000-", http.StatusPartialContent, 1000, n},
		{"bytes=-5", http.StatusPartialContent, n - 5, n},
		{fmt.Sprintf("bytes=%d-%d", n-100, n+100), http.StatusPartialContent, n - 100, n},
		{fmt.Sprintf("bytes=%d-", n), http.StatusRequestedRangeNotSatisfiable, 0, 0},
	}
	for _, tt := range tests {
		r := s.get("/assets/kernel.img", "Range", tt.rng)
		call := fmt.Sprintf("GET /assets/kernel.img (Range: %s)", tt.rng)
		if r.code != tt.code {
			t.Errorf("%s = %d, want %d", call, r.code, tt.code)
			continue
		}
		if tt.code != http.StatusPartialContent {
			continue
		}
		if want := kernel[tt.start:tt.end]; !bytes.Equal([]byte(r.body), want) {
			t.Errorf("%s = %d bytes, want bytes %d-%d of the file (%d bytes)", call, len(r.body), tt.start, tt.end-1, len(want))
		}
		if got, want := r.header.Get("Content-Range"), fmt.Sprintf("bytes %d-%d/%d", tt.start, tt.end-1, n); got != want {
			t.Errorf("%s Content-Range = %q, want %q", call, got, want)
		}
	}
	// Two ranges: multipart/byteranges with both slices.
	r := s.get("/assets/kernel.img", "Range", "bytes=0-3,100-103")
	if r.code != http.StatusPartialContent || !strings.HasPrefix(r.header.Get("Content-Type"), "multipart/byteranges") ||
		!strings.Contains(r.body, string(kernel[0:4])) || !strings.Contains(r.body, string(kernel[100:104])) {
		t.Errorf("GET /assets/kernel.img (Range: bytes=0-3,100-103) = %d %q, want 206 multipart/byteranges with both slices", r.code, r.header.Get("Content-Type"))
	}
}

func TestAssetConditional(t *testing.T) {
	dir, _ := assetTree(t)
	s := startAssets(t, dir)
	first := s.get("/assets/dir/inner.txt")
	etag, lastMod := first.header.Get("ETag"), first.header.Get("Last-Modified")
	if first.code != http.StatusOK || etag == "" || lastMod == "" {
		t.Fatalf("GET /assets/dir/inner.txt = %d, ETag %q, Last-Modified %q; want 200 with both validators", first.code, etag, lastMod)
	}
	if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) {
		t.Errorf("ETag = %s, want a quoted strong validator", etag)
	}
	tests := []struct {
		header []string
		code   int
	}{
		{[]string{"If-None-Match", etag}, http.StatusNotModified},
		{[]string{"If-None-Match", `"other", ` + etag}, http.StatusNotModified},
		{[]string{"If-None-Match", "*"}, http.StatusNotModified},
		{[]string{"If-None-Match", `"stale"`}, http.StatusOK},
		{[]string{"If-Modified-Since", lastMod}, http.StatusNotModified},
		{[]string{"If-Modified-Since", time.Unix(0, 0).UTC().Format(http.TimeFormat)}, http.StatusOK},
		{[]string{"If-Match", `"stale"`}, http.StatusPreconditionFailed},
		{[]string{"Range", "bytes=0-1", "If-Range", etag}, http.StatusPartialContent},
		{[]string{"Range", "bytes=0-1", "If-Range", `"stale"`}, http.StatusOK},
	}
	for _, tt := range tests {
		r := s.get("/assets/dir/inner.txt", tt.header...)
		call := fmt.Sprintf("GET /assets/dir/inner.txt %q", tt.header)
		if r.code != tt.code {
			t.Errorf("%s = %d, want %d", call, r.code, tt.code)
		}
		if tt.code == http.StatusNotModified && r.body != "" {
			t.Errorf("%s = 304 with body %q, want none", call, r.body)
		}
	}
	// Rewriting the file changes the validator.
	p := filepath.Join(dir, "dir", "inner.txt")
	if err := os.WriteFile(p, []byte("rewritten\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(2 * time.Second)
	if err := os.Chtimes(p, later, later); err != nil {
		t.Fatal(err)
	}
	r := s.get("/assets/dir/inner.txt", "If-None-Match", etag)
	if r.code != http.StatusOK || r.body != "rewritten\n" || r.header.Get("ETag") == etag {
		t.Errorf("GET /assets/dir/inner.txt (If-None-Match: old ETag) after rewrite = %d %q, ETag %s; want 200, the new bytes, a new ETag", r.code, r.body, r.header.Get("ETag"))
	}
}

func TestAssetHEAD(t *testing.T) {
	dir, kernel := assetTree(t)
	s := startAssets(t, dir)
	r := s.do(http.MethodHead, "/assets/kernel.img")
	if r.code != http.StatusOK || r.body != "" || r.header.Get("Content-Length") != fmt.Sprint(len(kernel)) || r.header.Get("ETag") == "" {
		t.Errorf("HEAD /assets/kernel.img = %d, Content-Length %q, ETag %q, body %d bytes; want 200, %d, an ETag, no body",
			r.code, r.header.Get("Content-Length"), r.header.Get("ETag"), len(r.body), len(kernel))
	}
	r = s.do(http.MethodHead, "/assets/missing")
	if r.code != http.StatusNotFound {
		t.Errorf("HEAD /assets/missing = %d, want 404", r.code)
	}
}

func TestAssetMethods(t *testing.T) {
	dir, _ := assetTree(t)
	s := startAssets(t, dir)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		r := s.do(method, "/assets/kernel.img")
		call := method + " /assets/kernel.img"
		r.want(t, call, http.StatusMethodNotAllowed)
		if got := r.header.Get("Allow"); got != "GET, HEAD" {
			t.Errorf("%s Allow = %q, want %q", call, got, "GET, HEAD")
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "kernel.img")); err != nil {
		t.Errorf("after PUT/DELETE: %v, want the file untouched", err)
	}
}

func TestAssetNotServed(t *testing.T) {
	dir, _ := assetTree(t)
	s := startAssets(t, dir)
	tests := []struct {
		name string
		path string
		raw  bool // send the path as written, without client-side cleaning
	}{
		{"directory", "/assets/dir", false},
		{"directory slash", "/assets/dir/", false},
		{"root", "/assets/", false},
		{"symlinked directory", "/assets/flatcar/current", false},
		{"missing", "/assets/missing.img", false},
		{"dot-dot", "/assets/../secret.txt", true},
		{"dot-dot twice", "/assets/../../secret.txt", true},
		{"dot-dot inside", "/assets/dir/../../secret.txt", true},
		{"dot-dot encoded", "/assets/%2e%2e/%2e%2e/secret.txt", true},
		{"slash encoded", "/assets/..%2f..%2fsecret.txt", true},
		{"backslash", "/assets/..\\..\\secret.txt", true},
		{"absolute", "/assets//" + strings.TrimPrefix(filepath.ToSlash(filepath.Join(filepath.Dir(dir), "secret.txt")), "/"), true},
		{"symlink relative", "/assets/escape-rel", false},
		{"symlink absolute", "/assets/escape-abs", false},
		{"symlinked directory outside", "/assets/escape-dir/secret.txt", false},
		{"symlinked directory outside listing", "/assets/escape-dir/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r response
			if tt.raw {
				r = s.raw(http.MethodGet, tt.path)
			} else {
				r = s.get(tt.path)
			}
			call := "GET " + tt.path
			if r.code != http.StatusNotFound {
				t.Errorf("%s = %d %.200q, want 404", call, r.code, r.body)
			}
			r.wantNot(t, call, secret, "inner.txt", "kernel.img", "<a href", "<pre>")
		})
	}
}

func TestAssetsDisabled(t *testing.T) {
	s := startCatalog(t, files(selectData))
	s.get("/assets/kernel.img").want(t, "GET /assets/kernel.img (no assets)", http.StatusNotFound, "no assets directory")
}

// TestAssetFIFO checks a named pipe in the asset tree is refused at once:
// opening it for reading would block until a writer comes.
func TestAssetFIFO(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	c := load(t, files(selectData))
	// A server of its own whose Close does not wait for a stuck handler.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: web.NewHandler(web.Config{Catalog: func() *catalog.Catalog { return c }, Assets: assetsRoot(t, dir)})}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		// Release a handler stuck opening the FIFO for reading.
		if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
	})
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + ln.Addr().String() + "/assets/pipe")
	if err != nil {
		t.Fatalf("GET /assets/pipe: %v, want a 404 at once", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /assets/pipe = %d, want 404", resp.StatusCode)
	}
}
