package discovery

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Prefix is the URL path the handler serves under.
const Prefix = "/discovery/"

// registry is where etcd's own discovery service keeps tokens; node keys
// in responses use it, as discovery.etcd.io's do. etcd's client compares
// only their last element.
const registry = "/_etcd/registry/"

// node is a v2 keys API node (go.etcd.io/etcd/client keys.go, Node).
type node struct {
	Key           string  `json:"key"`
	Dir           bool    `json:"dir,omitempty"`
	Value         *string `json:"value,omitempty"`
	Nodes         []*node `json:"nodes,omitempty"`
	ModifiedIndex uint64  `json:"modifiedIndex"`
	CreatedIndex  uint64  `json:"createdIndex"`
}

// response is a v2 keys API success body.
type response struct {
	Action   string `json:"action"`
	Node     *node  `json:"node"`
	PrevNode *node  `json:"prevNode,omitempty"`
}

// etcdError is a v2 keys API error body; status is the HTTP status etcd
// uses for its code (etcd's error package, errorStatus).
type etcdError struct {
	status  int
	Code    int    `json:"errorCode"`
	Message string `json:"message"`
	Cause   string `json:"cause,omitempty"`
	Index   uint64 `json:"index"`
}

func (e *etcdError) Error() string { return fmt.Sprintf("%d: %s (%s)", e.Code, e.Message, e.Cause) }

// etcd's v2 error codes, messages and statuses, for the errors served.
// errTooMany is Kindling's own: etcd has no limit to report.
func errKeyNotFound(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusNotFound, 100, "Key not found", cause, index}
}

func errNotFile(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusForbidden, 102, "Not a file", cause, index}
}

func errNodeExist(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusPreconditionFailed, 105, "Key already exists", cause, index}
}

func errReadOnly(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusForbidden, 107, "Root is read only", cause, index}
}

func errValueRequired(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusBadRequest, 200, "Value is Required in POST form", cause, index}
}

func errIndexNaN(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusBadRequest, 203, "The given index in POST form is not a number", cause, index}
}

func errInvalidField(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusBadRequest, 209, "Invalid field", cause, index}
}

func errInvalidForm(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusBadRequest, 210, "Invalid POST form", cause, index}
}

func errTooMany(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusForbidden, 403, "Too many changes to this token", cause, index}
}

// errInternal is a failure of ours. etcd's client treats a 500 or 503
// from a read as "no leader" and retries with backoff; a failed
// registration makes the member exit.
func errInternal(cause string, index uint64) *etcdError {
	return &etcdError{http.StatusInternalServerError, 300, "Raft Internal Error", cause, index}
}

func errUnavailable(cause string) *etcdError {
	return &etcdError{http.StatusServiceUnavailable, 300, "Raft Internal Error", cause, 0}
}

// serveHTTP serves:
//
//	POST   /discovery/new?size=N                 a new token's URL, as text
//	GET    /discovery/<token>[/<key>]            a v2 keys API get, or with
//	                                             wait=true a watch (long poll)
//	PUT    /discovery/<token>/<member ID>        a registration: form value=
//	DELETE /discovery/<token>/<member ID>        removes a registration
//	DELETE /discovery/<token>?recursive=true     removes the token
//
// Knowing a token is the credential for its keys: it is 128 random bits,
// given only to the operator who created it and the members they start.
func (s *Service) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		text(w, http.StatusNotFound, "404 not found: "+r.URL.Path+"\n")
		return
	}
	if rest == "new" {
		s.serveNew(w, r)
		return
	}
	id, key, _ := strings.Cut(strings.TrimSuffix(rest, "/"), "/")
	if !validToken(id) {
		writeError(w, errKeyNotFound(registry+id, 0))
		return
	}
	if key != "" && !validPath(key) {
		writeError(w, errKeyNotFound(registry+id+"/"+key, 0))
		return
	}
	select {
	case <-s.stopped:
		writeError(w, errUnavailable("the discovery service is shutting down"))
		return
	default:
	}
	t, ok := s.lookup(id)
	if !ok {
		writeError(w, errKeyNotFound(registry+id+suffix(key), 0))
		return
	}
	q := r.URL.Query()
	switch r.Method {
	case http.MethodGet:
		if q.Get("wait") == "true" {
			s.watch(w, r, t, key, q)
			return
		}
		s.get(w, t, key, q)
	case http.MethodPut:
		s.put(w, r, t, key, q)
	case http.MethodDelete:
		s.delete(w, t, key, q)
	default:
		w.Header().Set("Allow", "GET, PUT, DELETE")
		text(w, http.StatusMethodNotAllowed, "405 method not allowed: "+r.Method+" (GET, PUT, DELETE)\n")
	}
}

// serveNew creates a token: POST /discovery/new?size=3 (3 if size is
// absent) answers http://HOST/discovery/<token>, the URL to give etcd.
//
// It is on the machine plane for now, which needs no credentials: anyone
// who can reach the machine plane can create tokens. That costs a file
// each, so MaxTokens bounds the live ones; past it creation fails with a
// 503 until tokens expire. Move it behind the control plane to close it.
func (s *Service) serveNew(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		text(w, http.StatusMethodNotAllowed, "405 method not allowed: create a token with POST "+Prefix+"new?size=N\n")
		return
	}
	size := 3
	if v := r.URL.Query().Get("size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			text(w, http.StatusBadRequest, fmt.Sprintf("400 bad request: size %q: want a number from 1 to %d\n", v, MaxSize))
			return
		}
		size = n
	}
	id, err := s.NewToken(size)
	switch {
	case errors.Is(err, ErrBadSize):
		text(w, http.StatusBadRequest, "400 bad request: "+err.Error()+"\n")
		return
	case errors.Is(err, ErrTooManyTokens):
		text(w, http.StatusServiceUnavailable, "503 service unavailable: "+err.Error()+"\n")
		return
	case err != nil:
		s.log.Error("discovery token not created", "error", err.Error())
		text(w, http.StatusInternalServerError, "500 internal server error: the token could not be saved\n")
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	u := scheme + "://" + r.Host + Prefix + id
	w.Header().Set("Location", u)
	text(w, http.StatusCreated, u)
}

func (s *Service) get(w http.ResponseWriter, t *token, key string, q url.Values) {
	recursive, sorted := q.Get("recursive") == "true", q.Get("sorted") == "true"
	t.mu.Lock()
	if t.gone {
		t.mu.Unlock()
		writeError(w, errKeyNotFound(registry+t.id+suffix(key), 0))
		return
	}
	index := t.index()
	n, ok := t.node(key, recursive, sorted)
	t.mu.Unlock()
	if !ok {
		writeError(w, errKeyNotFound(registry+t.id+suffix(key), index))
		return
	}
	writeJSON(w, http.StatusOK, index, response{Action: "get", Node: n})
}

// node is the node at key (relative to the token) as a get shows it:
// a directory lists its children, and theirs too if recursive. Called
// with t.mu held.
func (t *token) node(key string, recursive, sorted bool) (*node, bool) {
	base := registry + t.id
	size := t.events[0]
	sizeNode := func() *node {
		return &node{Key: base + "/" + sizeKey, Value: &size.Value, ModifiedIndex: size.Index, CreatedIndex: size.Index}
	}
	configNode := func(children bool) *node {
		n := &node{Key: base + "/" + configDir, Dir: true, ModifiedIndex: size.Index, CreatedIndex: size.Index}
		if children {
			n.Nodes = []*node{sizeNode()}
		}
		return n
	}
	switch key {
	case "":
		dir := &node{Key: base, Dir: true, ModifiedIndex: size.Index, CreatedIndex: size.Index}
		dir.Nodes = append(dir.Nodes, configNode(recursive))
		for _, m := range t.members() {
			dir.Nodes = append(dir.Nodes, memberNode(base, m))
		}
		if sorted {
			sort.Slice(dir.Nodes, func(i, j int) bool { return dir.Nodes[i].Key < dir.Nodes[j].Key })
		}
		return dir, true
	case configDir:
		return configNode(true), true
	case sizeKey:
		return sizeNode(), true
	}
	m, ok := t.member(key)
	if !ok {
		return nil, false
	}
	return memberNode(base, m), true
}

func memberNode(base string, m member) *node {
	v := m.value
	return &node{Key: base + "/" + m.key, Value: &v, ModifiedIndex: m.created, CreatedIndex: m.created}
}

// put registers a member. Registrations are write-once: whatever
// prevExist says, a key that exists is a 412 (errorCode 105, which etcd
// reports as "discovery: found duplicate id"), so a registration cannot
// be redirected once made. The registration is on disk before the 201.
func (s *Service) put(w http.ResponseWriter, r *http.Request, t *token, key string, q url.Values) {
	base := registry + t.id
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		writeError(w, errInvalidForm(err.Error(), 0))
		return
	}
	switch {
	case key == "":
		writeError(w, errNotFile(base, 0))
		return
	case key == configDir || strings.HasPrefix(key, configDir+"/"):
		writeError(w, errReadOnly(base+"/"+key+": the size is fixed when the token is created", 0))
		return
	case q.Get("dir") == "true":
		writeError(w, errInvalidField("dir: only member keys can be created", 0))
		return
	case q.Get("prevValue") != "" || q.Get("prevIndex") != "":
		writeError(w, errInvalidField("prevValue, prevIndex: registrations are write-once", 0))
		return
	}
	if err := validMemberKey(key); err != nil {
		writeError(w, errInvalidField(err.Error(), 0))
		return
	}
	value := r.Form.Get("value")
	if value == "" {
		writeError(w, errValueRequired(base+"/"+key, 0))
		return
	}
	if err := validValue(value); err != nil {
		writeError(w, errInvalidField("value: "+err.Error(), 0))
		return
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gone {
		writeError(w, errKeyNotFound(base+"/"+key, 0))
		return
	}
	index := t.index()
	if _, ok := t.member(key); ok {
		writeError(w, errNodeExist(base+"/"+key, index))
		return
	}
	if q.Get("prevExist") == "true" {
		writeError(w, errKeyNotFound(base+"/"+key, index))
		return
	}
	if len(t.events) >= maxEvents {
		writeError(w, errTooMany(fmt.Sprintf("%s: %d changes, the most a token takes", base, maxEvents), index))
		return
	}
	e := event{Index: index + 1, Action: actionCreate, Key: key, Value: value}
	events := append(t.events[:len(t.events):len(t.events)], e)
	if err := s.save(t, events); err != nil {
		s.log.Error("discovery registration not saved", "token", short(t.id), "member", key, "error", err.Error())
		writeError(w, errInternal("the registration could not be saved", index))
		return
	}
	t.commit(events)
	n := len(t.members())
	s.log.Info("discovery member registered", "token", short(t.id), "member", key, "peer", value, "registered", n, "size", t.size)
	if n == t.size {
		s.log.Info("discovery cluster complete", "token", short(t.id), "size", t.size)
	}
	writeJSON(w, http.StatusCreated, e.Index, response{Action: actionCreate, Node: memberNode(base, member{key: key, value: value, created: e.Index})})
}

// delete removes a member's registration (an operator fixing a mistaken
// one, as discovery.etcd.io allows) or, with recursive=true, the token.
func (s *Service) delete(w http.ResponseWriter, t *token, key string, q url.Values) {
	base := registry + t.id
	switch {
	case key == "":
		if q.Get("recursive") != "true" {
			writeError(w, errNotFile(base+": delete a token with recursive=true", 0))
			return
		}
		s.mu.Lock()
		if s.tokens[t.id] == t {
			delete(s.tokens, t.id)
		}
		s.mu.Unlock()
		t.mu.Lock()
		index, gone := t.index(), t.gone
		t.mu.Unlock()
		if gone {
			writeError(w, errKeyNotFound(base, 0))
			return
		}
		s.remove(t, "deleted")
		dir := &node{Key: base, Dir: true, ModifiedIndex: index + 1, CreatedIndex: 1}
		prev := &node{Key: base, Dir: true, ModifiedIndex: 1, CreatedIndex: 1}
		writeJSON(w, http.StatusOK, index+1, response{Action: actionDelete, Node: dir, PrevNode: prev})
		return
	case key == configDir || strings.HasPrefix(key, configDir+"/"):
		writeError(w, errReadOnly(base+"/"+key, 0))
		return
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gone {
		writeError(w, errKeyNotFound(base+"/"+key, 0))
		return
	}
	index := t.index()
	m, ok := t.member(key)
	if !ok {
		writeError(w, errKeyNotFound(base+"/"+key, index))
		return
	}
	if len(t.events) >= maxEvents {
		writeError(w, errTooMany(fmt.Sprintf("%s: %d changes, the most a token takes", base, maxEvents), index))
		return
	}
	e := event{Index: index + 1, Action: actionDelete, Key: key, Value: m.value, Created: m.created}
	events := append(t.events[:len(t.events):len(t.events)], e)
	if err := s.save(t, events); err != nil {
		s.log.Error("discovery deletion not saved", "token", short(t.id), "member", key, "error", err.Error())
		writeError(w, errInternal("the deletion could not be saved", index))
		return
	}
	t.commit(events)
	s.log.Info("discovery member deleted", "token", short(t.id), "member", key, "registered", len(t.members()), "size", t.size)
	writeJSON(w, http.StatusOK, e.Index, eventResponse(base, e))
}

// eventResponse is what a watch returns for e.
func eventResponse(base string, e event) response {
	key := base + "/" + e.Key
	v := e.Value
	if e.Action == actionDelete {
		return response{
			Action:   actionDelete,
			Node:     &node{Key: key, ModifiedIndex: e.Index, CreatedIndex: e.Created},
			PrevNode: &node{Key: key, Value: &v, ModifiedIndex: e.Created, CreatedIndex: e.Created},
		}
	}
	return response{Action: actionCreate, Node: &node{Key: key, Value: &v, ModifiedIndex: e.Index, CreatedIndex: e.Index}}
}

// watch is a v2 watch: the first change at or after waitIndex (the next
// one if waitIndex is 0 or absent) to key, or with recursive=true to key
// or anything under it. A change already made is answered at once from
// the history, which is never trimmed; otherwise the 200 and headers are
// sent at once, as etcd does, and the body when the change comes. After
// s.maxWait, or when the service stops or the token goes, the body stays
// empty, and etcd's client polls again.
func (s *Service) watch(w http.ResponseWriter, r *http.Request, t *token, key string, q url.Values) {
	var from uint64
	if v := q.Get("waitIndex"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(w, errIndexNaN("waitIndex "+strconv.Quote(v), 0))
			return
		}
		from = n
	}
	recursive := q.Get("recursive") == "true"
	base := registry + t.id
	timer := time.NewTimer(s.maxWait)
	defer timer.Stop()
	started := false
	for {
		t.mu.Lock()
		gone, index, changed := t.gone, t.index(), t.changed
		if from == 0 {
			from = index + 1
		}
		e, found := t.find(key, recursive, from)
		t.mu.Unlock()
		switch {
		case gone && !started:
			writeError(w, errKeyNotFound(base+suffix(key), 0))
			return
		case gone:
			return
		case found:
			if !started {
				setHeaders(w, index)
				w.WriteHeader(http.StatusOK)
			}
			json.NewEncoder(w).Encode(eventResponse(base, e))
			return
		case !started:
			setHeaders(w, index)
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			started = true
		}
		select {
		case <-changed:
		case <-timer.C:
			return
		case <-s.stopped:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// find is the first event at or after index from that a watch of key
// sees. Called with t.mu held.
func (t *token) find(key string, recursive bool, from uint64) (event, bool) {
	i := sort.Search(len(t.events), func(i int) bool { return t.events[i].Index >= from })
	for _, e := range t.events[i:] {
		if e.Key == key || recursive && (key == "" || strings.HasPrefix(e.Key, key+"/")) {
			return e, true
		}
	}
	return event{}, false
}

func setHeaders(w http.ResponseWriter, index uint64) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Etcd-Index", strconv.FormatUint(index, 10))
	h.Set("Cache-Control", "no-store")
}

func writeJSON(w http.ResponseWriter, status int, index uint64, v any) {
	setHeaders(w, index)
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *etcdError) {
	writeJSON(w, e.status, e.Index, e)
}

func text(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	io.WriteString(w, s)
}

func suffix(key string) string {
	if key == "" {
		return ""
	}
	return "/" + key
}

// validToken reports whether id looks like a token: 32 lowercase hex
// digits, as NewToken makes them.
func validToken(id string) bool {
	if len(id) != 32 {
		return false
	}
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validPath reports whether key is a clean relative key path: no empty,
// "." or ".." elements.
func validPath(key string) bool {
	for _, el := range strings.Split(key, "/") {
		if el == "" || el == "." || el == ".." {
			return false
		}
	}
	return true
}

// validMemberKey checks a member's key: etcd registers under its member
// ID in hex; keys starting with "_" are etcd's hidden keys (like _config).
func validMemberKey(key string) error {
	if key == "" || len(key) > 64 {
		return fmt.Errorf("member key %q: want 1 to 64 characters", key)
	}
	if key[0] == '_' || key[0] == '.' {
		return fmt.Errorf("member key %q: must not start with %q", key, key[:1])
	}
	for _, c := range key {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("member key %q: want letters, digits, '-', '.', '_' (etcd uses its member ID in hex)", key)
		}
	}
	return nil
}

// validValue checks a registration's value, the member's entry in
// --initial-cluster: name=peerURL[,name=peerURL…]. etcd's client parses
// every member's value into the initial cluster (types.NewURLsMap), so
// one malformed value would stop the whole cluster from forming.
func validValue(v string) error {
	if len(v) > 4096 {
		return fmt.Errorf("%d bytes: want at most 4096", len(v))
	}
	for _, entry := range strings.Split(v, ",") {
		name, raw, ok := strings.Cut(entry, "=")
		if !ok || name == "" {
			return fmt.Errorf("%q: want name=peerURL", entry)
		}
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			return fmt.Errorf("%q: %w", entry, err)
		}
		switch u.Scheme {
		case "http", "https":
			if _, _, err := net.SplitHostPort(u.Host); err != nil {
				return fmt.Errorf("%q: URL address not of the form host:port", entry)
			}
			if u.Path != "" {
				return fmt.Errorf("%q: URL with a path", entry)
			}
		case "unix", "unixs":
		default:
			return fmt.Errorf("%q: URL scheme %q: want http, https, unix or unixs", entry, u.Scheme)
		}
	}
	return nil
}
