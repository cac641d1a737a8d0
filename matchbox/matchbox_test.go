package matchbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tftpclient "github.com/pin/tftp/v3"

	"github.com/kindlingboot/kindling/matchbox/catalog"
)

func write(t *testing.T, dir, name, data string) {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	// Write beside and rename, as editors and config tools do, so the
	// watcher never sees a half-written file.
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

func dataDir(t *testing.T) string {
	dir := t.TempDir()
	write(t, dir, "profiles/p.json", `{"id":"p","boot":{"kernel":"/assets/k","args":["v={{.v}}"]}}`)
	write(t, dir, "groups/default.json", `{"id":"default","profile":"p","metadata":{"v":"one"}}`)
	return dir
}

// start runs a server on 127.0.0.1:0 until the test ends.
func start(t *testing.T, cfg Config) (base string, stop func() error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	if cfg.WatchQuiet == 0 {
		cfg.WatchQuiet = 20 * time.Millisecond
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(10 * time.Second):
			return errors.New("server did not stop within 10s")
		}
	}
	t.Cleanup(func() { stop() })
	return "http://" + ln.Addr().String(), stop
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls f until it returns true or 5s pass.
func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestStartupFailsWithEveryProblem(t *testing.T) {
	dir := dataDir(t)
	write(t, dir, "groups/a.json", `{"id":"a","profile":"missing"}`)
	write(t, dir, "groups/b.json", `{"id":"b","profile":"p","selector":{"mac":"nope"}}`)
	_, err := New(Config{DataPath: dir})
	var le *catalog.LoadError
	if !errors.As(err, &le) || len(le.Problems) != 2 {
		t.Fatalf("New() error = %v, want a LoadError with 2 problems", err)
	}
	for _, want := range []string{"groups/a.json", "groups/b.json"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("New() error does not name %s:\n%v", want, err)
		}
	}
	if _, err := New(Config{DataPath: filepath.Join(dir, "nope")}); err == nil {
		t.Error("New() with a missing data directory succeeded")
	}
}

func TestReloadKeepsLastGoodCatalog(t *testing.T) {
	dir := dataDir(t)
	base, _ := start(t, Config{DataPath: dir})
	if code, body := get(t, base+"/ipxe"); code != 200 || !strings.Contains(body, "v=one") {
		t.Fatalf("GET /ipxe = %d %q, want 200 with v=one", code, body)
	}

	// A good change is picked up by the watcher.
	write(t, dir, "groups/default.json", `{"id":"default","profile":"p","metadata":{"v":"two"}}`)
	eventually(t, "reload to v=two", func() bool {
		_, body := get(t, base+"/ipxe")
		return strings.Contains(body, "v=two")
	})

	// A bad change keeps the last good catalog and says so.
	write(t, dir, "groups/default.json", `{"id":"default","profile":"p","selector":{"mac":"bad"}}`)
	eventually(t, "healthz to report the failed reload", func() bool {
		_, body := get(t, base+"/healthz")
		return strings.HasPrefix(body, "degraded")
	})
	_, health := get(t, base+"/healthz")
	if !strings.Contains(health, "groups/default.json") || !strings.Contains(health, `"bad" is not a MAC address`) {
		t.Errorf("/healthz does not say which file failed and why:\n%s", health)
	}
	if code, body := get(t, base+"/ipxe"); code != 200 || !strings.Contains(body, "v=two") {
		t.Errorf("after a bad reload GET /ipxe = %d %q, want the last good catalog (v=two)", code, body)
	}
	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{`kindling_catalog_reloads_total{result="failure"} 1`, "kindling_catalog_healthy 0"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	// Fixing the file heals the server.
	write(t, dir, "groups/default.json", `{"id":"default","profile":"p","metadata":{"v":"three"}}`)
	eventually(t, "recovery", func() bool {
		_, h := get(t, base+"/healthz")
		_, body := get(t, base+"/ipxe")
		return strings.HasPrefix(h, "ok") && strings.Contains(body, "v=three")
	})

	// A new part of the data directory appearing later is watched too.
	write(t, dir, "generic/g.txt", "hello {{.v}}")
	write(t, dir, "profiles/p.json", `{"id":"p","boot":{"kernel":"/assets/k","args":["v={{.v}}"]},"generic_id":"g.txt"}`)
	eventually(t, "generic to appear", func() bool {
		code, body := get(t, base+"/generic")
		return code == 200 && body == "hello three"
	})
}

func TestReloadSignal(t *testing.T) {
	dir := dataDir(t)
	reload := make(chan struct{})
	base, _ := start(t, Config{DataPath: dir, Reload: reload, NoWatch: true})
	if _, body := get(t, base+"/ipxe"); !strings.Contains(body, "v=one") {
		t.Fatalf("GET /ipxe = %q, want v=one", body)
	}
	write(t, dir, "groups/default.json", `{"id":"default","profile":"p","metadata":{"v":"signalled"}}`)
	time.Sleep(200 * time.Millisecond)
	if _, body := get(t, base+"/ipxe"); !strings.Contains(body, "v=one") {
		t.Fatalf("with NoWatch the change was loaded before the signal: %q", body)
	}
	reload <- struct{}{}
	eventually(t, "reload on signal", func() bool {
		_, body := get(t, base+"/ipxe")
		return strings.Contains(body, "v=signalled")
	})
}

// TestShutdownFinishesDownloads starts a slow asset download, stops the
// server, and checks the download still completes byte for byte.
func TestShutdownFinishesDownloads(t *testing.T) {
	dir := dataDir(t)
	big := bytes.Repeat([]byte("kindling"), 8<<20/8) // 8 MiB
	write(t, dir, "assets/big.img", string(big))
	base, stop := start(t, Config{DataPath: dir})
	resp, err := http.Get(base + "/assets/big.img")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	head := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, head); err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	time.Sleep(100 * time.Millisecond) // let shutdown begin while the body is unread
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("download interrupted by shutdown: %v", err)
	}
	if got := append(head, rest...); !bytes.Equal(got, big) {
		t.Errorf("download after shutdown began: got %d bytes, want %d identical bytes", len(got), len(big))
	}
	if err := <-stopped; err != nil {
		t.Errorf("Run after shutdown: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Error("server still accepts requests after shutdown")
	}
}

func TestEmbeddedDataNeedsNoDirectory(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Error("New(Config{}) with no data succeeded")
	}
}

// TestWatchIgnoresOtherFiles: files directly in the data directory that
// are not catalog parts (the DHCP lease file) never trigger a reload.
func TestWatchIgnoresOtherFiles(t *testing.T) {
	dir := dataDir(t)
	base, _ := start(t, Config{DataPath: dir})
	get(t, base+"/healthz")
	for i := 0; i < 5; i++ {
		write(t, dir, "dhcp-leases.json", `{"leases":[]}`)
		time.Sleep(30 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	_, metrics := get(t, base+"/metrics")
	if !strings.Contains(metrics, `kindling_catalog_reloads_total{result="success"} 0`) {
		t.Errorf("writing the lease file reloaded the catalog:\n%s", grepLines(metrics, "kindling_catalog_reloads_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestBootIPXEOverTFTP: boot.ipxe read over TFTP chains to an absolute
// HTTP URL the machine can reach — never 0.0.0.0 when -address listens
// on every address.
func TestBootIPXEOverTFTP(t *testing.T) {
	dir := dataDir(t)
	os.MkdirAll(filepath.Join(dir, "ipxe-root"), 0o755)
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tftpAddr := pc.LocalAddr().String()
	pc.Close()
	start(t, Config{DataPath: dir, Address: "0.0.0.0:8080", TFTPAddress: tftpAddr, TFTPRoot: filepath.Join(dir, "ipxe-root")})
	var body string
	eventually(t, "boot.ipxe over TFTP", func() bool {
		c, err := tftpclient.NewClient(tftpAddr)
		if err != nil {
			return false
		}
		c.SetTimeout(time.Second)
		wt, err := c.Receive("boot.ipxe", "octet")
		if err != nil {
			return false
		}
		var b bytes.Buffer
		if _, err := wt.WriteTo(&b); err != nil {
			return false
		}
		body = b.String()
		return true
	})
	if !strings.Contains(body, "chain http://127.0.0.1:8080/ipxe?uuid=${uuid}") {
		t.Errorf("boot.ipxe over TFTP = %q, want a chain to http://127.0.0.1:8080/ipxe", body)
	}
}
