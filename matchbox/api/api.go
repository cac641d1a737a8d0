// Package api is Kindling's control plane: the matchbox-compatible gRPC
// services (rpcpb.Groups, Profiles, Ignition, Generic, Select; see
// package rpcpb) and a JSON API under /api/v1/, both on one TLS listener.
// A request is told apart by its protocol: HTTP/2 with content type
// application/grpc goes to gRPC, anything else to the JSON API.
//
// Clients authenticate with a certificate signed by the CA (mutual TLS),
// or, when the server has a token (Config.TokenFile), with
// "Authorization: Bearer TOKEN" — an HTTP header for the JSON API, the
// same metadata for gRPC. Any authenticated client may read and write.
//
// Semantics are matchbox's, with its mistakes fixed: a missing group,
// profile or file is NotFound (404), never Unknown; deleting what does not
// exist succeeds; an invalid id, name, MAC, Ignition config, Butane config
// or template is InvalidArgument (400) with the reason, checked by the
// rules the data directory is loaded with; writes to the embedded example
// data are FailedPrecondition (409); no error names a server path. A write
// is validated, written atomically and applied to the serving catalog
// before it returns, so the very next machine request sees it (see
// Config.Update).
//
// References may dangle, as in matchbox: a profile may name a config
// written after it, and a group a profile deleted and written again
// (terraform-provider-matchbox does both). Machines that reach a missing
// piece get 404 with the reason, never another group.
//
// Over gRPC, a selector that accepts several values is carried as a JSON
// list in its value (["52:54:00:00:00:01","52:54:00:00:00:02"]), both
// ways; a profile's ipxe_template and grub_template have no gRPC field,
// so a gRPC ProfilePut keeps those of the profile it replaces.
package api

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/events"
)

// Config configures the control plane. Address (or Listener), CertFile,
// KeyFile, Catalog and Update are required, and CAFile or TokenFile.
type Config struct {
	// Address is the TLS listen address, HOST:PORT.
	Address string
	// Listener, when set, is used instead of listening on Address.
	Listener net.Listener
	// CertFile and KeyFile are the server's certificate (chain) and key,
	// PEM.
	CertFile, KeyFile string
	// CAFile is the CA bundle (PEM) client certificates must be signed by.
	// Empty means no client certificates: TokenFile is then required.
	CAFile string
	// TokenFile, when set, holds a bearer token (the file's content,
	// surrounding white space trimmed) that authenticates a client without
	// a certificate. Clients that present a certificate must still present
	// one the CA signed.
	TokenFile string
	// Catalog returns the serving catalog.
	Catalog func() *catalog.Catalog
	// Update runs edit on the serving catalog with writes serialised,
	// applies the change it returns to the data directory and the serving
	// catalog, and returns the new catalog; an error from edit is returned
	// as is, with nothing written. *matchbox.Server's Update is the real
	// one.
	Update func(edit func(*catalog.Catalog) (catalog.Change, error)) (*catalog.Catalog, error)
	// Events, when set, is served at /api/v1/events; nil answers 404.
	Events *events.Log
	// Reports, when set, is served at /api/v1/reports; nil answers 404.
	Reports *events.Reports
	// Logger receives one line per request (writes at Info, reads at
	// Debug, refusals at Warn); nil discards.
	Logger *slog.Logger
	// Ready, when set, is called with the listening address.
	Ready func(net.Addr)
	// ShutdownTimeout bounds the wait for in-flight requests when ctx
	// ends; 0 means 10s.
	ShutdownTimeout time.Duration
}

// Server is a configured control plane, ready to Serve.
type Server struct {
	cfg     Config
	log     *slog.Logger
	svc     *service
	tls     *tls.Config
	token   []byte // nil: no token
	grpc    *grpc.Server
	json    http.Handler
	handler http.Handler
}

// New loads the certificates and the token; every error names the file
// and what is wrong with it.
func New(cfg Config) (*Server, error) {
	if cfg.Catalog == nil || cfg.Update == nil {
		return nil, errors.New("control plane: Catalog and Update are required")
	}
	s := &Server{cfg: cfg, log: cfg.Logger, svc: &service{catalog: cfg.Catalog, update: cfg.Update}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("control plane: -cert-file and -key-file are required with -rpc-address (kindling certs init DIR makes a set)")
	}
	if cfg.CAFile == "" && cfg.TokenFile == "" {
		return nil, errors.New("control plane: -ca-file (clients with certificates) or -api-token-file (clients with a token) is required with -rpc-address")
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("control plane: -cert-file %s, -key-file %s: %w", cfg.CertFile, cfg.KeyFile, err)
	}
	s.tls = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
		ClientAuth:   tls.NoClientCert,
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("control plane: -ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("control plane: -ca-file %s: no PEM certificate in it (want the CA that signs client certificates, e.g. ca.crt)", cfg.CAFile)
		}
		s.tls.ClientCAs = pool
		s.tls.ClientAuth = tls.RequireAndVerifyClientCert
	}
	if cfg.TokenFile != "" {
		if s.token, err = readToken(cfg.TokenFile, s.log); err != nil {
			return nil, err
		}
		if s.tls.ClientCAs != nil {
			// A certificate is optional now, but one given must verify.
			s.tls.ClientAuth = tls.VerifyClientCertIfGiven
		}
	}
	s.grpc = s.newGRPC()
	s.json = s.newJSON()
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			s.grpc.ServeHTTP(w, r)
			return
		}
		s.json.ServeHTTP(w, r)
	})
	return s, nil
}

// minToken is the shortest token accepted.
const minToken = 16

func readToken(file string, log *slog.Logger) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("control plane: -api-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return nil, fmt.Errorf("control plane: -api-token-file %s is empty; put a random token in it, e.g. head -c 32 /dev/urandom | base64", file)
	case len(tok) < minToken:
		return nil, fmt.Errorf("control plane: -api-token-file %s: the token has %d characters, want at least %d", file, len(tok), minToken)
	case strings.ContainsAny(tok, " \t\r\n"):
		return nil, fmt.Errorf("control plane: -api-token-file %s: the token contains white space; want one word", file)
	}
	if fi, err := os.Stat(file); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn("control plane: the API token file is readable by other users; chmod 600 it", "path", file, "mode", fi.Mode().Perm().String())
	}
	return []byte(tok), nil
}

// Handler is the control plane's handler (gRPC and JSON), for tests that
// bring their own TLS listener.
func (s *Server) Handler() http.Handler { return s.handler }

// TLSConfig is the server's TLS configuration (a copy).
func (s *Server) TLSConfig() *tls.Config { return s.tls.Clone() }

// Serve serves until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Address); err != nil {
			return fmt.Errorf("control plane: listening: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           s.handler,
		TLSConfig:         s.tls.Clone(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		IdleTimeout:       5 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		// Refused handshakes (no or a foreign client certificate) land here.
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelInfo),
	}
	errc := make(chan error, 1)
	go func() {
		s.log.Info("control plane serving", "address", ln.Addr().String(), "client_certificates", s.tls.ClientCAs != nil, "token", s.token != nil)
		if s.cfg.Ready != nil {
			s.cfg.Ready(ln.Addr())
		}
		errc <- srv.ServeTLS(ln, "", "")
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("control plane: %w", err)
	case <-ctx.Done():
	}
	timeout := s.cfg.ShutdownTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("control plane: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("control plane: shutting down: %w", err)
	}
	return nil
}

// authenticate decides who a request comes from: the subject of a
// verified client certificate, or "token" for the bearer token. authz is
// the Authorization header (or gRPC metadata).
func (s *Server) authenticate(state *tls.ConnectionState, authz string) (string, error) {
	if state != nil && len(state.VerifiedChains) > 0 && len(state.VerifiedChains[0]) > 0 {
		return "cert:" + state.VerifiedChains[0][0].Subject.CommonName, nil
	}
	if s.token != nil {
		scheme, tok, ok := strings.Cut(authz, " ")
		if ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), s.token) == 1 {
			return "token", nil
		}
		if authz != "" {
			return "", &apiError{ErrUnauthenticated, "the bearer token is not this server's"}
		}
		return "", &apiError{ErrUnauthenticated, "authenticate with a client certificate signed by the server's CA, or Authorization: Bearer TOKEN"}
	}
	return "", &apiError{ErrUnauthenticated, "authenticate with a client certificate signed by the server's CA"}
}

// tlsStateOf is the TLS state of a gRPC call's connection, if any.
func tlsStateOf(p *peer.Peer) *tls.ConnectionState {
	if p == nil {
		return nil
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok {
		return &ti.State
	}
	return nil
}

func peerIP(p *peer.Peer) string {
	if p == nil || p.Addr == nil {
		return ""
	}
	return remoteIP(p.Addr.String())
}

func remoteIP(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}
