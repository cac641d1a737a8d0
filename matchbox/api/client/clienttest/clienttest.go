// Package clienttest runs a small in-memory stand-in for a Kindling
// control plane's JSON API, over mutual TLS on 127.0.0.1, for tests of code
// built on package client (the CLI, the Terraform provider). It speaks the
// API's shapes — paths, status codes, error bodies, authentication — with
// the groups and profiles packages' own checks, but stores nothing on disk
// and does not validate Ignition or Butane: tests of the real server's
// behaviour belong with the real server.
package clienttest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/api/certs"
	"github.com/kindlingboot/kindling/matchbox/api/client"
	"github.com/kindlingboot/kindling/profiles"
)

// Options tune the server; the zero value requires client certificates
// and accepts writes.
type Options struct {
	// Token, when set, is also accepted as "Authorization: Bearer Token"
	// from clients without a certificate.
	Token string
	// ReadOnly answers every write 409 failed_precondition, like a server
	// serving its embedded data.
	ReadOnly bool
}

// Server is a running stand-in. Its certificates (certs.Files) are in
// Dir; Config returns a client.Config that trusts and is trusted by it.
type Server struct {
	// Endpoint is 127.0.0.1:PORT.
	Endpoint string
	// Dir holds ca.crt, ca.key, server.crt, server.key, client.crt and
	// client.key.
	Dir string

	opts     Options
	srv      *httptest.Server
	requests atomic.Int64
	hook     atomic.Pointer[func(http.ResponseWriter, *http.Request) bool]

	mu       sync.Mutex
	groups   map[string]groups.Group
	profiles map[string]profiles.Profile
	files    map[string]map[string][]byte // "ignition"/"generic" → name → bytes
	reports  map[string]json.RawMessage
	events   map[string]json.RawMessage
}

// Start starts a server; it stops when the test ends.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := t.TempDir()
	if err := certs.Init(dir, certs.Options{ServerNames: []string{"localhost"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}); err != nil {
		t.Fatalf("clienttest: %v", err)
	}
	s := &Server{
		Dir:      dir,
		opts:     opts,
		groups:   map[string]groups.Group{},
		profiles: map[string]profiles.Profile{},
		files:    map[string]map[string][]byte{"ignition": {}, "generic": {}},
		reports:  map[string]json.RawMessage{},
		events:   map[string]json.RawMessage{},
	}
	tc, err := s.tlsConfig()
	if err != nil {
		t.Fatalf("clienttest: %v", err)
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.TLS = tc
	s.srv.EnableHTTP2 = true // offered, as by the real listener, which carries gRPC
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	s.Endpoint = s.srv.Listener.Addr().String()
	return s
}

func (s *Server) tlsConfig() (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(s.Dir, certs.ServerCert), filepath.Join(s.Dir, certs.ServerKey))
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(s.Dir, certs.CACert))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("%s: no certificate", certs.CACert)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12}
	if s.opts.Token != "" {
		tc.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return tc, nil
}

// Config returns a client configuration for this server with the client
// certificate (and the token, when one is set).
func (s *Server) Config() client.Config {
	return client.Config{
		Endpoint: s.Endpoint,
		CAFile:   filepath.Join(s.Dir, certs.CACert),
		CertFile: filepath.Join(s.Dir, certs.ClientCert),
		KeyFile:  filepath.Join(s.Dir, certs.ClientKey),
		Token:    s.opts.Token,
	}
}

// Requests returns how many requests reached the handler.
func (s *Server) Requests() int { return int(s.requests.Load()) }

// Intercept installs f to run before every request; when f returns true
// it has answered and the API does not run. nil removes it.
func (s *Server) Intercept(f func(w http.ResponseWriter, r *http.Request) bool) {
	if f == nil {
		s.hook.Store(nil)
		return
	}
	s.hook.Store(&f)
}

// SetReport stores what GET /reports returns for mac.
func (s *Server) SetReport(mac string, report json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reports[mac] = report
}

// SetEvents stores what GET /events?mac=MAC returns.
func (s *Server) SetEvents(mac string, events json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events[mac] = events
}

// WriteError writes the API's error body; Intercept hooks can use it.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg, "code": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if h := s.hook.Load(); h != nil && (*h)(w, r) {
		return
	}
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		if s.opts.Token == "" || r.Header.Get("Authorization") != "Bearer "+s.opts.Token {
			WriteError(w, http.StatusUnauthorized, client.CodeUnauthenticated, "client certificate or bearer token required")
			return
		}
	}
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/api/v1/")
	if !ok {
		http.NotFound(w, r) // a plain-text 404, as a wrong path gets
		return
	}
	kind, id, hasID := strings.Cut(rest, "/")
	if hasID {
		var err error
		if id, err = url.PathUnescape(id); err != nil || id == "" || strings.Contains(id, "/") || strings.Contains(id, "..") {
			WriteError(w, http.StatusBadRequest, client.CodeInvalidArgument, "invalid id: want no '/' or '..'")
			return
		}
	}
	write := r.Method == http.MethodPut || r.Method == http.MethodDelete
	if write && s.opts.ReadOnly {
		WriteError(w, http.StatusConflict, client.CodeFailedPrecondition, "the catalog is read-only: start kindling serve with -data-path DIR")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case kind == "groups" && !hasID && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, sortedValues(s.groups))
	case kind == "profiles" && !hasID && r.Method == http.MethodGet:
		writeJSON(w, http.StatusOK, sortedValues(s.profiles))
	case (kind == "ignition" || kind == "generic") && !hasID && r.Method == http.MethodGet:
		names := make([]string, 0, len(s.files[kind]))
		for n := range s.files[kind] {
			names = append(names, n)
		}
		slices.Sort(names)
		writeJSON(w, http.StatusOK, names)
	case kind == "groups" && hasID:
		s.group(w, r, id)
	case kind == "profiles" && hasID:
		s.profile(w, r, id)
	case (kind == "ignition" || kind == "generic") && hasID:
		s.file(w, r, kind, id)
	case kind == "select" && !hasID && r.Method == http.MethodGet:
		s.selectMachine(w, r)
	case kind == "reports" && !hasID && r.Method == http.MethodGet:
		if mac := r.URL.Query().Get("mac"); mac != "" {
			rep, ok := s.reports[mac]
			if !ok {
				WriteError(w, http.StatusNotFound, client.CodeNotFound, "no report from "+mac)
				return
			}
			writeJSON(w, http.StatusOK, rep)
			return
		}
		all := make([]json.RawMessage, 0, len(s.reports))
		for _, k := range sortedKeys(s.reports) {
			all = append(all, s.reports[k])
		}
		writeJSON(w, http.StatusOK, all)
	case kind == "events" && !hasID && r.Method == http.MethodGet:
		ev, ok := s.events[r.URL.Query().Get("mac")]
		if !ok {
			ev = json.RawMessage("[]")
		}
		writeJSON(w, http.StatusOK, ev)
	default:
		WriteError(w, http.StatusNotFound, client.CodeNotFound, r.Method+" "+r.URL.Path+": no such API")
	}
}

func (s *Server) group(w http.ResponseWriter, r *http.Request, id string) {
	switch r.Method {
	case http.MethodGet:
		g, ok := s.groups[id]
		if !ok {
			WriteError(w, http.StatusNotFound, client.CodeNotFound, "group "+id+" not found")
			return
		}
		writeJSON(w, http.StatusOK, g)
	case http.MethodPut:
		var g groups.Group
		if !readJSON(w, r, &g) {
			return
		}
		if g.ID == "" {
			g.ID = id
		}
		if g.ID != id {
			WriteError(w, http.StatusBadRequest, client.CodeInvalidArgument, `field "id": "`+g.ID+`" differs from the id in the path, "`+id+`"`)
			return
		}
		if err := g.Normalize(); err != nil {
			WriteError(w, http.StatusBadRequest, client.CodeInvalidArgument, "group "+id+": "+err.Error())
			return
		}
		s.groups[id] = g
		writeJSON(w, http.StatusOK, g)
	case http.MethodDelete:
		delete(s.groups, id)
		w.WriteHeader(http.StatusNoContent)
	default:
		WriteError(w, http.StatusMethodNotAllowed, client.CodeInvalidArgument, "method "+r.Method+" not allowed")
	}
}

func (s *Server) profile(w http.ResponseWriter, r *http.Request, id string) {
	switch r.Method {
	case http.MethodGet:
		p, ok := s.profiles[id]
		if !ok {
			WriteError(w, http.StatusNotFound, client.CodeNotFound, "profile "+id+" not found")
			return
		}
		writeJSON(w, http.StatusOK, p)
	case http.MethodPut:
		var p profiles.Profile
		if !readJSON(w, r, &p) {
			return
		}
		if p.ID == "" {
			p.ID = id
		}
		if p.ID != id {
			WriteError(w, http.StatusBadRequest, client.CodeInvalidArgument, `field "id": "`+p.ID+`" differs from the id in the path, "`+id+`"`)
			return
		}
		if err := p.Validate(); err != nil {
			WriteError(w, http.StatusBadRequest, client.CodeInvalidArgument, "profile "+id+": "+err.Error())
			return
		}
		s.profiles[id] = p
		writeJSON(w, http.StatusOK, p)
	case http.MethodDelete:
		delete(s.profiles, id)
		w.WriteHeader(http.StatusNoContent)
	default:
		WriteError(w, http.StatusMethodNotAllowed, client.CodeInvalidArgument, "method "+r.Method+" not allowed")
	}
}

func (s *Server) file(w http.ResponseWriter, r *http.Request, kind, name string) {
	switch r.Method {
	case http.MethodGet:
		b, ok := s.files[kind][name]
		if !ok {
			WriteError(w, http.StatusNotFound, client.CodeNotFound, kind+"/"+name+" not found")
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Write(b)
	case http.MethodPut:
		b, err := io.ReadAll(r.Body)
		if err != nil {
			WriteError(w, http.StatusBadRequest, client.CodeInvalidArgument, "reading the body: "+err.Error())
			return
		}
		if kind == "ignition" && profiles.IsRawIgnition(name) && !json.Valid(b) {
			WriteError(w, http.StatusBadRequest, client.CodeInvalidArgument, "ignition/"+name+": not valid JSON")
			return
		}
		s.files[kind][name] = b
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		delete(s.files[kind], name)
		w.WriteHeader(http.StatusNoContent)
	default:
		WriteError(w, http.StatusMethodNotAllowed, client.CodeInvalidArgument, "method "+r.Method+" not allowed")
	}
}

func (s *Server) selectMachine(w http.ResponseWriter, r *http.Request) {
	labels, err := groups.FromQuery(r.URL.Query())
	if err != nil {
		WriteError(w, http.StatusBadRequest, client.CodeInvalidArgument, err.Error())
		return
	}
	all := make([]*groups.Group, 0, len(s.groups))
	for _, g := range sortedValues(s.groups) {
		all = append(all, &g)
	}
	g := groups.Select(all, labels)
	if g == nil {
		WriteError(w, http.StatusNotFound, client.CodeNotFound, "no group matches these labels")
		return
	}
	p, ok := s.profiles[g.Profile]
	if !ok {
		WriteError(w, http.StatusNotFound, client.CodeNotFound, "group "+g.ID+": profile "+g.Profile+" not found")
		return
	}
	writeJSON(w, http.StatusOK, client.Selection{Group: *g, Profile: p})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	d := json.NewDecoder(r.Body)
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		WriteError(w, http.StatusBadRequest, client.CodeInvalidArgument, "decoding the body: "+err.Error())
		return false
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortedValues[V any](m map[string]V) []V {
	out := make([]V, 0, len(m))
	for _, k := range sortedKeys(m) {
		out = append(out, m[k])
	}
	return out
}
