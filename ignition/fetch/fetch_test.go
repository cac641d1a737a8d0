package fetch_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/ignition/v2/config/v3_6/types"
	"github.com/pin/tftp/v3"

	"github.com/kindlingboot/kindling/ignition/fetch"
)

// The fetcher satisfies the stages' Fetcher interface (same method set;
// the stages package is not imported so these tests stand alone).
var _ interface {
	Fetch(context.Context, types.Resource) ([]byte, error)
} = (*fetch.Fetcher)(nil)

// newFetcher returns a fetcher with fast retries and a bounded total time,
// so a test that retries by mistake fails quickly instead of hanging.
func newFetcher(t *testing.T, o fetch.Options) *fetch.Fetcher {
	t.Helper()
	if o.RetryInitial == 0 {
		o.RetryInitial = 10 * time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = 50 * time.Millisecond
	}
	if o.TotalTimeout == 0 {
		o.TotalTimeout = 20 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f, err := fetch.New(o)
	if err != nil {
		t.Fatalf("fetch.New: %v", err)
	}
	return f
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func ptr[T any](v T) *T { return &v }

func res(src string) types.Resource { return types.Resource{Source: ptr(src)} }

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func sum256(b []byte) string { s := sha256.Sum256(b); return "sha256-" + hex.EncodeToString(s[:]) }
func sum512(b []byte) string { s := sha512.Sum512(b); return "sha512-" + hex.EncodeToString(s[:]) }

// files serves a fixed set of paths and counts requests per path.
type files struct {
	mu      sync.Mutex
	content map[string][]byte
	hits    map[string]int
	headers map[string]http.Header
}

func serveFiles(t *testing.T, content map[string][]byte) (*httptest.Server, *files) {
	t.Helper()
	fs := &files{content: content, hits: map[string]int{}, headers: map[string]http.Header{}}
	srv := httptest.NewServer(fs)
	t.Cleanup(srv.Close)
	return srv, fs
}

func (fs *files) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fs.mu.Lock()
	fs.hits[r.URL.Path]++
	fs.headers[r.URL.Path] = r.Header.Clone()
	b, ok := fs.content[r.URL.Path]
	fs.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(b)
}

func (fs *files) count(p string) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.hits[p]
}

func (fs *files) header(p string) http.Header {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.headers[p]
}

func TestFetchHTTP(t *testing.T) {
	plain := []byte("hello from kindling\n")
	big := bytes.Repeat([]byte("0123456789abcdef"), 10000)
	srv, _ := serveFiles(t, map[string][]byte{
		"/plain":  plain,
		"/gz":     gz(t, plain),
		"/big.gz": gz(t, big),
		"/empty":  {},
	})
	f := newFetcher(t, fetch.Options{})
	tests := []struct {
		name string
		r    types.Resource
		want []byte
	}{
		{"plain", res(srv.URL + "/plain"), plain},
		{"empty body", res(srv.URL + "/empty"), []byte{}},
		{"gzip", types.Resource{Source: ptr(srv.URL + "/gz"), Compression: ptr("gzip")}, plain},
		{"gzip large", types.Resource{Source: ptr(srv.URL + "/big.gz"), Compression: ptr("gzip")}, big},
		{"empty compression", types.Resource{Source: ptr(srv.URL + "/plain"), Compression: ptr("")}, plain},
		{"sha256", types.Resource{Source: ptr(srv.URL + "/plain"), Verification: types.Verification{Hash: ptr(sum256(plain))}}, plain},
		{"sha512", types.Resource{Source: ptr(srv.URL + "/plain"), Verification: types.Verification{Hash: ptr(sum512(plain))}}, plain},
		{"sha512 uppercase hex", types.Resource{Source: ptr(srv.URL + "/plain"), Verification: types.Verification{Hash: ptr("sha512-" + strings.ToUpper(sum512(plain)[7:]))}}, plain},
		{"gzip hash over decompressed", types.Resource{Source: ptr(srv.URL + "/gz"), Compression: ptr("gzip"), Verification: types.Verification{Hash: ptr(sum256(plain))}}, plain},
		{"no source", types.Resource{}, []byte{}},
		{"empty source", res(""), []byte{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.Fetch(context.Background(), tc.r)
			if err != nil {
				t.Fatalf("Fetch(%s) = error %v, want %d bytes", tc.name, err, len(tc.want))
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("Fetch(%s) = %d bytes %.40q, want %d bytes %.40q", tc.name, len(got), got, len(tc.want), tc.want)
			}
		})
	}
}

func TestFetchErrors(t *testing.T) {
	plain := []byte("the secret contents 4f1c")
	srv, fs := serveFiles(t, map[string][]byte{"/plain": plain, "/gz": gz(t, plain)})
	f := newFetcher(t, fetch.Options{})
	wrong256 := sum256([]byte("something else"))
	wrong512 := sum512([]byte("something else"))
	tests := []struct {
		name  string
		field string
		r     types.Resource
		want  []string // substrings of the error
		is    error
	}{
		{"404", "source", res(srv.URL + "/missing"),
			[]string{`source "` + srv.URL + `/missing": 404 Not Found`}, fetch.ErrNotFound},
		{"sha256 mismatch", "source", types.Resource{Source: ptr(srv.URL + "/plain"), Verification: types.Verification{Hash: ptr(wrong256)}},
			[]string{"hash mismatch", sum256(plain), wrong256}, fetch.ErrHashMismatch},
		{"sha512 mismatch", "source", types.Resource{Source: ptr(srv.URL + "/plain"), Verification: types.Verification{Hash: ptr(wrong512)}},
			[]string{"hash mismatch", sum512(plain), wrong512}, fetch.ErrHashMismatch},
		{"hash of compressed bytes", "source", types.Resource{Source: ptr(srv.URL + "/gz"), Compression: ptr("gzip"), Verification: types.Verification{Hash: ptr(sum256(gz(t, plain)))}},
			[]string{"hash mismatch"}, fetch.ErrHashMismatch},
		{"unknown hash function", "source", types.Resource{Source: ptr(srv.URL + "/plain"), Verification: types.Verification{Hash: ptr("md5-0123")}},
			[]string{`unsupported function "md5" (want sha256 or sha512)`}, nil},
		{"not gzip", "source", types.Resource{Source: ptr(srv.URL + "/plain"), Compression: ptr("gzip")},
			[]string{"decompressing gzip"}, nil},
		{"unknown compression", "source", types.Resource{Source: ptr(srv.URL + "/plain"), Compression: ptr("xz")},
			[]string{`unsupported compression "xz" (want gzip or none)`}, nil},
		{"s3", "source", res("s3://bucket/key"),
			[]string{`unsupported URL scheme "s3" in source "s3://bucket/key"`}, fetch.ErrUnsupportedScheme},
		{"gs", "ignition.config.merge[1].source", res("gs://bucket/key"),
			[]string{`unsupported URL scheme "gs" in ignition.config.merge[1].source`}, fetch.ErrUnsupportedScheme},
		{"arn", "source", res("arn:aws:s3:::bucket/key"),
			[]string{`unsupported URL scheme "arn" in source`}, fetch.ErrUnsupportedScheme},
		{"file", "source", res("file:///etc/passwd"),
			[]string{`unsupported URL scheme "file" in source`, "http, https, tftp and data"}, fetch.ErrUnsupportedScheme},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.FetchField(context.Background(), tc.field, tc.r)
			if err == nil {
				t.Fatalf("FetchField(%q, %s) = %q, want an error", tc.field, tc.name, got)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("FetchField(%q, %s) error = %q, want it to contain %q", tc.field, tc.name, err, w)
				}
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("FetchField(%q, %s) error = %v, want errors.Is %v", tc.field, tc.name, err, tc.is)
			}
			if strings.Contains(err.Error(), string(plain)) {
				t.Errorf("FetchField(%s) error %q contains the resource's contents", tc.name, err)
			}
		})
	}
	if n := fs.count("/missing"); n != 1 {
		t.Errorf("404 was requested %d times, want 1 (no retry)", n)
	}
}

func TestRetry(t *testing.T) {
	var n500, n429 atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/500-then-ok":
			if n500.Add(1) == 1 {
				http.Error(w, "busy", http.StatusInternalServerError)
				return
			}
		case "/429-then-ok":
			if n429.Add(1) <= 2 {
				http.Error(w, "slow down", http.StatusTooManyRequests)
				return
			}
		case "/always-503":
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		case "/403":
			http.Error(w, "no", http.StatusForbidden)
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	f := newFetcher(t, fetch.Options{})

	t.Run("500 then 200", func(t *testing.T) {
		got, err := f.Fetch(context.Background(), res(srv.URL+"/500-then-ok"))
		if err != nil || string(got) != "ok" {
			t.Fatalf("Fetch(500 then 200) = %q, %v; want \"ok\", nil", got, err)
		}
		if n := n500.Load(); n != 2 {
			t.Errorf("server saw %d requests, want 2", n)
		}
	})
	t.Run("429 twice then 200", func(t *testing.T) {
		got, err := f.Fetch(context.Background(), res(srv.URL+"/429-then-ok"))
		if err != nil || string(got) != "ok" {
			t.Fatalf("Fetch(429 then 200) = %q, %v; want \"ok\", nil", got, err)
		}
		if n := n429.Load(); n != 3 {
			t.Errorf("server saw %d requests, want 3", n)
		}
	})
	t.Run("403 fails at once", func(t *testing.T) {
		start := time.Now()
		_, err := f.Fetch(context.Background(), res(srv.URL+"/403"))
		if err == nil || !strings.Contains(err.Error(), "403 Forbidden") {
			t.Fatalf("Fetch(403) error = %v, want 403 Forbidden", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Fetch(403) took %s, want no retries", d)
		}
	})
	t.Run("503 until httpTotal", func(t *testing.T) {
		f := newFetcher(t, fetch.Options{TotalTimeout: 400 * time.Millisecond})
		start := time.Now()
		_, err := f.Fetch(context.Background(), res(srv.URL+"/always-503"))
		d := time.Since(start)
		if !errors.Is(err, fetch.ErrTimeout) || !strings.Contains(err.Error(), "503 Service Unavailable") {
			t.Fatalf("Fetch(always 503) error = %v, want ErrTimeout naming 503", err)
		}
		if d < 350*time.Millisecond || d > 3*time.Second {
			t.Errorf("Fetch(always 503) gave up after %s, want about 400ms", d)
		}
	})
}

func TestRetryConnectionRefused(t *testing.T) {
	// A port that nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	var attempts atomic.Int32
	log := slog.New(countHandler{&attempts})
	f := newFetcher(t, fetch.Options{Log: log, TotalTimeout: 500 * time.Millisecond, RetryInitial: 20 * time.Millisecond, RetryMax: 80 * time.Millisecond})
	start := time.Now()
	_, err = f.Fetch(context.Background(), res("http://"+addr+"/config.ign"))
	d := time.Since(start)
	if err == nil {
		t.Fatal("Fetch(refused port) succeeded, want an error")
	}
	if !errors.Is(err, fetch.ErrTimeout) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("Fetch(refused port) error = %q, want ErrTimeout naming connection refused", err)
	}
	if d < 450*time.Millisecond || d > 3*time.Second {
		t.Errorf("Fetch(refused port) gave up after %s, want about the 500ms total", d)
	}
	// 20+40+80+80+… ms within 500 ms: at least 5 attempts.
	if n := attempts.Load(); n < 4 {
		t.Errorf("Fetch(refused port) retried %d times, want at least 4", n)
	}
	t.Logf("gave up after %s (%d attempts logged): %v", d.Round(time.Millisecond), attempts.Load(), err)

	// The caller's context ends the retries too.
	f = newFetcher(t, fetch.Options{TotalTimeout: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = f.Fetch(ctx, res("http://"+addr+"/config.ign"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Fetch(refused port, ctx 200ms) error = %v, want context.DeadlineExceeded", err)
	}
}

// countHandler counts the "retrying" log records.
type countHandler struct{ n *atomic.Int32 }

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "retrying") {
		h.n.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

func TestHeaders(t *testing.T) {
	other, otherFiles := serveFiles(t, map[string][]byte{"/target": []byte("elsewhere")})
	srv, fs := serveFiles(t, map[string][]byte{"/direct": []byte("direct"), "/target": []byte("same host")})
	mux := http.NewServeMux()
	mux.HandleFunc("/to-other", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/target", http.StatusFound)
	})
	mux.HandleFunc("/to-same", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/target", http.StatusFound)
	})
	mux.Handle("/", fs)
	srv.Config.Handler = mux

	headers := types.HTTPHeaders{
		{Name: "Authorization", Value: ptr("Bearer s3cr3t")},
		{Name: "X-Kindling-Token", Value: ptr("tok")},
		{Name: "X-Removed", Value: nil}, // a merge deletion: never sent
	}
	f := newFetcher(t, fetch.Options{})
	fetchWith := func(p string) string {
		t.Helper()
		got, err := f.Fetch(context.Background(), types.Resource{Source: ptr(srv.URL + p), HTTPHeaders: headers})
		if err != nil {
			t.Fatalf("Fetch(%s) error: %v", p, err)
		}
		return string(got)
	}

	if got := fetchWith("/direct"); got != "direct" {
		t.Fatalf("Fetch(/direct) = %q", got)
	}
	h := fs.header("/direct")
	for name, want := range map[string]string{
		"Authorization":    "Bearer s3cr3t",
		"X-Kindling-Token": "tok",
		"Accept-Encoding":  "identity",
		"User-Agent":       "Kindling-ignite",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("request header %s = %q, want %q", name, got, want)
		}
	}
	if !strings.Contains(h.Get("Accept"), "application/vnd.coreos.ignition+json") {
		t.Errorf("request header Accept = %q, want the Ignition media type", h.Get("Accept"))
	}
	if _, ok := h["X-Removed"]; ok {
		t.Errorf("header without value was sent: %v", h["X-Removed"])
	}

	if got := fetchWith("/to-same"); got != "same host" {
		t.Fatalf("Fetch(/to-same) = %q", got)
	}
	if got := fs.header("/target").Get("X-Kindling-Token"); got != "tok" {
		t.Errorf("after a same-host redirect X-Kindling-Token = %q, want %q", got, "tok")
	}

	if got := fetchWith("/to-other"); got != "elsewhere" {
		t.Fatalf("Fetch(/to-other) = %q", got)
	}
	oh := otherFiles.header("/target")
	for _, name := range []string{"Authorization", "X-Kindling-Token"} {
		if v := oh.Get(name); v != "" {
			t.Errorf("redirect to another host carried %s: %q", name, v)
		}
	}
	if got := oh.Get("User-Agent"); got != "Kindling-ignite" {
		t.Errorf("redirect to another host: User-Agent = %q, want the default", got)
	}
}

// testCA makes a CA and a server certificate for 127.0.0.1 signed by it.
func testCA(t *testing.T) (caPEM []byte, serverCert tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Kindling test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost", "secure.kindling.test"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TLSServer starts an https server on 127.0.0.1 with cert.
func tlsServer(t *testing.T, cert tls.Certificate, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestCustomCA(t *testing.T) {
	caPEM, cert := testCA(t)
	srv := tlsServer(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "over tls")
	}))
	src := srv.URL + "/config.ign"

	t.Run("without the CA", func(t *testing.T) {
		f := newFetcher(t, fetch.Options{})
		start := time.Now()
		_, err := f.Fetch(context.Background(), res(src))
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Fetch(%s) without CA error = %v, want a certificate error", src, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Fetch without CA took %s, want no retries (retrying cannot fix a certificate)", d)
		}
	})
	t.Run("CA in options", func(t *testing.T) {
		f := newFetcher(t, fetch.Options{CAs: [][]byte{caPEM}})
		got, err := f.Fetch(context.Background(), res(src))
		if err != nil || string(got) != "over tls" {
			t.Fatalf("Fetch(%s) with CA = %q, %v; want \"over tls\"", src, got, err)
		}
	})
	t.Run("AddCA after a failure", func(t *testing.T) {
		f := newFetcher(t, fetch.Options{})
		if _, err := f.Fetch(context.Background(), res(src)); err == nil {
			t.Fatal("Fetch without CA succeeded")
		}
		if err := f.AddCA(caPEM); err != nil {
			t.Fatalf("AddCA: %v", err)
		}
		got, err := f.Fetch(context.Background(), res(src))
		if err != nil || string(got) != "over tls" {
			t.Fatalf("Fetch(%s) after AddCA = %q, %v; want \"over tls\"", src, got, err)
		}
	})
	t.Run("AddCA rejects non-PEM", func(t *testing.T) {
		f := newFetcher(t, fetch.Options{})
		err := f.AddCA([]byte("not a certificate, secret-ish text"))
		if err == nil || strings.Contains(err.Error(), "secret-ish") {
			t.Fatalf("AddCA(garbage) = %v, want an error that does not quote the input", err)
		}
		if _, err := fetch.New(fetch.Options{CAs: [][]byte{[]byte("junk")}}); err == nil || !strings.Contains(err.Error(), "CAs[0]") {
			t.Errorf("New(CAs: junk) = %v, want an error naming CAs[0]", err)
		}
	})
}

func TestProxy(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.String())
		mu.Unlock()
		io.WriteString(w, "via proxy: "+r.URL.Host)
	}))
	t.Cleanup(proxy.Close)

	// The target name never resolves: only the proxy can answer for it.
	f := newFetcher(t, fetch.Options{Proxy: types.Proxy{HTTPProxy: ptr(proxy.URL)}})
	got, err := f.Fetch(context.Background(), res("http://config.kindling.test/node1.ign"))
	if err != nil || string(got) != "via proxy: config.kindling.test" {
		t.Fatalf("Fetch through proxy = %q, %v; want \"via proxy: config.kindling.test\"", got, err)
	}
	mu.Lock()
	if len(seen) != 1 || seen[0] != "GET http://config.kindling.test/node1.ign" {
		t.Errorf("proxy saw %q, want one GET of the absolute URL", seen)
	}
	mu.Unlock()

	// A loopback target is never proxied (httpproxy semantics).
	direct, _ := serveFiles(t, map[string][]byte{"/x": []byte("direct")})
	got, err = f.Fetch(context.Background(), res(direct.URL+"/x"))
	if err != nil || string(got) != "direct" {
		t.Errorf("Fetch(loopback) with a proxy set = %q, %v; want a direct \"direct\"", got, err)
	}

	if err := f.SetProxy(types.Proxy{HTTPProxy: ptr("ftp://proxy:21")}); err == nil || !strings.Contains(err.Error(), "httpProxy") {
		t.Errorf("SetProxy(ftp://…) = %v, want an error naming httpProxy", err)
	}
	if err := f.SetProxy(types.Proxy{HTTPSProxy: ptr("http://user:hunter2@proxy:3128"), NoProxy: []types.NoProxyItem{"example.com"}}); err != nil {
		t.Errorf("SetProxy(valid) = %v", err)
	}
}

// startTFTP serves content over TFTP on 127.0.0.1 and returns host:port.
func startTFTP(t *testing.T, content map[string][]byte) string {
	t.Helper()
	var mu sync.Mutex
	s := tftp.NewServer(func(name string, rf io.ReaderFrom) error {
		mu.Lock()
		b, ok := content[name]
		mu.Unlock()
		if !ok {
			return fmt.Errorf("file not found")
		}
		_, err := rf.ReadFrom(bytes.NewReader(b))
		return err
	}, nil)
	s.SetTimeout(time.Second)
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(conn)
	}()
	t.Cleanup(func() {
		s.Shutdown()
		<-done
	})
	return conn.LocalAddr().String()
}

func TestFetchTFTP(t *testing.T) {
	small := []byte("tftp says hi")
	large := bytes.Repeat([]byte("kindling "), 20000) // many 512-byte blocks
	addr := startTFTP(t, map[string][]byte{
		"node.ign":         small,
		"dir/large.bin":    large,
		"dir/large.bin.gz": gz(t, large),
	})
	f := newFetcher(t, fetch.Options{})
	tests := []struct {
		name string
		r    types.Resource
		want []byte
	}{
		{"small", res("tftp://" + addr + "/node.ign"), small},
		{"large", res("tftp://" + addr + "/dir/large.bin"), large},
		{"gzip and hash", types.Resource{Source: ptr("tftp://" + addr + "/dir/large.bin.gz"), Compression: ptr("gzip"), Verification: types.Verification{Hash: ptr(sum512(large))}}, large},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.Fetch(context.Background(), tc.r)
			if err != nil {
				t.Fatalf("Fetch(%s) error: %v", *tc.r.Source, err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("Fetch(%s) = %d bytes, want %d", *tc.r.Source, len(got), len(tc.want))
			}
		})
	}
	t.Run("not found", func(t *testing.T) {
		src := "tftp://" + addr + "/missing.ign"
		start := time.Now()
		_, err := f.Fetch(context.Background(), res(src))
		if !errors.Is(err, fetch.ErrNotFound) || !strings.Contains(err.Error(), `source "`+src+`": TFTP error 1: file not found`) {
			t.Fatalf("Fetch(%s) error = %v, want ErrNotFound naming the source", src, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Fetch(%s) took %s, want no retries", src, d)
		}
	})
	t.Run("no file name", func(t *testing.T) {
		_, err := f.Fetch(context.Background(), res("tftp://"+addr+"/"))
		if err == nil || !strings.Contains(err.Error(), "no file name") {
			t.Errorf("Fetch(tftp://host/) error = %v, want no file name", err)
		}
	})
}

func TestFetchData(t *testing.T) {
	f := newFetcher(t, fetch.Options{})
	payload := []byte("#!/bin/sh\necho top-secret-7391\n")
	tests := []struct {
		name string
		r    types.Resource
		want []byte
	}{
		{"base64", res("data:;base64," + base64.StdEncoding.EncodeToString(payload)), payload},
		{"percent", res("data:," + url.PathEscape(string(payload))), payload},
		{"media type", res("data:text/plain;charset=utf-8,hello%20world"), []byte("hello world")},
		{"empty", res("data:,"), []byte{}},
		{"gzip base64", types.Resource{Source: ptr("data:;base64," + base64.StdEncoding.EncodeToString(gz(t, payload))), Compression: ptr("gzip")}, payload},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := f.Fetch(context.Background(), tc.r)
			if err != nil {
				t.Fatalf("Fetch(%s) error: %v", tc.name, err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Errorf("Fetch(%s) = %q, want %q", tc.name, got, tc.want)
			}
		})
	}
}

// TestDataURLNeverInErrors fails every way a data URL can fail and checks
// that neither the encoded nor the decoded payload reaches the error.
func TestDataURLNeverInErrors(t *testing.T) {
	f := newFetcher(t, fetch.Options{MaxSize: 64})
	secret := "password=hunter2-top-secret"
	b64 := base64.StdEncoding.EncodeToString([]byte(secret))
	tests := []struct {
		name string
		r    types.Resource
	}{
		{"bad base64", res("data:;base64," + b64 + "!!")},
		{"bad percent escape", res("data:," + secret + "%zz")},
		{"no comma", res("data:" + secret)},
		{"hash mismatch", types.Resource{Source: ptr("data:," + secret), Verification: types.Verification{Hash: ptr(sum256([]byte("x")))}}},
		{"not gzip", types.Resource{Source: ptr("data:," + secret), Compression: ptr("gzip")}},
		{"too large after gzip", types.Resource{Source: ptr("data:;base64," + base64.StdEncoding.EncodeToString(gz(t, []byte(strings.Repeat(secret, 10))))), Compression: ptr("gzip")}},
		{"bad hash spec", types.Resource{Source: ptr("data:," + secret), Verification: types.Verification{Hash: ptr("crc32-00")}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.FetchField(context.Background(), "storage.files[0].contents.source", tc.r)
			if err == nil {
				t.Fatalf("Fetch(%s) succeeded, want an error", tc.name)
			}
			msg := err.Error()
			for _, leak := range []string{secret, b64, "hunter2", "top-secret"} {
				if strings.Contains(msg, leak) {
					t.Errorf("Fetch(%s) error %q contains %q", tc.name, msg, leak)
				}
			}
			if !strings.Contains(msg, `storage.files[0].contents.source "data:…"`) {
				t.Errorf("Fetch(%s) error %q, want it to name the field and data:…", tc.name, msg)
			}
		})
	}
}

func TestMaxSize(t *testing.T) {
	big := bytes.Repeat([]byte("z"), 1<<20)
	srv, _ := serveFiles(t, map[string][]byte{"/big": big, "/bomb.gz": gz(t, big)})
	f := newFetcher(t, fetch.Options{MaxSize: 64 << 10})
	for _, r := range []types.Resource{
		res(srv.URL + "/big"),
		{Source: ptr(srv.URL + "/bomb.gz"), Compression: ptr("gzip")},
	} {
		_, err := f.Fetch(context.Background(), r)
		if !errors.Is(err, fetch.ErrTooLarge) {
			t.Errorf("Fetch(%s) error = %v, want ErrTooLarge", *r.Source, err)
		}
	}
}

func TestTimeouts(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(release); srv.Close() })

	f := newFetcher(t, fetch.Options{})
	// httpResponseHeaders 1 s, httpTotal 2 s: a server that never answers
	// fails after about 2 s, retrying after each 1 s header timeout.
	f.SetTimeouts(types.Timeouts{HTTPResponseHeaders: ptr(1), HTTPTotal: ptr(2)})
	start := time.Now()
	_, err := f.Fetch(context.Background(), res(srv.URL+"/slow"))
	d := time.Since(start)
	if !errors.Is(err, fetch.ErrTimeout) {
		t.Fatalf("Fetch(slow) error = %v, want ErrTimeout", err)
	}
	if !strings.Contains(err.Error(), "timeout awaiting response headers") {
		t.Errorf("Fetch(slow) error = %q, want it to name the response header timeout", err)
	}
	if d < 1900*time.Millisecond || d > 4*time.Second {
		t.Errorf("Fetch(slow) gave up after %s, want about 2s", d)
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"http://example.com/a?b=c", "http://example.com/a?b=c"},
		{"https://user:hunter2@example.com/x", "https://user:xxxxx@example.com/x"},
		{"https://user@example.com/x", "https://user@example.com/x"},
		{"data:;base64,c2VjcmV0", "data:…"},
		{"DATA:,secret", "data:…"},
		{"tftp://10.0.0.1/boot.ign", "tftp://10.0.0.1/boot.ign"},
		{"http://user:pa ss%zz@host/", "http://…"},
		{"https://s3.example/img?X-Amz-Signature=abc&X-Amz-Date=1&mac=52-54", "https://s3.example/img?X-Amz-Signature=xxxxx&X-Amz-Date=1&mac=52-54"},
		{"http://h/ignition?mac=52:54:00:00:00:01&token=SECRET", "http://h/ignition?mac=52:54:00:00:00:01&token=xxxxx"},
		{"http://h/x?tok%65n=SECRET&%74oken=S2", "http://h/x?token=xxxxx&token=xxxxx"},
		{"http://h/x#access_token=SECRET", "http://h/x#xxxxx"},
	}
	for _, tc := range tests {
		if got := fetch.Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestQueryTokenNotInErrors(t *testing.T) {
	srv, _ := serveFiles(t, nil)
	f := newFetcher(t, fetch.Options{TotalTimeout: 300 * time.Millisecond})
	for _, src := range []string{srv.URL + "/missing?token=SECRET", "http://127.0.0.1:1/x?token=SECRET"} {
		_, err := f.Fetch(context.Background(), res(src))
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("Fetch(%s) error = %v, want the token masked", fetch.Redact(src), err)
		}
	}
}

func TestPasswordNotInErrors(t *testing.T) {
	srv, _ := serveFiles(t, nil)
	u, _ := url.Parse(srv.URL)
	src := "http://kindling:hunter2@" + u.Host + "/missing"
	f := newFetcher(t, fetch.Options{})
	_, err := f.Fetch(context.Background(), res(src))
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "kindling:xxxxx@") {
		t.Errorf("Fetch(%s) error = %v, want the password masked", fetch.Redact(src), err)
	}
}

func TestFetchURL(t *testing.T) {
	srv, _ := serveFiles(t, map[string][]byte{"/c.ign": []byte(`{"ignition":{"version":"3.6.0"}}`)})
	f := newFetcher(t, fetch.Options{})
	got, err := f.FetchURL(context.Background(), srv.URL+"/c.ign")
	if err != nil || !strings.Contains(string(got), "3.6.0") {
		t.Fatalf("FetchURL = %q, %v", got, err)
	}
	_, err = f.FetchURL(context.Background(), srv.URL+"/nope.ign")
	if want := `config "` + srv.URL + `/nope.ign": 404 Not Found`; err == nil || err.Error() != want {
		t.Errorf("FetchURL(missing) error = %v, want %q", err, want)
	}
}

// TestHTTPSProxy tunnels an https fetch through a CONNECT proxy to a
// server whose certificate is signed by a CA given in the options.
func TestHTTPSProxy(t *testing.T) {
	caPEM, cert := testCA(t)
	secure := tlsServer(t, cert, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "tunnelled to "+r.Host)
	}))
	target := strings.TrimPrefix(secure.URL, "https://")
	var connects atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect || r.Host != "secure.kindling.test:443" {
			http.Error(w, "want CONNECT secure.kindling.test:443", http.StatusBadRequest)
			return
		}
		connects.Add(1)
		up, err := net.Dial("tcp", target) // the name "resolves" to the test server
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.Close()
		w.WriteHeader(http.StatusOK)
		down, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer down.Close()
		done := make(chan struct{}, 2)
		go func() { io.Copy(up, buf); done <- struct{}{} }()
		go func() { io.Copy(down, up); done <- struct{}{} }()
		<-done
	}))
	t.Cleanup(proxy.Close)

	f := newFetcher(t, fetch.Options{CAs: [][]byte{caPEM}, Proxy: types.Proxy{HTTPSProxy: ptr(proxy.URL)}})
	got, err := f.Fetch(context.Background(), res("https://secure.kindling.test/node.ign"))
	if err != nil || string(got) != "tunnelled to secure.kindling.test" {
		t.Fatalf("Fetch(https via CONNECT proxy) = %q, %v; want \"tunnelled to secure.kindling.test\"", got, err)
	}
	if n := connects.Load(); n != 1 {
		t.Errorf("proxy saw %d CONNECTs, want 1", n)
	}
}

// TestTransportOverride runs fetches over a fake transport: retries,
// headers and hashing still apply.
func TestTransportOverride(t *testing.T) {
	var calls atomic.Int32
	rt := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		n := calls.Add(1)
		if n == 1 {
			return nil, errors.New("network is unreachable")
		}
		body := "fake for " + r.Header.Get("X-Node")
		return &http.Response{StatusCode: 200, Status: "200 OK", Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
	})
	f := newFetcher(t, fetch.Options{Transport: rt})
	want := "fake for n1"
	got, err := f.Fetch(context.Background(), types.Resource{
		Source:       ptr("http://kindling.invalid/x"),
		HTTPHeaders:  types.HTTPHeaders{{Name: "X-Node", Value: ptr("n1")}},
		Verification: types.Verification{Hash: ptr(sum256([]byte(want)))},
	})
	if err != nil || string(got) != want {
		t.Fatalf("Fetch(fake transport) = %q, %v; want %q", got, err, want)
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("fake transport called %d times, want 2 (one retry)", n)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
