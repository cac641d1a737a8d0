package tftp

import (
	"errors"
	"io/fs"
	"path"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		name    string
		p       string
		want    request
		wantErr *reqError
	}{
		{"plain", "\x00\x01pxelinux.0\x00octet\x00", request{op: opRRQ, raw: "pxelinux.0", name: "pxelinux.0", mode: "octet"}, nil},
		{"netascii, upper case", "\x00\x01a\x00NETASCII\x00", request{op: opRRQ, raw: "a", name: "a", mode: "netascii"}, nil},
		{"options", "\x00\x01a\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x004\x00timeout\x003\x00",
			request{op: opRRQ, raw: "a", name: "a", mode: "octet", blksize: 1468, tsize: true, window: 4, timeout: 3}, nil},
		{"blksize clamped", "\x00\x01a\x00octet\x00blksize\x0099999\x00", request{op: opRRQ, raw: "a", name: "a", mode: "octet", blksize: maxBlksize}, nil},
		{"out of range ignored", "\x00\x01a\x00octet\x00blksize\x007\x00windowsize\x0065536\x00timeout\x000\x00tsize\x00-1\x00",
			request{op: opRRQ, raw: "a", name: "a", mode: "octet"}, nil},
		{"unknown ignored", "\x00\x01a\x00octet\x00multicast\x00\x00x\x00y\x00", request{op: opRRQ, raw: "a", name: "a", mode: "octet"}, nil},
		{"NUL padding", "\x00\x01a\x00octet\x00blksize\x00512\x00\x00\x00\x00", request{op: opRRQ, raw: "a", name: "a", mode: "octet", blksize: 512}, nil},
		{"last option unterminated", "\x00\x01a\x00octet\x00tsize\x000\x00blksize\x00512", request{op: opRRQ, raw: "a", name: "a", mode: "octet", tsize: true}, nil},
		{"backslashes", "\x00\x01\\boot\\x64\\wdsnbp.com\x00octet\x00", request{op: opRRQ, raw: `\boot\x64\wdsnbp.com`, name: "boot/x64/wdsnbp.com", mode: "octet"}, nil},
		{"slashes and dots", "\x00\x01//a/./b//c/\x00octet\x00", request{op: opRRQ, raw: "//a/./b//c/", name: "a/b/c", mode: "octet"}, nil},
		{"WRQ", "\x00\x02a\x00octet\x00", request{}, errReadOnly},
		{"mail", "\x00\x01a\x00mail\x00", request{}, &reqError{codeIllegal, ""}},
		{"dot dot", "\x00\x01a/../b\x00octet\x00", request{}, errBadName},
		{"empty name", "\x00\x01\x00octet\x00", request{}, errBadName},
		{"only slashes", "\x00\x01///\x00octet\x00", request{}, errBadName},
		{"no NUL", "\x00\x01abc", request{}, errMalformed},
		{"no mode", "\x00\x01abc\x00", request{}, errMalformed},
		{"short", "\x00", request{}, errMalformed},
		{"ACK", "\x00\x04\x00\x01", request{}, errMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseRequest([]byte(tc.p))
			if tc.wantErr != nil {
				var re *reqError
				if !errors.As(err, &re) || re.code != tc.wantErr.code || (tc.wantErr.msg != "" && re.msg != tc.wantErr.msg) {
					t.Errorf("parseRequest(%q) error = %v, want %v (code %d)", tc.p, err, tc.wantErr, tc.wantErr.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("parseRequest(%q) = %v", tc.p, err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(request{})); diff != "" {
				t.Errorf("parseRequest(%q) differs (-want +got):\n%s", tc.p, diff)
			}
		})
	}
}

// FuzzParseRequest: the parser never panics, and a name it accepts is
// relative, clean, free of "..", backslashes and NULs.
//
//	go test -run '^$' -fuzz FuzzParseRequest -fuzztime 30s ./matchbox/tftp
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"\x00\x01pxelinux.0\x00octet\x00",
		"\x00\x01/boot/ipxe.efi\x00octet\x00blksize\x001468\x00tsize\x000\x00windowsize\x004\x00",
		"\x00\x01..\\..\\etc\\passwd\x00netascii\x00",
		"\x00\x01a/../../b\x00octet\x00timeout\x005\x00",
		"\x00\x02x\x00octet\x00",
		"\x00\x01\x00\x00",
		"\x00\x01./.\x00octet\x00",
		"\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		r, err := parseRequest(p)
		if err != nil {
			var re *reqError
			if !errors.As(err, &re) {
				t.Fatalf("parseRequest(%q) error %v is not a *reqError", p, err)
			}
			return
		}
		n := r.name
		switch {
		case r.op != opRRQ:
			t.Fatalf("parseRequest(%q) accepted opcode %d", p, r.op)
		case n == "" || n == ".":
			t.Fatalf("parseRequest(%q) accepted name %q", p, n)
		case path.IsAbs(n), path.Clean(n) != n, !fs.ValidPath(n):
			t.Fatalf("parseRequest(%q) name %q is not relative and clean", p, n)
		case strings.ContainsAny(n, "\\\x00"):
			t.Fatalf("parseRequest(%q) name %q has a backslash or NUL", p, n)
		case n == ".." || strings.HasPrefix(n, "../") || strings.Contains(n, "/../") || strings.HasSuffix(n, "/.."):
			t.Fatalf("parseRequest(%q) name %q climbs", p, n)
		case strings.Contains(r.raw, "..") && containsDotDotElem(r.raw):
			t.Fatalf("parseRequest(%q) accepted a name with a .. element: %q", p, r.raw)
		case r.mode != "octet" && r.mode != "netascii":
			t.Fatalf("parseRequest(%q) mode %q", p, r.mode)
		case r.blksize != 0 && (r.blksize < minBlksize || r.blksize > maxBlksize),
			r.window < 0 || r.window > maxWindowsize,
			r.timeout < 0 || r.timeout > maxTimeout:
			t.Fatalf("parseRequest(%q) option out of range: %+v", p, r)
		}
	})
}

func containsDotDotElem(raw string) bool {
	for e := range strings.SplitSeq(strings.ReplaceAll(raw, `\`, "/"), "/") {
		if e == ".." {
			return true
		}
	}
	return false
}
