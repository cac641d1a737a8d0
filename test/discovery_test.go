package test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// freePort returns a loopback TCP port that is free now, chosen below the
// kernel's ephemeral range (32768 and up by default): a port from the
// ephemeral range can be taken by any outgoing connection between this
// check and the bind by etcd, which made the tests flaky.
// handedOut are the ports freePort returned already: a port is closed
// when handed out, so without this two members could get the same one.
var (
	handedMu  sync.Mutex
	handedOut = map[int]bool{}
)

func freePort(t *testing.T) int {
	t.Helper()
	handedMu.Lock()
	defer handedMu.Unlock()
	for i := 0; i < 200; i++ {
		port := 20000 + rand.IntN(12000)
		if handedOut[port] {
			continue
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		ln.Close()
		handedOut[port] = true
		return port
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

// TestEtcdDiscovery bootstraps a 3-member etcd cluster (Debian's etcd
// 3.4) through `kindling serve`: a token from POST /discovery/new, each
// member started with --discovery pointing at Kindling, and nothing else.
func TestEtcdDiscovery(t *testing.T) {
	for _, tool := range []string{"etcd", "etcdctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found (Debian etcd-server/etcd-client; .ci/run installs them)", tool)
		}
	}
	base := serveDir(t, map[string]string{
		"profiles/p.json":     `{"id": "p"}`,
		"groups/default.json": `{"id": "default", "profile": "p"}`,
	})
	resp, err := http.Post(base+"/discovery/new?size=3", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	token := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusCreated || !strings.HasPrefix(token, base+"/discovery/") {
		t.Fatalf("POST /discovery/new = %d %q", resp.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var endpoints []string
	for i := 1; i <= 3; i++ {
		peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
		dir := t.TempDir()
		cmd := exec.CommandContext(ctx, "etcd", "--name", fmt.Sprintf("m%d", i), "--data-dir", filepath.Join(dir, "data"),
			"--initial-advertise-peer-urls", peer, "--listen-peer-urls", peer,
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--discovery", token, "--discovery-fallback", "exit")
		cmd.Env = append(os.Environ(), "HOME="+dir)
		log, _ := os.Create(filepath.Join(dir, "etcd.log"))
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		endpoints = append(endpoints, client)
	}
	for {
		out, err := exec.CommandContext(ctx, "etcdctl", "--endpoints", strings.Join(endpoints, ","), "member", "list").CombinedOutput()
		if err == nil && strings.Count(strings.TrimSpace(string(out)), "\n") == 2 && strings.Count(string(out), "started") == 3 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no 3-member cluster within 60s; etcdctl member list: %v\n%s", err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	cmd := exec.CommandContext(ctx, "etcdctl", "--endpoints", endpoints[0], "put", "k", "formed-through-kindling")
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("etcdctl put: %v\n%s", err, out)
	}
	cmd = exec.CommandContext(ctx, "etcdctl", "--endpoints", endpoints[2], "get", "k", "--print-value-only")
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "formed-through-kindling" {
		t.Errorf("etcdctl get on another member = %q, %v", out, err)
	}
}
