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
