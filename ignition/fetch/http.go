package fetch

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/coreos/ignition/v2/config/v3_6/types"
)

// Headers sent with every HTTP request unless the resource's httpHeaders
// name them.
var defaultHeaders = map[string]string{
	"User-Agent": "Kindling-ignite",
	// Servers that serve several spec versions can pick the newest the
	// agent reads; anything else is still accepted.
	"Accept": "application/vnd.coreos.ignition+json;version=3.6.0, */*;q=0.1",
	// The hash is over what the server holds; no transparent decoding.
	"Accept-Encoding": "identity",
}

const maxRedirects = 10

// statusError is an HTTP answer other than 2xx.
type statusError struct {
	code   int
	status string
}

func (e *statusError) Error() string {
	if e.status != "" {
		return e.status
	}
	return fmt.Sprintf("%d %s", e.code, http.StatusText(e.code))
}

func (e *statusError) Is(target error) bool {
	return target == ErrNotFound && e.code == http.StatusNotFound
}

// fetchHTTP GETs u, retrying network errors, 5xx and 429.
func (f *Fetcher) fetchHTTP(ctx context.Context, u *url.URL, headers types.HTTPHeaders) ([]byte, error) {
	rt, total := f.roundTripper()
	user := http.Header{}
	for _, h := range headers {
		// A header without a value only removes a parent's header on merge.
		if h.Value == nil || *h.Value == "" {
			continue
		}
		user.Add(h.Name, *h.Value)
	}
	origin := u.Host
	client := &http.Client{
		Transport: rt,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return permanent(fmt.Errorf("stopped after %d redirects", maxRedirects))
			}
			// The config's headers may carry credentials meant for the
			// first server only.
			if !strings.EqualFold(req.URL.Host, origin) {
				for name := range user {
					req.Header.Del(name)
					if v, ok := defaultHeaders[http.CanonicalHeaderKey(name)]; ok {
						req.Header.Set(name, v)
					}
				}
			}
			return nil
		},
	}
	what := Redact(u.String())
	return f.retry(ctx, total, what, func(ctx context.Context) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, permanent(err)
		}
		for k, v := range defaultHeaders {
			req.Header.Set(k, v)
		}
		for k, vs := range user {
			req.Header[k] = append([]string(nil), vs...)
		}
		f.log.Debug("GET", "url", what)
		resp, err := client.Do(req)
		if err != nil {
			var ue *url.Error
			if errors.As(err, &ue) {
				err = ue.Err
			}
			var cv *tls.CertificateVerificationError
			if errors.As(err, &cv) {
				return nil, permanent(fmt.Errorf("%w (is its CA in ignition.security.tls.certificateAuthorities?)", err))
			}
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			// Drain a little so the connection can be reused.
			io.CopyN(io.Discard, resp.Body, 4096)
			se := &statusError{code: resp.StatusCode, status: resp.Status}
			if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
				return nil, se
			}
			return nil, permanent(se)
		}
		buf := &limitedBuffer{max: f.maxSize}
		if _, err := io.Copy(buf, resp.Body); err != nil {
			if errors.Is(err, ErrTooLarge) {
				return nil, permanent(err)
			}
			return nil, fmt.Errorf("reading body: %w", err)
		}
		return buf.buf.Bytes(), nil
	})
}
