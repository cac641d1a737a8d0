package test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kindlingboot/kindling/matchbox"
)

// TestDiscoveryV3Wired: with DiscoveryV3Address set, a token made through
// the machine plane's POST /discovery/new is also readable where etcd
// 3.6+ looks for it, /_etcd/registry/<token>/_config/size over gRPC.
func TestDiscoveryV3Wired(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	v3 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- matchbox.Run(ctx, matchbox.Config{Listener: ln, DataPath: dir, DiscoveryV3Address: v3})
	}()
	defer func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("server did not stop")
		}
	}()
	base := "http://" + ln.Addr().String()
	var token string
	for deadline := time.Now().Add(10 * time.Second); token == ""; {
		resp, err := http.Post(base+"/discovery/new?size=3", "", nil)
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			token = strings.TrimPrefix(strings.TrimSpace(string(b)), base+"/discovery/")
		} else if time.Now().After(deadline) {
			t.Fatalf("POST /discovery/new: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"http://" + v3}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	key := "/_etcd/registry/" + token + "/_config/size"
	for deadline := time.Now().Add(15 * time.Second); ; {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := cli.Get(cctx, key)
		ccancel()
		if err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "3" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("v3 Get %s = %v, %v; want size 3", key, resp, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
