package fetch

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/vincent-petithory/dataurl"
)

// isData reports whether s is a data URL (RFC 2397; the scheme is case
// insensitive).
func isData(s string) bool {
	return len(s) >= 5 && strings.EqualFold(s[:5], "data:")
}

// decodeData decodes a data URL, base64 or percent-encoded. It uses the
// same decoder as the config validator, so every data URL that validates
// decodes. The decoder's errors name a position or a character class,
// never the payload.
func decodeData(s string) ([]byte, error) {
	du, err := dataurl.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("malformed data URL (want data:[<media type>][;base64],<data>): %v", err)
	}
	return du.Data, nil
}

// Redact returns a URL fit for logs, errors and reports: a data URL
// becomes "data:…", a password in the userinfo becomes "xxxxx", the values
// of query parameters that look like credentials (token, signature, key,
// secret, password, auth, credential — e.g. presigned URLs) become "xxxxx",
// and a string that does not parse as a URL keeps only its scheme.
func Redact(raw string) string {
	if isData(raw) {
		return "data:…"
	}
	u, err := url.Parse(raw)
	if err != nil {
		if scheme, _, ok := strings.Cut(raw, "://"); ok && !strings.ContainsAny(scheme, "@/:") {
			return scheme + "://…"
		}
		return "…"
	}
	if u.RawQuery != "" {
		parts := strings.Split(u.RawQuery, "&")
		changed := false
		for i, p := range parts {
			k, _, ok := strings.Cut(p, "=")
			if name, err := url.QueryUnescape(k); err == nil {
				k = name
			}
			if ok && secretParam(k) {
				parts[i] = url.QueryEscape(k) + "=xxxxx"
				changed = true
			}
		}
		if changed {
			u.RawQuery = strings.Join(parts, "&")
		}
	}
	if u.Fragment != "" {
		u.Fragment, u.RawFragment = "xxxxx", "" // e.g. #access_token=…
	}
	return u.Redacted()
}

// secretParam reports whether a query parameter name suggests a credential.
func secretParam(name string) bool {
	n := strings.ToLower(name)
	for _, s := range []string{"token", "sig", "key", "secret", "password", "passwd", "auth", "credential"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}
