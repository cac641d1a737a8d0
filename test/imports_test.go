// Package test holds Kindling's end-to-end and whole-tree tests.
package test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/kindlingboot/kindling"

// deps lists the non-standard packages pkg depends on, itself excluded.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go command not found: cannot list dependencies")
	}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
	}
	var ds []string
	for _, d := range strings.Fields(string(out)) {
		if d != pkg {
			ds = append(ds, d)
		}
	}
	return ds
}

// TestImportRules enforces the design's import rules: the domain packages
// are pure, and nothing imports cmd/ or test/.
func TestImportRules(t *testing.T) {
	for _, pkg := range []string{module + "/groups", module + "/profiles"} {
		if ds := deps(t, pkg); len(ds) > 0 {
			t.Errorf("%s must import only the standard library; it depends on %v", pkg, ds)
		}
	}
	for _, d := range deps(t, module+"/matchbox") {
		if strings.HasPrefix(d, module+"/cmd") || strings.HasPrefix(d, module+"/test") {
			t.Errorf("%s/matchbox depends on %s", module, d)
		}
	}
}
