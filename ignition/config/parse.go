// Package config parses, validates and renders the agent's Ignition
// configs, spec 3.0.0 through 3.6.0, into the 3.6 types of
// github.com/coreos/ignition/v2.
//
// Parse and Validate report every problem of a config with its JSON path
// and its line and column in the input. Render fetches the config's
// children (ignition.config.replace, ignition.config.merge) with a
// fetch.Fetcher, after applying the config's own timeouts, certificate
// authorities and proxy to it, and merges them depth-first.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	ignerrors "github.com/coreos/ignition/v2/config/shared/errors"
	"github.com/coreos/ignition/v2/config/v3_6"
	"github.com/coreos/ignition/v2/config/v3_6/types"
	vjson "github.com/coreos/vcontext/json"
	"github.com/coreos/vcontext/path"
	"github.com/coreos/vcontext/report"
	"github.com/coreos/vcontext/tree"
)

// ErrInvalid is wrapped by every error of Parse: the input is not a
// config the agent can apply.
var ErrInvalid = errors.New("invalid config")

// Severities of a Problem.
const (
	SeverityError   = "error"
	SeverityWarning = "warning"
	SeverityInfo    = "info"
)

// supported names the versions Parse accepts, for error messages.
const supported = "3.0.0 through 3.6.0"

// Problem is one finding about a config.
type Problem struct {
	// Severity is SeverityError (the config is rejected), SeverityWarning
	// or SeverityInfo.
	Severity string `json:"severity"`
	// Path is the JSON path of the value at fault, like
	// "$.storage.files.0.path"; "$" is the whole document.
	Path string `json:"path"`
	// Line and Column locate the value in the input, from 1; 0 when
	// unknown.
	Line   int `json:"line,omitempty"`
	Column int `json:"column,omitempty"`
	// Message says what is wrong.
	Message string `json:"message"`
}

// String reads like "error at $.storage.files.0.path, line 5 col 12: path
// not absolute".
func (p Problem) String() string {
	if w := p.where(); w != "" {
		return p.Severity + " at " + w + ": " + p.Message
	}
	return p.Severity + ": " + p.Message
}

// where is the problem's location: path and line, either, or "".
func (p Problem) where() string {
	var parts []string
	if p.Path != "" && p.Path != "$" {
		parts = append(parts, p.Path)
	}
	if p.Line > 0 {
		parts = append(parts, fmt.Sprintf("line %d col %d", p.Line, p.Column))
	}
	return strings.Join(parts, ", ")
}

// Parse parses a config of spec 3.0.0 through 3.6.0, translated to 3.6.
// The problems it returns alongside a config are warnings and notes only.
// An invalid config gives an error wrapping ErrInvalid that lists every
// error with its path, line and column (one line when there is one
// error); the returned problems then hold the warnings.
func Parse(data []byte) (types.Config, []Problem, error) {
	cfg, problems := check(data)
	var errs, rest []Problem
	for _, p := range problems {
		if p.Severity == SeverityError {
			errs = append(errs, p)
		} else {
			rest = append(rest, p)
		}
	}
	switch len(errs) {
	case 0:
		return cfg, rest, nil
	case 1:
		if w := errs[0].where(); w != "" {
			return types.Config{}, rest, fmt.Errorf("%w at %s: %s", ErrInvalid, w, errs[0].Message)
		}
		return types.Config{}, rest, fmt.Errorf("%w: %s", ErrInvalid, errs[0].Message)
	default:
		var b strings.Builder
		for _, p := range errs {
			b.WriteString("\n  ")
			b.WriteString(p.String())
		}
		return types.Config{}, rest, fmt.Errorf("%w: %d errors:%s", ErrInvalid, len(errs), b.String())
	}
}

// Validate checks a config like `ignite validate FILE`: every error,
// warning and note, each with its JSON path, line and column. No problem
// of severity error means the agent would accept the config.
func Validate(data []byte) []Problem {
	_, problems := check(data)
	return problems
}

// check parses data and returns the config (zero when invalid) and every
// problem found, turning the library's bare sentinel errors into located
// problems.
func check(data []byte) (types.Config, []Problem) {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return types.Config{}, []Problem{{Severity: SeverityError, Path: "$",
			Message: "empty input (want an Ignition config, spec " + supported + ")"}}
	}
	if trimmed[0] != '{' && json.Valid(trimmed) {
		return types.Config{}, []Problem{{Severity: SeverityError, Path: "$", Line: 1, Column: 1,
			Message: "not a JSON object (want an Ignition config, spec " + supported + ")"}}
	}
	cfg, rpt, err := v3_6.ParseCompatibleVersion(data)
	problems := fromReport(rpt)
	if err == nil {
		return cfg, problems
	}
	switch {
	case errors.Is(err, ignerrors.ErrEmpty):
		return types.Config{}, []Problem{{Severity: SeverityError, Path: "$",
			Message: "empty input (want an Ignition config, spec " + supported + ")"}}
	case errors.Is(err, ignerrors.ErrInvalidVersion), errors.Is(err, ignerrors.ErrUnknownVersion):
		return types.Config{}, []Problem{versionProblem(data)}
	}
	if !hasError(problems) {
		// Not expected from the library; never lose the failure.
		problems = append(problems, Problem{Severity: SeverityError, Path: "$", Message: err.Error()})
	}
	if p, ok := decodeProblem(data); ok {
		return types.Config{}, []Problem{p}
	}
	return types.Config{}, problems
}

// decodeProblem explains why data does not decode as a config, if it does
// not: a syntax error located at the offending character, or a value of
// the wrong JSON type named by its field rather than by Go types.
func decodeProblem(data []byte) (Problem, bool) {
	var cfg types.Config
	err := json.Unmarshal(data, &cfg)
	if err == nil {
		return Problem{}, false
	}
	p := Problem{Severity: SeverityError, Path: "$"}
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		// Offset counts the bytes read, the offending one included.
		p.Line, p.Column = lineColumn(data, syn.Offset-1)
		p.Message = "not valid JSON: " + syn.Error()
	case errors.As(err, &typ):
		// The value ends at Offset; point at its start.
		p.Line, p.Column = lineColumn(data, valueStart(data, typ.Offset))
		p.Message = fmt.Sprintf("%s: got a JSON %s, want %s", fieldName(typ.Field), typ.Value, jsonKind(typ.Type))
	default:
		p.Message = "not valid JSON: " + err.Error()
	}
	return p, true
}

// lineColumn returns the 1-based line and column of byte offset off.
func lineColumn(data []byte, off int64) (int, int) {
	off = max(0, min(off, int64(len(data))))
	line, col := 1, 1
	for _, c := range data[:off] {
		if c == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return line, col
}

// valueStart walks back from the end of a JSON value to its first byte:
// past a string's opening quote, or to the start of a bare word.
func valueStart(data []byte, end int64) int64 {
	end = max(0, min(end, int64(len(data))))
	i := end - 1
	if i >= 0 && data[i] == '"' {
		for i--; i >= 0; i-- {
			if data[i] == '"' && (i == 0 || data[i-1] != '\\') {
				return i
			}
		}
		return 0
	}
	for i >= 0 && !strings.ContainsRune(" \t\r\n:,[{", rune(data[i])) {
		i--
	}
	return i + 1
}

// fieldName turns the decoder's Go field path ("storage.files.
// FileEmbedded1.mode") into the config's ("storage.files.mode").
func fieldName(goPath string) string {
	var parts []string
	for _, part := range strings.Split(goPath, ".") {
		if part == "" || part[0] >= 'A' && part[0] <= 'Z' {
			continue
		}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		return "the document"
	}
	return strings.Join(parts, ".")
}

// jsonKind names the JSON kind a Go type decodes from.
func jsonKind(t reflect.Type) string {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	}
	return "another type"
}

// fromReport converts a validation report.
func fromReport(r report.Report) []Problem {
	var out []Problem
	for _, e := range r.Entries {
		line, col := e.Marker.Start()
		sev := SeverityError
		if e.Kind != nil {
			sev = e.Kind.String()
		}
		out = append(out, Problem{
			Severity: sev,
			Path:     e.Context.String(),
			Line:     int(line),
			Column:   int(col),
			Message:  e.Message,
		})
	}
	return out
}

func hasError(ps []Problem) bool {
	for _, p := range ps {
		if p.Severity == SeverityError {
			return true
		}
	}
	return false
}

// versionProblem explains a missing, malformed or unsupported
// ignition.version, located in data when it can be.
func versionProblem(data []byte) Problem {
	var stub struct {
		Ignition struct {
			Version *string `json:"version"`
		} `json:"ignition"`
	}
	p := Problem{Severity: SeverityError, Path: "$.ignition.version"}
	_ = json.Unmarshal(data, &stub)
	switch v := stub.Ignition.Version; {
	case v == nil:
		p.Path = "$.ignition"
		p.Message = "ignition.version is missing (want " + supported + ")"
	case strings.HasPrefix(*v, "1.") || strings.HasPrefix(*v, "2."):
		p.Message = fmt.Sprintf("unsupported config version %q: spec 1.x and 2.x configs must be translated to 3.x (want %s)", *v, supported)
	default:
		p.Message = fmt.Sprintf("unsupported config version %q (want %s)", *v, supported)
	}
	if root, err := vjson.UnmarshalToContext(data); err == nil {
		ctx := path.New("json", "ignition", "version")
		if p.Path == "$.ignition" {
			ctx = path.New("json", tree.Key("ignition"))
		}
		if n, err := root.Get(ctx); err == nil {
			line, col := n.Start()
			p.Line, p.Column = int(line), int(col)
		}
	}
	return p
}
