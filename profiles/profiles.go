// Package profiles holds the Profile type: what a machine boots (kernel,
// initrd, kernel arguments) and which configs it is served. Profiles are
// pure data; validation here checks their shape, and the catalog checks the
// files they name.
package profiles

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Profile is what a group of machines boots.
type Profile struct {
	// ID names the profile; it is the file name (without .json) in profiles/.
	ID string `json:"id"`
	// Name is a human description; empty is fine.
	Name string `json:"name,omitempty"`
	// Boot is the network boot: nil means the profile serves configs only,
	// and /ipxe and /grub answer 404 for it.
	Boot *Boot `json:"boot,omitempty"`
	// IgnitionID names a file in ignition/: .ign/.ignition files are raw
	// Ignition served as they are, anything else a Go-templated Butane file.
	// Empty means /ignition answers 404.
	IgnitionID string `json:"ignition_id,omitempty"`
	// GenericID names a Go-templated file in generic/; empty means /generic
	// answers 404.
	GenericID string `json:"generic_id,omitempty"`
	// CloudID is accepted so matchbox profiles load, and otherwise ignored
	// (matchbox's cloud-config endpoint is deprecated there and absent here).
	CloudID string `json:"cloud_id,omitempty"`
	// IPXETemplate names a file in templates/ rendered instead of the
	// built-in iPXE script; empty means the built-in one.
	IPXETemplate string `json:"ipxe_template,omitempty"`
	// GRUBTemplate names a file in templates/ rendered instead of the
	// built-in GRUB config; empty means the built-in one.
	GRUBTemplate string `json:"grub_template,omitempty"`
}

// Boot is a kernel, its initrds and its arguments. Every string is a Go
// template rendered with the machine's variables (so {{.mac}} works);
// iPXE's own ${var} syntax passes through untouched.
type Boot struct {
	// Kernel is the kernel URL or path, e.g. /assets/vmlinuz. Required.
	Kernel string `json:"kernel"`
	// Initrd lists initrds; each entry may carry iPXE options, e.g.
	// "--name main /assets/initrd.img".
	Initrd []string `json:"initrd,omitempty"`
	// Args are kernel arguments, joined with spaces.
	Args []string `json:"args,omitempty"`
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// ValidID reports whether id can name a profile (or a file a profile
// refers to): no path separators, no "..".
func ValidID(id string) bool { return idPattern.MatchString(id) && !strings.Contains(id, "..") }

// IDRule describes ValidID for error messages.
const IDRule = "letters, digits, '.', '_' and '-', starting with a letter or digit, no '..'"

// Validate checks the profile's own fields. The error names the field.
func (p *Profile) Validate() error {
	if p.ID == "" {
		return errors.New(`field "id": missing; every profile needs an id`)
	}
	if !ValidID(p.ID) {
		return fmt.Errorf("field \"id\": %q is not a valid id (%s)", p.ID, IDRule)
	}
	for field, name := range map[string]string{
		"ignition_id":   p.IgnitionID,
		"generic_id":    p.GenericID,
		"ipxe_template": p.IPXETemplate,
		"grub_template": p.GRUBTemplate,
	} {
		if name != "" && !ValidID(name) {
			return fmt.Errorf("field %q: %q is not a valid file name (%s)", field, name, IDRule)
		}
	}
	if p.Boot != nil && strings.TrimSpace(p.Boot.Kernel) == "" {
		return errors.New(`field "boot.kernel": missing; a boot section needs a kernel (or drop "boot" for a config-only profile)`)
	}
	if p.Boot != nil {
		for i, s := range p.Boot.Initrd {
			if strings.TrimSpace(s) == "" {
				return fmt.Errorf(`field "boot.initrd[%d]": empty; give a path or URL, or remove the entry`, i)
			}
		}
	}
	return nil
}

// IsRawIgnition reports whether an ignition_id names a raw Ignition file
// (served as is) rather than a Butane template.
func IsRawIgnition(name string) bool {
	return strings.HasSuffix(name, ".ign") || strings.HasSuffix(name, ".ignition")
}
