package fetch

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/pin/tftp/v3"
)

// tftpError is an ERROR packet from the server (RFC 1350 section 5).
type tftpError struct {
	code int
	msg  string
}

func (e *tftpError) Error() string { return fmt.Sprintf("TFTP error %d: %s", e.code, e.msg) }

// Is reports code 1, "File not found", as ErrNotFound.
func (e *tftpError) Is(target error) bool { return target == ErrNotFound && e.code == 1 }

// fetchTFTP reads u in octet mode. Per RFC 3617 the file name is the path
// after the host's "/"; the port defaults to 69. Timeouts (no answer) are
// retried like HTTP network errors; an ERROR packet fails at once.
func (f *Fetcher) fetchTFTP(ctx context.Context, u *url.URL) ([]byte, error) {
	if u.Hostname() == "" {
		return nil, errors.New("tftp URL has no host (want tftp://host[:port]/file)")
	}
	port := u.Port()
	if port == "" {
		port = "69"
	}
	addr := net.JoinHostPort(u.Hostname(), port)
	name := strings.TrimPrefix(u.Path, "/")
	// RFC 3617 section 2 lets the URL name the transfer mode; only octet
	// makes sense for config resources.
	name, _, _ = strings.Cut(name, ";mode=")
	if name == "" {
		return nil, errors.New("tftp URL has no file name (want tftp://host[:port]/file)")
	}
	return f.retry(ctx, f.totalTimeout(), Redact(u.String()), func(ctx context.Context) ([]byte, error) {
		c, err := tftp.NewClient(addr)
		if err != nil {
			return nil, err
		}
		c.SetTimeout(f.tftpTimeout)
		c.SetRetries(5)
		type result struct {
			data []byte
			err  error
		}
		done := make(chan result, 1)
		// The client has no context: on cancellation this goroutine ends
		// on its own after at most 5 datagram timeouts.
		go func() {
			wt, err := c.Receive(name, "octet")
			if err != nil {
				done <- result{nil, err}
				return
			}
			buf := &limitedBuffer{max: f.maxSize}
			if _, err := wt.WriteTo(buf); err != nil {
				done <- result{nil, err}
				return
			}
			done <- result{buf.buf.Bytes(), nil}
		}()
		select {
		case r := <-done:
			if r.err == nil {
				return r.data, nil
			}
			return nil, classifyTFTP(addr, r.err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	})
}

// classifyTFTP turns the client's errors into retryable (no answer) and
// permanent (an ERROR packet, a size overflow) ones.
func classifyTFTP(addr string, err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("no answer from TFTP server %s: %w", addr, err)
	}
	if errors.As(err, &ne) {
		return err
	}
	if errors.Is(err, ErrTooLarge) {
		return permanent(err)
	}
	// The client reports ERROR packets as "code: N, message: M".
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "code: "); ok {
		codeText, text, _ := strings.Cut(rest, ", message: ")
		if code, cerr := strconv.Atoi(codeText); cerr == nil {
			return permanent(&tftpError{code: code, msg: text})
		}
	}
	return permanent(err)
}
