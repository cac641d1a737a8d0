package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/api/certs"
	"github.com/kindlingboot/kindling/matchbox/api/client"
	"github.com/kindlingboot/kindling/matchbox/api/client/clienttest"
	"github.com/kindlingboot/kindling/profiles"
)

func newClient(t *testing.T, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.New(cfg)
	if err != nil {
		t.Fatalf("client.New(%+v) = %v", cfg, err)
	}
	t.Cleanup(c.Close)
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestCRUD(t *testing.T) {
	for _, http2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", http2), func(t *testing.T) {
			srv := clienttest.Start(t, clienttest.Options{})
			cfg := srv.Config()
			if http2 {
				// A caller's own HTTP client, here one speaking HTTP/2.
				cfg = client.Config{Endpoint: srv.Endpoint, HTTPClient: http2Client(t, srv)}
			}
			c := newClient(t, cfg)
			ctx := ctx(t)

			if gs, err := c.GroupList(ctx); err != nil || gs == nil || len(gs) != 0 {
				t.Fatalf("GroupList on an empty server = %v, %v; want [], nil", gs, err)
			}
			g := &groups.Group{ID: "node1", Name: "first", Profile: "worker",
				Selector: groups.Selector{"mac": {"52-54-00-A1-9C-AE"}, "os": {"installed", "rescue"}},
				Metadata: map[string]any{"big": json.Number("12345678901234567890"), "pi": 3.5, "list": []any{"a", "b"}, "nested": map[string]any{"k": true}}}
			stored, err := c.GroupPut(ctx, g)
			if err != nil {
				t.Fatalf("GroupPut(%+v) = %v", g, err)
			}
			if stored.Selector["mac"][0] != "52:54:00:a1:9c:ae" {
				t.Errorf("GroupPut returned selector %v; want the server's normalised form", stored.Selector)
			}
			got, err := c.GroupGet(ctx, "node1")
			if err != nil {
				t.Fatalf("GroupGet(node1) = %v", err)
			}
			want := groups.Group{ID: "node1", Name: "first", Profile: "worker",
				Selector: groups.Selector{"mac": {"52:54:00:a1:9c:ae"}, "os": {"installed", "rescue"}},
				Metadata: map[string]any{"big": json.Number("12345678901234567890"), "pi": json.Number("3.5"), "list": []any{"a", "b"}, "nested": map[string]any{"k": true}}}
			if diff := cmp.Diff(want, *got); diff != "" {
				t.Errorf("GroupGet(node1) mismatch (-want +got):\n%s", diff)
			}
			if _, err := c.GroupPut(ctx, &groups.Group{ID: "a-default", Profile: "worker"}); err != nil {
				t.Fatal(err)
			}
			gs, err := c.GroupList(ctx)
			if err != nil || len(gs) != 2 || gs[0].ID != "a-default" || gs[1].ID != "node1" {
				t.Errorf("GroupList = %+v, %v; want a-default, node1", gs, err)
			}

			p := &profiles.Profile{ID: "worker", Name: "Worker", Boot: &profiles.Boot{Kernel: "/assets/vmlinuz", Initrd: []string{"/assets/initrd"}, Args: []string{"console=ttyS0"}}, IgnitionID: "worker.yaml"}
			if _, err := c.ProfilePut(ctx, p); err != nil {
				t.Fatalf("ProfilePut = %v", err)
			}
			gotP, err := c.ProfileGet(ctx, "worker")
			if err != nil || !cmp.Equal(p, gotP) {
				t.Errorf("ProfileGet(worker) = %+v, %v; want %+v", gotP, err, p)
			}
			if ps, err := c.ProfileList(ctx); err != nil || len(ps) != 1 {
				t.Errorf("ProfileList = %+v, %v", ps, err)
			}

			sel, err := c.Select(ctx, map[string]string{"mac": "52:54:00:a1:9c:ae", "os": "rescue"})
			if err != nil || sel.Group.ID != "node1" || sel.Profile.ID != "worker" {
				t.Errorf("Select(node1's labels) = %+v, %v", sel, err)
			}
			sel, err = c.Select(ctx, map[string]string{"mac": "52:54:00:00:00:01"})
			if err != nil || sel.Group.ID != "a-default" {
				t.Errorf("Select(another mac) = %+v, %v; want the default group", sel, err)
			}

			for _, kind := range []string{"ignition", "generic"} {
				put, get, list, del := c.IgnitionPut, c.IgnitionGet, c.IgnitionList, c.IgnitionDelete
				if kind == "generic" {
					put, get, list, del = c.GenericPut, c.GenericGet, c.GenericList, c.GenericDelete
				}
				data := []byte("variant: fcos\nversion: 1.5.0\n# \x00 binary-safe \xff\n")
				if err := put(ctx, "b.yaml", data); err != nil {
					t.Fatalf("%sPut(b.yaml) = %v", kind, err)
				}
				if err := put(ctx, "a.yaml", nil); err != nil {
					t.Fatalf("%sPut(a.yaml, empty) = %v", kind, err)
				}
				if b, err := get(ctx, "b.yaml"); err != nil || string(b) != string(data) {
					t.Errorf("%sGet(b.yaml) = %q, %v; want %q", kind, b, err, data)
				}
				if b, err := get(ctx, "a.yaml"); err != nil || len(b) != 0 {
					t.Errorf("%sGet(a.yaml) = %q, %v; want empty", kind, b, err)
				}
				if names, err := list(ctx); err != nil || !cmp.Equal(names, []string{"a.yaml", "b.yaml"}) {
					t.Errorf("%sList = %q, %v", kind, names, err)
				}
				for range 2 { // deleting twice succeeds
					if err := del(ctx, "b.yaml"); err != nil {
						t.Errorf("%sDelete(b.yaml) = %v", kind, err)
					}
				}
				if _, err := get(ctx, "b.yaml"); !client.IsNotFound(err) {
					t.Errorf("%sGet(deleted b.yaml) = %v; want not found", kind, err)
				}
			}

			for range 2 {
				if err := c.GroupDelete(ctx, "node1"); err != nil {
					t.Errorf("GroupDelete(node1) = %v", err)
				}
				if err := c.ProfileDelete(ctx, "worker"); err != nil {
					t.Errorf("ProfileDelete(worker) = %v", err)
				}
			}
			_, err = c.GroupGet(ctx, "node1")
			var apiErr *client.Error
			if !client.IsNotFound(err) || !errors.As(err, &apiErr) || apiErr.Status != 404 || err.Error() != "not found: group node1 not found" {
				t.Errorf("GroupGet(deleted) = %v; want a not_found *Error", err)
			}
			if _, err := c.ProfileGet(ctx, "worker"); !client.IsNotFound(err) {
				t.Errorf("ProfileGet(deleted) = %v; want not found", err)
			}
		})
	}
}

func TestAPIErrors(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	c := newClient(t, srv.Config())
	ctx := ctx(t)

	_, err := c.GroupPut(ctx, &groups.Group{ID: "g", Profile: "p", Selector: groups.Selector{"mac": {"not-a-mac"}}})
	if client.ErrorCode(err) != client.CodeInvalidArgument || !strings.Contains(err.Error(), `mac "not-a-mac" is not a MAC address`) {
		t.Errorf("GroupPut(bad mac) = %v; want invalid_argument naming the MAC", err)
	}
	if _, err := c.Select(ctx, map[string]string{"mac": "zz"}); client.ErrorCode(err) != client.CodeInvalidArgument {
		t.Errorf("Select(bad mac) = %v; want invalid_argument", err)
	}
	if _, err := c.Select(ctx, map[string]string{"mac": "52:54:00:00:00:01"}); !client.IsNotFound(err) {
		t.Errorf("Select with no groups = %v; want not found", err)
	}
	for _, tc := range []struct {
		name string
		call func() error
		want string
	}{
		{"empty group id", func() error { _, err := c.GroupGet(ctx, ""); return err }, "group id: empty"},
		{"slash", func() error { _, err := c.ProfileGet(ctx, "a/b"); return err }, `profile id "a/b": not a valid id`},
		{"dotdot", func() error { return c.IgnitionPut(ctx, "..", nil) }, `ignition name "..": not a valid id`},
		{"put without id", func() error { _, err := c.GroupPut(ctx, &groups.Group{Profile: "p"}); return err }, "group id: empty"},
	} {
		before := srv.Requests()
		err := tc.call()
		if err == nil || !strings.Contains(err.Error(), tc.want) || srv.Requests() != before {
			t.Errorf("%s: err %v (want %q), %d requests sent (want 0)", tc.name, err, tc.want, srv.Requests()-before)
		}
	}

	// A 404 that is not the API's own answer is not "not found".
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		http.NotFound(w, r)
		return true
	})
	_, err = c.GroupGet(ctx, "g")
	var apiErr *client.Error
	if client.IsNotFound(err) || !errors.As(err, &apiErr) || apiErr.Status != 404 || apiErr.Code != "" {
		t.Errorf("GroupGet answered by a plain 404 = %#v; want a code-less *Error, not IsNotFound", err)
	}
	if err.Error() != "HTTP 404 Not Found: 404 page not found" {
		t.Errorf("plain 404 message %q", err)
	}
	// A 200 that is not JSON is an error, never an empty list.
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		io.WriteString(w, "<html>hello</html>")
		return true
	})
	if gs, err := c.GroupList(ctx); err == nil || !strings.Contains(err.Error(), "decoding group list") {
		t.Errorf("GroupList answered by HTML = %v, %v; want a decoding error", gs, err)
	}
	srv.Intercept(nil)

	ro := clienttest.Start(t, clienttest.Options{ReadOnly: true})
	rc := newClient(t, ro.Config())
	err = rc.IgnitionPut(ctx, "x.ign", []byte("{}"))
	if client.ErrorCode(err) != client.CodeFailedPrecondition || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("IgnitionPut on a read-only server = %v; want failed_precondition", err)
	}
}

func TestReportsEvents(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	c := newClient(t, srv.Config())
	ctx := ctx(t)
	srv.SetReport("52:54:00:00:00:01", json.RawMessage(`{"mac":"52:54:00:00:00:01","ok":true}`))
	srv.SetEvents("52:54:00:00:00:01", json.RawMessage(`[{"mac":"52:54:00:00:00:01","step":"ipxe"}]`))
	r, err := c.Reports(ctx, "52:54:00:00:00:01")
	if err != nil || !json.Valid(r) || !strings.Contains(string(r), `"ok":true`) {
		t.Errorf("Reports(mac) = %s, %v", r, err)
	}
	if r, err := c.Reports(ctx, ""); err != nil || !strings.HasPrefix(strings.TrimSpace(string(r)), "[") {
		t.Errorf("Reports(all) = %s, %v", r, err)
	}
	if e, err := c.Events(ctx, "52:54:00:00:00:01"); err != nil || !strings.Contains(string(e), `"step":"ipxe"`) {
		t.Errorf("Events(mac) = %s, %v", e, err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if err := certs.Init(dir, certs.Options{ServerNames: []string{"localhost"}}); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.crt")
	for _, tc := range []struct {
		name string
		cfg  client.Config
		want string // "" means New succeeds
	}{
		{"host:port", client.Config{Endpoint: "10.0.0.1:8081"}, ""},
		{"https URL", client.Config{Endpoint: "https://kindling.example.com:8081/"}, ""},
		{"ipv6", client.Config{Endpoint: "[::1]:8081"}, ""},
		{"empty", client.Config{}, "endpoint: empty"},
		{"no port", client.Config{Endpoint: "10.0.0.1"}, `endpoint "10.0.0.1": no port`},
		{"http", client.Config{Endpoint: "http://10.0.0.1:8081"}, `scheme "http"`},
		{"path", client.Config{Endpoint: "https://10.0.0.1:8081/api/v1"}, "has a path"},
		{"bad port", client.Config{Endpoint: "h:99999"}, `port "99999"`},
		{"ca file and pem", client.Config{Endpoint: "h:1", CAFile: ca, CAPEM: []byte("x")}, "CA: both a file"},
		{"missing ca", client.Config{Endpoint: "h:1", CAFile: filepath.Join(dir, "nope")}, "reading CA file"},
		{"ca not pem", client.Config{Endpoint: "h:1", CAPEM: []byte("hello")}, "no PEM certificate"},
		{"cert without key", client.Config{Endpoint: "h:1", CertFile: filepath.Join(dir, "client.crt")}, "given without its key"},
		{"key without cert", client.Config{Endpoint: "h:1", KeyFile: filepath.Join(dir, "client.key")}, "given without its certificate"},
		{"mismatched pair", client.Config{Endpoint: "h:1", CertFile: filepath.Join(dir, "client.crt"), KeyFile: filepath.Join(dir, "server.key")}, "private key does not match"},
		{"http client and ca", client.Config{Endpoint: "h:1", CAFile: ca, HTTPClient: http.DefaultClient}, "exclusive"},
		{"token with newline", client.Config{Endpoint: "h:1", Token: "a\nb"}, "line break"},
	} {
		c, err := client.New(tc.cfg)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: client.New(%+v) = %v", tc.name, tc.cfg, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: client.New(%+v) = %v, want an error containing %q", tc.name, tc.cfg, err, tc.want)
		case c != nil:
			c.Close()
		}
	}
}

// freeAddr returns a 127.0.0.1 address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestConnectionRefused(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	cfg := srv.Config()
	cfg.Endpoint = freeAddr(t)
	cfg.MaxAttempts = 3
	c := newClient(t, cfg)
	start := time.Now()
	_, err := c.GroupGet(ctx(t), "g")
	elapsed := time.Since(start)
	var apiErr *client.Error
	if err == nil || client.IsNotFound(err) || errors.As(err, &apiErr) {
		t.Fatalf("GroupGet against a closed port = %#v; want a transport error, never an *Error", err)
	}
	want := "connecting to " + cfg.Endpoint + ": connection refused (after 3 attempts)"
	if err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("errors.Is(%v, ECONNREFUSED) = false", err)
	}
	// Two waits: ~100ms and ~200ms, each halved at worst by jitter.
	if elapsed < 150*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("3 attempts took %v; want a backoff between 150ms and 5s", elapsed)
	}

	// Cancelling stops the retries at once.
	cfg.MaxAttempts = 100
	c = newClient(t, cfg)
	cctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = c.GroupList(cctx)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 3*time.Second {
		t.Errorf("GroupList with a 300ms context = %v after %v", err, time.Since(start))
	}
}

// TestOutage starts the client while nothing listens, then brings up the
// server: the call succeeds once it is back, and no attempt in between
// looks like "not found".
func TestOutage(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{})
	cfg := srv.Config()
	c := newClient(t, cfg)
	ctx := ctx(t)
	if _, err := c.GroupPut(ctx, &groups.Group{ID: "keep", Profile: "p"}); err != nil {
		t.Fatal(err)
	}

	// A forwarder on a port that comes up 400ms late: first refused
	// connections, then for the next two connections accepted-and-closed
	// (a server mid-restart), then the real server.
	addr := freeAddr(t)
	var accepted atomic.Int32
	var wg sync.WaitGroup
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		time.Sleep(400 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("listening on %s again: %v", addr, err)
			return
		}
		go func() { <-stop; ln.Close() }()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			if accepted.Add(1) <= 2 {
				conn.Close()
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				up, err := net.Dial("tcp", srv.Endpoint)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, conn)
				io.Copy(conn, up)
			}()
		}
	}()
	cfg.Endpoint = addr
	cfg.MaxAttempts = 20
	cfg.MaxBackoff = 200 * time.Millisecond
	oc := newClient(t, cfg)
	g, err := oc.GroupGet(ctx, "keep")
	if err != nil || g.ID != "keep" {
		t.Fatalf("GroupGet through an outage = %+v, %v; want the group once the server is back", g, err)
	}
	if accepted.Load() < 3 {
		t.Errorf("the forwarder accepted %d connections; want the two dropped ones retried", accepted.Load())
	}

	// 503s are retried, and a Retry-After is honoured (capped by MaxBackoff).
	var n atomic.Int32
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if n.Add(1) <= 2 {
			w.Header().Set("Retry-After", "1")
			clienttest.WriteError(w, http.StatusServiceUnavailable, client.CodeInternal, "reloading")
			return true
		}
		return false
	})
	start := time.Now()
	if g, err := oc.GroupGet(ctx, "keep"); err != nil || g.ID != "keep" {
		t.Errorf("GroupGet through two 503s = %+v, %v", g, err)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 2*time.Second {
		t.Errorf("two 503 retries with Retry-After 1s capped at 200ms took %v", d)
	}
	// A 503 that lasts is returned as the *Error it is, not as not-found.
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		clienttest.WriteError(w, http.StatusServiceUnavailable, client.CodeInternal, "down")
		return true
	})
	cfg.MaxAttempts = 2
	cfg.Endpoint = srv.Endpoint
	_, err = newClient(t, cfg).GroupGet(ctx, "keep")
	if client.IsNotFound(err) || client.ErrorCode(err) != client.CodeInternal || !strings.HasSuffix(err.Error(), "(after 2 attempts)") {
		t.Errorf("GroupGet against a lasting 503 = %v", err)
	}
	// A request the server aborts mid-answer is retried.
	n.Store(0)
	srv.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if n.Add(1) <= 1 {
			panic(http.ErrAbortHandler)
		}
		return false
	})
	if g, err := oc.GroupGet(ctx, "keep"); err != nil || g.ID != "keep" {
		t.Errorf("GroupGet after an aborted answer = %+v, %v", g, err)
	}
	srv.Intercept(nil)
}

// http2Client is an HTTP client of the caller's making for srv, speaking
// HTTP/2.
func http2Client(t *testing.T, srv *clienttest.Server) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(filepath.Join(srv.Dir, certs.CACert))
	if err != nil || !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("reading %s: %v", certs.CACert, err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(srv.Dir, certs.ClientCert), filepath.Join(srv.Dir, certs.ClientKey))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}}, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: &protoCheck{t: t, rt: tr}}
	return hc
}

// protoCheck fails the test when a response is not HTTP/2.
type protoCheck struct {
	t  *testing.T
	rt http.RoundTripper
}

func (p *protoCheck) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := p.rt.RoundTrip(r)
	if err == nil && resp.ProtoMajor != 2 {
		p.t.Errorf("%s %s answered over %s, want HTTP/2", r.Method, r.URL.Path, resp.Proto)
	}
	return resp, err
}

func TestAuthentication(t *testing.T) {
	ctx := ctx(t)
	srv := clienttest.Start(t, clienttest.Options{})
	other := clienttest.Start(t, clienttest.Options{})
	noCert := srv.Config()
	noCert.CertFile, noCert.KeyFile = "", ""
	otherCA := srv.Config()
	otherCA.CertFile, otherCA.KeyFile = other.Config().CertFile, other.Config().KeyFile
	untrusted := srv.Config()
	untrusted.CAFile = other.Config().CAFile
	for _, tc := range []struct {
		name string
		cfg  client.Config
		want string
	}{
		{"no client certificate", noCert, "connecting to " + srv.Endpoint + ": unauthenticated: the server requires a client certificate (remote error: tls: certificate required)"},
		{"client certificate of another CA", otherCA, "connecting to " + srv.Endpoint + ": unauthenticated: the server rejected the client certificate (remote error: tls: unknown certificate authority)"},
		{"server of another CA", untrusted, "connecting to " + srv.Endpoint + ": tls: failed to verify certificate: x509: certificate signed by unknown authority"},
	} {
		// Every time the same message, at the first attempt: no race
		// between the server's alert and the client's first write.
		for range 20 {
			c := newClient(t, tc.cfg)
			before := srv.Requests()
			start := time.Now()
			_, err := c.GroupList(ctx)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || client.IsNotFound(err) {
				t.Fatalf("%s: GroupList = %v; want %q…", tc.name, err, tc.want)
			}
			if strings.Contains(fmt.Sprint(err), "attempts") || time.Since(start) > time.Second {
				t.Fatalf("%s: retried (%v, %v); authentication failures are final", tc.name, err, time.Since(start))
			}
			if srv.Requests() != before {
				t.Fatalf("%s: a request reached the handler", tc.name)
			}
			c.Close()
		}
	}

	// Plain HTTP on the endpoint: say so instead of a TLS riddle.
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	cfg := srv.Config()
	cfg.Endpoint = plain.Listener.Addr().String()
	_, err := newClient(t, cfg).GroupList(ctx)
	if err == nil || !strings.Contains(err.Error(), "is it the TLS control-plane listener") {
		t.Errorf("GroupList against plain HTTP = %v", err)
	}
}

func TestToken(t *testing.T) {
	srv := clienttest.Start(t, clienttest.Options{Token: "s3cret"})
	ctx := ctx(t)
	cfg := srv.Config()
	cfg.CertFile, cfg.KeyFile = "", ""
	if _, err := newClient(t, cfg).GroupList(ctx); err != nil {
		t.Errorf("GroupList with the token and no certificate = %v", err)
	}
	cfg.Token = "wrong"
	_, err := newClient(t, cfg).GroupList(ctx)
	if client.ErrorCode(err) != client.CodeUnauthenticated || err.Error() != "unauthenticated: client certificate or bearer token required" {
		t.Errorf("GroupList with a wrong token = %v; want unauthenticated", err)
	}
	// PEM given inline works as the files do.
	ca, _ := os.ReadFile(srv.Config().CAFile)
	crt, _ := os.ReadFile(srv.Config().CertFile)
	key, _ := os.ReadFile(srv.Config().KeyFile)
	inline := client.Config{Endpoint: srv.Endpoint, CAPEM: ca, CertPEM: crt, KeyPEM: key}
	if _, err := newClient(t, inline).GroupList(ctx); err != nil {
		t.Errorf("GroupList with inline PEM = %v", err)
	}
}
