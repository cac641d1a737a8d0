package test

import (
	"os"
	"path/filepath"
	"testing"
)

// TestMain removes the binaries the tests build once per run (kindling,
// ignite, the matchbox client) from the temporary directory afterwards.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, bin := range []string{kindlingBin, igniteBin, mbClientBin} {
		if bin != "" {
			os.RemoveAll(filepath.Dir(bin))
		}
	}
	os.Exit(code)
}
