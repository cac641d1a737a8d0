package render

import (
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
// not letters, digits or '_' become '_'.
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
	b, err := json.MarshalIndent(vars, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding metadata: %w", err)
	}
	return append(b, '\n'), nil
}

var badKeyChars = regexp.MustCompile(`[^A-Za-z0-9_]`)

func envKey(prefix, k string) string {
	k = strings.ToUpper(badKeyChars.ReplaceAllString(k, "_"))
	if prefix == "" {
		return k
	}
	return prefix + "_" + k
}

func flatten(out map[string]string, prefix string, v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			flatten(out, envKey(prefix, k), x)
		}
	case map[string]string:
		for k, x := range v {
			out[envKey(prefix, k)] = x
		}
	case []any:
		if scalars(v) {
			parts := make([]string, len(v))
			for i, x := range v {
				parts[i] = scalar(x)
			}
			out[prefix] = strings.Join(parts, " ")
			return
		}
		for i, x := range v {
			flatten(out, envKey(prefix, strconv.Itoa(i)), x)
		}
	case []string:
		out[prefix] = strings.Join(v, " ")
	default:
		out[prefix] = scalar(v)
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
