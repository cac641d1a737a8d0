package test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kindlingboot/kindling/matchbox/api/certs"
	"github.com/kindlingboot/kindling/matchbox/api/client"
)

// tofuVersion is the OpenTofu release test/tofu.sh builds.
const tofuVersion = "v1.10.6"

// findTofu returns the OpenTofu binary: $KINDLING_TOFU, the cache
// test/tofu.sh fills, or tofu on PATH. Without one the test skips, except
// under CI, where .ci/run must have run test/tofu.sh.
func findTofu(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("KINDLING_TOFU"); p != "" {
		return p
	}
	cache := os.Getenv("KINDLING_TOFU_CACHE")
	if cache == "" {
		if dir, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(dir, "kindling")
		}
	}
	if cache != "" {
		p := filepath.Join(cache, "tofu-"+tofuVersion, "tofu")
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("tofu"); err == nil {
		return p
	}
	msg := "OpenTofu not found: run test/tofu.sh (builds " + tofuVersion + " from the module proxy into ~/.cache/kindling, about 2-6 minutes) or set KINDLING_TOFU"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI: .ci/run must run test/tofu.sh before go test)")
	}
	t.Skip(msg)
	return ""
}

// buildProvider builds cmd/terraform-provider-kindling into dir.
func buildProvider(t *testing.T, dir string) {
	t.Helper()
	out, err := exec.Command("go", "build", "-o", filepath.Join(dir, "terraform-provider-kindling"), "../cmd/terraform-provider-kindling").CombinedOutput()
	if err != nil {
		t.Fatalf("go build ./cmd/terraform-provider-kindling: %v\n%s", err, out)
	}
}

// tfServer is `kindling serve` with the control plane, as a subprocess so
// the test can take it down and bring it back on the same ports.
type tfServer struct {
	t                  *testing.T
	bin, data, certs   string
	machine, rpc       string // HOST:PORT
	log                string
	cmd                *exec.Cmd
	done               chan error
	api                *client.Client
	machineHTTP        *http.Client
	startedAt, readyAt time.Time
}

func (s *tfServer) start() {
	t := s.t
	t.Helper()
	logf, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(s.bin, "serve",
		"-address", s.machine,
		"-data-path", s.data,
		"-rpc-address", s.rpc,
		"-cert-file", filepath.Join(s.certs, certs.ServerCert),
		"-key-file", filepath.Join(s.certs, certs.ServerKey),
		"-ca-file", filepath.Join(s.certs, certs.CACert),
		"-log-level", "debug")
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.startedAt = time.Now()
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting kindling serve: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait(); logf.Close() }()
	s.done = done
	// Ready when the control plane answers an authenticated request.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := s.api.GroupList(ctx)
		cancel()
		if err == nil {
			s.readyAt = time.Now()
			return
		}
		select {
		case werr := <-done:
			t.Fatalf("kindling serve exited before it was ready: %v\n%s", werr, s.tail())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("kindling serve: control plane at %s not ready after 30s: %v\n%s", s.rpc, err, s.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *tfServer) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(15 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
		s.t.Errorf("kindling serve did not stop within 15s of SIGTERM\n%s", s.tail())
	}
	s.cmd = nil
}

func (s *tfServer) tail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// get asks the machine plane, as a booting machine would.
func (s *tfServer) get(path string) (int, string) {
	s.t.Helper()
	resp, err := s.machineHTTP.Get("http://" + s.machine + path)
	if err != nil {
		s.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (s *tfServer) mustGet(path string) string {
	s.t.Helper()
	code, body := s.get(path)
	if code != http.StatusOK {
		s.t.Fatalf("GET %s = %d %q, want 200", path, code, body)
	}
	return body
}

// dataFiles lists the files under the data directory's groups, profiles,
// ignition and generic, as "groups/node1.json".
func (s *tfServer) dataFiles() []string {
	var out []string
	for _, dir := range []string{"generic", "groups", "ignition", "profiles"} {
		ents, _ := os.ReadDir(filepath.Join(s.data, dir))
		for _, e := range ents {
			if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
				out = append(out, dir+"/"+e.Name())
			}
		}
	}
	sort.Strings(out)
	return out
}

// tofu runs OpenTofu commands in one working directory.
type tofu struct {
	t        *testing.T
	bin, dir string
	env      []string
}

// run runs tofu args and returns its combined output and exit code.
func (tf *tofu) run(args ...string) (string, int) {
	tf.t.Helper()
	start := time.Now()
	cmd := exec.Command(tf.bin, args...)
	cmd.Dir, cmd.Env = tf.dir, tf.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		tf.t.Fatalf("tofu %s: %v", strings.Join(args, " "), err)
	}
	tf.t.Logf("tofu %s: exit %d in %v", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond))
	return out.String(), code
}

// must runs tofu args and fails the test unless it exits with want.
func (tf *tofu) must(want int, args ...string) string {
	tf.t.Helper()
	out, code := tf.run(args...)
	if code != want {
		tf.t.Fatalf("tofu %s: exit %d, want %d\n%s", strings.Join(args, " "), code, want, out)
	}
	return out
}

func (tf *tofu) write(config string) {
	tf.t.Helper()
	if err := os.WriteFile(filepath.Join(tf.dir, "main.tf"), []byte(config), 0o644); err != nil {
		tf.t.Fatal(err)
	}
}

// stateResources lists the resources in terraform.tfstate.
func (tf *tofu) stateResources() []string {
	tf.t.Helper()
	b, err := os.ReadFile(filepath.Join(tf.dir, "terraform.tfstate"))
	if err != nil {
		tf.t.Fatalf("reading the state: %v", err)
	}
	var st struct {
		Resources []struct {
			Type, Name string
		} `json:"resources"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		tf.t.Fatalf("parsing the state: %v", err)
	}
	var out []string
	for _, r := range st.Resources {
		out = append(out, r.Type+"."+r.Name)
	}
	sort.Strings(out)
	return out
}

// planActions runs `tofu plan -out` and `tofu show -json` and returns each
// resource's planned actions ("kindling_group.node1": "update"), leaving
// out resources with nothing to do.
func (tf *tofu) planActions() map[string]string {
	tf.t.Helper()
	tf.must(2, "plan", "-input=false", "-no-color", "-detailed-exitcode", "-out=change.tfplan")
	out := tf.must(0, "show", "-json", "-no-color", "change.tfplan")
	var plan struct {
		ResourceChanges []struct {
			Address string `json:"address"`
			Change  struct {
				Actions []string `json:"actions"`
			} `json:"change"`
		} `json:"resource_changes"`
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		tf.t.Fatalf("tofu show -json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, rc := range plan.ResourceChanges {
		if a := strings.Join(rc.Change.Actions, ","); a != "no-op" {
			got[rc.Address] = a
		}
	}
	return got
}

// noChanges asserts that a plan finds nothing to do (no drift).
func (tf *tofu) noChanges(when string) {
	tf.t.Helper()
	out, code := tf.run("plan", "-input=false", "-no-color", "-detailed-exitcode")
	if code != 0 {
		tf.t.Fatalf("%s: tofu plan -detailed-exitcode: exit %d, want 0 (no changes)\n%s", when, code, out)
	}
}

// trapProxy is an HTTP(S) proxy that only counts connections: tofu gets it
// as HTTPS_PROXY, so any attempt to reach a registry or checkpoint fails
// and is counted.
func trapProxy(t *testing.T) (addr string, conns *atomic.Int32) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	conns = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), conns
}

// tfConfig is the Terraform configuration of one step of the test.
type tfConfig struct {
	Endpoint, Certs string
	Args            []string // the worker profile's kernel args
	DiskSize        int      // node1's metadata.disk.size
	Ignition        string   // "butane", "raw" or "broken" (not Ignition)
	// LiteralProfile names the groups' profile as a string instead of a
	// reference, so a targeted plan refreshes a group alone.
	LiteralProfile bool
}

func (c tfConfig) String() string {
	quoted := make([]string, len(c.Args))
	for i, a := range c.Args {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	ign := `butane = <<-EOT
    variant: fcos
    version: 1.5.0
    storage:
      files:
        - path: /etc/hostname
          mode: 0644
          contents:
            inline: {{.name}}
        - path: /etc/disk
          contents:
            inline: "{{.disk.dev}} {{.disk.size}}"
  EOT`
	if c.Ignition == "broken" {
		ign = `raw_ignition = "{\"ignition\": {\"version\": \"nine\"}}"`
	}
	if c.Ignition == "raw" {
		ign = `raw_ignition = jsonencode({
    ignition = { version = "3.4.0" }
    storage  = { files = [{ path = "/etc/raw", contents = { source = "data:,raw%20config" } }] }
  })`
	}
	profile := "kindling_profile.worker.name"
	if c.LiteralProfile {
		profile = `"worker"`
	}
	return fmt.Sprintf(`terraform {
  required_providers {
    kindling = { source = "kindlingboot/kindling" }
  }
}

provider "kindling" {
  endpoint    = %q
  ca          = file("%s/ca.crt")
  client_cert = file("%s/client.crt")
  client_key  = file("%s/client.key")
}

resource "kindling_profile" "worker" {
  name    = "worker"
  kernel  = "/assets/worker/vmlinuz"
  initrd  = ["/assets/worker/initrd.img"]
  args    = [%s]
  generic = "name={{.name}} size={{.disk.size}}\n"
  %s
}

resource "kindling_group" "node1" {
  name     = "node1"
  profile  = %[8]s
  selector = { mac = "52:54:00:aa:bb:01" }
  metadata = {
    name    = "node1"
    disk    = { dev = "/dev/vda", size = %[7]d }
    tags    = ["etcd", "controller"]
    primary = true
    weight  = 0.5
    empty   = {}
  }
}

# A MAC spelled differently from how the server stores it: no drift.
resource "kindling_group" "node2" {
  name     = "node2"
  profile  = %[8]s
  selector = { MAC = "52-54-00-AA-BB-02" }
  metadata = {
    name = "node2"
    disk = { dev = "/dev/sda", size = 1 }
  }
}
`, c.Endpoint, c.Certs, c.Certs, c.Certs, strings.Join(quoted, ", "), ign, c.DiskSize, profile)
}

// ignitionFile returns the decoded contents of path in an Ignition config.
func ignitionFile(t *testing.T, config, path string) string {
	t.Helper()
	var cfg struct {
		Storage struct {
			Files []struct {
				Path     string `json:"path"`
				Contents struct {
					Source      string `json:"source"`
					Compression string `json:"compression"`
				} `json:"contents"`
			} `json:"files"`
		} `json:"storage"`
	}
	if err := json.Unmarshal([]byte(config), &cfg); err != nil {
		t.Fatalf("Ignition config does not parse: %v\n%s", err, config)
	}
	for _, f := range cfg.Storage.Files {
		if f.Path != path {
			continue
		}
		src, ok := strings.CutPrefix(f.Contents.Source, "data:")
		header, data, ok2 := strings.Cut(src, ",")
		if !ok || !ok2 {
			t.Fatalf("Ignition file %s: source %q is not a data URL", path, f.Contents.Source)
		}
		var b []byte
		if strings.HasSuffix(header, ";base64") {
			var err error
			if b, err = base64.StdEncoding.DecodeString(data); err != nil {
				t.Fatalf("Ignition file %s: %v", path, err)
			}
		} else {
			s, err := url.PathUnescape(data)
			if err != nil {
				t.Fatalf("Ignition file %s: %v", path, err)
			}
			b = []byte(s)
		}
		if f.Contents.Compression == "gzip" {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatalf("Ignition file %s: %v", path, err)
			}
			if b, err = io.ReadAll(zr); err != nil {
				t.Fatalf("Ignition file %s: %v", path, err)
			}
		}
		return string(b)
	}
	t.Fatalf("Ignition config has no file %s:\n%s", path, config)
	return ""
}

// TestTerraformProvider drives the provider with real OpenTofu against a
// real `kindling serve`: apply, machines see the config; change a field,
// the plan is an in-place update; no drift; import; switch Butane to raw
// Ignition; a group deleted behind Terraform's back is planned again; an
// outage fails plans without touching state; destroy, machines get 404.
func TestTerraformProvider(t *testing.T) {
	if runtime.GOOS != "linux" && runtime.GOOS != "darwin" {
		t.Skip("needs a Unix system (SIGTERM to the server)")
	}
	tofuBin := findTofu(t)
	start := time.Now()
	dir := t.TempDir()
	pluginDir := filepath.Join(dir, "plugins")
	os.Mkdir(pluginDir, 0o755)
	buildProvider(t, pluginDir)
	kindling := buildKindling(t)
	t.Logf("built the provider and kindling in %v", time.Since(start).Round(time.Millisecond))

	certDir := filepath.Join(dir, "certs")
	if err := certs.Init(certDir, certs.Options{ServerNames: []string{"localhost"}, IPs: []net.IP{net.ParseIP("127.0.0.1")}}); err != nil {
		t.Fatalf("certs.Init: %v", err)
	}
	data := filepath.Join(dir, "data")
	for _, d := range []string{"groups", "profiles", "ignition", "generic"} {
		if err := os.MkdirAll(filepath.Join(data, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	srv := &tfServer{
		t: t, bin: kindling, data: data, certs: certDir,
		machine:     fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		rpc:         fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		log:         filepath.Join(dir, "kindling.log"),
		machineHTTP: &http.Client{Timeout: 10 * time.Second},
	}
	api, err := client.New(client.Config{
		Endpoint: srv.rpc,
		CAFile:   filepath.Join(certDir, certs.CACert),
		CertFile: filepath.Join(certDir, certs.ClientCert),
		KeyFile:  filepath.Join(certDir, certs.ClientKey),
		// The readiness poll retries itself.
		MaxAttempts: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.api = api
	srv.start()
	t.Cleanup(srv.stop)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kindling serve log (end):\n%s", srv.tail())
		}
	})

	// dev_overrides makes every command use the provider just built; the
	// filesystem mirror holds the same binary under a version so that
	// `tofu init` resolves the provider offline (with dev_overrides alone
	// it asks the registry).
	mirror := filepath.Join(dir, "mirror")
	platform := runtime.GOOS + "_" + runtime.GOARCH
	pkgDir := filepath.Join(mirror, "registry.opentofu.org", "kindlingboot", "kindling", "0.1.0", platform)
	if err := os.MkdirAll(pkgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(pluginDir, "terraform-provider-kindling"), filepath.Join(pkgDir, "terraform-provider-kindling_v0.1.0")); err != nil {
		t.Fatal(err)
	}
	cliConfig := filepath.Join(dir, "tofurc")
	if err := os.WriteFile(cliConfig, []byte(fmt.Sprintf(`provider_installation {
  dev_overrides {
    "kindlingboot/kindling" = %q
  }
  filesystem_mirror {
    path    = %q
    include = ["kindlingboot/kindling"]
  }
}
`, pluginDir, mirror)), 0o644); err != nil {
		t.Fatal(err)
	}
	proxy, proxied := trapProxy(t)
	work := filepath.Join(dir, "work")
	os.Mkdir(work, 0o755)
	tf := &tofu{t: t, bin: tofuBin, dir: work, env: []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + dir,
		"TF_CLI_CONFIG_FILE=" + cliConfig,
		"TF_IN_AUTOMATION=1",
		"TF_INPUT=0",
		"CHECKPOINT_DISABLE=1",
		"TF_DATA_DIR=" + filepath.Join(dir, "tfdata"),
		// Anything tofu tries to fetch goes to the trap (and fails); the
		// provider reaches the server directly.
		"HTTPS_PROXY=http://" + proxy,
		"HTTP_PROXY=http://" + proxy,
		"NO_PROXY=127.0.0.1,localhost",
	}}
	t.Cleanup(func() {
		if n := proxied.Load(); n != 0 {
			t.Errorf("tofu tried to reach the network %d times (through the trap proxy); it must use the dev_overrides provider only", n)
		}
	})

	const mac1, mac2 = "52:54:00:aa:bb:01", "52:54:00:aa:bb:02"
	cfg := tfConfig{
		Endpoint: srv.rpc, Certs: certDir,
		Args:     []string{"console=ttyS0", "kindling.name={{.name}}"},
		DiskSize: 10, Ignition: "butane",
	}

	// 1. Init (offline), create.
	tf.write(cfg.String())
	if out := tf.must(0, "init", "-input=false", "-no-color"); !strings.Contains(out, "successfully initialized") {
		t.Errorf("tofu init: no success message\n%s", out)
	}
	out := tf.must(0, "apply", "-auto-approve", "-input=false", "-no-color")
	if !strings.Contains(out, "Apply complete! Resources: 3 added, 0 changed, 0 destroyed.") {
		t.Fatalf("tofu apply (create): want 3 added\n%s", out)
	}
	if got, want := strings.Join(srv.dataFiles(), " "), "generic/worker groups/node1.json groups/node2.json ignition/worker.yaml profiles/worker.json"; got != want {
		t.Errorf("data directory after create = %s, want %s", got, want)
	}
	ipxe := srv.mustGet("/ipxe?mac=" + mac1)
	for _, want := range []string{"/assets/worker/vmlinuz", "console=ttyS0", "kindling.name=node1", "/assets/worker/initrd.img"} {
		if !strings.Contains(ipxe, want) {
			t.Errorf("GET /ipxe?mac=%s after create = %q, want it to contain %q", mac1, ipxe, want)
		}
	}
	if got := ignitionFile(t, srv.mustGet("/ignition?mac="+mac1), "/etc/disk"); got != "/dev/vda 10" {
		t.Errorf("node1 /etc/disk after create = %q, want %q", got, "/dev/vda 10")
	}
	if got := ignitionFile(t, srv.mustGet("/ignition?mac="+mac2), "/etc/hostname"); got != "node2" {
		t.Errorf("node2 /etc/hostname after create = %q, want node2", got)
	}
	if got := srv.mustGet("/generic?mac=" + mac2); got != "name=node2 size=1\n" {
		t.Errorf("GET /generic?mac=%s = %q, want %q", mac2, got, "name=node2 size=1\n")
	}
	tf.noChanges("after create")

	// 2. Change kernel args and a metadata value: updates in place.
	cfg.Args = []string{"console=ttyS0", "kindling.name={{.name}}", "quiet"}
	cfg.DiskSize = 20
	tf.write(cfg.String())
	if got, want := fmt.Sprint(tf.planActions()), "map[kindling_group.node1:update kindling_profile.worker:update]"; got != want {
		t.Errorf("plan after changing args and metadata: actions %s, want %s", got, want)
	}
	out = tf.must(0, "plan", "-input=false", "-no-color")
	if !strings.Contains(out, "update in-place") || !strings.Contains(out, "Plan: 0 to add, 2 to change, 0 to destroy.") {
		t.Errorf("tofu plan after the change: want 2 in-place updates, 0 to destroy\n%s", out)
	}
	out = tf.must(0, "apply", "-input=false", "-no-color", "change.tfplan")
	if !strings.Contains(out, "Resources: 0 added, 2 changed, 0 destroyed.") {
		t.Errorf("tofu apply (change): want 2 changed\n%s", out)
	}
	if ipxe := srv.mustGet("/ipxe?mac=" + mac1); !strings.Contains(ipxe, "quiet") {
		t.Errorf("GET /ipxe?mac=%s after the change = %q, want the new arg quiet", mac1, ipxe)
	}
	if got := ignitionFile(t, srv.mustGet("/ignition?mac="+mac1), "/etc/disk"); got != "/dev/vda 20" {
		t.Errorf("node1 /etc/disk after the change = %q, want %q", got, "/dev/vda 20")
	}
	tf.noChanges("after the change")

	// 2b. A write the server refuses: the apply fails with its reason,
	// machines keep what they had, the state too.
	cfg.Ignition = "broken"
	tf.write(cfg.String())
	out, code := tf.run("apply", "-auto-approve", "-input=false", "-no-color")
	if code != 1 || !strings.Contains(out, "Writing Kindling profile worker") || !strings.Contains(out, "invalid argument") {
		t.Errorf("tofu apply with an invalid Ignition config: exit %d, want 1 with the server's reason\n%s", code, out)
	}
	if got := ignitionFile(t, srv.mustGet("/ignition?mac="+mac1), "/etc/disk"); got != "/dev/vda 20" {
		t.Errorf("node1 /etc/disk after a refused write = %q, want %q", got, "/dev/vda 20")
	}
	cfg.Ignition = "butane"
	tf.write(cfg.String())
	tf.noChanges("after a refused write")

	// 3. Import: forget both resources, give them descriptions (a field
	// the resources do not manage) on the server, import them by id: no
	// drift.
	for _, addr := range []string{"kindling_group.node1", "kindling_profile.worker"} {
		tf.must(0, "state", "rm", "-no-color", addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const groupDesc, profileDesc = "node one, rack 3", "worker nodes"
	described, err := api.GroupGet(ctx, "node1")
	if err != nil {
		t.Fatalf("GroupGet(node1): %v", err)
	}
	described.Name = groupDesc
	if _, err := api.GroupPut(ctx, described); err != nil {
		t.Fatalf("GroupPut(node1 with a description): %v", err)
	}
	worker, err := api.ProfileGet(ctx, "worker")
	if err != nil {
		t.Fatalf("ProfileGet(worker): %v", err)
	}
	worker.Name = profileDesc
	if _, err := api.ProfilePut(ctx, worker); err != nil {
		t.Fatalf("ProfilePut(worker with a description): %v", err)
	}
	tf.must(0, "import", "-input=false", "-no-color", "kindling_profile.worker", "worker")
	tf.must(0, "import", "-input=false", "-no-color", "kindling_group.node1", "node1")
	tf.noChanges("after import")

	// 4. Butane to raw Ignition, and a metadata value: updates in place;
	// the old file goes; the descriptions stay.
	cfg.Ignition = "raw"
	cfg.DiskSize = 30
	tf.write(cfg.String())
	if got, want := fmt.Sprint(tf.planActions()), "map[kindling_group.node1:update kindling_profile.worker:update]"; got != want {
		t.Errorf("plan after switching to raw_ignition: actions %s, want %s", got, want)
	}
	tf.must(0, "apply", "-input=false", "-no-color", "change.tfplan")
	if got, want := strings.Join(srv.dataFiles(), " "), "generic/worker groups/node1.json groups/node2.json ignition/worker.ign profiles/worker.json"; got != want {
		t.Errorf("data directory after switching to raw_ignition = %s, want %s", got, want)
	}
	if got := ignitionFile(t, srv.mustGet("/ignition?mac="+mac1), "/etc/raw"); got != "raw config" {
		t.Errorf("node1 /etc/raw after switching to raw_ignition = %q, want %q", got, "raw config")
	}
	if got, want := srv.mustGet("/generic?mac="+mac1), "name=node1 size=30\n"; got != want {
		t.Errorf("GET /generic?mac=%s after the update = %q, want %q", mac1, got, want)
	}
	if g, err := api.GroupGet(ctx, "node1"); err != nil || g.Name != groupDesc {
		t.Errorf("GroupGet(node1) after an update = %+v, %v; want the description %q kept", g, err, groupDesc)
	}
	if p, err := api.ProfileGet(ctx, "worker"); err != nil || p.Name != profileDesc {
		t.Errorf("ProfileGet(worker) after an update = %+v, %v; want the description %q kept", p, err, profileDesc)
	}
	tf.noChanges("after switching to raw_ignition")

	// 5. A group deleted behind Terraform's back is gone from state at the
	// next refresh, and planned again.
	if err := api.GroupDelete(ctx, "node2"); err != nil {
		t.Fatalf("GroupDelete(node2): %v", err)
	}
	if got, want := fmt.Sprint(tf.planActions()), "map[kindling_group.node2:create]"; got != want {
		t.Errorf("plan after deleting node2 on the server: actions %s, want %s", got, want)
	}
	tf.must(0, "apply", "-input=false", "-no-color", "change.tfplan")
	srv.mustGet("/ipxe?mac=" + mac2)
	tf.noChanges("after re-creating node2")

	// 6. Outage: with the server down, plans and refreshes fail, and the
	// state keeps every resource. Each resource type is refreshed alone
	// too (-target; the groups name their profile literally for this, so
	// a group's refresh does not stop at its profile's error first).
	wantState := "kindling_group.node1 kindling_group.node2 kindling_profile.worker"
	if got := strings.Join(tf.stateResources(), " "); got != wantState {
		t.Fatalf("state before the outage = %s, want %s", got, wantState)
	}
	cfg.LiteralProfile = true
	tf.write(cfg.String())
	tf.noChanges("naming the profile literally")
	stateBefore, _ := os.ReadFile(filepath.Join(work, "terraform.tfstate"))
	srv.stop()
	outageStart := time.Now()
	for _, target := range []string{"", "kindling_profile.worker", "kindling_group.node2"} {
		var targetArgs []string
		if target != "" {
			targetArgs = []string{"-target=" + target}
		}
		plan := append([]string{"plan", "-input=false", "-no-color", "-detailed-exitcode"}, targetArgs...)
		out, code = tf.run(plan...)
		if code != 1 || !strings.Contains(out, "Reading Kindling") || !strings.Contains(out, srv.rpc) {
			t.Errorf("tofu %s with the server down: exit %d, want 1 with an error naming %s\n%s", strings.Join(plan, " "), code, srv.rpc, out)
		}
		refresh := append([]string{"apply", "-refresh-only", "-auto-approve", "-input=false", "-no-color"}, targetArgs...)
		out, code = tf.run(refresh...)
		if code != 1 || !strings.Contains(out, "Reading Kindling") {
			t.Errorf("tofu %s with the server down: exit %d, want 1 with a read error\n%s", strings.Join(refresh, " "), code, out)
		}
		if got := strings.Join(tf.stateResources(), " "); got != wantState {
			t.Fatalf("state after tofu %s during the outage = %s, want %s (an outage must not drop resources)", strings.Join(refresh, " "), got, wantState)
		}
	}
	t.Logf("failing plans and refreshes during the outage took %v (the client retries refused connections)", time.Since(outageStart).Round(time.Millisecond))
	if stateAfter, _ := os.ReadFile(filepath.Join(work, "terraform.tfstate")); !bytes.Equal(stateBefore, stateAfter) {
		t.Errorf("the state file changed during the outage")
	}
	srv.start()
	tf.noChanges("after the server came back")
	cfg.LiteralProfile = false
	tf.write(cfg.String())
	tf.noChanges("naming the profile by reference again")

	// 7. Destroy: every file goes, machines get 404.
	out = tf.must(0, "destroy", "-auto-approve", "-input=false", "-no-color")
	if !strings.Contains(out, "Resources: 3 destroyed.") {
		t.Errorf("tofu destroy: want 3 destroyed\n%s", out)
	}
	if got := srv.dataFiles(); len(got) != 0 {
		t.Errorf("data directory after destroy = %v, want no files", got)
	}
	for _, mac := range []string{mac1, mac2} {
		if code, body := srv.get("/ipxe?mac=" + mac); code != http.StatusNotFound {
			t.Errorf("GET /ipxe?mac=%s after destroy = %d %q, want 404", mac, code, body)
		}
	}
	t.Logf("TestTerraformProvider took %v", time.Since(start).Round(time.Millisecond))
}
