package boot

import (
	"fmt"
	"os"
	"strings"
)

// Arg is one kernel command line parameter.
type Arg struct {
	Key   string
	Value string
	// HasValue tells "key=" (empty value) from a bare "key".
	HasValue bool
}

// Cmdline is a parsed kernel command line.
type Cmdline struct {
	// Args are the parameters in order, quotes removed.
	Args []Arg
	// Values maps each key to its value; when a key repeats, the last
	// one wins, as for the kernel's own parameters. A bare key maps to "".
	Values map[string]string
	// Init are the words after "--", which the kernel hands to /init.
	Init []string
}

// ParseCmdline parses a kernel command line: parameters are separated by
// spaces; double quotes group spaces into a value (key="a b") or a whole
// parameter ("key=a b") and are removed.
func ParseCmdline(s string) Cmdline {
	c := Cmdline{Values: map[string]string{}}
	var words []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	for i, w := range words {
		if w == "--" {
			c.Init = append([]string{}, words[i+1:]...)
			break
		}
		k, v, ok := strings.Cut(w, "=")
		c.Args = append(c.Args, Arg{Key: k, Value: v, HasValue: ok})
		c.Values[k] = v
	}
	return c
}

// ReadCmdline reads and parses /proc/cmdline.
func ReadCmdline() (Cmdline, error) {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return Cmdline{}, fmt.Errorf("reading the kernel command line: %w", err)
	}
	return ParseCmdline(string(b)), nil
}

// Get returns the value of key and whether the key is present.
func (c Cmdline) Get(key string) (string, bool) {
	v, ok := c.Values[key]
	return v, ok
}

// Value returns the value of key, or "" when absent.
func (c Cmdline) Value(key string) string { return c.Values[key] }

// Has reports whether key is present, with or without a value.
func (c Cmdline) Has(key string) bool {
	_, ok := c.Values[key]
	return ok
}

// All returns every value of a repeated key, in order.
func (c Cmdline) All(key string) []string {
	var out []string
	for _, a := range c.Args {
		if a.Key == key {
			out = append(out, a.Value)
		}
	}
	return out
}
