// Package discovery is an etcd v2 discovery service, what discovery.etcd.io
// provides: an operator creates a token for a cluster of N members, starts
// each etcd member with --discovery http://SERVER/discovery/<token>, and the
// members find each other with no other coordination.
//
// The wire protocol is the subset of etcd's v2 keys API that etcd's v2
// discovery client (go.etcd.io/etcd etcdserver/api/v2discovery, etcd 3.4
// to 3.6; removed in 3.7) speaks, with the token's URL path as the key
// prefix. A member, in order:
//
//  1. GETs <token>/_config/size, the cluster size;
//  2. GETs <token>, the registered members; if size members with a
//     lower createdIndex are there already the cluster is full, and etcd
//     exits or becomes a v2 proxy (--discovery-fallback);
//  3. PUTs <token>/<member ID>?prevExist=false with value=name=peerURL
//     (201; 412 with errorCode 105 if that ID registered before);
//  4. watches its own key from the returned createdIndex, to see it
//     committed;
//  5. GETs size and members again, and long-polls
//     <token>?wait=true&recursive=true&waitIndex=N, N one past the
//     X-Etcd-Index of that listing, until size members have registered.
//     The first size members by createdIndex are the initial cluster.
//
// Indexes are per token, deterministic and persisted: 1 is the size key,
// then one per registration or deletion. Every change is written to disk
// (temporary file, fsync, rename) before it is acknowledged, so a restart
// mid-bootstrap loses nothing; the history of changes is kept whole, so a
// member whose long poll was cut by the restart resumes from its waitIndex
// and misses nothing either.
//
// How etcd's client takes failures, which the answers here rely on: a
// refused connection, or a 500 or 503 on a read, is retried after a
// backoff (2s, doubling to 256s); a 200 with an empty body to a watch is
// polled again at once; any other error, and any error to the
// registration itself, makes the member give up and exit.
package discovery

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"
)

// Limits.
const (
	// DefaultTTL is how long a token lives when Config.TTL is zero.
	DefaultTTL = 7 * 24 * time.Hour
	// MaxSize is the largest cluster size a token can be created for.
	MaxSize = 99
	// MaxTokens bounds the live (unexpired) tokens: creating them needs no
	// credentials (see Handler), so their number and disk use are capped.
	MaxTokens = 1000
	// maxEvents bounds one token's history (registrations and deletions,
	// plus the size key), so a token holder cannot fill the disk either.
	maxEvents = 256
	// defaultMaxWait bounds one long poll. The request then ends with a
	// 200 and an empty body, which etcd's client answers by polling
	// again from the same index (client.httpWatcher.Next, ErrEmptyBody),
	// the way an etcd server ends a watch. Abandoned polls are reaped,
	// and a poll stays below the 30s write deadline Kindling's web
	// handlers use, should one ever be applied here.
	defaultMaxWait = 25 * time.Second
	// sweepEvery is how often Run removes expired tokens. Expired tokens
	// are invisible from the moment they expire; sweeping frees them.
	sweepEvery = time.Minute
)

// Errors NewToken returns.
var (
	// ErrBadSize is a cluster size outside 1..MaxSize.
	ErrBadSize = errors.New("bad cluster size")
	// ErrTooManyTokens means MaxTokens tokens are live.
	ErrTooManyTokens = errors.New("too many live discovery tokens")
)

// Config configures a Service. The zero value keeps tokens in memory for
// seven days and logs nothing.
type Config struct {
	// Dir is where tokens persist, one file per token; it is created if
	// missing. Empty means memory only: a restart forgets every token.
	Dir string
	// TTL is how long after its creation a token expires; 0 means
	// DefaultTTL (7 days).
	TTL time.Duration
	// Logger receives one Info line per token created, member registered
	// and token removed; nil discards.
	Logger *slog.Logger
}

// Service is the discovery service: the tokens and their registrations.
type Service struct {
	dir     string
	ttl     time.Duration
	log     *slog.Logger
	handler http.Handler

	// now and maxWait are replaced by tests.
	now     func() time.Time
	maxWait time.Duration

	mu     sync.Mutex
	tokens map[string]*token // live and not yet swept

	namesMu sync.Mutex        // serialises Named
	names   map[string]string // cluster name → token, see Named

	stopOnce sync.Once
	stopped  chan struct{} // closed when Run returns: long polls end

	v3mu sync.Mutex
	v3   *V3 // the running v3 discovery server, see StartV3
}

// token is one cluster's registry. Its fields below mu are guarded by mu,
// which also serialises its registrations (including their disk writes).
type token struct {
	id      string
	size    int
	created time.Time

	mu      sync.Mutex
	events  []event       // the whole history, Index strictly increasing; events[0] sets the size key
	gone    bool          // deleted or expired: requests see 404
	changed chan struct{} // closed and replaced on every change, waking long polls
}

// event is one change to a token's keys: the size key's creation, or a
// member's registration or deletion.
type event struct {
	Index  uint64 `json:"index"`
	Action string `json:"action"` // actionCreate or actionDelete
	// Key is relative to the token: sizeKey, or a member ID.
	Key string `json:"key"`
	// Value is the value set, or for a deletion the value removed.
	Value string `json:"value,omitempty"`
	// Created is, for a deletion, the createdIndex of the node it removed.
	Created uint64 `json:"created,omitempty"`
}

const (
	actionCreate = "create"
	actionDelete = "delete"
	configDir    = "_config"
	sizeKey      = configDir + "/size"
)

// member is a registered member: its node in the token directory.
type member struct {
	key     string
	value   string
	created uint64
}

func newToken(id string, size int, created time.Time) *token {
	return &token{
		id:      id,
		size:    size,
		created: created,
		events:  []event{{Index: 1, Action: actionCreate, Key: sizeKey, Value: strconv.Itoa(size)}},
		changed: make(chan struct{}),
	}
}

// index is the token's current index: that of its last change.
func (t *token) index() uint64 { return t.events[len(t.events)-1].Index }

// members replays the history into the registered members, in
// createdIndex order (the order etcd's client ranks them in).
func (t *token) members() []member {
	var ms []member
	for _, e := range t.events[1:] {
		switch e.Action {
		case actionCreate:
			ms = append(ms, member{key: e.Key, value: e.Value, created: e.Index})
		case actionDelete:
			for i, m := range ms {
				if m.key == e.Key {
					ms = append(ms[:i], ms[i+1:]...)
					break
				}
			}
		}
	}
	return ms
}

func (t *token) member(key string) (member, bool) {
	for _, m := range t.members() {
		if m.key == key {
			return m, true
		}
	}
	return member{}, false
}

// commit makes events the token's history and wakes its long polls.
func (t *token) commit(events []event) {
	t.events = events
	close(t.changed)
	t.changed = make(chan struct{})
}

// New makes a Service, loading the tokens persisted in cfg.Dir. Expired
// tokens are removed; a token file that cannot be read is logged and left
// alone.
func New(cfg Config) (*Service, error) {
	s := &Service{
		dir:     cfg.Dir,
		ttl:     cfg.TTL,
		log:     cfg.Logger,
		now:     time.Now,
		maxWait: defaultMaxWait,
		tokens:  make(map[string]*token),
		stopped: make(chan struct{}),
	}
	if s.ttl <= 0 {
		s.ttl = DefaultTTL
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.dir != "" {
		if err := s.load(); err != nil {
			return nil, err
		}
	}
	if err := s.loadNames(); err != nil {
		return nil, err
	}
	s.handler = http.HandlerFunc(s.serveHTTP)
	return s, nil
}

// NewToken creates a token for a cluster of size members and returns it:
// 128 random bits in hex. The token is on disk when NewToken returns.
func (s *Service) NewToken(size int) (string, error) {
	if size < 1 || size > MaxSize {
		return "", fmt.Errorf("%w %d: a cluster has 1 to %d members", ErrBadSize, size, MaxSize)
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("making a token: %w", err)
	}
	id := hex.EncodeToString(b[:])
	t := newToken(id, size, s.now())

	if s.live() >= MaxTokens {
		s.sweep()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.tokens) >= MaxTokens {
		return "", fmt.Errorf("%w: %d live, the most allowed; the next expires at %s", ErrTooManyTokens, len(s.tokens), s.firstExpiryLocked().Format(time.RFC3339))
	}
	if err := s.save(t, t.events); err != nil {
		return "", err
	}
	s.tokens[id] = t
	s.log.Info("discovery token created", "token", short(id), "size", size, "expires", t.created.Add(s.ttl).Format(time.RFC3339))
	s.v3Created(t) // the same token serves etcd's v3 discovery
	return id, nil
}

// Handler serves the tokens over HTTP (see serveHTTP), for mounting at
// /discovery/ without stripping the prefix.
func (s *Service) Handler() http.Handler { return s.handler }

// Run removes expired tokens every minute until ctx ends. When it returns,
// long polls in progress end and new ones are refused with a 503, so an
// HTTP server shutting down is not held up by them and etcd's clients
// back off and retry.
func (s *Service) Run(ctx context.Context) error {
	defer s.stopOnce.Do(func() { close(s.stopped) })
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	for {
		s.sweep()
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (s *Service) live() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.tokens)
}

func (s *Service) expired(t *token, now time.Time) bool {
	return !now.Before(t.created.Add(s.ttl))
}

func (s *Service) firstExpiryLocked() time.Time {
	var first time.Time
	for _, t := range s.tokens {
		if e := t.created.Add(s.ttl); first.IsZero() || e.Before(first) {
			first = e
		}
	}
	return first
}

// lookup finds a live token.
func (s *Service) lookup(id string) (*token, bool) {
	s.mu.Lock()
	t, ok := s.tokens[id]
	s.mu.Unlock()
	if !ok || s.expired(t, s.now()) {
		return nil, false
	}
	return t, true
}

// sweep removes the expired tokens.
func (s *Service) sweep() {
	now := s.now()
	var dead []*token
	s.mu.Lock()
	for id, t := range s.tokens {
		if s.expired(t, now) {
			delete(s.tokens, id)
			dead = append(dead, t)
		}
	}
	s.mu.Unlock()
	sort.Slice(dead, func(i, j int) bool { return dead[i].id < dead[j].id })
	for _, t := range dead {
		s.remove(t, "expired")
	}
}

// remove deletes a token already taken out of s.tokens: its file, and
// its long polls, which end.
func (s *Service) remove(t *token, why string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.gone {
		return
	}
	t.gone = true
	close(t.changed)
	t.changed = make(chan struct{})
	if err := s.removeFile(t.id); err != nil {
		s.log.Warn("discovery token file not removed", "token", short(t.id), "error", err.Error())
	}
	s.log.Info("discovery token removed", "token", short(t.id), "reason", why, "registered", len(t.members()), "size", t.size)
	s.v3Removed(t.id)
}

// short is a token shortened for logs: tokens are secrets (whoever has
// one can register members and delete the token).
func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
