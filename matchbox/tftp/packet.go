package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// Opcodes (RFC 1350 section 5, RFC 2347 for OACK).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// Error codes (RFC 1350 appendix, RFC 2347 for 8).
const (
	codeUndefined     = 0
	codeNotFound      = 1
	codeAccess        = 2
	codeIllegal       = 4
	codeUnknownTID    = 5
	codeOptionRefused = 8
)

// Option limits.
const (
	minBlksize    = 8     // RFC 2348
	maxBlksize    = 65464 // RFC 2348: 65535 - 20 (IP) - 8 (UDP) - 4 (TFTP)
	defBlksize    = 512   // RFC 1350
	maxWindowsize = 65535 // RFC 7440
	maxTimeout    = 255   // RFC 2349, seconds
)

// reqError is a request the server answers with an ERROR packet.
type reqError struct {
	code uint16
	msg  string
}

func (e *reqError) Error() string { return e.msg }

var (
	errMalformed = &reqError{codeIllegal, "malformed request"}
	errReadOnly  = &reqError{codeAccess, "read-only server: write requests are refused"}
	errBadName   = &reqError{codeAccess, "access violation: bad file name"}
	errNotFound  = &reqError{codeNotFound, "file not found"}
	errBadMode   = &reqError{codeIllegal, "unsupported transfer mode: use octet"}
)

// request is a parsed RRQ or WRQ. Options the client did not send, or sent
// with a value out of range, are zero: they are not negotiated (RFC 2347:
// the server omits options it does not accept from the OACK).
type request struct {
	op   uint16
	raw  string // file name as sent, for logs
	name string // cleaned: relative, slash-separated, no "..", fs.ValidPath
	mode string // "octet" or "netascii"

	blksize int  // requested blksize (8..65464, larger values clamped), 0: not asked
	tsize   bool // tsize asked
	timeout int  // seconds (1..255), 0: not asked
	window  int  // windowsize (1..65535), 0: not asked
}

// parseRequest parses an RRQ or WRQ packet (RFC 1350 section 5 and RFC 2347
// section 2): opcode, file name, NUL, mode, NUL, then option name/value
// pairs, each NUL-terminated. It is pure, so the fuzzer can drive it.
//
// Leniency, as other servers allow: option names and the mode are
// case-insensitive; padding after the last option (some PXE ROMs send
// trailing NULs) and a last option without its terminating NUL are ignored;
// unknown options are ignored (never echoed). A file name or mode without
// its NUL is malformed.
func parseRequest(p []byte) (request, error) {
	var r request
	if len(p) < 2 {
		return r, errMalformed
	}
	r.op = binary.BigEndian.Uint16(p)
	if r.op != opRRQ && r.op != opWRQ {
		return r, errMalformed
	}
	rest := p[2:]
	name, rest, ok := cstring(rest)
	if !ok {
		return r, errMalformed
	}
	mode, rest, ok := cstring(rest)
	if !ok {
		return r, errMalformed
	}
	r.raw = name
	switch strings.ToLower(mode) {
	case "octet":
		r.mode = "octet"
	case "netascii":
		// Served as octet: boot files are binary, every PXE ROM, iPXE,
		// pxelinux and GRUB ask for octet, and converting LF to CR LF
		// would change the size (tsize) and break reading blocks at
		// fixed offsets. dnsmasq does the same.
		r.mode = "netascii"
	default:
		// The packet says nothing of the mode: echoing it would make the
		// answer to a spoofed request bigger than the request.
		return r, fmt.Errorf("transfer mode %q: %w", mode, errBadMode)
	}
	if r.op == opWRQ {
		return r, errReadOnly
	}
	for len(rest) > 0 {
		var k, v string
		if k, rest, ok = cstring(rest); !ok || k == "" {
			break // unterminated or padding
		}
		if v, rest, ok = cstring(rest); !ok {
			break
		}
		switch strings.ToLower(k) {
		case "blksize":
			if n, err := strconv.Atoi(v); err == nil && n >= minBlksize {
				r.blksize = min(n, maxBlksize)
			}
		case "tsize":
			// RFC 2349: the client sends 0 in an RRQ; any number is
			// accepted as a request for the size.
			if _, err := strconv.ParseUint(v, 10, 64); err == nil {
				r.tsize = true
			}
		case "timeout":
			if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= maxTimeout {
				r.timeout = n
			}
		case "windowsize":
			if n, err := strconv.Atoi(v); err == nil && n >= 1 && n <= maxWindowsize {
				r.window = n
			}
		}
	}
	var err error
	r.name, err = cleanName(name)
	return r, err
}

// cstring splits a NUL-terminated string off b.
func cstring(b []byte) (s string, rest []byte, ok bool) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, false
	}
	return string(b[:i]), b[i+1:], true
}

// cleanName turns a requested file name into a name relative to the root.
//
//   - Backslashes become slashes: PXE clients configured for Windows
//     servers ask for "pxelinux.cfg\default" or "\boot\x64\wdsnbp.com",
//     and no sane boot file name contains a backslash (tftpd-hpa needs a
//     remap rule for this; dnsmasq converts too).
//   - Leading slashes are dropped: "/pxelinux.0" means the file at the top
//     of the root, as with tftpd-hpa -s and dnsmasq.
//   - Any ".." element is refused, even one that would stay inside the
//     root, so no name can climb out by construction. (assets.Root opens
//     through os.Root as well, which refuses escapes, symlinks included.)
//   - The result is path.Clean'ed and must pass fs.ValidPath; the root
//     itself (".") is refused.
func cleanName(name string) (string, error) {
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return "", errBadName
	}
	name = strings.ReplaceAll(name, `\`, "/")
	name = strings.TrimLeft(name, "/")
	for elem := range strings.SplitSeq(name, "/") {
		if elem == ".." {
			return "", errBadName
		}
	}
	name = path.Clean(name)
	if name == "." || !fs.ValidPath(name) {
		return "", errBadName
	}
	return name, nil
}

// appendOption appends one name/value pair of an OACK.
func appendOption(b []byte, name string, value int64) []byte {
	b = append(b, name...)
	b = append(b, 0)
	b = strconv.AppendInt(b, value, 10)
	return append(b, 0)
}

// errorPacket builds an ERROR packet (RFC 1350 section 5).
func errorPacket(code uint16, msg string) []byte {
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b, opERROR)
	binary.BigEndian.PutUint16(b[2:], code)
	b = append(b, msg...)
	return append(b, 0)
}

// clientError is an ERROR packet the client sent.
type clientError struct {
	code uint16
	msg  string
}

func (e *clientError) Error() string {
	return "client sent error " + strconv.Itoa(int(e.code)) + ": " + strconv.Quote(e.msg)
}

// parseClientError reads an ERROR packet; the message may be unterminated.
func parseClientError(p []byte) error {
	if len(p) < 4 {
		return &clientError{msg: "(short error packet)"}
	}
	msg := p[4:]
	if i := bytes.IndexByte(msg, 0); i >= 0 {
		msg = msg[:i]
	}
	if len(msg) > 128 {
		msg = msg[:128]
	}
	return &clientError{code: binary.BigEndian.Uint16(p[2:]), msg: strings.ToValidUTF8(string(msg), "?")}
}

var errTimeout = errors.New("timed out waiting for the client's ACK")
