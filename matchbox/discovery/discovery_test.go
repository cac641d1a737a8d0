package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// testService is a Service behind a real listener on 127.0.0.1, with its
// Run loop going until the test ends.
type testService struct {
	*Service
	url    string // http://127.0.0.1:PORT
	cancel context.CancelFunc
	ran    chan struct{}
}

func startService(t *testing.T, cfg Config, tweak func(*Service)) *testService {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	if tweak != nil {
		tweak(s)
	}
	ts := httptest.NewServer(s.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		if err := s.Run(ctx); err != nil {
			t.Errorf("Run = %v", err)
		}
	}()
	t.Cleanup(ts.Close)
	t.Cleanup(func() { cancel(); <-ran }) // first: ends long polls so Close need not wait
	return &testService{Service: s, url: ts.URL, cancel: cancel, ran: ran}
}

func (ts *testService) newToken(t *testing.T, size int) string {
	t.Helper()
	tok, err := ts.NewToken(size)
	if err != nil {
		t.Fatalf("NewToken(%d) = %v", size, err)
	}
	return tok
}

// reply is an HTTP response, read whole.
type reply struct {
	status int
	index  string // X-Etcd-Index
	body   string
}

func do(t *testing.T, method, u string, form url.Values) reply {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, u, err)
	}
	return reply{resp.StatusCode, resp.Header.Get("X-Etcd-Index"), string(b)}
}

// register does what etcd's client does to register a member.
func register(t *testing.T, tokenURL, id, value string) reply {
	t.Helper()
	return do(t, http.MethodPut, tokenURL+"/"+id+"?prevExist=false", url.Values{"value": {value}})
}

// decoded parses a JSON body into generic values, for comparison.
func decoded(t *testing.T, body string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	return v
}

func checkReply(t *testing.T, what string, got reply, status int, index, body string) {
	t.Helper()
	if got.status != status || got.index != index {
		t.Errorf("%s: status %d, X-Etcd-Index %q; want %d, %q (body %s)", what, got.status, got.index, status, index, got.body)
	}
	if diff := cmp.Diff(decoded(t, body), decoded(t, got.body)); diff != "" {
		t.Errorf("%s: body mismatch (-want +got):\n%s", what, diff)
	}
}

// The requests below are the ones etcd 3.4's v2 discovery client makes,
// query strings included.
func TestProtocol(t *testing.T) {
	ts := startService(t, Config{}, nil)
	tok := ts.newToken(t, 3)
	tu := ts.url + "/discovery/" + tok
	reg := "/_etcd/registry/" + tok

	checkReply(t, "size", do(t, "GET", tu+"/_config/size?quorum=false&recursive=false&sorted=false", nil), 200, "1",
		`{"action":"get","node":{"key":"`+reg+`/_config/size","value":"3","modifiedIndex":1,"createdIndex":1}}`)

	checkReply(t, "empty listing", do(t, "GET", tu+"?quorum=false&recursive=false&sorted=false", nil), 200, "1",
		`{"action":"get","node":{"key":"`+reg+`","dir":true,"nodes":[
			{"key":"`+reg+`/_config","dir":true,"modifiedIndex":1,"createdIndex":1}],
			"modifiedIndex":1,"createdIndex":1}}`)

	checkReply(t, "register", register(t, tu, "8e9e05c52164694d", "m1=http://127.0.0.1:2380"), 201, "2",
		`{"action":"create","node":{"key":"`+reg+`/8e9e05c52164694d","value":"m1=http://127.0.0.1:2380","modifiedIndex":2,"createdIndex":2}}`)

	checkReply(t, "duplicate", register(t, tu, "8e9e05c52164694d", "m1=http://127.0.0.1:2380"), 412, "2",
		`{"errorCode":105,"message":"Key already exists","cause":"`+reg+`/8e9e05c52164694d","index":2}`)

	// createSelf's check that its key is committed: a watch from its
	// createdIndex, answered from the history at once.
	checkReply(t, "self watch", do(t, "GET", tu+"/8e9e05c52164694d?recursive=false&wait=true&waitIndex=2", nil), 200, "2",
		`{"action":"create","node":{"key":"`+reg+`/8e9e05c52164694d","value":"m1=http://127.0.0.1:2380","modifiedIndex":2,"createdIndex":2}}`)

	checkReply(t, "register 2", register(t, tu, "91bc3c398fb3c146", "m2=http://127.0.0.1:2381"), 201, "3",
		`{"action":"create","node":{"key":"`+reg+`/91bc3c398fb3c146","value":"m2=http://127.0.0.1:2381","modifiedIndex":3,"createdIndex":3}}`)

	members := `{"key":"` + reg + `/8e9e05c52164694d","value":"m1=http://127.0.0.1:2380","modifiedIndex":2,"createdIndex":2},
		{"key":"` + reg + `/91bc3c398fb3c146","value":"m2=http://127.0.0.1:2381","modifiedIndex":3,"createdIndex":3}`
	checkReply(t, "listing", do(t, "GET", tu+"?quorum=false&recursive=false&sorted=false", nil), 200, "3",
		`{"action":"get","node":{"key":"`+reg+`","dir":true,"nodes":[
			{"key":"`+reg+`/_config","dir":true,"modifiedIndex":1,"createdIndex":1},`+members+`],
			"modifiedIndex":1,"createdIndex":1}}`)
	checkReply(t, "recursive listing", do(t, "GET", tu+"?recursive=true", nil), 200, "3",
		`{"action":"get","node":{"key":"`+reg+`","dir":true,"nodes":[
			{"key":"`+reg+`/_config","dir":true,"nodes":[
				{"key":"`+reg+`/_config/size","value":"3","modifiedIndex":1,"createdIndex":1}],
				"modifiedIndex":1,"createdIndex":1},`+members+`],
			"modifiedIndex":1,"createdIndex":1}}`)
	checkReply(t, "member", do(t, "GET", tu+"/91bc3c398fb3c146", nil), 200, "3",
		`{"action":"get","node":{"key":"`+reg+`/91bc3c398fb3c146","value":"m2=http://127.0.0.1:2381","modifiedIndex":3,"createdIndex":3}}`)
	checkReply(t, "missing member", do(t, "GET", tu+"/1234", nil), 404, "3",
		`{"errorCode":100,"message":"Key not found","cause":"`+reg+`/1234","index":3}`)

	// A watch from an index already passed is answered from the history,
	// so a member whose poll was cut misses nothing.
	checkReply(t, "watch from history", do(t, "GET", tu+"?recursive=true&wait=true&waitIndex=3", nil), 200, "3",
		`{"action":"create","node":{"key":"`+reg+`/91bc3c398fb3c146","value":"m2=http://127.0.0.1:2381","modifiedIndex":3,"createdIndex":3}}`)
}

// TestWaitReturnsOnNextRegistration: waitNodes' long poll blocks until
// the next member registers, then returns that member.
func TestWaitReturnsOnNextRegistration(t *testing.T) {
	ts := startService(t, Config{}, nil)
	tok := ts.newToken(t, 2)
	tu := ts.url + "/discovery/" + tok
	if r := register(t, tu, "aa", "m1=http://127.0.0.1:2380"); r.status != 201 {
		t.Fatalf("register = %+v", r)
	}

	resp, err := http.Get(tu + "?recursive=true&wait=true&waitIndex=3")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// The headers come at once, as from etcd; the body waits.
	if resp.StatusCode != 200 || resp.Header.Get("X-Etcd-Index") != "2" {
		t.Fatalf("watch: status %d, X-Etcd-Index %q; want 200, 2", resp.StatusCode, resp.Header.Get("X-Etcd-Index"))
	}
	body := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(resp.Body)
		body <- string(b)
	}()
	select {
	case b := <-body:
		t.Fatalf("watch returned %q before any change", b)
	case <-time.After(200 * time.Millisecond):
	}
	if r := register(t, tu, "bb", "m2=http://127.0.0.1:2381"); r.status != 201 {
		t.Fatalf("register = %+v", r)
	}
	select {
	case b := <-body:
		want := `{"action":"create","node":{"key":"/_etcd/registry/` + tok + `/bb","value":"m2=http://127.0.0.1:2381","modifiedIndex":3,"createdIndex":3}}`
		if diff := cmp.Diff(decoded(t, want), decoded(t, b)); diff != "" {
			t.Errorf("watch body mismatch (-want +got):\n%s", diff)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch did not return after the registration")
	}
}

// TestWaitBounded: a long poll with nothing to report ends with a 200 and
// an empty body (etcd's client then polls again), after maxWait, and at
// once when Run returns; after that, requests get a 503, which etcd's
// client retries with backoff.
func TestWaitBounded(t *testing.T) {
	ts := startService(t, Config{}, func(s *Service) { s.maxWait = 300 * time.Millisecond })
	tok := ts.newToken(t, 3)
	tu := ts.url + "/discovery/" + tok

	start := time.Now()
	r := do(t, "GET", tu+"?recursive=true&wait=true&waitIndex=2", nil)
	if r.status != 200 || r.body != "" || time.Since(start) < 300*time.Millisecond {
		t.Errorf("bounded wait = %+v after %v; want 200, empty body after 300ms", r, time.Since(start))
	}

	ts = startService(t, Config{}, nil) // maxWait: the default, 25s
	tok = ts.newToken(t, 3)
	tu = ts.url + "/discovery/" + tok
	done := make(chan reply, 1)
	go func() { done <- do(t, "GET", tu+"?recursive=true&wait=true", nil) }()
	time.Sleep(100 * time.Millisecond)
	ts.cancel()
	select {
	case r := <-done:
		if r.status != 200 || r.body != "" {
			t.Errorf("wait ended by Run = %+v; want 200, empty body", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not end when Run returned")
	}
	<-ts.ran
	checkReply(t, "after Run", do(t, "GET", tu+"/_config/size", nil), 503, "0",
		`{"errorCode":300,"message":"Raft Internal Error","cause":"the discovery service is shutting down","index":0}`)
}

// TestFullCluster: the server takes registrations past the size (members
// that raced past the client's fast-path check); the listing ranks them
// by createdIndex, and the client's rule then finds the cluster full for
// any member past the first size.
func TestFullCluster(t *testing.T) {
	ts := startService(t, Config{}, nil)
	tok := ts.newToken(t, 3)
	tu := ts.url + "/discovery/" + tok
	ids := []string{"d", "c", "b", "a"} // created in this order: ranks differ from key order
	for i, id := range ids {
		if r := register(t, tu, id, "m"+id+"=http://127.0.0.1:"+string(rune('0'+i))+"380"); r.status != 201 {
			t.Fatalf("register %s = %+v", id, r)
		}
	}
	var got struct {
		Node struct {
			Nodes []struct {
				Key          string
				CreatedIndex uint64
			}
		}
	}
	if err := json.Unmarshal([]byte(do(t, "GET", tu, nil).body), &got); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, n := range got.Node.Nodes {
		if base := n.Key[strings.LastIndexByte(n.Key, '/')+1:]; base != "_config" {
			keys = append(keys, base)
		}
	}
	// etcd's checkCluster: sort by createdIndex; a member not among the
	// first size is told "discovery: cluster is full".
	for _, tc := range []struct {
		self string
		full bool
	}{{"d", false}, {"c", false}, {"b", false}, {"a", true}, {"e", true}} {
		if full := clientFindsFull(keys, tc.self, 3); full != tc.full {
			t.Errorf("cluster full for %s = %v, want %v (ranked %v)", tc.self, full, tc.full, keys)
		}
	}
}

// clientFindsFull is etcd 3.4 v2discovery checkCluster's test on nodes
// already in createdIndex order.
func clientFindsFull(nodes []string, self string, size int) bool {
	for i := range nodes {
		if nodes[i] == self {
			break
		}
		if i >= size-1 {
			return true
		}
	}
	return false
}

func TestErrors(t *testing.T) {
	ts := startService(t, Config{}, nil)
	tok := ts.newToken(t, 1)
	tu := ts.url + "/discovery/" + tok
	reg := "/_etcd/registry/" + tok
	unknown := strings.Repeat("0", 32)
	tests := []struct {
		name, method, path string
		form               url.Values
		status             int
		body               string
	}{
		{"unknown token size", "GET", "/discovery/" + unknown + "/_config/size", nil, 404,
			`{"errorCode":100,"message":"Key not found","cause":"/_etcd/registry/` + unknown + `/_config/size","index":0}`},
		{"unknown token register", "PUT", "/discovery/" + unknown + "/aa?prevExist=false", url.Values{"value": {"a=http://127.0.0.1:1"}}, 404,
			`{"errorCode":100,"message":"Key not found","cause":"/_etcd/registry/` + unknown + `/aa","index":0}`},
		{"malformed token", "GET", "/discovery/xyz", nil, 404,
			`{"errorCode":100,"message":"Key not found","cause":"/_etcd/registry/xyz","index":0}`},
		{"no value", "PUT", "/discovery/" + tok + "/aa?prevExist=false", url.Values{}, 400,
			`{"errorCode":200,"message":"Value is Required in POST form","cause":"` + reg + `/aa","index":0}`},
		{"bad value", "PUT", "/discovery/" + tok + "/aa?prevExist=false", url.Values{"value": {"m1=ftp://127.0.0.1:2380"}}, 400,
			`{"errorCode":209,"message":"Invalid field","cause":"value: \"m1=ftp://127.0.0.1:2380\": URL scheme \"ftp\": want http, https, unix or unixs","index":0}`},
		{"value without port", "PUT", "/discovery/" + tok + "/aa?prevExist=false", url.Values{"value": {"m1=http://host"}}, 400,
			`{"errorCode":209,"message":"Invalid field","cause":"value: \"m1=http://host\": URL address not of the form host:port","index":0}`},
		{"hidden key", "PUT", "/discovery/" + tok + "/_x?prevExist=false", url.Values{"value": {"a=http://127.0.0.1:1"}}, 400,
			`{"errorCode":209,"message":"Invalid field","cause":"member key \"_x\": must not start with \"_\"","index":0}`},
		{"size is read-only", "PUT", "/discovery/" + tok + "/_config/size", url.Values{"value": {"5"}}, 403,
			`{"errorCode":107,"message":"Root is read only","cause":"` + reg + `/_config/size: the size is fixed when the token is created","index":0}`},
		{"token dir is not a file", "PUT", "/discovery/" + tok, url.Values{"value": {"x"}}, 403,
			`{"errorCode":102,"message":"Not a file","cause":"` + reg + `","index":0}`},
		{"update", "PUT", "/discovery/" + tok + "/aa?prevExist=true", url.Values{"value": {"a=http://127.0.0.1:1"}}, 404,
			`{"errorCode":100,"message":"Key not found","cause":"` + reg + `/aa","index":1}`},
		{"bad waitIndex", "GET", "/discovery/" + tok + "?wait=true&waitIndex=x", nil, 400,
			`{"errorCode":203,"message":"The given index in POST form is not a number","cause":"waitIndex \"x\"","index":0}`},
		{"token needs recursive delete", "DELETE", "/discovery/" + tok, nil, 403,
			`{"errorCode":102,"message":"Not a file","cause":"` + reg + `: delete a token with recursive=true","index":0}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, ts.url+tc.path, tc.form)
			if r.status != tc.status {
				t.Errorf("%s %s = %d, want %d (body %s)", tc.method, tc.path, r.status, tc.status, r.body)
			}
			if diff := cmp.Diff(decoded(t, tc.body), decoded(t, r.body)); diff != "" {
				t.Errorf("%s %s: body mismatch (-want +got):\n%s", tc.method, tc.path, diff)
			}
		})
	}
	if r := register(t, tu, "aa", "a=http://127.0.0.1:1"); r.status != 201 {
		t.Errorf("register after the errors = %+v, want 201", r)
	}
}

func TestDelete(t *testing.T) {
	dir := t.TempDir()
	ts := startService(t, Config{Dir: dir}, nil)
	tok := ts.newToken(t, 3)
	tu := ts.url + "/discovery/" + tok
	reg := "/_etcd/registry/" + tok
	register(t, tu, "aa", "a=http://127.0.0.1:1")

	checkReply(t, "delete member", do(t, "DELETE", tu+"/aa", nil), 200, "3",
		`{"action":"delete","node":{"key":"`+reg+`/aa","modifiedIndex":3,"createdIndex":2},
		"prevNode":{"key":"`+reg+`/aa","value":"a=http://127.0.0.1:1","modifiedIndex":2,"createdIndex":2}}`)
	checkReply(t, "watch sees the deletion", do(t, "GET", tu+"?recursive=true&wait=true&waitIndex=3", nil), 200, "3",
		`{"action":"delete","node":{"key":"`+reg+`/aa","modifiedIndex":3,"createdIndex":2},
		"prevNode":{"key":"`+reg+`/aa","value":"a=http://127.0.0.1:1","modifiedIndex":2,"createdIndex":2}}`)
	checkReply(t, "re-register", register(t, tu, "aa", "a=http://127.0.0.1:1"), 201, "4",
		`{"action":"create","node":{"key":"`+reg+`/aa","value":"a=http://127.0.0.1:1","modifiedIndex":4,"createdIndex":4}}`)

	// The history survives a restart.
	s2, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ts.tokens[tok].events, s2.tokens[tok].events); diff != "" {
		t.Errorf("history after reload (-before +after):\n%s", diff)
	}

	checkReply(t, "delete token", do(t, "DELETE", tu+"?recursive=true", nil), 200, "5",
		`{"action":"delete","node":{"key":"`+reg+`","dir":true,"modifiedIndex":5,"createdIndex":1},
		"prevNode":{"key":"`+reg+`","dir":true,"modifiedIndex":1,"createdIndex":1}}`)
	if r := do(t, "GET", tu, nil); r.status != 404 {
		t.Errorf("GET deleted token = %+v, want 404", r)
	}
	if _, err := os.Stat(filepath.Join(dir, tok+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("deleted token's file: Stat = %v, want not exist", err)
	}
}

// TestRestart: every registration is on disk before its 201, and a new
// Service on the same directory carries on: same answers, next index.
func TestRestart(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := s1.NewToken(3)
	if err != nil {
		t.Fatal(err)
	}
	h1 := httptest.NewServer(s1.Handler())
	register(t, h1.URL+"/discovery/"+tok, "aa", "a=http://127.0.0.1:1")
	register(t, h1.URL+"/discovery/"+tok, "bb", "b=http://127.0.0.1:2")
	before := do(t, "GET", h1.URL+"/discovery/"+tok+"?recursive=true", nil)
	h1.Close()

	// A crash mid-write leaves a temporary file; a damaged file is skipped.
	os.WriteFile(filepath.Join(dir, "."+tok+".json.tmp-123"), []byte("{"), 0o600)
	os.WriteFile(filepath.Join(dir, strings.Repeat("f", 32)+".json"), []byte("{"), 0o600)

	ts := startService(t, Config{Dir: dir}, nil)
	tu := ts.url + "/discovery/" + tok
	if after := do(t, "GET", tu+"?recursive=true", nil); after != before {
		t.Errorf("listing after restart = %+v, want %+v", after, before)
	}
	checkReply(t, "register after restart", register(t, tu, "cc", "c=http://127.0.0.1:3"), 201, "4",
		`{"action":"create","node":{"key":"/_etcd/registry/`+tok+`/cc","value":"c=http://127.0.0.1:3","modifiedIndex":4,"createdIndex":4}}`)
	if _, err := os.Stat(filepath.Join(dir, "."+tok+".json.tmp-123")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover temporary file: Stat = %v, want it removed", err)
	}
	if len(ts.tokens) != 1 {
		t.Errorf("tokens loaded = %d, want 1 (the damaged file skipped)", len(ts.tokens))
	}
}

func TestExpiry(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }

	ts := startService(t, Config{Dir: dir, TTL: time.Hour}, func(s *Service) { s.now = clock })
	tok := ts.newToken(t, 3)
	tu := ts.url + "/discovery/" + tok
	if r := do(t, "GET", tu+"/_config/size", nil); r.status != 200 {
		t.Fatalf("fresh token = %+v", r)
	}

	// A waiter is told nothing more once its token is gone.
	done := make(chan reply, 1)
	go func() { done <- do(t, "GET", tu+"?recursive=true&wait=true", nil) }()
	time.Sleep(100 * time.Millisecond)

	advance(time.Hour)
	if r := do(t, "GET", tu+"/_config/size", nil); r.status != 404 {
		t.Errorf("expired token = %+v, want 404 at once, before any sweep", r)
	}
	ts.sweep()
	select {
	case r := <-done:
		if r.status != 200 || r.body != "" {
			t.Errorf("wait on an expiring token = %+v; want 200, empty body", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not end when its token expired")
	}
	if _, err := os.Stat(filepath.Join(dir, tok+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("expired token's file: Stat = %v, want it removed", err)
	}
	if s, err := New(Config{Dir: dir, TTL: time.Hour}); err != nil || len(s.tokens) != 0 {
		t.Errorf("New after expiry: %d tokens, %v; want none", len(s.tokens), err)
	}
}

func TestNewEndpoint(t *testing.T) {
	ts := startService(t, Config{}, nil)
	resp, err := http.Post(ts.url+"/discovery/new?size=5", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tokURL := string(b)
	if resp.StatusCode != 201 || !strings.HasPrefix(tokURL, ts.url+"/discovery/") || resp.Header.Get("Location") != tokURL {
		t.Fatalf("POST /discovery/new = %d %q (Location %q); want 201 and %s/discovery/<token>", resp.StatusCode, tokURL, resp.Header.Get("Location"), ts.url)
	}
	if r := do(t, "GET", tokURL+"/_config/size", nil); r.status != 200 || !strings.Contains(r.body, `"value":"5"`) {
		t.Errorf("new token's size = %+v, want 5", r)
	}

	for _, tc := range []struct {
		method, query string
		status        int
	}{
		{"POST", "", 201}, // size 3
		{"POST", "?size=0", 400},
		{"POST", "?size=100", 400},
		{"POST", "?size=x", 400},
		{"GET", "?size=3", 405},
	} {
		if r := do(t, tc.method, ts.url+"/discovery/new"+tc.query, nil); r.status != tc.status {
			t.Errorf("%s /discovery/new%s = %d %q, want %d", tc.method, tc.query, r.status, r.body, tc.status)
		}
	}

	for ts.live() < MaxTokens {
		ts.newToken(t, 1)
	}
	if _, err := ts.NewToken(1); !errors.Is(err, ErrTooManyTokens) {
		t.Errorf("NewToken past MaxTokens = %v, want ErrTooManyTokens", err)
	}
	if r := do(t, "POST", ts.url+"/discovery/new", nil); r.status != 503 {
		t.Errorf("POST /discovery/new past MaxTokens = %d %q, want 503", r.status, r.body)
	}
}

func TestConcurrentRegistrations(t *testing.T) {
	ts := startService(t, Config{Dir: t.TempDir()}, nil)
	tok := ts.newToken(t, 20)
	tu := ts.url + "/discovery/" + tok
	var wg sync.WaitGroup
	codes := make([]int, 40)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := string(rune('a' + i%20)) // each ID twice
			codes[i] = register(t, tu, id, id+"=http://127.0.0.1:1").status
		}()
	}
	wg.Wait()
	n := map[int]int{}
	for _, c := range codes {
		n[c]++
	}
	if n[201] != 20 || n[412] != 20 {
		t.Errorf("40 registrations of 20 IDs: %v, want 20 × 201 and 20 × 412", n)
	}
	tk, _ := ts.lookup(tok)
	if got := len(tk.members()); got != 20 || tk.index() != 21 {
		t.Errorf("after: %d members, index %d; want 20, 21", got, tk.index())
	}
}
