package test

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestEtcd3ExampleDiscovery serves a copy of examples/etcd3 and asks for
// the discovery variant's config as each of the three machines would: all
// get the same discovery URL, named "etcd3", for 3 members, and the token
// it names answers etcd's size key.
func TestEtcd3ExampleDiscovery(t *testing.T) {
	files := map[string]string{}
	root := filepath.Join("..", "examples", "etcd3")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(root, p)
		files[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	base := serveDir(t, files)
	url := regexp.MustCompile(`--discovery (http://[^ ]+/discovery/[0-9a-f]{32})\b`)
	var first string
	for _, mac := range []string{"52-54-00-e7-cd-01", "52-54-00-e7-cd-02", "52-54-00-e7-cd-03"} {
		ign := fetch(t, base+"/ignition?mac="+mac+"&bootstrap=discovery")
		m := url.FindStringSubmatch(ign)
		if m == nil {
			t.Fatalf("Ignition for %s has no discovery URL:\n%s", mac, ign)
		}
		if first == "" {
			first = m[1]
		} else if m[1] != first {
			t.Errorf("machine %s got discovery URL %s, the first machine got %s", mac, m[1], first)
		}
	}
	resp, err := http.Get(first + "/_config/size")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"value":"3"`) {
		t.Errorf("GET %s/_config/size = %d %s, want size 3", first, resp.StatusCode, b)
	}
}
