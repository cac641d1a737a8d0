package render

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// MetadataEnv renders variables as an environment file: one KEY=value line
// per leaf, sorted by key, values shell-quoted so the file can be sourced.
// Nested objects join their keys with '_' (nested.a → NESTED_A). A list of
// scalars becomes one space-separated value; a list holding objects or
// lists is spread over indexed keys (LIST_0_NAME). Key characters that are
// not letters, digits or '_' become '_', a key starting with a digit gets a
// leading '_', and an empty key is skipped. When two keys become one name
// (a_b and a.b both give A_B) the one whose path sorts first wins.
func MetadataEnv(vars map[string]any) []byte {
	lines := make(map[string]string)
	flatten(lines, "", vars)
	keys := make([]string, 0, len(lines))
	for k := range lines {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(ShellQuote(lines[k]))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// MetadataJSON renders variables as a JSON object with sorted keys.
func MetadataJSON(vars map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // a query's & stays &, not \u0026
	enc.SetIndent("", "  ")
	if err := enc.Encode(vars); err != nil {
		return nil, fmt.Errorf("encoding metadata: %w", err)
	}
	return b.Bytes(), nil
}

var badKeyChars = regexp.MustCompile(`[^A-Za-z0-9_]`)

func envKey(prefix, k string) string {
	k = strings.ToUpper(badKeyChars.ReplaceAllString(k, "_"))
	if prefix == "" {
		if k[0] >= '0' && k[0] <= '9' {
			k = "_" + k // a shell variable name cannot start with a digit
		}
		return k
	}
	return prefix + "_" + k
}

// set records a leaf; the first writer of a name wins, and callers visit
// keys in sorted order, so the outcome never depends on map order.
func set(out map[string]string, k, v string) {
	if _, taken := out[k]; !taken {
		out[k] = v
	}
}

// namedKeys returns m's non-empty keys, sorted.
func namedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

func flatten(out map[string]string, prefix string, v any) {
	switch v := v.(type) {
	case map[string]any:
		for _, k := range namedKeys(v) {
			flatten(out, envKey(prefix, k), v[k])
		}
	case map[string]string:
		for _, k := range namedKeys(v) {
			set(out, envKey(prefix, k), v[k])
		}
	case []any:
		if scalars(v) {
			parts := make([]string, len(v))
			for i, x := range v {
				parts[i] = scalar(x)
			}
			set(out, prefix, strings.Join(parts, " "))
			return
		}
		for i, x := range v {
			flatten(out, envKey(prefix, strconv.Itoa(i)), x)
		}
	case []string:
		set(out, prefix, strings.Join(v, " "))
	default:
		set(out, prefix, scalar(v))
	}
}

func scalars(vs []any) bool {
	for _, v := range vs {
		switch v.(type) {
		case map[string]any, []any, map[string]string, []string:
			return false
		}
	}
	return true
}

func scalar(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case json.Number:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// ShellQuote quotes s for a POSIX shell: safe words as they are, anything
// else in single quotes.
func ShellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
