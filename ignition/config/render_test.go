package config_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
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
	"testing"
	"time"

	"github.com/coreos/ignition/v2/config/v3_6/types"

	"github.com/kindlingboot/kindling/ignition/config"
	"github.com/kindlingboot/kindling/ignition/fetch"
)

// configServer serves configs by path and records the order of requests.
type configServer struct {
	URL string

	mu      sync.Mutex
	configs map[string]string
	order   []string
}

func (s *configServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.order = append(s.order, r.URL.Path)
	c, ok := s.configs[r.URL.Path]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	io.WriteString(w, strings.ReplaceAll(c, "$URL", s.URL))
}

func (s *configServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

// startConfigs serves configs over http; "$URL" in a config stands for the
// server's own URL.
func startConfigs(t *testing.T, configs map[string]string) *configServer {
	t.Helper()
	s := &configServer{configs: configs}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// startTLSConfigs is startConfigs over https with a certificate signed by
// a CA of its own, returned as PEM.
func startTLSConfigs(t *testing.T, configs map[string]string) (*configServer, []byte) {
	t.Helper()
	caPEM, cert := testCA(t)
	s := &configServer{configs: configs}
	srv := httptest.NewUnstartedServer(s)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s, caPEM
}

func newFetcher(t *testing.T) *fetch.Fetcher {
	t.Helper()
	f, err := fetch.New(fetch.Options{
		Log:          testLog(t),
		RetryInitial: 10 * time.Millisecond,
		RetryMax:     50 * time.Millisecond,
		TotalTimeout: 20 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func mustParse(t *testing.T, s string) types.Config {
	t.Helper()
	cfg, _, err := config.Parse([]byte(s))
	if err != nil {
		t.Fatalf("Parse(%s): %v", s, err)
	}
	return cfg
}

// files returns path → contents source of a config's files.
func files(cfg types.Config) map[string]string {
	out := map[string]string{}
	for _, f := range cfg.Storage.Files {
		src := ""
		if f.Contents.Source != nil {
			src = *f.Contents.Source
		}
		out[f.Path] = src
	}
	return out
}

func file(path, contents string) string {
	return fmt.Sprintf(`{"path":%q,"overwrite":true,"contents":{"source":"data:,%s"}}`, path, url.PathEscape(contents))
}

func TestRenderMerge(t *testing.T) {
	srv := startConfigs(t, map[string]string{
		"/c1.ign": `{"ignition":{"version":"3.0.0"},"storage":{"files":[` + file("/a", "c1") + `,` + file("/b", "c1") + `]}}`,
		"/c2.ign": `{"ignition":{"version":"3.6.0"},"storage":{"files":[` + file("/b", "c2") + `]},
			"passwd":{"users":[{"name":"core"}]}}`,
	})
	top := mustParse(t, `{"ignition":{"version":"3.6.0","config":{"merge":[
		{"source":"`+srv.URL+`/c1.ign"},{"source":"`+srv.URL+`/c2.ign"}]}},
		"storage":{"files":[`+file("/a", "top")+`,`+file("/top", "top")+`]}}`)

	got, err := config.Render(context.Background(), top, newFetcher(t), testLog(t))
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	want := map[string]string{"/a": "data:,c1", "/b": "data:,c2", "/top": "data:,top"}
	if g := files(got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("Render files = %v, want %v (children merged in order, child wins)", g, want)
	}
	if len(got.Passwd.Users) != 1 || got.Passwd.Users[0].Name != "core" {
		t.Errorf("Render users = %+v, want core from c2", got.Passwd.Users)
	}
	if r := srv.requests(); fmt.Sprint(r) != "[/c1.ign /c2.ign]" {
		t.Errorf("requests = %v, want [/c1.ign /c2.ign]", r)
	}
}

func TestRenderNested(t *testing.T) {
	srv := startConfigs(t, map[string]string{
		"/c1.ign": `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"$URL/g1.ign"}]}},
			"storage":{"files":[` + file("/x", "c1") + `,` + file("/y", "c1") + `]}}`,
		"/g1.ign": `{"ignition":{"version":"3.6.0"},"storage":{"files":[` + file("/y", "g1") + `,` + file("/z", "g1") + `]}}`,
		"/c2.ign": `{"ignition":{"version":"3.6.0"},"storage":{"files":[` + file("/z", "c2") + `]}}`,
	})
	top := mustParse(t, `{"ignition":{"version":"3.6.0","config":{"merge":[
		{"source":"`+srv.URL+`/c1.ign"},{"source":"`+srv.URL+`/c2.ign"}]}}}`)
	got, err := config.Render(context.Background(), top, newFetcher(t), testLog(t))
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	want := map[string]string{"/x": "data:,c1", "/y": "data:,g1", "/z": "data:,c2"}
	if g := files(got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("Render files = %v, want %v", g, want)
	}
	if r := srv.requests(); fmt.Sprint(r) != "[/c1.ign /g1.ign /c2.ign]" {
		t.Errorf("requests = %v, want depth-first [/c1.ign /g1.ign /c2.ign]", r)
	}
}

func TestRenderReplace(t *testing.T) {
	srv := startConfigs(t, map[string]string{
		"/r1.ign": `{"ignition":{"version":"3.2.0","config":{"replace":{"source":"$URL/r2.ign"}}},
			"storage":{"files":[` + file("/r1", "r1") + `]}}`,
		"/r2.ign": `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"$URL/m.ign"}]}},
			"storage":{"files":[` + file("/r2", "r2") + `]}}`,
		"/m.ign": `{"ignition":{"version":"3.6.0"},"storage":{"files":[` + file("/m", "m") + `]}}`,
	})
	top := mustParse(t, `{"ignition":{"version":"3.6.0","config":{
		"replace":{"source":"`+srv.URL+`/r1.ign"},
		"merge":[{"source":"`+srv.URL+`/never.ign"}]}},
		"storage":{"files":[`+file("/top", "top")+`]}}`)
	got, err := config.Render(context.Background(), top, newFetcher(t), testLog(t))
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	want := map[string]string{"/r2": "data:,r2", "/m": "data:,m"}
	if g := files(got); fmt.Sprint(g) != fmt.Sprint(want) {
		t.Errorf("Render files = %v, want %v (replaced entirely, twice)", g, want)
	}
	if r := srv.requests(); fmt.Sprint(r) != "[/r1.ign /r2.ign /m.ign]" {
		t.Errorf("requests = %v, want [/r1.ign /r2.ign /m.ign] (merge ignored beside replace)", r)
	}
}

func TestRenderDepthLimit(t *testing.T) {
	srv := startConfigs(t, map[string]string{
		"/loop.ign": `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"$URL/loop.ign"}]}}}`,
	})
	top := mustParse(t, `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"`+srv.URL+`/loop.ign"}]}}}`)
	_, err := config.Render(context.Background(), top, newFetcher(t), testLog(t))
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("configs nested more than %d deep", config.MaxDepth)) {
		t.Fatalf("Render(self-including config) error = %v, want the depth limit", err)
	}
	if n := len(srv.requests()); n != config.MaxDepth {
		t.Errorf("Render(self-including config) fetched %d configs, want %d", n, config.MaxDepth)
	}
	// Nine levels of children still render.
	cfgs := map[string]string{}
	for i := 1; i < config.MaxDepth; i++ {
		cfgs[fmt.Sprintf("/l%d.ign", i)] = fmt.Sprintf(`{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"$URL/l%d.ign"}]}}}`, i+1)
	}
	cfgs[fmt.Sprintf("/l%d.ign", config.MaxDepth)] = `{"ignition":{"version":"3.6.0"},"storage":{"files":[` + file("/deep", "yes") + `]}}`
	srv = startConfigs(t, cfgs)
	top = mustParse(t, `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"`+srv.URL+`/l1.ign"}]}}}`)
	got, err := config.Render(context.Background(), top, newFetcher(t), testLog(t))
	if err != nil {
		t.Fatalf("Render(%d levels) error: %v", config.MaxDepth, err)
	}
	if files(got)["/deep"] != "data:,yes" {
		t.Errorf("Render(%d levels) files = %v, want /deep", config.MaxDepth, files(got))
	}
}

func TestRenderErrors(t *testing.T) {
	srv := startConfigs(t, map[string]string{
		"/ok.ign":      `{"ignition":{"version":"3.6.0"}}`,
		"/bad.ign":     `{"ignition":{"version":"3.6.0"},"storage":{"files":[{"path":"rel"}]}}`,
		"/nested.ign":  `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"$URL/missing.ign"}]}}}`,
		"/v2.ign":      `{"ignition":{"version":"2.2.0"}}`,
		"/secret.ign":  `{"ignition":{"version":"3.6.0"}}`,
		"/replace.ign": `{"ignition":{"version":"3.6.0","config":{"replace":{"source":"$URL/gone.ign"}}}}`,
	})
	u := srv.URL
	tests := []struct {
		name string
		cfg  string
		want string
		is   error
	}{
		{"404 child", `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"` + u + `/ok.ign"},{"source":"` + u + `/missing.ign"}]}}}`,
			`ignition.config.merge[1].source "` + u + `/missing.ign": 404 Not Found`, fetch.ErrNotFound},
		{"invalid child", `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"` + u + `/bad.ign"}]}}}`,
			`ignition.config.merge[0].source "` + u + `/bad.ign": invalid config at $.storage.files.0.path, line 1 col 61: path not absolute`, config.ErrInvalid},
		{"spec 2 child", `{"ignition":{"version":"3.6.0","config":{"replace":{"source":"` + u + `/v2.ign"}}}}`,
			`ignition.config.replace.source "` + u + `/v2.ign": invalid config at $.ignition.version`, config.ErrInvalid},
		{"nested 404", `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"` + u + `/nested.ign"}]}}}`,
			`in ignition.config.merge[0].source "` + u + `/nested.ign": ignition.config.merge[0].source "` + u + `/missing.ign": 404 Not Found`, fetch.ErrNotFound},
		{"nested replace 404", `{"ignition":{"version":"3.6.0","config":{"replace":{"source":"` + u + `/replace.ign"}}}}`,
			`in ignition.config.replace.source "` + u + `/replace.ign": ignition.config.replace.source "` + u + `/gone.ign": 404 Not Found`, fetch.ErrNotFound},
		{"s3 child", `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"s3://bucket/c.ign"}]}}}`,
			`unsupported URL scheme "s3" in ignition.config.merge[0].source`, fetch.ErrUnsupportedScheme},
		{"hash mismatch", `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"` + u + `/ok.ign","verification":{"hash":"sha256-0000000000000000000000000000000000000000000000000000000000000000"}}]}}}`,
			`ignition.config.merge[0].source "` + u + `/ok.ign": hash mismatch`, fetch.ErrHashMismatch},
		{"CA 404", `{"ignition":{"version":"3.6.0","security":{"tls":{"certificateAuthorities":[{"source":"` + u + `/ca.pem"}]}}}}`,
			`ignition.security.tls.certificateAuthorities[0].source "` + u + `/ca.pem": 404 Not Found`, fetch.ErrNotFound},
		{"CA not PEM", `{"ignition":{"version":"3.6.0","security":{"tls":{"certificateAuthorities":[{"source":"data:,not%20a%20cert"}]}}}}`,
			`ignition.security.tls.certificateAuthorities[0].source "data:…": no PEM CERTIFICATE block found`, nil},
		{"password masked", `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"http://kindling:hunter2@` + strings.TrimPrefix(u, "http://") + `/missing.ign"}]}}}`,
			`ignition.config.merge[0].source "http://kindling:xxxxx@` + strings.TrimPrefix(u, "http://") + `/missing.ign": 404 Not Found`, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := config.Render(context.Background(), mustParse(t, tc.cfg), newFetcher(t), testLog(t))
			if err == nil {
				t.Fatalf("Render(%s) succeeded, want %q", tc.name, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Render(%s) error\n got %q\nwant it to contain %q", tc.name, err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("Render(%s) error is not %v: %v", tc.name, tc.is, err)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("Render(%s) error leaks a password: %v", tc.name, err)
			}
		})
	}
}

func TestRenderCAFromConfig(t *testing.T) {
	secure, caPEM := startTLSConfigs(t, map[string]string{
		"/child.ign": `{"ignition":{"version":"3.6.0"},"storage":{"files":[` + file("/secure", "yes") + `]}}`,
	})
	caData := "data:;base64," + base64.StdEncoding.EncodeToString(caPEM)
	plain := startConfigs(t, map[string]string{
		"/ca.pem": string(caPEM),
		// A child that brings the CA its own child needs.
		"/with-ca.ign": `{"ignition":{"version":"3.6.0",
			"security":{"tls":{"certificateAuthorities":[{"source":"` + caData + `"}]}},
			"config":{"merge":[{"source":"` + secure.URL + `/child.ign"}]}}}`,
	})

	tests := []struct {
		name string
		cfg  string
		ok   bool
	}{
		{"no CA", `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"` + secure.URL + `/child.ign"}]}}}`, false},
		{"CA as data URL", `{"ignition":{"version":"3.6.0",
			"security":{"tls":{"certificateAuthorities":[{"source":"` + caData + `"}]}},
			"config":{"merge":[{"source":"` + secure.URL + `/child.ign"}]}}}`, true},
		{"CA over http", `{"ignition":{"version":"3.6.0",
			"security":{"tls":{"certificateAuthorities":[{"source":"` + plain.URL + `/ca.pem"}]}},
			"config":{"replace":{"source":"` + secure.URL + `/child.ign"}}}}`, true},
		{"CA in a child", `{"ignition":{"version":"3.6.0","config":{"merge":[{"source":"` + plain.URL + `/with-ca.ign"}]}}}`, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFetcher(t)
			got, err := config.Render(context.Background(), mustParse(t, tc.cfg), f, testLog(t))
			if !tc.ok {
				if err == nil || !strings.Contains(err.Error(), "certificate") {
					t.Fatalf("Render(%s) error = %v, want a certificate error", tc.name, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Render(%s) error: %v", tc.name, err)
			}
			if files(got)["/secure"] != "data:,yes" {
				t.Errorf("Render(%s) files = %v, want /secure", tc.name, files(got))
			}
			// The fetcher keeps the CA for the files stage.
			if _, err := f.Fetch(context.Background(), types.Resource{Source: ptrTo(secure.URL + "/child.ign")}); err != nil {
				t.Errorf("Fetch over https after Render(%s): %v", tc.name, err)
			}
		})
	}
}

func TestRenderTimeoutsFromConfig(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String() + "/c.ign"
	l.Close()
	top := mustParse(t, `{"ignition":{"version":"3.6.0","timeouts":{"httpTotal":1},
		"config":{"merge":[{"source":"`+refused+`"}]}}}`)
	start := time.Now()
	_, err = config.Render(context.Background(), top, newFetcher(t), testLog(t))
	d := time.Since(start)
	if !errors.Is(err, fetch.ErrTimeout) {
		t.Fatalf("Render(httpTotal 1, refused child) error = %v, want fetch.ErrTimeout", err)
	}
	if d < 900*time.Millisecond || d > 5*time.Second {
		t.Errorf("Render(httpTotal 1, refused child) took %s, want about 1s", d)
	}
}

func TestRenderProxyFromConfig(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.String())
		mu.Unlock()
		io.WriteString(w, `{"ignition":{"version":"3.6.0"},"storage":{"files":[`+file("/proxied", "yes")+`]}}`)
	}))
	t.Cleanup(proxy.Close)
	// The child's host name never resolves: only the proxy can serve it.
	top := mustParse(t, `{"ignition":{"version":"3.6.0","proxy":{"httpProxy":"`+proxy.URL+`"},
		"config":{"merge":[{"source":"http://configs.kindling.test/c.ign"}]}}}`)
	got, err := config.Render(context.Background(), top, newFetcher(t), testLog(t))
	if err != nil {
		t.Fatalf("Render(proxy) error: %v", err)
	}
	if files(got)["/proxied"] != "data:,yes" {
		t.Errorf("Render(proxy) files = %v, want /proxied", files(got))
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != "[http://configs.kindling.test/c.ign]" {
		t.Errorf("proxy saw %v, want the child's URL", seen)
	}
}

func TestRenderHeadersAndCompression(t *testing.T) {
	var gotHeader string
	child := `{"ignition":{"version":"3.6.0"},"storage":{"files":[` + file("/h", "yes") + `]}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHeader = r.Header.Get("X-Machine")
		io.WriteString(w, child)
	}))
	t.Cleanup(srv.Close)
	top := mustParse(t, `{"ignition":{"version":"3.6.0","config":{"merge":[
		{"source":"`+srv.URL+`/c.ign","httpHeaders":[{"name":"X-Machine","value":"node1"}]}]}}}`)
	got, err := config.Render(context.Background(), top, newFetcher(t), testLog(t))
	if err != nil {
		t.Fatalf("Render(headers) error: %v", err)
	}
	if gotHeader != "node1" || files(got)["/h"] != "data:,yes" {
		t.Errorf("Render(headers): server saw X-Machine %q, files %v; want node1 and /h", gotHeader, files(got))
	}
}

func TestRenderNoChildren(t *testing.T) {
	top := mustParse(t, `{"ignition":{"version":"3.6.0"},"storage":{"files":[`+file("/a", "a")+`]}}`)
	got, err := config.Render(context.Background(), top, newFetcher(t), nil)
	if err != nil {
		t.Fatalf("Render(no children) error: %v", err)
	}
	if files(got)["/a"] != "data:,a" {
		t.Errorf("Render(no children) files = %v", files(got))
	}
}

func ptrTo[T any](v T) *T { return &v }

// testCA makes a CA and a server certificate for 127.0.0.1 signed by it.
func testCA(t *testing.T) ([]byte, tls.Certificate) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "Kindling render test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
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
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return caPEM, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
