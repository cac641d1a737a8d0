// Package render turns a machine's profile and variables into the bytes
// served on the machine plane: iPXE scripts, GRUB configs, Ignition (raw or
// from Butane), generic templates and metadata. It is pure: no files, no
// network; the catalog feeds it parsed templates and caches what it makes.
package render

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/template"
)

// Boot is a profile's boot section after its templates were rendered.
type Boot struct {
	Kernel string   `json:"kernel"`
	Initrd []string `json:"initrd"`
	Args   []string `json:"args"`
}

// NewTemplate parses text as a Go template the way every template on the
// machine plane is parsed: a reference to a missing key is an error, never
// an empty string.
func NewTemplate(name, text string) (*template.Template, error) {
	return template.New(name).Option("missingkey=error").Parse(text)
}

// Execute renders t with data. The error says which template failed.
func Execute(t *template.Template, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, fmt.Errorf("rendering template %s: %w", t.Name(), err)
	}
	return b.Bytes(), nil
}

// IPXE is the built-in iPXE script: kernel with its arguments, one initrd
// line per entry (entries may carry iPXE options such as --name), boot.
func IPXE(b Boot) []byte {
	var w bytes.Buffer
	w.WriteString("#!ipxe\nkernel ")
	w.WriteString(b.Kernel)
	for _, a := range b.Args {
		w.WriteByte(' ')
		w.WriteString(a)
	}
	w.WriteByte('\n')
	for _, i := range b.Initrd {
		w.WriteString("initrd ")
		w.WriteString(i)
		w.WriteByte('\n')
	}
	w.WriteString("boot\n")
	return w.Bytes()
}

// GRUB is the built-in GRUB config: an EFI entry (linuxefi/initrdefi) and a
// BIOS fallback (linux/initrd), titled with the profile's name. Words with
// special characters are single-quoted, so '&', ';' and '$' in arguments
// reach the kernel as written instead of being GRUB syntax. iPXE-only pieces are dropped: an
// initrd entry's options (e.g. "--name main") keep only the path, and the
// initrd=NAME argument that names an iPXE initrd for the EFI stub is left
// out, since GRUB loads the initrd itself.
func GRUB(title string, b Boot) []byte {
	var w bytes.Buffer
	w.WriteString("default=0\nfallback=1\ntimeout=1\n")
	for _, e := range []struct{ suffix, linux, initrd string }{
		{"EFI", "linuxefi", "initrdefi"},
		{"BIOS", "linux", "initrd"},
	} {
		fmt.Fprintf(&w, "menuentry %s {\n", grubQuote(title+" ("+e.suffix+")"))
		w.WriteString("\techo \"Loading kernel\"\n")
		fmt.Fprintf(&w, "\t%s %s", e.linux, grubQuote(b.Kernel))
		for _, a := range b.Args {
			if strings.HasPrefix(a, "initrd=") {
				continue
			}
			w.WriteByte(' ')
			w.WriteString(grubQuote(a))
		}
		w.WriteByte('\n')
		if len(b.Initrd) > 0 {
			w.WriteString("\techo \"Loading initrd\"\n\t")
			w.WriteString(e.initrd)
			for _, i := range b.Initrd {
				f := strings.Fields(i)
				if len(f) == 0 {
					continue
				}
				w.WriteByte(' ')
				w.WriteString(grubQuote(f[len(f)-1]))
			}
			w.WriteByte('\n')
		}
		w.WriteString("}\n")
	}
	return w.Bytes()
}

// grubQuote single-quotes s for GRUB's shell-like parser when it holds
// anything but plain word characters: nothing inside single quotes is
// special, and a ' itself is written as '\”.
func grubQuote(s string) string {
	if grubPlain.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

var grubPlain = regexp.MustCompile(`^[A-Za-z0-9_@%+=:,./-]+$`)

// ErrConfig marks a config that does not parse, validate or render: the
// server answers 500 with the reason and never serves it.
var ErrConfig = errors.New("invalid config")
