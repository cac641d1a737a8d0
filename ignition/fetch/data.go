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

// Redact returns a URL fit for logs and errors: a data URL becomes
// "data:…", a password in the userinfo becomes "xxxxx", and a string
// that does not parse as a URL keeps only its scheme.
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
	return u.Redacted()
}
