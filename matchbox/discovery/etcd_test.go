package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests against real etcd 3.4 members (Debian's etcd-server and
// etcd-client packages): the oracle for what the service must answer.

func needEtcd(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts etcd clusters; skipped with -short")
	}
	for _, bin := range []string{"etcd", "etcdctl"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s not on PATH (Debian: apt-get install etcd-server etcd-client): %v", bin, err)
		}
	}
}

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

// etcdEnv is a clean environment: no ETCD_* settings, no proxies.
func etcdEnv(home string) []string {
	return []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "ETCDCTL_API=3"}
}

// syncBuffer collects a process's output.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type etcdMember struct {
	name      string
	clientURL string
	cmd       *exec.Cmd
	out       *syncBuffer
	exited    chan struct{} // closed when the process has exited; then err is set
	err       error
}

// startEtcd starts an etcd member that bootstraps through discoveryURL.
// Cleanup kills it.
func startEtcd(t *testing.T, name, discoveryURL string, extra ...string) *etcdMember {
	t.Helper()
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	args := append([]string{
		"--name", name,
		"--data-dir", dir + "/data",
		"--initial-advertise-peer-urls", peer,
		"--listen-peer-urls", peer,
		"--listen-client-urls", client,
		"--advertise-client-urls", client,
		"--discovery", discoveryURL,
		"--logger", "zap",
		"--log-outputs", "stderr",
	}, extra...)
	m := &etcdMember{name: name, clientURL: client, out: &syncBuffer{}, exited: make(chan struct{})}
	m.cmd = exec.Command("etcd", args...)
	m.cmd.Env = etcdEnv(dir)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("starting etcd %s: %v", name, err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() {
		m.cmd.Process.Kill()
		<-m.exited
		switch {
		case os.Getenv("ETCD_TEST_LOG") != "":
			t.Logf("etcd %s output:\n%s", name, m.out.String())
		case t.Failed():
			t.Logf("etcd %s output (last lines; all with ETCD_TEST_LOG=1):\n%s", name, tail(m.out.String(), 40))
		}
	})
	return m
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// etcdctl runs etcdctl against endpoints with short timeouts.
func etcdctl(ctx context.Context, endpoints string, args ...string) (string, error) {
	args = append([]string{"--endpoints", endpoints, "--dial-timeout", "2s", "--command-timeout", "3s"}, args...)
	cmd := exec.CommandContext(ctx, "etcdctl", args...)
	cmd.Env = etcdEnv(os.TempDir())
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitCluster waits until every member reports a cluster of exactly the
// members' names, all started, then checks a write through the first is
// read through the last.
func waitCluster(t *testing.T, ctx context.Context, members ...*etcdMember) {
	t.Helper()
	var names []string
	for _, m := range members {
		names = append(names, m.name)
	}
	for _, m := range members {
		var last string
		for {
			out, err := etcdctl(ctx, m.clientURL, "member", "list", "-w", "json")
			if err == nil {
				var list struct{ Members []struct{ Name string } }
				if json.Unmarshal([]byte(out), &list) == nil {
					var got []string
					for _, x := range list.Members {
						got = append(got, x.Name)
					}
					if sameSet(got, names) {
						break
					}
					last = fmt.Sprintf("members %q", got)
				}
			} else {
				last = strings.TrimSpace(out)
			}
			select {
			case <-m.exited:
				t.Fatalf("etcd %s exited (%v) before the cluster formed", m.name, m.err)
			case <-ctx.Done():
				t.Fatalf("etcd %s: no cluster of %q before the deadline; last: %s", m.name, names, last)
			case <-time.After(300 * time.Millisecond):
			}
		}
	}
	first, last := members[0], members[len(members)-1]
	if out, err := etcdctl(ctx, first.clientURL, "put", "kindling", "discovered"); err != nil {
		t.Fatalf("etcdctl put via %s: %v: %s", first.name, err, out)
	}
	out, err := etcdctl(ctx, last.clientURL, "get", "kindling", "--print-value-only")
	if err != nil || strings.TrimSpace(out) != "discovered" {
		t.Fatalf("etcdctl get via %s = %q, %v; want discovered", last.name, out, err)
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		if seen[x]--; seen[x] < 0 {
			return false
		}
	}
	return true
}

// registered counts the members registered under a token, as etcd's
// client counts them.
func registered(t *testing.T, tokenURL string) int {
	t.Helper()
	r := do(t, "GET", tokenURL, nil)
	var got struct {
		Node struct{ Nodes []struct{ Key string } }
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("GET %s = %+v: %v", tokenURL, r, err)
	}
	n := 0
	for _, x := range got.Node.Nodes {
		if !strings.HasSuffix(x.Key, "/_config") {
			n++
		}
	}
	return n
}

// TestEtcdBootstrap: three etcd 3.4 members form a cluster through a
// size-3 token. A fourth member finds the cluster full: with
// --discovery-fallback=exit it exits non-zero with "discovery: cluster is
// full"; with the default fallback (proxy) it becomes a v2 proxy to the
// cluster instead. Neither registers.
func TestEtcdBootstrap(t *testing.T) {
	needEtcd(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	ts := startService(t, Config{Dir: t.TempDir()}, nil)
	tok := ts.newToken(t, 3)
	durl := ts.url + "/discovery/" + tok

	m1 := startEtcd(t, "m1", durl)
	m2 := startEtcd(t, "m2", durl)
	m3 := startEtcd(t, "m3", durl)
	waitCluster(t, ctx, m1, m2, m3)

	m4 := startEtcd(t, "m4", durl, "--discovery-fallback", "exit")
	select {
	case <-m4.exited:
	case <-time.After(20 * time.Second):
		t.Fatalf("4th member with --discovery-fallback=exit still running after 20s")
	}
	const fullMsg = "failed to join discovery cluster (discovery: cluster is full)"
	if code := m4.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(m4.out.String(), fullMsg) {
		t.Errorf("4th member (fallback exit): exit code %d, want 1 and output with %q:\n%s", code, fullMsg, tail(m4.out.String(), 20))
	}

	m5 := startEtcd(t, "m5", durl) // default --discovery-fallback=proxy
	version := func() (string, error) {
		resp, err := http.Get(m5.clientURL + "/version")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	for {
		v, err := version()
		if err == nil && strings.Contains(v, `"etcdcluster"`) {
			break
		}
		select {
		case <-m5.exited:
			t.Fatalf("4th member (fallback proxy) exited (%v):\n%s", m5.err, tail(m5.out.String(), 20))
		case <-ctx.Done():
			t.Fatalf("4th member (fallback proxy): no proxied /version: %q, %v", v, err)
		case <-time.After(300 * time.Millisecond):
		}
	}
	if out := m5.out.String(); !strings.Contains(out, "discovery cluster is full, falling back to proxy") || !strings.Contains(out, fullMsg) {
		t.Errorf("4th member (fallback proxy): output without the fallback:\n%s", tail(out, 20))
	}

	if n := registered(t, durl); n != 3 {
		t.Errorf("registered members = %d, want 3 (a member that finds the cluster full does not register)", n)
	}
	out, err := etcdctl(ctx, m1.clientURL, "member", "list")
	if err != nil || strings.Count(strings.TrimSpace(out), "\n") != 2 {
		t.Errorf("member list after the 4th members = %q, %v; want 3 members", out, err)
	}
}

// TestEtcdBootstrapAcrossRestart: the discovery server restarts while the
// first member waits for the others; a new Service on the same directory
// and port carries on, and the cluster forms.
func TestEtcdBootstrapAcrossRestart(t *testing.T) {
	needEtcd(t)
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) (*Service, func()) {
		s, err := New(Config{Dir: dir})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		hs := httptest.NewUnstartedServer(s.Handler())
		hs.Listener.Close()
		hs.Listener = ln
		hs.Start()
		rctx, rcancel := context.WithCancel(context.Background())
		ran := make(chan struct{})
		go func() { defer close(ran); s.Run(rctx) }()
		var once sync.Once
		stop := func() { once.Do(func() { rcancel(); <-ran; hs.Close() }) }
		t.Cleanup(stop)
		return s, stop
	}
	s1, stop1 := serve(ln)
	tok, err := s1.NewToken(3)
	if err != nil {
		t.Fatal(err)
	}
	durl := "http://" + addr + "/discovery/" + tok

	m1 := startEtcd(t, "m1", durl)
	// Stop the server once m1 has registered and is in its long poll.
	for !strings.Contains(m1.out.String(), "waiting for more") {
		select {
		case <-m1.exited:
			t.Fatalf("etcd m1 exited: %v", m1.err)
		case <-ctx.Done():
			t.Fatal("m1 did not register and wait for the others")
		case <-time.After(100 * time.Millisecond):
		}
	}
	stop1()
	// Down long enough that m1's next poll is refused, so it goes
	// through its retry (2s backoff, then checkCluster and waitNodes).
	time.Sleep(time.Second)
	var ln2 net.Listener
	for ln2 == nil {
		ln2, err = net.Listen("tcp", addr)
		if err != nil {
			select {
			case <-ctx.Done():
				t.Fatalf("listening again on %s: %v", addr, err)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	serve(ln2)
	if n := registered(t, durl); n != 1 {
		t.Fatalf("registered after restart = %d, want 1", n)
	}

	m2 := startEtcd(t, "m2", durl)
	m3 := startEtcd(t, "m3", durl)
	waitCluster(t, ctx, m1, m2, m3)
	if out := m1.out.String(); !strings.Contains(out, "retry connecting to discovery service") {
		t.Errorf("m1 never retried: the restart went unnoticed, so this test proved nothing:\n%s", tail(out, 20))
	}
}
