// Package examples holds example data directories, each a valid
// -data-path. The one in default/ is embedded in the kindling binary and
// served when no data directory is given.
package examples

import (
	"embed"
	"io/fs"
)

//go:embed all:default
var embedded embed.FS

// Default is the embedded default data directory. It is safe on any
// network: machines that are not listed by MAC boot a live system into
// RAM and nothing touches their disks.
var Default fs.FS

func init() {
	sub, err := fs.Sub(embedded, "default")
	if err != nil {
		panic(err) // the embed directive guarantees the directory
	}
	Default = sub
}
