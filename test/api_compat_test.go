package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kindlingboot/kindling/matchbox"
	"github.com/kindlingboot/kindling/matchbox/api/apitest"
	"github.com/kindlingboot/kindling/matchbox/catalog"
)

// The JSON forms of matchbox's storagepb types, as test/matchboxclient
// reads and writes them (bytes fields are base64).
type (
	mbGroup struct {
		ID       string            `json:"id,omitempty"`
		Name     string            `json:"name,omitempty"`
		Profile  string            `json:"profile,omitempty"`
		Selector map[string]string `json:"selector,omitempty"`
		Metadata []byte            `json:"metadata,omitempty"`
	}
	mbBoot struct {
		Kernel string   `json:"kernel,omitempty"`
		Initrd []string `json:"initrd,omitempty"`
		Args   []string `json:"args,omitempty"`
	}
	mbProfile struct {
		ID         string  `json:"id,omitempty"`
		Name       string  `json:"name,omitempty"`
		IgnitionID string  `json:"ignition_id,omitempty"`
		CloudID    string  `json:"cloud_id,omitempty"`
		Boot       *mbBoot `json:"boot,omitempty"`
		GenericID  string  `json:"generic_id,omitempty"`
	}
	mbAnswer struct {
		Code      string          `json:"code"`
		Message   string          `json:"message"`
		Response  json.RawMessage `json:"response"`
		DialError string          `json:"dial_error"`
	}
)

var (
	mbClientOnce sync.Once
	mbClientBin  string
	mbClientErr  error
)

// buildMatchboxClient builds test/matchboxclient once per test binary.
func buildMatchboxClient(t *testing.T) string {
	t.Helper()
	mbClientOnce.Do(func() {
		dir, err := os.MkdirTemp("", "matchboxclient-")
		if err != nil {
			mbClientErr = err
			return
		}
		mbClientBin = filepath.Join(dir, "matchboxclient")
		out, err := exec.Command("go", "build", "-o", mbClientBin, "./matchboxclient").CombinedOutput()
		if err != nil {
			mbClientErr = fmt.Errorf("go build ./test/matchboxclient: %v\n%s", err, out)
		}
	})
	if mbClientErr != nil {
		t.Fatal(mbClientErr)
	}
	return mbClientBin
}

// mbClient is a running test/matchboxclient: one connection, commands in,
// answers out.
type mbClient struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startMatchboxClient(t *testing.T, endpoint, ca, cert, key string) (*mbClient, error) {
	t.Helper()
	args := []string{"-endpoint", endpoint, "-ca-file", ca, "-dial-timeout", "3s"}
	if cert != "" {
		args = append(args, "-cert-file", cert, "-key-file", key)
	}
	cmd := exec.Command(buildMatchboxClient(t), args...)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &mbClient{t: t, cmd: cmd, in: in, out: bufio.NewScanner(stdout)}
	c.out.Buffer(make([]byte, 1<<20), 64<<20)
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
		}
	})
	return c, nil
}

// call runs one RPC and returns the answer.
func (c *mbClient) call(rpc string, req any) mbAnswer {
	c.t.Helper()
	b, err := json.Marshal(map[string]any{"rpc": rpc, "request": req})
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.in.Write(append(b, '\n')); err != nil {
		c.t.Fatalf("%s: writing to matchboxclient: %v", rpc, err)
	}
	if !c.out.Scan() {
		c.t.Fatalf("%s: matchboxclient ended: %v", rpc, c.out.Err())
	}
	var a mbAnswer
	if err := json.Unmarshal(c.out.Bytes(), &a); err != nil {
		c.t.Fatalf("%s: answer %q: %v", rpc, c.out.Text(), err)
	}
	if a.DialError != "" {
		c.t.Fatalf("%s: matchboxclient could not connect: %s", rpc, a.DialError)
	}
	return a
}

// ok runs an RPC that must succeed and decodes its response into resp.
func (c *mbClient) ok(rpc string, req, resp any) {
	c.t.Helper()
	a := c.call(rpc, req)
	if a.Code != "OK" {
		c.t.Fatalf("%s(%v) = %s: %s, want OK", rpc, req, a.Code, a.Message)
	}
	if resp != nil {
		if err := json.Unmarshal(a.Response, resp); err != nil {
			c.t.Fatalf("%s: response %s: %v", rpc, a.Response, err)
		}
	}
}

// compatServer runs Kindling in this process with the control plane on
// 127.0.0.1 and returns its addresses.
func compatServer(t *testing.T, pki *apitest.PKI, data string) (rpcAddr, webURL string) {
	t.Helper()
	web, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rpc, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := matchbox.Config{Listener: web, RPCListener: rpc, CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CAFile: pki.CA, DataPath: data}
	if data == "" {
		cfg.Data = os.DirFS("../examples/default")
	}
	s, err := matchbox.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("server did not stop")
		}
	})
	return rpc.Addr().String(), "http://" + web.Addr().String()
}

func httpGet(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

const compatButane = "variant: fcos\nversion: 1.5.0\nstorage:\n  files:\n    - path: /etc/hostname\n      contents:\n        inline: {{.hostname}}\n"

// TestMatchboxClientCompat drives every RPC of matchbox's gRPC API through
// matchbox v0.11.0's own Go client against Kindling, in the order
// terraform-provider-matchbox uses them (a profile before its config), and
// checks the machine plane serves what was written.
func TestMatchboxClientCompat(t *testing.T) {
	tmp := t.TempDir()
	pki, err := apitest.NewPKI(filepath.Join(tmp, "tls"), "compat-ca")
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(tmp, "data")
	os.MkdirAll(data, 0o755)
	addr, web := compatServer(t, pki, data)
	c, err := startMatchboxClient(t, addr, pki.CA, pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}

	// terraform-provider-matchbox's matchbox_profile: ProfilePut, then the config.
	prof := mbProfile{ID: "worker", IgnitionID: "worker.yaml.tmpl", GenericID: "worker.generic",
		Boot: &mbBoot{Kernel: "/assets/vmlinuz", Initrd: []string{"--name main /assets/initramfs.img"}, Args: []string{"initrd=main", "ignition.config.url=http://x/ignition?mac=${mac:hexhyp}"}}}
	c.ok("ProfilePut", map[string]any{"profile": prof}, nil)
	c.ok("IgnitionPut", map[string]any{"name": "worker.yaml.tmpl", "config": []byte(compatButane)}, nil)
	c.ok("GenericPut", map[string]any{"name": "worker.generic", "config": []byte("name={{.hostname}}\n")}, nil)
	// A config-only profile as the provider sends it: an empty boot.
	c.ok("ProfilePut", map[string]any{"profile": mbProfile{ID: "raw", IgnitionID: "raw.ign", Boot: &mbBoot{}}}, nil)
	c.ok("IgnitionPut", map[string]any{"name": "raw.ign", "config": []byte(`{"ignition":{"version":"3.4.0"}}`)}, nil)
	// matchbox_group: metadata as a JSON object of strings.
	grp := mbGroup{ID: "node1", Name: "node1", Profile: "worker",
		Selector: map[string]string{"mac": "52:54:00:a1:9c:ae"}, Metadata: []byte(`{"hostname":"node1.example.com"}`)}
	c.ok("GroupPut", map[string]any{"group": grp}, nil)
	c.ok("GroupPut", map[string]any{"group": mbGroup{ID: "default", Profile: "raw", Metadata: []byte(`{}`)}}, nil)

	var gg struct{ Group mbGroup }
	c.ok("GroupGet", map[string]any{"id": "node1"}, &gg)
	if gg.Group.ID != "node1" || gg.Group.Profile != "worker" || gg.Group.Selector["mac"] != "52:54:00:a1:9c:ae" || string(gg.Group.Metadata) != `{"hostname":"node1.example.com"}` {
		t.Errorf("GroupGet(node1) = %+v (metadata %s)", gg.Group, gg.Group.Metadata)
	}
	// The provider reads metadata into a map of strings: it must decode.
	var md map[string]string
	if err := json.Unmarshal(gg.Group.Metadata, &md); err != nil {
		t.Errorf("GroupGet(node1) metadata %q does not decode as the provider decodes it: %v", gg.Group.Metadata, err)
	}
	var gl struct{ Groups []mbGroup }
	c.ok("GroupList", map[string]any{}, &gl)
	if len(gl.Groups) != 2 || gl.Groups[0].ID != "default" || gl.Groups[1].ID != "node1" {
		t.Errorf("GroupList = %+v, want default, node1", gl.Groups)
	}
	var pg struct{ Profile mbProfile }
	c.ok("ProfileGet", map[string]any{"id": "worker"}, &pg)
	if pg.Profile.IgnitionID != "worker.yaml.tmpl" || pg.Profile.Boot == nil || pg.Profile.Boot.Kernel != "/assets/vmlinuz" || len(pg.Profile.Boot.Args) != 2 {
		t.Errorf("ProfileGet(worker) = %+v", pg.Profile)
	}
	var pl struct{ Profiles []mbProfile }
	c.ok("ProfileList", map[string]any{}, &pl)
	if len(pl.Profiles) != 2 {
		t.Errorf("ProfileList = %+v, want raw, worker", pl.Profiles)
	}
	var ig struct{ Config []byte }
	c.ok("IgnitionGet", map[string]any{"name": "worker.yaml.tmpl"}, &ig)
	if string(ig.Config) != compatButane {
		t.Errorf("IgnitionGet = %q, want the Butane as written", ig.Config)
	}
	var gen struct{ Config []byte }
	c.ok("GenericGet", map[string]any{"name": "worker.generic"}, &gen)
	if string(gen.Config) != "name={{.hostname}}\n" {
		t.Errorf("GenericGet = %q", gen.Config)
	}
	var sg struct{ Group mbGroup }
	c.ok("SelectGroup", map[string]any{"labels": map[string]string{"mac": "52-54-00-A1-9C-AE"}}, &sg)
	if sg.Group.ID != "node1" {
		t.Errorf("SelectGroup(hyphenated upper-case mac) = %+v, want node1", sg.Group)
	}
	var sp struct{ Profile mbProfile }
	c.ok("SelectProfile", map[string]any{"labels": map[string]string{"mac": "52:54:00:a1:9c:ae"}}, &sp)
	if sp.Profile.ID != "worker" {
		t.Errorf("SelectProfile = %+v, want worker", sp.Profile)
	}
	c.ok("SelectProfile", map[string]any{"labels": map[string]string{"mac": "52:54:00:00:00:01"}}, &sp)
	if sp.Profile.ID != "raw" {
		t.Errorf("SelectProfile(other machine) = %+v, want raw (the default group's)", sp.Profile)
	}

	// The machine plane serves what was written, at once.
	for _, tt := range []struct{ path, want string }{
		{"/ipxe?mac=52:54:00:a1:9c:ae", "kernel /assets/vmlinuz initrd=main"},
		{"/ignition?mac=52:54:00:a1:9c:ae", `node1.example.com`},
		{"/generic?mac=52:54:00:a1:9c:ae", "name=node1.example.com"},
		{"/ignition?mac=52:54:00:00:00:01", `"version":"3.4.0"`},
	} {
		if status, body := httpGet(t, web+tt.path); status != 200 || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s = %d %q, want 200 with %q", tt.path, status, body, tt.want)
		}
	}

	// Mistakes: Kindling's codes, never a server path.
	for _, tt := range []struct {
		rpc  string
		req  any
		code string
		msg  string
	}{
		{"GroupGet", map[string]any{"id": "nope"}, "NotFound", `group "nope" does not exist`},
		{"ProfileGet", map[string]any{"id": "nope"}, "NotFound", `profile "nope" does not exist`},
		{"IgnitionGet", map[string]any{"name": "nope.ign"}, "NotFound", "ignition/nope.ign does not exist"},
		{"GenericGet", map[string]any{"name": "nope"}, "NotFound", "generic/nope does not exist"},
		{"SelectGroup", map[string]any{"labels": map[string]string{"mac": "nope"}}, "InvalidArgument", "not a MAC address"},
		{"GroupPut", map[string]any{"group": mbGroup{ID: "bad", Profile: "worker", Selector: map[string]string{"mac": "52:54:00"}}}, "InvalidArgument", "not a MAC address"},
		{"GroupPut", map[string]any{"group": mbGroup{ID: "../../escape", Profile: "worker"}}, "InvalidArgument", "not a valid id"},
		{"GroupPut", map[string]any{"group": mbGroup{ID: "noprofile"}}, "InvalidArgument", `field "profile": missing`},
		{"ProfilePut", map[string]any{"profile": mbProfile{ID: "p", Boot: &mbBoot{Args: []string{"x"}}}}, "InvalidArgument", `field "boot.kernel": missing`},
		{"IgnitionPut", map[string]any{"name": "../profiles/evil.json", "config": []byte("{}")}, "InvalidArgument", "not a valid file name"},
		{"IgnitionPut", map[string]any{"name": "sub/dir/x.ign", "config": []byte("{}")}, "InvalidArgument", "not a valid file name"},
		{"IgnitionPut", map[string]any{"name": "bad.ign", "config": []byte(`{"ignition":{"version":"3.9.0"}}`)}, "InvalidArgument", "invalid config"},
		{"IgnitionPut", map[string]any{"name": "bad.yaml", "config": []byte("variant: fcos\nversion: 1.5.0\nstorage: [\n")}, "InvalidArgument", "ignition/bad.yaml"},
		{"GenericPut", map[string]any{"name": "bad", "config": []byte("{{ .x ")}, "InvalidArgument", "does not parse"},
	} {
		a := c.call(tt.rpc, tt.req)
		if a.Code != tt.code || !strings.Contains(a.Message, tt.msg) {
			t.Errorf("%s(%v) = %s %q, want %s with %q", tt.rpc, tt.req, a.Code, a.Message, tt.code, tt.msg)
		}
		if strings.Contains(a.Message, tmp) {
			t.Errorf("%s: the error names a server path: %q", tt.rpc, a.Message)
		}
	}

	// terraform-provider-matchbox replaces a profile by deleting it and
	// putting it again while its groups stay: allowed, and meanwhile the
	// machine gets 404, not the default group.
	c.ok("ProfileDelete", map[string]any{"id": "worker"}, nil)
	if status, body := httpGet(t, web+"/ipxe?mac=52:54:00:a1:9c:ae"); status != 404 {
		t.Errorf("GET /ipxe while the profile is gone = %d %q, want 404", status, body)
	}
	prof.Boot.Args = []string{"initrd=main", "changed"}
	c.ok("ProfilePut", map[string]any{"profile": prof}, nil)
	if status, body := httpGet(t, web+"/ipxe?mac=52:54:00:a1:9c:ae"); status != 200 || !strings.Contains(body, "initrd=main changed") {
		t.Errorf("GET /ipxe after the profile came back = %d %q", status, body)
	}

	// Deletes succeed, also of what is gone.
	for range 2 {
		c.ok("GroupDelete", map[string]any{"id": "node1"}, nil)
		c.ok("ProfileDelete", map[string]any{"id": "worker"}, nil)
		c.ok("IgnitionDelete", map[string]any{"name": "worker.yaml.tmpl"}, nil)
		c.ok("GenericDelete", map[string]any{"name": "worker.generic"}, nil)
	}
	for _, tt := range []struct {
		rpc string
		req any
	}{
		{"GroupGet", map[string]any{"id": "node1"}},
		{"ProfileGet", map[string]any{"id": "worker"}},
		{"IgnitionGet", map[string]any{"name": "worker.yaml.tmpl"}},
		{"GenericGet", map[string]any{"name": "worker.generic"}},
	} {
		if a := c.call(tt.rpc, tt.req); a.Code != "NotFound" {
			t.Errorf("%s after delete = %s %q, want NotFound", tt.rpc, a.Code, a.Message)
		}
	}
	// No temporary file or stray path was left, and the directory loads.
	for _, sub := range []string{"groups", "profiles", "ignition", "generic"} {
		ents, _ := os.ReadDir(filepath.Join(data, sub))
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				t.Errorf("%s/%s left behind", sub, e.Name())
			}
		}
	}
	if _, err := catalog.Load(os.DirFS(data), catalog.Options{AllowDangling: true}); err != nil {
		t.Errorf("Load of what the matchbox client wrote: %v", err)
	}
}

// TestMatchboxClientReadOnly: with the embedded example data, reads work
// and writes are FailedPrecondition.
func TestMatchboxClientReadOnly(t *testing.T) {
	pki, err := apitest.NewPKI(filepath.Join(t.TempDir(), "tls"), "ro-ca")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := compatServer(t, pki, "")
	c, err := startMatchboxClient(t, addr, pki.CA, pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	var gl struct{ Groups []mbGroup }
	c.ok("GroupList", map[string]any{}, &gl)
	if len(gl.Groups) == 0 {
		t.Error("GroupList of the example data is empty")
	}
	a := c.call("GroupPut", map[string]any{"group": mbGroup{ID: "x", Profile: "live"}})
	if a.Code != "FailedPrecondition" || !strings.Contains(a.Message, "-data-path") {
		t.Errorf("GroupPut on embedded data = %s %q, want FailedPrecondition naming -data-path", a.Code, a.Message)
	}
}

// TestMatchboxClientMTLS: matchbox's client without a certificate, or with
// one from another CA, cannot connect.
func TestMatchboxClientMTLS(t *testing.T) {
	tmp := t.TempDir()
	pki, err := apitest.NewPKI(filepath.Join(tmp, "tls"), "mtls-ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := apitest.NewPKI(filepath.Join(tmp, "other"), "other-ca")
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(tmp, "data")
	os.MkdirAll(data, 0o755)
	addr, _ := compatServer(t, pki, data)
	for _, tt := range []struct{ name, cert, key string }{
		{"no client certificate", "", ""},
		{"client certificate from another CA", other.ClientCert, other.ClientKey},
	} {
		args := []string{"-endpoint", addr, "-ca-file", pki.CA, "-dial-timeout", "2s"}
		if tt.cert != "" {
			args = append(args, "-cert-file", tt.cert, "-key-file", tt.key)
		}
		cmd := exec.Command(buildMatchboxClient(t), args...)
		cmd.Stdin = strings.NewReader(`{"rpc":"GroupList","request":{}}` + "\n")
		out, err := cmd.Output()
		if err == nil || !strings.Contains(string(out), `"dial_error"`) {
			t.Errorf("%s: matchboxclient = %v, %s; want it unable to connect", tt.name, err, out)
		}
		t.Logf("%s: %s", tt.name, strings.TrimSpace(string(out)))
	}
}

// TestAPICrashSafety starts `kindling serve` as a process, fires a burst
// of writes from several clients, kills it with SIGKILL in the middle,
// then checks that every data file parses, that every acknowledged write
// is there, and that the server starts again on what is left.
func TestAPICrashSafety(t *testing.T) {
	bin := buildKindling(t)
	tmp := t.TempDir()
	pki, err := apitest.NewPKI(filepath.Join(tmp, "tls"), "crash-ca")
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(tmp, "data")
	for name, content := range map[string]string{
		"profiles/p.json":     `{"id":"p","boot":{"kernel":"/assets/k"},"ignition_id":"p.ign"}`,
		"ignition/p.ign":      `{"ignition":{"version":"3.4.0"}}`,
		"groups/default.json": `{"id":"default","profile":"p"}`,
	} {
		os.MkdirAll(filepath.Dir(filepath.Join(data, name)), 0o755)
		os.WriteFile(filepath.Join(data, name), []byte(content), 0o644)
	}
	tc, err := pki.ClientTLS(true)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: true}}
	serve := func() (*exec.Cmd, string, *lockedWriter) {
		rpc := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		cmd := exec.Command(bin, "serve", "-address", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "-rpc-address", rpc,
			"-data-path", data, "-cert-file", pki.ServerCert, "-key-file", pki.ServerKey, "-ca-file", pki.CA, "-log-level", "warn")
		logs := &lockedWriter{w: new(strings.Builder)}
		cmd.Stderr = logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			resp, err := client.Get("https://" + rpc + "/api/v1/groups")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return cmd, rpc, logs
				}
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("kindling serve did not answer within 20s: %v\n%s", err, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	cmd, rpc, _ := serve()
	var (
		mu    sync.Mutex
		acked = map[string]string{} // file → content acknowledged
	)
	const writers = 6
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var path, file, body string
				switch i % 3 {
				case 0, 1:
					id := fmt.Sprintf("w%d-%d", w, i)
					body = fmt.Sprintf(`{"profile":"p","selector":{"mac":"52:54:00:%02x:%02x:%02x"},"metadata":{"pad":%q}}`, w, i>>8&0xff, i&0xff, strings.Repeat("x", 2000))
					path, file = "/api/v1/groups/"+id, "groups/"+id+".json"
				case 2:
					id := fmt.Sprintf("w%d", w) // rewrites of one file: old or new, never torn
					body = fmt.Sprintf(`{"boot":{"kernel":"/assets/k-%d","args":[%q]}}`, i, strings.Repeat("y", 4000))
					path, file = "/api/v1/profiles/"+id, "profiles/"+id+".json"
				}
				req, _ := http.NewRequest("PUT", "https://"+rpc+path, strings.NewReader(body))
				resp, err := client.Do(req)
				if err != nil {
					return // the server is gone
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					acked[file] = body
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	close(stop)
	wg.Wait()
	if len(acked) < 10 {
		t.Fatalf("only %d writes were acknowledged before the kill; the burst was too short to test anything", len(acked))
	}
	t.Logf("%d files written and acknowledged before SIGKILL", len(acked))
	// Every file parses; temporary files may remain (the loader skips them).
	for _, sub := range []string{"groups", "profiles"} {
		ents, err := os.ReadDir(filepath.Join(data, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(data, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			var v map[string]any
			if err := json.Unmarshal(b, &v); err != nil {
				t.Errorf("%s/%s after SIGKILL does not parse: %v\n%q", sub, e.Name(), err, b)
			}
		}
	}
	if _, err := catalog.Load(os.DirFS(data), catalog.Options{AllowDangling: true}); err != nil {
		t.Errorf("Load after SIGKILL: %v", err)
	}
	// Restart: it loads, and every acknowledged write is there (profiles
	// rewritten by one writer hold its last acknowledged version or a
	// later one whose answer was lost).
	cmd, rpc, logs := serve()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	for file, body := range acked {
		kind, name, _ := strings.Cut(file, "/")
		id := strings.TrimSuffix(name, ".json")
		resp, err := client.Get("https://" + rpc + "/api/v1/" + kind + "/" + id)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("after restart, GET %s = %d: an acknowledged write was lost", file, resp.StatusCode)
			continue
		}
		if kind == "groups" && !strings.Contains(string(got), strings.Split(strings.Split(body, `"mac":"`)[1], `"`)[0]) {
			t.Errorf("after restart, %s = %s; want the acknowledged content %s", file, got, body)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(data, "groups"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".kindling-tmp-") {
			t.Errorf("groups/%s: the restart did not remove a temporary file", e.Name())
		}
	}
	if t.Failed() {
		t.Logf("server log:\n%s", logs.String())
	}
}

// lockedWriter serialises writes to w (exec copies stderr from a
// goroutine while the test may read it).
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprint(l.w)
}
