// Package fetch fetches the resources of an Ignition config for the agent:
// the config itself, its merge and replace children, certificate
// authorities, file contents and key files.
//
// Sources are http, https, tftp and data URLs (RFC 2397). Other schemes of
// the spec (s3, gs, arn) are an error naming the field that holds them,
// never a silent skip. A resource's compression ("gzip") is undone and its
// verification hash (sha256 or sha512) checked over the decompressed bytes.
// HTTP fetches retry network errors, 5xx and 429 answers with a capped
// exponential backoff until the total timeout or the context ends; other
// answers fail at once.
//
// Errors name the field and the URL and never contain a resource's
// contents: data URLs read "data:…" and URL passwords are masked (Redact).
package fetch

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/ignition/v2/config/v3_6/types"
	"golang.org/x/net/http/httpproxy"
)

// Defaults of Options.
const (
	DefaultResponseHeaderTimeout = 10 * time.Second
	DefaultRetryInitial          = 200 * time.Millisecond
	DefaultRetryMax              = 5 * time.Second
	DefaultMaxSize               = 1 << 30
	DefaultTFTPTimeout           = 2 * time.Second
)

// Outcomes callers may branch on (with errors.Is).
var (
	// ErrUnsupportedScheme: the URL's scheme is one Kindling does not fetch.
	ErrUnsupportedScheme = errors.New("unsupported URL scheme")
	// ErrNotFound: the server answered 404, or TFTP "file not found".
	ErrNotFound = errors.New("not found")
	// ErrHashMismatch: the contents do not match verification.hash.
	ErrHashMismatch = errors.New("hash mismatch")
	// ErrTooLarge: the resource is larger than Options.MaxSize.
	ErrTooLarge = errors.New("resource too large")
	// ErrTimeout: the total timeout ran out before an attempt succeeded.
	ErrTimeout = errors.New("timed out")
)

// Options configure a Fetcher. The zero value fetches with the system's
// certificate authorities, no proxy, a 10 s wait for response headers, no
// total limit, and retries from 200 ms doubling to 5 s.
type Options struct {
	// Log receives a line per fetch and per failed attempt. Nil discards.
	Log *slog.Logger

	// ResponseHeaderTimeout bounds the wait for an HTTP response's headers,
	// per attempt. Zero means DefaultResponseHeaderTimeout (10 s);
	// negative means no limit.
	ResponseHeaderTimeout time.Duration
	// TotalTimeout bounds one fetch, retries included. Zero (or negative)
	// means no limit: attempts go on until the context ends.
	TotalTimeout time.Duration

	// CAs are PEM bundles of certificate authorities trusted for https in
	// addition to the system's. Nil adds none.
	CAs [][]byte

	// Proxy chooses the proxy of http and https fetches, with the meaning
	// of golang.org/x/net/http/httpproxy (loopback addresses are never
	// proxied). The zero value connects directly; the process environment
	// (HTTP_PROXY, …) is never read.
	Proxy types.Proxy

	// RetryInitial is the first delay between attempts; it doubles after
	// each failed attempt up to RetryMax. Zero means 200 ms and 5 s.
	RetryInitial time.Duration
	RetryMax     time.Duration

	// MaxSize caps a resource's size, before and after decompression.
	// Zero means DefaultMaxSize (1 GiB).
	MaxSize int64

	// TFTPTimeout is the wait for each TFTP datagram (the client resends
	// up to 5 times). Zero means DefaultTFTPTimeout (2 s).
	TFTPTimeout time.Duration

	// Transport, when non-nil, carries every HTTP request in place of the
	// fetcher's own transport; CAs, Proxy and ResponseHeaderTimeout then
	// do not apply (TotalTimeout, retries and headers still do). For tests.
	Transport http.RoundTripper
}

// Fetcher fetches resources. Its settings (timeouts, CAs, proxy) may be
// changed between fetches by the config renderer; it is safe for
// concurrent use.
type Fetcher struct {
	log          *slog.Logger
	retryInitial time.Duration
	retryMax     time.Duration
	maxSize      int64
	tftpTimeout  time.Duration
	override     http.RoundTripper

	mu         sync.Mutex
	headerWait time.Duration // 0: no limit
	total      time.Duration // 0: no limit
	pool       *x509.CertPool
	proxy      func(*url.URL) (*url.URL, error)
	transport  *http.Transport // built lazily from the settings above
}

// New returns a Fetcher with the given options. It fails if a CA bundle or
// a proxy URL is not valid.
func New(o Options) (*Fetcher, error) {
	f := &Fetcher{
		log:          o.Log,
		retryInitial: o.RetryInitial,
		retryMax:     o.RetryMax,
		maxSize:      o.MaxSize,
		tftpTimeout:  o.TFTPTimeout,
		override:     o.Transport,
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.retryInitial <= 0 {
		f.retryInitial = DefaultRetryInitial
	}
	if f.retryMax <= 0 {
		f.retryMax = DefaultRetryMax
	}
	if f.retryMax < f.retryInitial {
		f.retryMax = f.retryInitial
	}
	if f.maxSize <= 0 {
		f.maxSize = DefaultMaxSize
	}
	if f.tftpTimeout <= 0 {
		f.tftpTimeout = DefaultTFTPTimeout
	}
	switch {
	case o.ResponseHeaderTimeout == 0:
		f.headerWait = DefaultResponseHeaderTimeout
	case o.ResponseHeaderTimeout > 0:
		f.headerWait = o.ResponseHeaderTimeout
	}
	if o.TotalTimeout > 0 {
		f.total = o.TotalTimeout
	}
	for i, b := range o.CAs {
		if err := f.AddCA(b); err != nil {
			return nil, fmt.Errorf("options: CAs[%d]: %w", i, err)
		}
	}
	if err := f.SetProxy(o.Proxy); err != nil {
		return nil, fmt.Errorf("options: Proxy: %w", err)
	}
	return f, nil
}

// SetTimeouts applies a config's ignition.timeouts, in seconds:
// httpResponseHeaders nil means 10 s, httpTotal nil means no limit, and 0
// (or less) means no limit for either.
func (f *Fetcher) SetTimeouts(t types.Timeouts) {
	headerWait := DefaultResponseHeaderTimeout
	if t.HTTPResponseHeaders != nil {
		headerWait = seconds(*t.HTTPResponseHeaders)
	}
	var total time.Duration
	if t.HTTPTotal != nil {
		total = seconds(*t.HTTPTotal)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if headerWait != f.headerWait {
		f.headerWait = headerWait
		f.dropTransport()
	}
	f.total = total
}

func seconds(n int) time.Duration {
	if n <= 0 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// SetProxy applies a config's ignition.proxy (the zero value: direct
// connections). It fails on a proxy URL that is not an absolute http or
// https URL.
func (f *Fetcher) SetProxy(p types.Proxy) error {
	cfg := httpproxy.Config{}
	if p.HTTPProxy != nil {
		if err := checkProxyURL(*p.HTTPProxy); err != nil {
			return fmt.Errorf("httpProxy %q: %w", Redact(*p.HTTPProxy), err)
		}
		cfg.HTTPProxy = *p.HTTPProxy
	}
	if p.HTTPSProxy != nil {
		if err := checkProxyURL(*p.HTTPSProxy); err != nil {
			return fmt.Errorf("httpsProxy %q: %w", Redact(*p.HTTPSProxy), err)
		}
		cfg.HTTPSProxy = *p.HTTPSProxy
	}
	var no []string
	for _, n := range p.NoProxy {
		no = append(no, string(n))
	}
	cfg.NoProxy = strings.Join(no, ",")

	f.mu.Lock()
	defer f.mu.Unlock()
	f.proxy = cfg.ProxyFunc()
	f.dropTransport()
	return nil
}

func checkProxyURL(s string) error {
	if s == "" {
		return nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return errors.New("want an http:// or https:// URL with a host")
	}
	return nil
}

// AddCA adds the certificates of a PEM bundle to the authorities trusted
// for https. It fails if the bundle holds no certificate or a malformed
// one; the error never quotes the bundle.
func (f *Fetcher) AddCA(bundle []byte) error {
	var certs []*x509.Certificate
	rest := bundle
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return fmt.Errorf("parsing PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return errors.New("no PEM CERTIFICATE block found (want a PEM bundle of CA certificates)")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	pool := f.basePool().Clone()
	for _, c := range certs {
		pool.AddCert(c)
	}
	f.pool = pool
	f.dropTransport()
	return nil
}

// basePool returns the current pool, starting from the system's. f.mu held.
func (f *Fetcher) basePool() *x509.CertPool {
	if f.pool != nil {
		return f.pool
	}
	p, err := x509.SystemCertPool()
	if err != nil || p == nil {
		p = x509.NewCertPool()
	}
	f.pool = p
	return p
}

// dropTransport forgets the current transport so the next fetch builds one
// from the new settings. f.mu held.
func (f *Fetcher) dropTransport() {
	if f.transport != nil {
		f.transport.CloseIdleConnections()
		f.transport = nil
	}
}

// totalTimeout returns the current limit of one fetch (0: none).
func (f *Fetcher) totalTimeout() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.total
}

// roundTripper returns the transport for the current settings and the
// total timeout.
func (f *Fetcher) roundTripper() (http.RoundTripper, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.override != nil {
		return f.override, f.total
	}
	if f.transport == nil {
		dialer := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
		proxy := f.proxy
		f.transport = &http.Transport{
			Proxy: func(r *http.Request) (*url.URL, error) {
				if proxy == nil {
					return nil, nil
				}
				return proxy(r.URL)
			},
			DialContext:           dialer.DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: f.basePool(), MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: f.headerWait,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          10,
			IdleConnTimeout:       30 * time.Second,
		}
	}
	return f.transport, f.total
}

// Fetch fetches a resource of the config; errors name its field "source".
// An empty source gives empty contents.
func (f *Fetcher) Fetch(ctx context.Context, r types.Resource) ([]byte, error) {
	return f.FetchField(ctx, "source", r)
}

// FetchURL fetches a config from a URL (no compression, no hash); errors
// name it "config".
func (f *Fetcher) FetchURL(ctx context.Context, rawURL string) ([]byte, error) {
	return f.FetchField(ctx, "config", types.Resource{Source: &rawURL})
}

// FetchField fetches a resource whose source sits in field (for example
// "ignition.config.merge[1].source"), undoes its compression and checks its
// hash. Errors read `<field> "<redacted URL>": <reason>`, or for a scheme
// Kindling does not fetch `unsupported URL scheme "s3" in <field> "<URL>"
// (…)`. An empty source gives empty contents.
func (f *Fetcher) FetchField(ctx context.Context, field string, r types.Resource) ([]byte, error) {
	if r.Source == nil || *r.Source == "" {
		return []byte{}, nil
	}
	src := *r.Source
	data, err := f.fetch(ctx, field, src, r.HTTPHeaders)
	if err != nil {
		if errors.Is(err, ErrUnsupportedScheme) {
			return nil, err
		}
		return nil, fmt.Errorf("%s %q: %w", field, Redact(src), err)
	}
	if data, err = f.decompress(data, r.Compression); err != nil {
		return nil, fmt.Errorf("%s %q: %w", field, Redact(src), err)
	}
	if err := verify(data, r.Verification); err != nil {
		return nil, fmt.Errorf("%s %q: %w", field, Redact(src), err)
	}
	f.log.Debug("fetched", "field", field, "url", Redact(src), "bytes", len(data))
	return data, nil
}

// CheckSource reports whether src is a URL Kindling can fetch, without
// fetching it; the error is fetch's own (ErrUnsupportedScheme, naming
// field).
func CheckSource(field, src string) error {
	if isData(src) {
		return nil
	}
	u, err := url.Parse(src)
	if err != nil {
		return fmt.Errorf("%s %q: not a valid URL", field, Redact(src))
	}
	switch u.Scheme {
	case "http", "https", "tftp":
		return nil
	}
	return fmt.Errorf("%w %q in %s %q (Kindling fetches http, https, tftp and data URLs)",
		ErrUnsupportedScheme, u.Scheme, field, Redact(src))
}

func (f *Fetcher) fetch(ctx context.Context, field, src string, headers types.HTTPHeaders) ([]byte, error) {
	if isData(src) {
		return decodeData(src)
	}
	u, err := url.Parse(src)
	if err != nil {
		return nil, errors.New("not a valid URL")
	}
	switch u.Scheme {
	case "http", "https":
		return f.fetchHTTP(ctx, u, headers)
	case "tftp":
		return f.fetchTFTP(ctx, u)
	}
	return nil, CheckSource(field, src)
}

// decompress undoes a resource's compression: nil or "" is none, "gzip"
// is gzip (multi-member streams allowed).
func (f *Fetcher) decompress(data []byte, compression *string) ([]byte, error) {
	if compression == nil || *compression == "" {
		return data, nil
	}
	if *compression != "gzip" {
		return nil, fmt.Errorf("unsupported compression %q (want gzip or none)", *compression)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("decompressing gzip: %w", err)
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, f.maxSize+1))
	if err != nil {
		return nil, fmt.Errorf("decompressing gzip: %w", err)
	}
	if int64(len(out)) > f.maxSize {
		return nil, fmt.Errorf("decompressing gzip: %w: more than %d bytes", ErrTooLarge, f.maxSize)
	}
	return out, nil
}

// verify checks data against a verification.hash "sha256-<hex>" or
// "sha512-<hex>"; a nil hash verifies anything.
func verify(data []byte, v types.Verification) error {
	if v.Hash == nil {
		return nil
	}
	fn, want, ok := strings.Cut(*v.Hash, "-")
	if !ok {
		return fmt.Errorf("verification.hash %q is malformed (want sha256-<hex> or sha512-<hex>)", *v.Hash)
	}
	var h hash.Hash
	switch fn {
	case "sha256":
		h = sha256.New()
	case "sha512":
		h = sha512.New()
	default:
		return fmt.Errorf("verification.hash: unsupported function %q (want sha256 or sha512)", fn)
	}
	h.Write(data)
	got := hex.EncodeToString(h.Sum(nil))
	if !strings.EqualFold(got, want) {
		return fmt.Errorf("%w: contents have %s-%s, verification.hash wants %s-%s", ErrHashMismatch, fn, got, fn, strings.ToLower(want))
	}
	return nil
}

// retry runs attempt until it succeeds, fails permanently (an error
// wrapped by permanent), the total timeout runs out or ctx ends. Between
// attempts it waits RetryInitial, doubling up to RetryMax.
func (f *Fetcher) retry(ctx context.Context, total time.Duration, what string, attempt func(context.Context) ([]byte, error)) ([]byte, error) {
	parent := ctx
	if total > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, total)
		defer cancel()
	}
	start := time.Now()
	delay := f.retryInitial
	var last error // the last failure worth reporting
	giveUp := func(n int) error {
		if perr := parent.Err(); perr != nil {
			return fmt.Errorf("%w after %d attempts: %w", perr, n, last)
		}
		return fmt.Errorf("%w after %d attempts in %s (total timeout %s): %w",
			ErrTimeout, n, time.Since(start).Round(time.Millisecond), total, last)
	}
	for n := 1; ; n++ {
		data, err := attempt(ctx)
		if err == nil {
			return data, nil
		}
		var p permanentError
		if errors.As(err, &p) {
			return nil, p.err
		}
		// An attempt cut short by the deadline says less than the one
		// before it.
		if last == nil || !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
			last = err
		}
		if ctx.Err() != nil {
			return nil, giveUp(n)
		}
		f.log.Warn("fetch attempt failed; retrying", "url", what, "attempt", n, "delay", delay, "err", err)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, giveUp(n)
		}
		delay = min(delay*2, f.retryMax)
	}
}

// permanentError marks an attempt's failure that retrying cannot fix.
type permanentError struct{ err error }

func (p permanentError) Error() string { return p.err.Error() }
func (p permanentError) Unwrap() error { return p.err }

func permanent(err error) error { return permanentError{err} }

// limitedBuffer collects at most max bytes and fails past that.
type limitedBuffer struct {
	buf bytes.Buffer
	max int64
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if int64(b.buf.Len())+int64(len(p)) > b.max {
		return 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, b.max)
	}
	return b.buf.Write(p)
}
