// Package client talks to the JSON API of a Kindling control plane
// (https://HOST:PORT/api/v1 on the listener of `kindling serve
// -rpc-address`): groups, profiles, Ignition and generic files, selection,
// agent reports and boot events. The CLI and the Terraform provider are
// built on it, so it imports nothing of the server: groups and profiles
// are the shared data types.
//
// Failures come in two kinds that callers must tell apart:
//   - the server answered with an error status: an *Error carrying the
//     status and the API's error code (IsNotFound tells "this object does
//     not exist");
//   - the server could not be reached or the exchange broke: a plain error
//     naming the endpoint ("connecting to 10.0.0.1:8081: connection
//     refused"). Such an error is never an *Error, so a transient outage can
//     never be mistaken for "not found".
//
// Every request the client makes is idempotent (GET, PUT of a whole object,
// DELETE), so connection failures and 502/503/504 answers are retried with
// a bounded exponential backoff before the error is returned.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/profiles"
)

// Defaults for the zero values of Config.
const (
	DefaultTimeout     = 30 * time.Second
	DefaultMaxAttempts = 5
	DefaultMaxBackoff  = 2 * time.Second
	// MaxResponse bounds how much of a response body is read.
	MaxResponse = 64 << 20
)

// firstBackoff is the wait before the second attempt; it doubles per
// attempt up to Config.MaxBackoff.
const firstBackoff = 100 * time.Millisecond

// Config says where the control plane is and how to authenticate. Only
// Endpoint is required.
type Config struct {
	// Endpoint is the control plane's address: HOST:PORT or
	// https://HOST:PORT. The API lives under /api/v1 there.
	Endpoint string

	// CAFile or CAPEM is the CA bundle (PEM) that signed the server's
	// certificate; both empty means the system's roots. Give at most one.
	CAFile string
	CAPEM  []byte
	// CertFile or CertPEM, with KeyFile or KeyPEM, is the client
	// certificate and key (PEM) presented for mutual TLS; all empty means
	// no client certificate (then Token must authenticate).
	CertFile string
	CertPEM  []byte
	KeyFile  string
	KeyPEM   []byte

	// Token, when set, is sent as "Authorization: Bearer Token", for
	// servers started with -api-token-file.
	Token string

	// Timeout bounds each attempt of a request (connect, send, read the
	// whole answer); 0 means DefaultTimeout. The context passed to each
	// method bounds the whole call, retries included.
	Timeout time.Duration
	// MaxAttempts is how often a request is tried when the server cannot
	// be reached or answers 502, 503 or 504; 0 means DefaultMaxAttempts,
	// 1 means no retries.
	MaxAttempts int
	// MaxBackoff caps the wait between attempts (it starts at 100ms and
	// doubles, with jitter; a Retry-After header is honoured up to this
	// cap); 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration

	// HTTPClient, when set, sends the requests instead of a client built
	// from the TLS fields above, which must then be empty (its transport
	// owns TLS). Token, Timeout and retries still apply.
	HTTPClient *http.Client
}

// Client is a control-plane API client. It is safe for concurrent use.
type Client struct {
	endpoint    string // HOST:PORT, for messages
	base        string // https://HOST:PORT/api/v1
	hc          *http.Client
	token       string
	timeout     time.Duration
	attempts    int
	maxBackoff  time.Duration
	ownedClient bool
}

// New checks cfg, loads its certificates and returns a client. It does not
// contact the server.
func New(cfg Config) (*Client, error) {
	host, err := parseEndpoint(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	c := &Client{
		endpoint:   host,
		base:       "https://" + host + "/api/v1",
		token:      strings.TrimSpace(cfg.Token),
		timeout:    cfg.Timeout,
		attempts:   cfg.MaxAttempts,
		maxBackoff: cfg.MaxBackoff,
	}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	if c.attempts <= 0 {
		c.attempts = DefaultMaxAttempts
	}
	if c.maxBackoff <= 0 {
		c.maxBackoff = DefaultMaxBackoff
	}
	if strings.ContainsAny(c.token, "\r\n") {
		return nil, errors.New("token: contains a line break; give the token alone on one line")
	}
	if cfg.HTTPClient != nil {
		if cfg.CAFile != "" || cfg.CAPEM != nil || cfg.CertFile != "" || cfg.CertPEM != nil || cfg.KeyFile != "" || cfg.KeyPEM != nil {
			return nil, errors.New("client config: HTTPClient and CA/certificate/key settings are exclusive; configure TLS in HTTPClient's transport")
		}
		c.hc = cfg.HTTPClient
		return c, nil
	}
	tc, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	// HTTP/1.1 only: the API needs nothing of HTTP/2, and over HTTP/1.1 a
	// server refusing the client certificate is reliably reported as its
	// TLS alert ("certificate required"), where HTTP/2's eager first write
	// often turns it into a broken pipe.
	tc.NextProtos = []string{"http/1.1"}
	c.hc = &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   10 * time.Second,
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{},
		MaxIdleConns:          4,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
	}}
	c.ownedClient = true
	return c, nil
}

// Endpoint returns the server's HOST:PORT.
func (c *Client) Endpoint() string { return c.endpoint }

// Close releases idle connections of a client built by New (not those of
// a Config.HTTPClient).
func (c *Client) Close() {
	if c.ownedClient {
		c.hc.CloseIdleConnections()
	}
}

func parseEndpoint(e string) (string, error) {
	const want = "want HOST:PORT or https://HOST:PORT, e.g. 10.0.0.1:8081"
	if e == "" {
		return "", errors.New("endpoint: empty; " + want)
	}
	host := e
	if strings.Contains(e, "://") {
		u, err := url.Parse(e)
		if err != nil {
			return "", fmt.Errorf("endpoint %q: %v; %s", e, err, want)
		}
		if u.Scheme != "https" {
			return "", fmt.Errorf("endpoint %q: scheme %q; the control plane speaks only TLS: %s", e, u.Scheme, want)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return "", fmt.Errorf("endpoint %q: has a path, query or user; %s", e, want)
		}
		host = u.Host
	}
	h, port, err := net.SplitHostPort(host)
	if err != nil || h == "" || port == "" {
		return "", fmt.Errorf("endpoint %q: no port; %s", e, want)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("endpoint %q: port %q is not a number from 1 to 65535", e, port)
	}
	return host, nil
}

func tlsConfig(cfg Config) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	caPEM, caName, err := pick("CA", cfg.CAFile, cfg.CAPEM)
	if err != nil {
		return nil, err
	}
	if caPEM != nil {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("CA %s: no PEM certificate in it; want the CA bundle, e.g. ca.crt from `kindling certs init`", caName)
		}
		tc.RootCAs = pool
	}
	certPEM, certName, err := pick("certificate", cfg.CertFile, cfg.CertPEM)
	if err != nil {
		return nil, err
	}
	keyPEM, keyName, err := pick("key", cfg.KeyFile, cfg.KeyPEM)
	if err != nil {
		return nil, err
	}
	switch {
	case certPEM == nil && keyPEM == nil:
	case certPEM == nil:
		return nil, fmt.Errorf("client key %s given without its certificate; give both (e.g. client.crt and client.key)", keyName)
	case keyPEM == nil:
		return nil, fmt.Errorf("client certificate %s given without its key; give both (e.g. client.crt and client.key)", certName)
	default:
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("client certificate %s and key %s: %w", certName, keyName, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// pick returns the PEM given inline or read from file, and a name for
// messages.
func pick(what, file string, inline []byte) ([]byte, string, error) {
	switch {
	case file != "" && inline != nil:
		return nil, "", fmt.Errorf("%s: both a file (%s) and inline PEM given; give one", what, file)
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, "", fmt.Errorf("reading %s file: %w", what, err)
		}
		return b, file, nil
	case inline != nil:
		return inline, "(inline PEM)", nil
	}
	return nil, "", nil
}

// Error is an error answer of the API: the server was reached and said no.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Code is the API's error code (one of the Code constants); empty when
	// the answer was not a Kindling API error (a proxy, a wrong port).
	Code string
	// Message is the server's one-line reason.
	Message string
}

// The API's error codes (Error.Code).
const (
	CodeInvalidArgument    = "invalid_argument"
	CodeUnauthenticated    = "unauthenticated"
	CodePermissionDenied   = "permission_denied"
	CodeNotFound           = "not_found"
	CodeFailedPrecondition = "failed_precondition"
	CodeInternal           = "internal"
)

func (e *Error) Error() string {
	if e.Code != "" {
		if e.Message == "" {
			return strings.ReplaceAll(e.Code, "_", " ")
		}
		return strings.ReplaceAll(e.Code, "_", " ") + ": " + e.Message
	}
	s := fmt.Sprintf("HTTP %d %s", e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// IsNotFound reports whether err says the object asked for does not exist:
// an *Error with status 404 and code not_found. A 404 without the API's
// error body (a proxy, a server without the JSON API) is not "not found",
// and neither is any failure to reach the server.
func IsNotFound(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == http.StatusNotFound && e.Code == CodeNotFound
}

// ErrorCode returns the API error code of err (an *Error in its chain),
// or "" when err is not an API answer.
func ErrorCode(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

func parseError(status int, body []byte) *Error {
	e := &Error{Status: status}
	var b struct {
		Error string `json:"error"`
		Code  string `json:"code"`
	}
	if json.Unmarshal(body, &b) == nil && b.Code != "" {
		e.Code, e.Message = b.Code, b.Error
		return e
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
	if len(line) > 200 {
		line = line[:200] + "…"
	}
	e.Message = line
	return e
}

// request is one API call.
type request struct {
	method string
	path   string // under /api/v1, already escaped
	query  url.Values
	body   []byte
	ctype  string
}

// do runs r, retrying transient failures, and returns the body of a 2xx
// answer.
func (c *Client) do(ctx context.Context, r request) ([]byte, error) {
	wait := firstBackoff
	for attempt := 1; ; attempt++ {
		body, retryAfter, err := c.once(ctx, r)
		if err == nil {
			return body, nil
		}
		if retryAfter < 0 || attempt >= c.attempts || ctx.Err() != nil {
			if attempt > 1 {
				err = fmt.Errorf("%w (after %d attempts)", err, attempt)
			}
			return nil, err
		}
		d := wait/2 + rand.N(wait/2+1) // jitter, so clients do not retry in step
		if retryAfter > 0 {
			d = retryAfter
		}
		d = min(d, c.maxBackoff)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (gave up after %d attempts: %w)", err, attempt, ctx.Err())
		case <-t.C:
		}
		wait = min(wait*2, c.maxBackoff)
	}
}

// once makes one attempt. retryAfter < 0 means the failure is final; 0
// means retry after the usual backoff; > 0 is the server's Retry-After.
func (c *Client) once(ctx context.Context, r request) (body []byte, retryAfter time.Duration, err error) {
	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := c.base + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var rd io.Reader
	if r.body != nil {
		rd = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, u, rd)
	if err != nil {
		return nil, -1, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "kindling-client")
	if r.ctype != "" {
		req.Header.Set("Content-Type", r.ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.retry(ctx, err), c.transportError(err)
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, MaxResponse+1))
	if err != nil {
		return nil, c.retry(ctx, err), fmt.Errorf("reading the answer to %s %s from %s: %w", r.method, r.path, c.endpoint, c.plain(err))
	}
	if len(body) > MaxResponse {
		return nil, -1, fmt.Errorf("%s %s: the answer from %s is larger than %d bytes", r.method, r.path, c.endpoint, MaxResponse)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return body, 0, nil
	}
	e := parseError(resp.StatusCode, body)
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return nil, retryAfterHeader(resp.Header.Get("Retry-After")), e
	}
	return nil, -1, e
}

func retryAfterHeader(v string) time.Duration {
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// retry classifies a transport failure: 0 means retry, -1 final. Only
// failures that a server (re)starting or a network blip cause are retried;
// certificate problems, a TLS alert from the server and the caller's own
// cancellation are final.
func (c *Client) retry(ctx context.Context, err error) time.Duration {
	if ctx.Err() != nil {
		return -1
	}
	var (
		cve   *tls.CertificateVerificationError
		uae   x509.UnknownAuthorityError
		he    x509.HostnameError
		cie   x509.CertificateInvalidError
		rhe   tls.RecordHeaderError
		dnse  *net.DNSError
		oe    *net.OpError
		netEr net.Error
	)
	switch {
	case errors.As(err, &cve), errors.As(err, &uae), errors.As(err, &he), errors.As(err, &cie), errors.As(err, &rhe),
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return -1
	case errors.As(err, &dnse) && dnse.IsNotFound:
		return -1
	case errors.As(err, &oe) && oe.Op == "remote error":
		return -1
	case errors.As(err, &oe) && oe.Op == "dial":
		return 0
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, context.DeadlineExceeded):
		return 0
	case errors.As(err, &netEr) && netEr.Timeout():
		return 0
	}
	// HTTP/2 (a Config.HTTPClient may speak it) reports a dropped
	// connection or stream without a typed cause.
	for _, m := range []string{"connection reset", "server sent GOAWAY", "client connection lost", "connection closed",
		"client conn could not be established", "stream error"} {
		if strings.Contains(err.Error(), m) {
			return 0
		}
	}
	return -1
}

// transportError turns an error of http.Client.Do into one line naming the
// endpoint and, where it is clear, what is wrong.
func (c *Client) transportError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var (
		oe  *net.OpError
		cve *tls.CertificateVerificationError
		rhe tls.RecordHeaderError
	)
	switch {
	case errors.As(err, &oe) && oe.Op == "remote error":
		alert := oe.Err.Error()
		switch {
		case strings.Contains(alert, "certificate required"):
			return fmt.Errorf("connecting to %s: unauthenticated: the server requires a client certificate (%w)", c.endpoint, oe)
		case strings.Contains(alert, "bad certificate"), strings.Contains(alert, "unknown certificate authority"),
			strings.Contains(alert, "certificate expired"), strings.Contains(alert, "unsupported certificate"),
			strings.Contains(alert, "certificate revoked"), strings.Contains(alert, "certificate unknown"):
			return fmt.Errorf("connecting to %s: unauthenticated: the server rejected the client certificate (%w)", c.endpoint, oe)
		}
		return fmt.Errorf("connecting to %s: %w", c.endpoint, oe)
	case errors.As(err, &cve):
		return fmt.Errorf("connecting to %s: %w", c.endpoint, cve)
	case errors.As(err, &rhe), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Errorf("connecting to %s: %w (is it the TLS control-plane listener, kindling serve -rpc-address?)", c.endpoint, err)
	case errors.As(err, &oe) && oe.Op == "dial":
		return fmt.Errorf("connecting to %s: %w", c.endpoint, c.plain(oe))
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("connecting to %s: no answer within %v: %w", c.endpoint, c.timeout, err)
	}
	return fmt.Errorf("connecting to %s: %w", c.endpoint, err)
}

// plain strips the layers that repeat the address ("dial tcp
// 10.0.0.1:8081: connect: ") from a network error, keeping the cause
// (connection refused, no route to host) in the chain.
func (c *Client) plain(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		var errno syscall.Errno
		if errors.As(oe.Err, &errno) {
			return errno
		}
		var dnse *net.DNSError
		if errors.As(oe.Err, &dnse) {
			return dnse
		}
		return oe.Err
	}
	return err
}

// --- objects ---

// checkID rejects names the API would refuse anyway (empty, "/", ".."),
// before they could change which URL is asked.
func checkID(what, id string) error {
	if id == "" {
		return fmt.Errorf("%s: empty; give its id", what)
	}
	if strings.Contains(id, "/") || strings.Contains(id, "..") {
		return fmt.Errorf("%s %q: not a valid id (no '/' or '..')", what, id)
	}
	return nil
}

// decode unmarshals an API answer into v. Numbers in free-form JSON
// (group metadata) decode as json.Number, so they round-trip exactly.
func decode(what string, body []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("decoding %s: %w", what, err)
	}
	return nil
}

func (c *Client) getJSON(ctx context.Context, what, path string, q url.Values, v any) error {
	b, err := c.do(ctx, request{method: http.MethodGet, path: path, query: q})
	if err != nil {
		return err
	}
	return decode(what, b, v)
}

func (c *Client) putJSON(ctx context.Context, what, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", what, err)
	}
	b, err := c.do(ctx, request{method: http.MethodPut, path: path, body: body, ctype: "application/json"})
	if err != nil {
		return err
	}
	return decode(what, b, out)
}

func (c *Client) del(ctx context.Context, path string) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: path})
	return err
}

// GroupList returns every group, sorted by ID.
func (c *Client) GroupList(ctx context.Context) ([]groups.Group, error) {
	var gs []groups.Group
	if err := c.getJSON(ctx, "group list", "/groups", nil, &gs); err != nil {
		return nil, err
	}
	if gs == nil {
		gs = []groups.Group{}
	}
	return gs, nil
}

// GroupGet returns group id; a missing group is an error for which
// IsNotFound is true.
func (c *Client) GroupGet(ctx context.Context, id string) (*groups.Group, error) {
	if err := checkID("group id", id); err != nil {
		return nil, err
	}
	var g groups.Group
	if err := c.getJSON(ctx, "group "+id, "/groups/"+url.PathEscape(id), nil, &g); err != nil {
		return nil, err
	}
	return &g, nil
}

// GroupPut creates or replaces group g.ID and returns it as stored.
func (c *Client) GroupPut(ctx context.Context, g *groups.Group) (*groups.Group, error) {
	if g == nil {
		return nil, errors.New("group: nil")
	}
	if err := checkID("group id", g.ID); err != nil {
		return nil, err
	}
	var out groups.Group
	if err := c.putJSON(ctx, "group "+g.ID, "/groups/"+url.PathEscape(g.ID), g, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GroupDelete deletes group id; deleting a missing group succeeds.
func (c *Client) GroupDelete(ctx context.Context, id string) error {
	if err := checkID("group id", id); err != nil {
		return err
	}
	return c.del(ctx, "/groups/"+url.PathEscape(id))
}

// ProfileList returns every profile, sorted by ID.
func (c *Client) ProfileList(ctx context.Context) ([]profiles.Profile, error) {
	var ps []profiles.Profile
	if err := c.getJSON(ctx, "profile list", "/profiles", nil, &ps); err != nil {
		return nil, err
	}
	if ps == nil {
		ps = []profiles.Profile{}
	}
	return ps, nil
}

// ProfileGet returns profile id; a missing profile is an error for which
// IsNotFound is true.
func (c *Client) ProfileGet(ctx context.Context, id string) (*profiles.Profile, error) {
	if err := checkID("profile id", id); err != nil {
		return nil, err
	}
	var p profiles.Profile
	if err := c.getJSON(ctx, "profile "+id, "/profiles/"+url.PathEscape(id), nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// ProfilePut creates or replaces profile p.ID and returns it as stored.
func (c *Client) ProfilePut(ctx context.Context, p *profiles.Profile) (*profiles.Profile, error) {
	if p == nil {
		return nil, errors.New("profile: nil")
	}
	if err := checkID("profile id", p.ID); err != nil {
		return nil, err
	}
	var out profiles.Profile
	if err := c.putJSON(ctx, "profile "+p.ID, "/profiles/"+url.PathEscape(p.ID), p, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ProfileDelete deletes profile id; deleting a missing profile succeeds.
func (c *Client) ProfileDelete(ctx context.Context, id string) error {
	if err := checkID("profile id", id); err != nil {
		return err
	}
	return c.del(ctx, "/profiles/"+url.PathEscape(id))
}

// fileList, fileGet, filePut and fileDelete serve both file collections,
// ignition and generic.
func (c *Client) fileList(ctx context.Context, kind string) ([]string, error) {
	var names []string
	if err := c.getJSON(ctx, kind+" list", "/"+kind, nil, &names); err != nil {
		return nil, err
	}
	if names == nil {
		names = []string{}
	}
	return names, nil
}

func (c *Client) fileGet(ctx context.Context, kind, name string) ([]byte, error) {
	if err := checkID(kind+" name", name); err != nil {
		return nil, err
	}
	return c.do(ctx, request{method: http.MethodGet, path: "/" + kind + "/" + url.PathEscape(name)})
}

func (c *Client) filePut(ctx context.Context, kind, name string, data []byte) error {
	if err := checkID(kind+" name", name); err != nil {
		return err
	}
	if data == nil {
		data = []byte{}
	}
	_, err := c.do(ctx, request{method: http.MethodPut, path: "/" + kind + "/" + url.PathEscape(name), body: data, ctype: "application/octet-stream"})
	return err
}

func (c *Client) fileDelete(ctx context.Context, kind, name string) error {
	if err := checkID(kind+" name", name); err != nil {
		return err
	}
	return c.del(ctx, "/"+kind+"/"+url.PathEscape(name))
}

// IgnitionList returns the names of the files under the data directory's
// ignition/, sorted.
func (c *Client) IgnitionList(ctx context.Context) ([]string, error) {
	return c.fileList(ctx, "ignition")
}

// IgnitionGet returns the raw bytes of ignition/name; a missing file is an
// error for which IsNotFound is true.
func (c *Client) IgnitionGet(ctx context.Context, name string) ([]byte, error) {
	return c.fileGet(ctx, "ignition", name)
}

// IgnitionPut creates or replaces ignition/name. The server checks it:
// .ign and .ignition files must be valid Ignition, anything else a valid
// Butane template.
func (c *Client) IgnitionPut(ctx context.Context, name string, data []byte) error {
	return c.filePut(ctx, "ignition", name, data)
}

// IgnitionDelete deletes ignition/name; deleting a missing file succeeds.
func (c *Client) IgnitionDelete(ctx context.Context, name string) error {
	return c.fileDelete(ctx, "ignition", name)
}

// GenericList returns the names of the files under generic/, sorted.
func (c *Client) GenericList(ctx context.Context) ([]string, error) {
	return c.fileList(ctx, "generic")
}

// GenericGet returns the raw bytes of generic/name; a missing file is an
// error for which IsNotFound is true.
func (c *Client) GenericGet(ctx context.Context, name string) ([]byte, error) {
	return c.fileGet(ctx, "generic", name)
}

// GenericPut creates or replaces generic/name (a Go template).
func (c *Client) GenericPut(ctx context.Context, name string, data []byte) error {
	return c.filePut(ctx, "generic", name, data)
}

// GenericDelete deletes generic/name; deleting a missing file succeeds.
func (c *Client) GenericDelete(ctx context.Context, name string) error {
	return c.fileDelete(ctx, "generic", name)
}

// Selection is the group a machine matches and the profile it boots.
type Selection struct {
	Group   groups.Group     `json:"group"`
	Profile profiles.Profile `json:"profile"`
}

// Select asks which group and profile a machine with these labels (mac,
// uuid, hostname, any other) gets, as the machine endpoints would answer
// it. No matching group is an error for which IsNotFound is true; a
// malformed label (a bad MAC) is an *Error with CodeInvalidArgument.
func (c *Client) Select(ctx context.Context, labels map[string]string) (*Selection, error) {
	q := url.Values{}
	for k, v := range labels {
		q.Set(k, v)
	}
	var s Selection
	if err := c.getJSON(ctx, "selection", "/select", q, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Reports returns the latest agent reports as the server stores them:
// every machine's when mac is empty, else that machine's.
func (c *Client) Reports(ctx context.Context, mac string) (json.RawMessage, error) {
	var q url.Values
	if mac != "" {
		q = url.Values{"mac": {mac}}
	}
	var raw json.RawMessage
	if err := c.getJSON(ctx, "reports", "/reports", q, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

// Events returns the boot events the server recorded for the machine
// with this MAC (a JSON list, as the machine plane's GET /events).
func (c *Client) Events(ctx context.Context, mac string) (json.RawMessage, error) {
	var q url.Values
	if mac != "" {
		q = url.Values{"mac": {mac}}
	}
	var raw json.RawMessage
	if err := c.getJSON(ctx, "events", "/events", q, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}
