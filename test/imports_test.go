// Package test holds Kindling's end-to-end and whole-tree tests.
package test

import (
	"os"
	"os/exec"
	"path/filepath"
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

// TestAgentImports keeps the agent small and independent of the server:
// cmd/ignite and ignition/... never import the server side or the domain
// packages, and the agent builds without cgo to under 20 MiB.
func TestAgentImports(t *testing.T) {
	for _, d := range deps(t, module+"/cmd/ignite") {
		for _, banned := range []string{"/matchbox", "/groups", "/profiles", "/cmd/kindling", "/test", "/lab", "/assets"} {
			if d == module+banned || strings.HasPrefix(d, module+banned+"/") {
				t.Errorf("cmd/ignite depends on %s: the agent must not import the server side", d)
			}
		}
		for _, banned := range []string{"github.com/poseidon/matchbox", "github.com/coreos/butane", "go.etcd.io/", "google.golang.org/grpc", "github.com/prometheus/"} {
			if strings.HasPrefix(d, banned) {
				t.Errorf("cmd/ignite depends on %s: a server-side dependency in the agent", d)
			}
		}
	}
	bin := filepath.Join(t.TempDir(), "ignite")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/ignite")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build ./cmd/ignite: %v\n%s", err, out)
	}
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() > 20<<20 {
		t.Errorf("ignite is %.1f MiB, want under 20 MiB", float64(fi.Size())/(1<<20))
	}
	t.Logf("ignite (CGO_ENABLED=0, -s -w) is %.1f MiB", float64(fi.Size())/(1<<20))
}
