package discovery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// etcdVersion is the etcd built for TestV3Bootstrap: the version go.mod
// requires of go.etcd.io/etcd/server/v3.
const etcdVersion = "v3.7.3"

func startV3(t *testing.T, s *Service) *V3 {
	t.Helper()
	v, err := s.StartV3(V3Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func v3Client(t *testing.T, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestV3Keys checks the keys etcd's v3 discovery client reads are there
// for tokens made before and after StartV3, go with a deleted token, and
// that nothing else can be read or written.
func TestV3Keys(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	before, err := s.NewToken(3)
	if err != nil {
		t.Fatal(err)
	}
	v := startV3(t, s)
	if _, err := os.Stat(filepath.Join(dir, "etcd", "member")); err != nil {
		t.Errorf("etcd data not in DIR/etcd: %v", err)
	}
	after, err := s.Named("prod", 5)
	if err != nil {
		t.Fatal(err)
	}
	c := v3Client(t, "http://"+v.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for id, want := range map[string]string{before: "3", after: "5"} {
		resp, err := c.Get(ctx, registryPrefix+id+"/_config/size")
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != want {
			t.Errorf("token %s size: got %v, want %s", id, resp.Kvs, want)
		}
	}
	member := registryPrefix + before + "/members/8e9e05c52164694d"
	if _, err := c.Put(ctx, member, "m1=http://127.0.0.1:2380"); err != nil {
		t.Fatalf("registering: %v", err)
	}
	resp, err := c.Get(ctx, registryPrefix+before+"/members", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("members: %v %v", resp, err)
	}

	denied := map[string]func() error{
		"list everything": func() error { _, err := c.Get(ctx, "", clientv3.WithPrefix()); return err },
		"list tokens":     func() error { _, err := c.Get(ctx, registryPrefix, clientv3.WithPrefix()); return err },
		"other key":       func() error { _, err := c.Put(ctx, "/x", "y"); return err },
		"size key":        func() error { _, err := c.Put(ctx, registryPrefix+before+"/_config/size", "1"); return err },
		"delete":          func() error { _, err := c.Delete(ctx, member); return err },
		"bad value":       func() error { _, err := c.Put(ctx, member, "junk"); return err },
		"unknown token": func() error {
			_, err := c.Put(ctx, registryPrefix+strings.Repeat("0", 32)+"/members/1", "m=http://127.0.0.1:1")
			return err
		},
		"lease": func() error { _, err := c.Grant(ctx, 10); return err },
		"watch everything": func() error {
			wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
			defer wcancel()
			for r := range c.Watch(wctx, "", clientv3.WithPrefix()) {
				if err := r.Err(); err != nil {
					return err
				}
			}
			return wctx.Err()
		},
	}
	for name, f := range denied {
		err := f()
		if code := status.Code(err); code == codes.OK || code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: got %v, want refused", name, err)
		}
	}

	// Deleting the token over v2 removes its v3 keys.
	tk, _ := s.lookup(before)
	s.mu.Lock()
	delete(s.tokens, before)
	s.mu.Unlock()
	s.remove(tk, "deleted")
	resp, err = c.Get(ctx, registryPrefix+before+"/_config/size")
	if err != nil || len(resp.Kvs) != 0 {
		t.Errorf("deleted token's size key: %v %v", resp, err)
	}
}

// TestV3Bootstrap bootstraps a 3-member cluster of real etcd (built from
// go.etcd.io/etcd/server/v3 at etcdVersion) with --discovery-token and
// --discovery-endpoints pointing at StartV3.
func TestV3Bootstrap(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds etcd " + etcdVersion + " and runs a 3-member cluster")
	}
	start := time.Now()
	bin := etcdBinary(t)
	t.Logf("etcd binary ready in %v", time.Since(start).Round(time.Millisecond))

	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	v := startV3(t, s)
	id, err := s.NewToken(3)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var clients []string
	var outs []*syncBuffer
	for i := range 3 {
		cport, pport := freePort(t), freePort(t)
		curl := fmt.Sprintf("http://127.0.0.1:%d", cport)
		purl := fmt.Sprintf("http://127.0.0.1:%d", pport)
		clients = append(clients, curl)
		out := &syncBuffer{}
		outs = append(outs, out)
		cmd := exec.Command(bin,
			"--name", fmt.Sprintf("m%d", i),
			"--data-dir", t.TempDir(),
			"--listen-client-urls", curl, "--advertise-client-urls", curl,
			"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
			"--discovery-token", id,
			"--discovery-endpoints", "http://"+v.Addr(),
			"--log-level", "warn",
		)
		cmd.Env = etcdEnv(t.TempDir())
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	defer func() {
		if t.Failed() {
			for i, o := range outs {
				t.Logf("member m%d output:\n%s", i, o.String())
			}
		}
	}()

	c := v3Client(t, clients...)
	var names []string
	for {
		lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := c.MemberList(lctx)
		lcancel()
		names = names[:0]
		if err == nil {
			for _, m := range resp.Members {
				if m.Name != "" {
					names = append(names, m.Name)
				}
			}
			if len(names) == 3 {
				break
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("member list after %v: %v (err %v), want 3 started members", time.Since(start), names, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("3 members %v listed %v after the start", names, time.Since(start).Round(time.Millisecond))

	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	// Read from each member, linearizably.
	for _, ep := range clients {
		resp, err := v3Client(t, ep).Get(ctx, "k")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
			t.Fatalf("get k from %s: %v %v", ep, resp, err)
		}
	}
	// The discovery registry has the three members.
	resp, err := v3Client(t, "http://"+v.Addr()).Get(ctx, registryPrefix+id+"/members", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 3 {
		t.Fatalf("registry: %v %v", resp, err)
	}
}

// etcdBinary builds etcd at etcdVersion once, into test/.cache at the
// repository's root, and returns its path; later runs reuse it.
func etcdBinary(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root: %v", err)
	}
	cache := filepath.Join(root, "test", ".cache")
	bin := filepath.Join(cache, "etcd-"+etcdVersion)
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp, err := os.CreateTemp(cache, ".etcd-build-*")
	if err != nil {
		t.Fatal(err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	// The module's main package is etcd itself (etcdmain.Main), at the
	// version go.mod requires.
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp.Name(), "go.etcd.io/etcd/server/v3")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building etcd: %v\n%s", err, out)
	}
	if err := os.Rename(tmp.Name(), bin); err != nil {
		t.Fatal(err)
	}
	t.Logf("built etcd %s in %v", etcdVersion, time.Since(start).Round(time.Millisecond))
	return bin
}

// TestV3Restart restarts the v3 server on its data directory: live tokens
// keep their keys, and tokens removed while it was stopped lose theirs.
func TestV3Restart(t *testing.T) {
	s, err := New(Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	keep, err := s.NewToken(3)
	if err != nil {
		t.Fatal(err)
	}
	drop, err := s.NewToken(1)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.StartV3(V3Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	v.Close()
	tk, _ := s.lookup(drop)
	s.mu.Lock()
	delete(s.tokens, drop)
	s.mu.Unlock()
	s.remove(tk, "deleted") // V3 stopped: nothing to remove yet

	v = startV3(t, s)
	c := v3Client(t, "http://"+v.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for id, want := range map[string]int{keep: 1, drop: 0} {
		resp, err := c.Get(ctx, registryPrefix+id+"/_config/size")
		if err != nil || len(resp.Kvs) != want {
			t.Errorf("token %s after restart: %v %v, want %d keys", id, resp, err, want)
		}
	}
}

// TestServeV3 checks ServeV3 stops when its context ends.
func TestServeV3(t *testing.T) {
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeV3(ctx, V3Config{Addr: "127.0.0.1:0"}) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s.v3mu.Lock()
		up := s.v3 != nil
		s.v3mu.Unlock()
		if up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("ServeV3 not started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ServeV3 did not return")
	}
	s.v3mu.Lock()
	defer s.v3mu.Unlock()
	if s.v3 != nil {
		t.Error("V3 still registered after ServeV3 returned")
	}
}

// startV3Etcd starts a member of the etcd at bin that bootstraps through
// the v3 discovery server at endpoint with token. Cleanup kills it.
func startV3Etcd(t *testing.T, bin, name, token, endpoint string) *etcdMember {
	t.Helper()
	client := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	m := &etcdMember{name: name, clientURL: client, out: &syncBuffer{}, exited: make(chan struct{})}
	m.cmd = exec.Command(bin,
		"--name", name,
		"--data-dir", t.TempDir(),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--discovery-token", token,
		"--discovery-endpoints", "http://"+endpoint,
		"--log-level", "warn",
	)
	m.cmd.Env = etcdEnv(t.TempDir())
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

// waitV3Cluster waits until the members list exactly their names, all
// started, then checks a put through the first is read linearizably
// through each.
func waitV3Cluster(t *testing.T, ctx context.Context, members ...*etcdMember) {
	t.Helper()
	var want, endpoints []string
	for _, m := range members {
		want = append(want, m.name)
		endpoints = append(endpoints, m.clientURL)
	}
	c := v3Client(t, endpoints...)
	for {
		lctx, lcancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := c.MemberList(lctx)
		lcancel()
		var got []string
		if err == nil {
			for _, m := range resp.Members {
				got = append(got, m.Name) // "" while not started
			}
			if sameSet(got, want) {
				break
			}
		}
		for _, m := range members {
			select {
			case <-m.exited:
				t.Fatalf("etcd %s exited (%v) before the cluster formed", m.name, m.err)
			default:
			}
		}
		if ctx.Err() != nil {
			t.Fatalf("no cluster of %q before the deadline: members %q, err %v", want, got, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := v3Client(t, members[0].clientURL).Put(ctx, "kindling", "discovered"); err != nil {
		t.Fatalf("put via %s: %v", members[0].name, err)
	}
	for _, m := range members {
		resp, err := v3Client(t, m.clientURL).Get(ctx, "kindling")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "discovered" {
			t.Fatalf("get via %s: %v %v, want discovered", m.name, resp, err)
		}
	}
}

// v3Registered returns the member keys registered under token.
func v3Registered(t *testing.T, ctx context.Context, c *clientv3.Client, token string) []string {
	t.Helper()
	resp, err := c.Get(ctx, registryPrefix+token+"/members", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatalf("listing members of %s: %v", token, err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// TestV3FourthMember starts a 4th member with the token of a 3-member
// cluster formed through v3 discovery. etcd 3.7.3's client (v3discovery
// checkCluster) ranges the members before registering; finding size
// members it returns ErrFullCluster ("discovery: cluster is full") without
// registering, and etcdmain logs "failed to bootstrap; discovery token was
// already used" and exits 1.
func TestV3FourthMember(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds etcd " + etcdVersion + " and runs a 4-member bootstrap")
	}
	bin := etcdBinary(t)
	start := time.Now()
	s, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	v := startV3(t, s)
	id, err := s.NewToken(3)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()

	var members []*etcdMember
	for i := range 3 {
		members = append(members, startV3Etcd(t, bin, fmt.Sprintf("m%d", i), id, v.Addr()))
	}
	waitV3Cluster(t, ctx, members...)
	t.Logf("3-member cluster formed in %v", time.Since(start).Round(time.Millisecond))
	reg := v3Client(t, "http://"+v.Addr())
	before := v3Registered(t, ctx, reg, id)
	if len(before) != 3 {
		t.Fatalf("registered before the 4th: %q, want 3", before)
	}

	fourth := time.Now()
	m := startV3Etcd(t, bin, "m3", id, v.Addr())
	select {
	case <-m.exited:
	case <-ctx.Done():
		t.Fatalf("4th member still running after %v, want it to exit", time.Since(fourth))
	}
	t.Logf("4th member exited after %v: %v", time.Since(fourth).Round(time.Millisecond), m.err)
	var xerr *exec.ExitError
	if !errors.As(m.err, &xerr) || xerr.ExitCode() != 1 {
		t.Errorf("4th member: %v, want exit status 1", m.err)
	}
	out := m.out.String()
	for _, want := range []string{"discovery: cluster is full", "discovery token was already used"} {
		if !strings.Contains(out, want) {
			t.Errorf("4th member's output lacks %q:\n%s", want, tail(out, 20))
		}
	}
	if after := v3Registered(t, ctx, reg, id); !sameSet(after, before) {
		t.Errorf("registered after the 4th: %q, want the first 3 %q", after, before)
	}
	// The cluster is untouched.
	resp, err := v3Client(t, members[0].clientURL).MemberList(ctx)
	if err != nil || len(resp.Members) != 3 {
		t.Errorf("member list after the 4th: %v %v, want 3", resp, err)
	}
}

// TestV3RestartMidBootstrap restarts the v3 discovery server, from a new
// Service on the same persisted directory and address, after the first of
// three members has registered and while it waits for its peers. Its
// client's watch reconnects, and the cluster forms once the other two
// register with the restarted server.
func TestV3RestartMidBootstrap(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds etcd " + etcdVersion + " and runs a 3-member cluster")
	}
	bin := etcdBinary(t)
	start := time.Now()
	dir := t.TempDir()
	s1, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	id, err := s1.NewToken(3)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	v1, err := s1.StartV3(V3Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v1.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()

	m0 := startV3Etcd(t, bin, "m0", id, addr)
	c1, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + addr}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	for len(v3Registered(t, ctx, c1, id)) == 0 {
		select {
		case <-m0.exited:
			t.Fatalf("m0 exited (%v) before registering", m0.err)
		case <-ctx.Done():
			t.Fatal("m0 not registered before the deadline")
		case <-time.After(100 * time.Millisecond):
		}
	}
	c1.Close()
	t.Logf("m0 registered after %v; restarting the discovery server", time.Since(start).Round(time.Millisecond))
	v1.Close()

	s2, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	v2, err := s2.StartV3(V3Config{Addr: addr})
	if err != nil {
		t.Fatalf("restarting on %s: %v", addr, err)
	}
	t.Cleanup(func() { v2.Close() })
	t.Logf("discovery server back after %v", time.Since(start).Round(time.Millisecond))
	reg := v3Client(t, "http://"+addr)
	if got := v3Registered(t, ctx, reg, id); len(got) != 1 {
		t.Fatalf("registered after the restart: %q, want m0's", got)
	}

	m1 := startV3Etcd(t, bin, "m1", id, addr)
	m2 := startV3Etcd(t, bin, "m2", id, addr)
	waitV3Cluster(t, ctx, m0, m1, m2)
	t.Logf("3-member cluster formed %v after the start", time.Since(start).Round(time.Millisecond))
	if got := v3Registered(t, ctx, reg, id); len(got) != 3 {
		t.Errorf("registered: %q, want 3", got)
	}
}
