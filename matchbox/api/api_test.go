package api_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/kindlingboot/kindling/matchbox"
	"github.com/kindlingboot/kindling/matchbox/api/apitest"
	"github.com/kindlingboot/kindling/matchbox/catalog"
)

const (
	rawIgn  = `{"ignition":{"version":"3.4.0"}}`
	butane  = "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/hostname\n      contents:\n        inline: {{.hostname}}\n"
	mac1    = "52:54:00:00:00:01"
	profile = `{"id":"p1","boot":{"kernel":"/assets/k1","initrd":["/assets/i1"],"args":["one"]},"ignition_id":"p1.ign"}`
)

// seed is a small data directory every test starts from.
var seed = map[string]string{
	"profiles/p1.json":    profile,
	"ignition/p1.ign":     rawIgn,
	"groups/default.json": `{"id":"default","profile":"p1"}`,
}

type env struct {
	t      *testing.T
	dir    string
	pki    *apitest.PKI
	api    string // https://127.0.0.1:PORT
	web    string // http://127.0.0.1:PORT (machine plane)
	client *http.Client
	srv    *matchbox.Server
}

type options struct {
	token    string // written to a token file when set
	noCA     bool   // no -ca-file
	embedded bool   // serve embedded (read-only) data
	files    map[string]string
}

func writeFiles(t testing.TB, dir string, files map[string]string) {
	t.Helper()
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// start runs a server with a data directory (seed plus o.files) and the
// control plane on 127.0.0.1 until the test ends.
func start(t testing.TB, o options) *env {
	t.Helper()
	e := &env{dir: t.TempDir()}
	if tt, ok := t.(*testing.T); ok {
		e.t = tt
	}
	pki, err := apitest.NewPKI(filepath.Join(e.dir, "tls"), "test-ca")
	if err != nil {
		t.Fatal(err)
	}
	e.pki = pki
	data := filepath.Join(e.dir, "data")
	writeFiles(t, data, seed)
	writeFiles(t, data, o.files)
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := matchbox.Config{
		Listener:    web,
		RPCListener: rpc,
		DataPath:    data,
		CertFile:    pki.ServerCert,
		KeyFile:     pki.ServerKey,
		CAFile:      pki.CA,
	}
	if o.noCA {
		cfg.CAFile = ""
	}
	if o.embedded {
		cfg.DataPath = ""
		mfs := fstest.MapFS{}
		for name, d := range seed {
			mfs[name] = &fstest.MapFile{Data: []byte(d)}
		}
		cfg.Data = mfs
	}
	if o.token != "" {
		cfg.APITokenFile = filepath.Join(e.dir, "token")
		if err := os.WriteFile(cfg.APITokenFile, []byte(o.token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s, err := matchbox.New(cfg)
	if err != nil {
		t.Fatalf("matchbox.New: %v", err)
	}
	e.srv = s
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("server did not stop within 15s")
		}
	})
	e.api = "https://" + rpc.Addr().String()
	e.web = "http://" + web.Addr().String()
	tc, err := pki.ClientTLS(true)
	if err != nil {
		t.Fatal(err)
	}
	e.client = httpClient(tc)
	return e
}

func httpClient(tc *tls.Config) *http.Client {
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}
}

// do sends one JSON API request and returns status and body.
func (e *env) do(t testing.TB, c *http.Client, method, path, body string, hdr ...string) (int, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.api+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestJSONAPI walks every endpoint in order: each step's request, the
// status it must answer, and substrings its body must hold.
func TestJSONAPI(t *testing.T) {
	e := start(t, options{})
	steps := []struct {
		name, method, path, body string
		status                   int
		want                     []string
	}{
		{"list groups", "GET", "/api/v1/groups", "", 200, []string{`"id": "default"`}},
		{"get missing group", "GET", "/api/v1/groups/nope", "", 404, []string{`"code": "not_found"`, `group \"nope\" does not exist`}},
		{"put group", "PUT", "/api/v1/groups/node1", `{"profile":"p1","selector":{"MAC":"52-54-00-00-00-01"},"metadata":{"hostname":"node1","n":3}}`, 200,
			[]string{`"id": "node1"`, `"mac": "52:54:00:00:00:01"`, `"n": 3`}},
		{"get group", "GET", "/api/v1/groups/node1", "", 200, []string{`"profile": "p1"`, `"hostname": "node1"`}},
		{"put group, list selector", "PUT", "/api/v1/groups/two", `{"id":"two","profile":"p1","selector":{"mac":["52:54:00:00:00:03","52:54:00:00:00:02"]}}`, 200,
			[]string{`"52:54:00:00:00:02",`, `"52:54:00:00:00:03"`}},
		{"list sorted", "GET", "/api/v1/groups", "", 200, []string{`"id": "default"`, `"id": "node1"`, `"id": "two"`}},
		{"id differs from URL", "PUT", "/api/v1/groups/a", `{"id":"b","profile":"p1"}`, 400, []string{`"code": "invalid_argument"`, `field \"id\" is \"b\" but the URL names \"a\"`}},
		{"bad mac", "PUT", "/api/v1/groups/bad", `{"profile":"p1","selector":{"mac":"52:54:zz"}}`, 400, []string{`field \"selector.mac\"`, `is not a MAC address`}},
		{"unknown field", "PUT", "/api/v1/groups/bad", `{"profile":"p1","selectors":{}}`, 400, []string{`unknown field \"selectors\"`}},
		{"not json", "PUT", "/api/v1/groups/bad", `{"profile":`, 400, []string{`invalid_argument`}},
		{"no profile field", "PUT", "/api/v1/groups/bad", `{}`, 400, []string{`field \"profile\": missing`}},
		{"dotdot id", "PUT", "/api/v1/groups/..", `{"profile":"p1"}`, 400, []string{`not a valid id`}},
		{"slash id", "PUT", "/api/v1/groups/a%2Fb", `{"profile":"p1"}`, 400, []string{`not a valid id`}},
		{"dotdot in id", "PUT", "/api/v1/groups/a..b", `{"profile":"p1"}`, 400, []string{`not a valid id`}},
		{"reserved ip twice", "PUT", "/api/v1/groups/ip2", `{"profile":"p1","selector":{"mac":"52:54:00:00:00:09"},"metadata":{"ip":"10.0.0.1"}}`, 200, nil},
		{"reserved ip clash", "PUT", "/api/v1/groups/ip3", `{"profile":"p1","selector":{"mac":"52:54:00:00:00:0a"},"metadata":{"ip":"10.0.0.1"}}`, 400, []string{`is already reserved for mac 52:54:00:00:00:09`}},
		{"delete group", "DELETE", "/api/v1/groups/two", "", 204, nil},
		{"delete missing group", "DELETE", "/api/v1/groups/two", "", 204, nil},
		{"get deleted", "GET", "/api/v1/groups/two", "", 404, nil},

		{"list profiles", "GET", "/api/v1/profiles", "", 200, []string{`"id": "p1"`, `"ignition_id": "p1.ign"`}},
		{"put profile", "PUT", "/api/v1/profiles/p2", `{"boot":{"kernel":"/assets/k2","args":["two","host={{.request.host}}"]},"generic_id":"p2.txt","ipxe_template":"x.ipxe"}`, 200,
			[]string{`"id": "p2"`, `"kernel": "/assets/k2"`, `"ipxe_template": "x.ipxe"`}},
		{"get profile", "GET", "/api/v1/profiles/p2", "", 200, []string{`"generic_id": "p2.txt"`}},
		{"profile without kernel", "PUT", "/api/v1/profiles/p3", `{"boot":{"args":["x"]}}`, 400, []string{`field \"boot.kernel\": missing`}},
		{"profile bad template", "PUT", "/api/v1/profiles/p3", `{"boot":{"kernel":"/k","args":["{{.x"]}}`, 400, []string{`field \"boot.args[0]\"`, `does not parse`}},
		{"profile bad file name", "PUT", "/api/v1/profiles/p3", `{"ignition_id":"../x"}`, 400, []string{`field \"ignition_id\"`, `not a valid file name`}},
		{"delete profile", "DELETE", "/api/v1/profiles/p2", "", 204, nil},
		{"delete missing profile", "DELETE", "/api/v1/profiles/p2", "", 204, nil},
		{"get missing profile", "GET", "/api/v1/profiles/p2", "", 404, []string{`profile \"p2\" does not exist`}},

		{"list ignition", "GET", "/api/v1/ignition", "", 200, []string{`"p1.ign"`}},
		{"get ignition", "GET", "/api/v1/ignition/p1.ign", "", 200, []string{rawIgn}},
		{"put butane", "PUT", "/api/v1/ignition/node.yaml", butane, 204, nil},
		{"get butane as written", "GET", "/api/v1/ignition/node.yaml", "", 200, []string{"{{.hostname}}"}},
		{"bad raw ignition", "PUT", "/api/v1/ignition/x.ign", `{"ignition":{"version":"9.9.9"}}`, 400, []string{`ignition/x.ign: invalid config`}},
		{"truncated raw ignition", "PUT", "/api/v1/ignition/x.ignition", `{"ignition":`, 400, []string{`ignition/x.ignition`}},
		{"bad butane", "PUT", "/api/v1/ignition/x.yaml", "variant: fcos\nversion: 9.9.9\n", 400, []string{`ignition/x.yaml: invalid config: butane`}},
		{"butane template does not parse", "PUT", "/api/v1/ignition/x.yaml", "variant: fcos\nversion: 1.5.0\n# {{.x\n", 400, []string{`butane template does not parse`}},
		{"bad ignition name", "PUT", "/api/v1/ignition/..", rawIgn, 400, []string{`not a valid file name`}},
		{"delete ignition", "DELETE", "/api/v1/ignition/node.yaml", "", 204, nil},
		{"delete missing ignition", "DELETE", "/api/v1/ignition/node.yaml", "", 204, nil},
		{"get missing ignition", "GET", "/api/v1/ignition/node.yaml", "", 404, []string{`ignition/node.yaml does not exist`}},

		{"put generic", "PUT", "/api/v1/generic/g.txt", "hello {{.hostname}}\n", 204, nil},
		{"list generic", "GET", "/api/v1/generic", "", 200, []string{`"g.txt"`}},
		{"get generic", "GET", "/api/v1/generic/g.txt", "", 200, []string{"hello {{.hostname}}"}},
		{"bad generic", "PUT", "/api/v1/generic/g2.txt", "{{if}}", 400, []string{`generic/g2.txt: template does not parse`}},
		{"delete generic", "DELETE", "/api/v1/generic/g.txt", "", 204, nil},
		{"empty generic list", "GET", "/api/v1/generic", "", 200, []string{`[]`}},

		{"select by mac", "GET", "/api/v1/select?mac=52-54-00-00-00-01", "", 200, []string{`"group": {`, `"id": "node1"`, `"profile": {`, `"kernel": "/assets/k1"`}},
		{"select default", "GET", "/api/v1/select?mac=52:54:00:00:00:99", "", 200, []string{`"id": "default"`}},
		{"select bad mac", "GET", "/api/v1/select?mac=zz", "", 400, []string{`not a MAC address`}},
		{"delete default", "DELETE", "/api/v1/groups/default", "", 204, nil},
		{"select nothing", "GET", "/api/v1/select?mac=52:54:00:00:00:99", "", 404, []string{`no group matches mac=52:54:00:00:00:99`}},

		{"events of a machine", "GET", "/api/v1/events?mac=" + mac1, "", 200, []string{`[`}},
		{"events: machines", "GET", "/api/v1/events", "", 200, []string{`"macs"`}},
		{"events: bad mac", "GET", "/api/v1/events?mac=zz", "", 400, []string{`invalid_argument`}},
		{"reports: none yet", "GET", "/api/v1/reports", "", 200, []string{`[]`}},
		{"report of a machine: none yet", "GET", "/api/v1/reports?mac=" + mac1, "", 404, []string{`no report from 52:54:00:00:00:01 yet`}},
		{"reports: bad mac", "GET", "/api/v1/reports?mac=zz", "", 400, []string{`invalid_argument`}},
		{"unknown endpoint", "GET", "/api/v1/nope", "", 404, []string{`not_found`}},
		{"outside the API", "GET", "/", "", 404, []string{`not_found`}},
		{"method not allowed", "POST", "/api/v1/groups/x", "{}", 405, []string{`method POST is not allowed`}},
	}
	for _, s := range steps {
		status, body := e.do(t, e.client, s.method, s.path, s.body)
		if status != s.status {
			t.Errorf("%s: %s %s = %d, want %d\n%s", s.name, s.method, s.path, status, s.status, body)
			continue
		}
		for _, w := range s.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s: %s %s: body lacks %q:\n%s", s.name, s.method, s.path, w, body)
			}
		}
		if status >= 400 && strings.Contains(body, e.dir) {
			t.Errorf("%s: %s %s: the error names a server path:\n%s", s.name, s.method, s.path, body)
		}
	}
	// What the API wrote is a data directory the loader accepts.
	if _, err := catalog.Load(os.DirFS(filepath.Join(e.dir, "data")), catalog.Options{AllowDangling: true}); err != nil {
		t.Errorf("Load of the data directory after the API's writes: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(e.dir, "data", "groups", "node1.json"))
	if err != nil || !strings.Contains(string(b), `"mac": "52:54:00:00:00:01"`) {
		t.Errorf("groups/node1.json = %q, %v; want the normalised group", b, err)
	}
}

// TestReportsAndEvents: what machines did on the machine plane is served
// on the control plane.
func TestReportsAndEvents(t *testing.T) {
	e := start(t, options{})
	if status, body := get(t, e.web+"/ipxe?mac="+mac1); status != 200 {
		t.Fatalf("GET /ipxe = %d %s", status, body)
	}
	resp, err := http.Post(e.web+"/report?mac="+mac1, "application/json", strings.NewReader(`{"result":"success","stages":["disks"]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 204 {
		t.Fatalf("POST /report = %d", resp.StatusCode)
	}
	for _, tt := range []struct{ path, want string }{
		{"/api/v1/events?mac=52-54-00-00-00-01", `"step": "ipxe"`},
		{"/api/v1/events", `"52:54:00:00:00:01"`},
		{"/api/v1/reports", `"result": "success"`},
		{"/api/v1/reports?mac=" + mac1, `"stages": [`},
	} {
		if status, body := e.do(t, e.client, "GET", tt.path, ""); status != 200 || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s = %d %s, want 200 with %q", tt.path, status, body, tt.want)
		}
	}
}

// TestReadYourWrites puts a group and, right after the write returns,
// asks the machine plane: the new profile's script must be served.
func TestReadYourWrites(t *testing.T) {
	e := start(t, options{})
	for i := range 50 {
		id := fmt.Sprintf("p%d", i+100)
		prof := fmt.Sprintf(`{"boot":{"kernel":"/assets/kernel-%d"}}`, i)
		if status, body := e.do(t, e.client, "PUT", "/api/v1/profiles/"+id, prof); status != 200 {
			t.Fatalf("PUT profile %s = %d\n%s", id, status, body)
		}
		group := fmt.Sprintf(`{"profile":%q,"selector":{"mac":%q}}`, id, mac1)
		if status, body := e.do(t, e.client, "PUT", "/api/v1/groups/node1", group); status != 200 {
			t.Fatalf("PUT group = %d\n%s", status, body)
		}
		status, body := get(t, e.web+"/ipxe?mac="+mac1)
		if want := fmt.Sprintf("kernel /assets/kernel-%d", i); status != 200 || !strings.Contains(body, want) {
			t.Fatalf("GET /ipxe right after PUT #%d = %d %q, want %q", i, status, body, want)
		}
	}
	// Deleting the group: the machine falls back to the default group at once.
	if status, _ := e.do(t, e.client, "DELETE", "/api/v1/groups/node1", ""); status != 204 {
		t.Fatalf("DELETE group = %d", status)
	}
	if status, body := get(t, e.web+"/ipxe?mac="+mac1); status != 200 || !strings.Contains(body, "kernel /assets/k1") {
		t.Fatalf("GET /ipxe after DELETE = %d %q, want the default group's kernel /assets/k1", status, body)
	}
}

// TestDangling: a profile may name a config not written yet, and a group a
// profile that is gone; machines get 404 with the reason, never another
// group, and the data directory still loads.
func TestDangling(t *testing.T) {
	e := start(t, options{})
	steps := []struct{ method, path, body string }{
		{"PUT", "/api/v1/profiles/late", `{"boot":{"kernel":"/k"},"ignition_id":"late.ign"}`},
		{"PUT", "/api/v1/groups/node1", `{"profile":"late","selector":{"mac":"` + mac1 + `"}}`},
	}
	for _, s := range steps {
		if status, body := e.do(t, e.client, s.method, s.path, s.body); status >= 300 {
			t.Fatalf("%s %s = %d\n%s", s.method, s.path, status, body)
		}
	}
	if status, body := get(t, e.web+"/ignition?mac="+mac1); status != 404 || !strings.Contains(body, "ignition/late.ign, which does not exist") {
		t.Errorf("GET /ignition with the config missing = %d %q, want 404 naming ignition/late.ign", status, body)
	}
	if status, _ := e.do(t, e.client, "PUT", "/api/v1/ignition/late.ign", rawIgn); status != 204 {
		t.Fatalf("PUT ignition = %d", status)
	}
	if status, body := get(t, e.web+"/ignition?mac="+mac1); status != 200 || !strings.Contains(body, `"3.4.0"`) {
		t.Errorf("GET /ignition after the config was written = %d %q", status, body)
	}
	if status, _ := e.do(t, e.client, "DELETE", "/api/v1/profiles/late", ""); status != 204 {
		t.Fatalf("DELETE profile = %d", status)
	}
	if status, body := get(t, e.web+"/ipxe?mac="+mac1); status != 404 || !strings.Contains(body, `names profile "late", which does not exist`) {
		t.Errorf("GET /ipxe with the profile gone = %d %q, want 404 (never the default group)", status, body)
	}
	if status, body := e.do(t, e.client, "GET", "/api/v1/select?mac="+mac1, ""); status != 404 || !strings.Contains(body, `names profile \"late\", which does not exist`) {
		t.Errorf("GET /select with the profile gone = %d %q", status, body)
	}
	// A restart loads what the API left.
	if _, err := catalog.Load(os.DirFS(filepath.Join(e.dir, "data")), catalog.Options{AllowDangling: true}); err != nil {
		t.Errorf("Load after dangling writes: %v", err)
	}
}

// TestConcurrentWriters: N writers putting M distinct groups each lose
// nothing, in the serving catalog or on disk.
func TestConcurrentWriters(t *testing.T) {
	e := start(t, options{})
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				id := fmt.Sprintf("w%d-g%d", w, i)
				body := fmt.Sprintf(`{"profile":"p1","selector":{"mac":"52:54:00:00:%02x:%02x"}}`, w, i)
				req, _ := http.NewRequest("PUT", e.api+"/api/v1/groups/"+id, strings.NewReader(body))
				resp, err := e.client.Do(req)
				if err != nil {
					errs <- err
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs <- fmt.Errorf("PUT %s = %d", id, resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	status, body := e.do(t, e.client, "GET", "/api/v1/groups", "")
	var gs []struct{ ID string }
	if err := json.Unmarshal([]byte(body), &gs); status != 200 || err != nil {
		t.Fatalf("GET /groups = %d, %v", status, err)
	}
	if len(gs) != writers*each+1 {
		t.Errorf("GET /groups lists %d groups, want %d", len(gs), writers*each+1)
	}
	ents, _ := os.ReadDir(filepath.Join(e.dir, "data", "groups"))
	if len(ents) != writers*each+1 {
		t.Errorf("groups/ holds %d files, want %d", len(ents), writers*each+1)
	}
	c, err := catalog.Load(os.DirFS(filepath.Join(e.dir, "data")), catalog.Options{})
	if err != nil {
		t.Fatalf("Load after concurrent writes: %v", err)
	}
	if n, _, _ := c.Counts(); n != writers*each+1 {
		t.Errorf("Load: %d groups, want %d", n, writers*each+1)
	}
}

// TestReadOnly: with the embedded data every write is 409, reads work.
func TestReadOnly(t *testing.T) {
	e := start(t, options{embedded: true})
	if status, body := e.do(t, e.client, "GET", "/api/v1/groups/default", ""); status != 200 {
		t.Errorf("GET group from embedded data = %d\n%s", status, body)
	}
	for _, r := range []struct{ method, path, body string }{
		{"PUT", "/api/v1/groups/x", `{"profile":"p1"}`},
		{"DELETE", "/api/v1/groups/default", ""},
		{"PUT", "/api/v1/ignition/x.ign", rawIgn},
	} {
		status, body := e.do(t, e.client, r.method, r.path, r.body)
		if status != 409 || !strings.Contains(body, `"code": "failed_precondition"`) || !strings.Contains(body, "start kindling serve with -data-path DIR") {
			t.Errorf("%s %s on embedded data = %d %s, want 409 failed_precondition", r.method, r.path, status, body)
		}
	}
}

// TestTokenAuth: with a token file, a request without a certificate needs
// the token; a certificate from the CA still works.
func TestTokenAuth(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	e := start(t, options{token: token})
	tc, err := e.pki.ClientTLS(false)
	if err != nil {
		t.Fatal(err)
	}
	noCert := httpClient(tc)
	tests := []struct {
		name   string
		c      *http.Client
		hdr    []string
		status int
	}{
		{"no certificate, no token", noCert, nil, 401},
		{"wrong token", noCert, []string{"Authorization", "Bearer nope-nope-nope-nope"}, 401},
		{"token", noCert, []string{"Authorization", "Bearer " + token}, 200},
		{"token, lower-case scheme", noCert, []string{"Authorization", "bearer " + token}, 200},
		{"certificate", e.client, nil, 200},
	}
	for _, tt := range tests {
		status, body := e.do(t, tt.c, "GET", "/api/v1/groups", "", tt.hdr...)
		if status != tt.status {
			t.Errorf("%s: GET /api/v1/groups = %d, want %d\n%s", tt.name, status, tt.status, body)
		}
		if status == 401 && !strings.Contains(body, `"code": "unauthenticated"`) {
			t.Errorf("%s: 401 body = %s", tt.name, body)
		}
	}
	// A certificate from another CA is refused even with a token.
	other, err := apitest.NewPKI(filepath.Join(t.TempDir(), "other"), "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	ftc, err := e.pki.ForeignClientTLS(other)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", e.api+"/api/v1/groups", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := httpClient(ftc).Do(req); err == nil {
		resp.Body.Close()
		t.Errorf("GET with a foreign client certificate = %d, want a refused handshake", resp.StatusCode)
	}
}

// TestTokenOnly: with a token and no CA, clients authenticate with the
// token alone, over HTTP/1.1 too.
func TestTokenOnly(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	e := start(t, options{token: token, noCA: true})
	tc, _ := e.pki.ClientTLS(true) // a certificate, which the server does not ask for
	h1 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	if status, body := e.do(t, h1, "GET", "/api/v1/groups", ""); status != 401 {
		t.Errorf("GET without the token = %d %s, want 401", status, body)
	}
	if status, body := e.do(t, h1, "GET", "/api/v1/groups", "", "Authorization", "Bearer "+token); status != 200 {
		t.Errorf("GET with the token over HTTP/1.1 = %d %s, want 200", status, body)
	}
}

// TestMTLSRefused: without a token, no certificate or a foreign one is
// refused during the handshake.
func TestMTLSRefused(t *testing.T) {
	e := start(t, options{})
	other, err := apitest.NewPKI(filepath.Join(t.TempDir(), "other"), "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	none, _ := e.pki.ClientTLS(false)
	foreign, _ := e.pki.ForeignClientTLS(other)
	for name, tc := range map[string]*tls.Config{"no client certificate": none, "client certificate from another CA": foreign} {
		resp, err := httpClient(tc).Get(e.api + "/api/v1/groups")
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: GET = %d, want the handshake refused", name, resp.StatusCode)
		}
	}
	// TLS 1.1 is refused too.
	old, _ := e.pki.ClientTLS(true)
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if resp, err := httpClient(old).Get(e.api + "/api/v1/groups"); err == nil {
		resp.Body.Close()
		t.Errorf("TLS 1.1: GET = %d, want refused", resp.StatusCode)
	}
}

func TestStartupErrors(t *testing.T) {
	dir := t.TempDir()
	pki, err := apitest.NewPKI(filepath.Join(dir, "tls"), "ca")
	if err != nil {
		t.Fatal(err)
	}
	writeFiles(t, filepath.Join(dir, "data"), seed)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	notPEM := filepath.Join(dir, "notpem")
	os.WriteFile(notPEM, []byte("hello\n"), 0o644)
	tests := []struct {
		name string
		edit func(*matchbox.Config)
		want string
	}{
		{"no cert", func(c *matchbox.Config) { c.CertFile = "" }, "-cert-file and -key-file are required"},
		{"no ca, no token", func(c *matchbox.Config) { c.CAFile = "" }, "-ca-file (clients with certificates) or -api-token-file"},
		{"ca not pem", func(c *matchbox.Config) { c.CAFile = notPEM }, "no PEM certificate"},
		{"short token", func(c *matchbox.Config) { c.APITokenFile = short }, "want at least 16"},
		{"missing key", func(c *matchbox.Config) { c.KeyFile = filepath.Join(dir, "nope") }, "-key-file"},
	}
	for _, tt := range tests {
		cfg := matchbox.Config{RPCAddress: "127.0.0.1:0", DataPath: filepath.Join(dir, "data"), CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CAFile: pki.CA}
		tt.edit(&cfg)
		_, err := matchbox.New(cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: New = %v, want an error with %q", tt.name, err, tt.want)
		}
	}
}

// TestLoadTolerance: with the control plane on, a data directory with a
// dangling reference loads (a crash between two writes leaves one).
func TestLoadTolerance(t *testing.T) {
	e := start(t, options{files: map[string]string{"groups/orphan.json": `{"id":"orphan","profile":"gone","selector":{"mac":"` + mac1 + `"}}`}})
	if status, body := get(t, e.web+"/ipxe?mac="+mac1); status != 404 || !strings.Contains(body, `profile "gone"`) {
		t.Errorf("GET /ipxe for a group naming a missing profile = %d %q, want 404", status, body)
	}
}

// BenchmarkPutGroup10k measures control-plane writes end to end — JSON
// over TLS, validation, the atomic write with its fsyncs, the catalog
// swap — with 10,000 groups loaded: one writer, and 8 at once.
func BenchmarkPutGroup10k(b *testing.B) {
	files := map[string]string{}
	for i := range 10_000 {
		files[fmt.Sprintf("groups/n%05d.json", i)] = fmt.Sprintf(`{"id":"n%05d","profile":"p1","selector":{"mac":"52:54:00:%02x:%02x:%02x"},"metadata":{"hostname":"n%d"}}`, i, i>>16&0xff, i>>8&0xff, i&0xff, i)
	}
	e := start(b, options{files: files})
	put := func(b *testing.B, i int) {
		body := fmt.Sprintf(`{"profile":"p1","selector":{"mac":"52:54:00:%02x:%02x:%02x"},"metadata":{"hostname":"w%d"}}`, i%10_000>>16&0xff, i%10_000>>8&0xff, i%10_000&0xff, i)
		if status, out := e.do(b, e.client, "PUT", fmt.Sprintf("/api/v1/groups/n%05d", i%10_000), body); status != 200 {
			b.Fatalf("PUT = %d %s", status, out)
		}
	}
	b.Run("1writer", func(b *testing.B) {
		for i := range b.N {
			put(b, i)
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	})
	b.Run("8writers", func(b *testing.B) {
		var wg sync.WaitGroup
		var next atomic.Int64
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1))
					if i > b.N {
						return
					}
					put(b, i)
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	})
}
