package discovery

// etcd v3 discovery (etcd 3.5 and later; the only kind from 3.7).
//
// A member started with --discovery-token=<token> and
// --discovery-endpoints=http://KINDLING:PORT speaks etcd's own v3 gRPC API
// to those endpoints (go.etcd.io/etcd/server/v3 etcdserver/api/v3discovery).
// It, in order:
//
//  1. Ranges /_etcd/registry/<token>/_config/size, the cluster size
//     (none: the member exits, ErrSizeNotFound);
//  2. Ranges the prefix /_etcd/registry/<token>/members, the registered
//     members; if size members with a lower CreateRevision are there the
//     cluster is full and it exits;
//  3. Puts /_etcd/registry/<token>/members/<member ID> = name=peerURL,...
//     (a plain put: no lease, no transaction);
//  4. Ranges size and members again and watches the members prefix from
//     one past that range's revision until size members have registered.
//     The first size members by CreateRevision are the initial cluster.
//
// Kindling answers with an embedded single-member etcd (StartV3) on its own
// listener. Every live token has its size key there: NewToken writes it,
// and StartV3 writes those of the tokens made before it started. A removed
// token (deleted or expired) loses its keys. A gRPC filter (v3Filter)
// admits only the requests above, on the registry keys, so the server holds
// nothing else and nobody can list the tokens.
//
// The registries of the two protocols are separate: a token's v2 members
// (--discovery URL) and v3 members (--discovery-token) do not see each
// other, so all the members of one cluster must use the same protocol.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// registryPrefix is where etcd's v3 discovery client keeps a token's keys:
// registryPrefix + <token> + "/_config/size" and "/members/<member ID>".
const registryPrefix = "/_etcd/registry/"

// v3Timeout bounds one write to the embedded etcd from Kindling.
const v3Timeout = 10 * time.Second

// V3Config configures the v3 discovery server.
type V3Config struct {
	// Addr is the host:port etcd's clients reach (their
	// --discovery-endpoints=http://Addr); port 0 picks a free one (see
	// V3.Addr).
	Addr string
	// Dir holds the embedded etcd's data, created if missing. Empty
	// means Config.Dir/etcd (DATA-PATH/discovery/etcd) for a Service that
	// persists its tokens, else a temporary directory removed by Close.
	Dir string
}

// V3 is a running v3 discovery server.
type V3 struct {
	s      *Service
	etcd   *embed.Etcd
	client *clientv3.Client // in-process: bypasses the gRPC filter
	addr   string
	tmp    string // removed by Close when Dir was empty

	closeOnce sync.Once
	closing   atomic.Bool // set by Close: etcd's shutdown errors are expected
}

// ServeV3 runs the v3 discovery server until ctx ends, then stops it. It
// returns an error if the server cannot start or fails while running.
func (s *Service) ServeV3(ctx context.Context, cfg V3Config) error {
	v, err := s.StartV3(cfg)
	if err != nil {
		return err
	}
	defer v.Close()
	select {
	case <-ctx.Done():
		return nil
	case err := <-v.etcd.Err():
		return fmt.Errorf("discovery v3: %w", err)
	}
}

// StartV3 starts the v3 discovery server: an embedded single-member etcd
// listening for clients on cfg.Addr, its peer listener on a free loopback
// port. From then on every token made is also written to it, and those
// already made are written before StartV3 returns. One Service runs at
// most one V3 at a time.
func (s *Service) StartV3(cfg V3Config) (_ *V3, err error) {
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("discovery v3 address %q: %w", cfg.Addr, err)
	}
	v := &V3{s: s}
	dir := cfg.Dir
	if dir == "" && s.dir != "" {
		dir = filepath.Join(s.dir, "etcd")
	}
	if dir == "" {
		if v.tmp, err = os.MkdirTemp("", "kindling-discovery-etcd-"); err != nil {
			return nil, fmt.Errorf("discovery v3: %w", err)
		}
		dir = v.tmp
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("discovery v3: %w", err)
	}
	defer func() {
		if err != nil && v.tmp != "" {
			os.RemoveAll(v.tmp)
		}
	}()

	ec := embed.NewConfig()
	ec.Name = "kindling-discovery"
	ec.Dir = dir
	ec.InitialClusterToken = "kindling-discovery"
	client := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}
	ec.ListenClientUrls = []url.URL{client}
	ec.AdvertiseClientUrls = []url.URL{client}
	// A single member needs no peers, but etcd wants a peer URL: a
	// loopback port the kernel picks. The same string is advertised and
	// stored, so restarts on another port still match.
	peer := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	ec.ListenPeerUrls = []url.URL{peer}
	ec.AdvertisePeerUrls = []url.URL{peer}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.EnableGRPCGateway = false // gRPC only: what etcd's client speaks
	// Registrations are few and bootstraps short: a day of history is
	// plenty for a member to catch up, and compaction keeps the store small.
	ec.AutoCompactionMode = embed.CompactorModePeriodic
	ec.AutoCompactionRetention = "24h"
	ec.QuotaBackendBytes = 256 << 20
	ec.MaxRequestBytes = 64 << 10
	ec.Logger = "zap"
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(&slogCore{s: s, lvl: zapcore.WarnLevel, closing: &v.closing}))
	f := &v3Filter{s: s}
	ec.GRPCAdditionalServerOptions = []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(f.unary),
		grpc.ChainStreamInterceptor(f.stream),
	}

	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("discovery v3: starting etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("discovery v3: starting etcd: %w", err)
	case <-time.After(time.Minute):
		e.Close()
		return nil, errors.New("discovery v3: etcd not ready after a minute")
	}
	v.etcd = e
	v.client = v3client.New(e.Server)
	v.addr = e.Clients[0].Addr().String()

	s.v3mu.Lock()
	if s.v3 != nil {
		s.v3mu.Unlock()
		v.stop()
		return nil, errors.New("discovery v3: already running")
	}
	s.v3 = v
	s.v3mu.Unlock()
	// Tokens made from here on are written by NewToken; write (again,
	// harmlessly) those made before, and drop the keys of tokens gone.
	if err := v.sync(); err != nil {
		v.Close()
		return nil, err
	}
	s.log.Info("discovery v3 serving", "address", v.addr, "data", dir)
	return v, nil
}

// Addr is the address the server listens on, host:port.
func (v *V3) Addr() string { return v.addr }

// Close stops the server; tokens made afterwards are not written to it.
func (v *V3) Close() error {
	v.s.v3mu.Lock()
	if v.s.v3 == v {
		v.s.v3 = nil
	}
	v.s.v3mu.Unlock()
	v.stop()
	return nil
}

func (v *V3) stop() {
	v.closeOnce.Do(func() {
		v.closing.Store(true)
		v.client.Close()
		v.etcd.Close()
		if v.tmp != "" {
			os.RemoveAll(v.tmp)
		}
	})
}

// sync writes the size key of every live token and deletes the keys of
// every other token.
func (v *V3) sync() error {
	v.s.mu.Lock()
	live := make([]*token, 0, len(v.s.tokens))
	for _, t := range v.s.tokens {
		live = append(live, t)
	}
	v.s.mu.Unlock()
	for _, t := range live {
		if err := v.put(t); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), v3Timeout)
	defer cancel()
	resp, err := v.client.Get(ctx, registryPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return fmt.Errorf("discovery v3: listing tokens: %w", err)
	}
	seen := map[string]bool{}
	for _, kv := range resp.Kvs {
		id, _, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), registryPrefix), "/")
		if seen[id] {
			continue
		}
		seen[id] = true
		if _, ok := v.s.lookup(id); !ok {
			if err := v.delete(id); err != nil {
				return err
			}
		}
	}
	return nil
}

// put writes t's size key unless it is there.
func (v *V3) put(t *token) error {
	ctx, cancel := context.WithTimeout(context.Background(), v3Timeout)
	defer cancel()
	key := registryPrefix + t.id + "/" + sizeKey
	_, err := v.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.Itoa(t.size))).
		Commit()
	if err != nil {
		return fmt.Errorf("discovery v3: writing token %s: %w", short(t.id), err)
	}
	return nil
}

// delete removes every key of the token id.
func (v *V3) delete(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), v3Timeout)
	defer cancel()
	if _, err := v.client.Delete(ctx, registryPrefix+id+"/", clientv3.WithPrefix()); err != nil {
		return fmt.Errorf("discovery v3: removing token %s: %w", short(id), err)
	}
	return nil
}

// v3Created is NewToken's hook: it writes t to the running V3, if any.
func (s *Service) v3Created(t *token) {
	s.v3mu.Lock()
	v := s.v3
	s.v3mu.Unlock()
	if v == nil {
		return
	}
	if err := v.put(t); err != nil {
		// The token works over v2; the next StartV3 writes it.
		s.log.Warn("discovery token not written for v3 discovery", "token", short(t.id), "error", err.Error())
	}
}

// v3Removed is remove's hook: it drops the token's keys from the running
// V3, if any.
func (s *Service) v3Removed(id string) {
	s.v3mu.Lock()
	v := s.v3
	s.v3mu.Unlock()
	if v == nil {
		return
	}
	if err := v.delete(id); err != nil {
		s.log.Warn("discovery token not removed from v3 discovery", "token", short(id), "error", err.Error())
	}
}

// v3Filter admits, from the network, only what etcd's v3 discovery client
// sends: Range of a token's size key or members prefix, Put of a member key
// of a live token, and Watch of a token's members prefix. Nothing lists the
// tokens, and nothing writes outside a live token's members.
type v3Filter struct{ s *Service }

var errV3Denied = status.Error(codes.PermissionDenied, "kindling discovery: only etcd v3 discovery requests are served")

// splitRegistry splits a key under the registry into the token and the
// rest ("_config/size", "members", "members/<id>").
func splitRegistry(key []byte) (id, rest string, ok bool) {
	k, ok := strings.CutPrefix(string(key), registryPrefix)
	if !ok {
		return "", "", false
	}
	id, rest, ok = strings.Cut(k, "/")
	return id, rest, ok && validToken(id)
}

// isMembersPrefix reports whether key..end is the prefix range of a
// token's members, as clientv3.WithPrefix makes it.
func isMembersPrefix(key, end []byte) bool {
	_, rest, ok := splitRegistry(key)
	return ok && rest == "members" && string(end) == clientv3.GetPrefixRangeEnd(string(key))
}

func (f *v3Filter) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := f.check(ctx, req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (f *v3Filter) check(ctx context.Context, req any) error {
	switch r := req.(type) {
	case *pb.RangeRequest:
		if _, rest, ok := splitRegistry(r.Key); ok && rest == sizeKey && len(r.RangeEnd) == 0 {
			return nil
		}
		if isMembersPrefix(r.Key, r.RangeEnd) {
			return nil
		}
	case *pb.PutRequest:
		id, rest, ok := splitRegistry(r.Key)
		m, isMember := strings.CutPrefix(rest, "members/")
		if !ok || !isMember || r.Lease != 0 || r.IgnoreValue || r.IgnoreLease {
			break
		}
		if err := validMemberKey(m); err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		if err := validValue(string(r.Value)); err != nil {
			return status.Error(codes.InvalidArgument, "member "+m+": "+err.Error())
		}
		if _, live := f.s.lookup(id); !live {
			return status.Error(codes.NotFound, "kindling discovery: no such token")
		}
		return f.room(ctx, id)
	}
	return errV3Denied
}

// room refuses a registration once the token has maxEvents members, as
// the v2 protocol does, so a token holder cannot fill the disk.
func (f *v3Filter) room(ctx context.Context, id string) error {
	f.s.v3mu.Lock()
	v := f.s.v3
	f.s.v3mu.Unlock()
	if v == nil {
		return status.Error(codes.Unavailable, "kindling discovery: stopping")
	}
	resp, err := v.client.Get(ctx, registryPrefix+id+"/members/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	if resp.Count >= maxEvents {
		return status.Errorf(codes.ResourceExhausted, "kindling discovery: %d members registered, the most allowed", resp.Count)
	}
	return nil
}

func (f *v3Filter) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if info.FullMethod != "/etcdserverpb.Watch/Watch" {
		return errV3Denied
	}
	return h(srv, &watchFilter{ServerStream: ss})
}

// watchFilter ends a watch stream that asks for anything but a token's
// members.
type watchFilter struct{ grpc.ServerStream }

func (w *watchFilter) RecvMsg(m any) error {
	if err := w.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if r, ok := m.(*pb.WatchRequest); ok {
		if c := r.GetCreateRequest(); c != nil && !isMembersPrefix(c.Key, c.RangeEnd) {
			return errV3Denied
		}
	}
	return nil
}

// slogCore is a zapcore.Core writing the embedded etcd's log lines at lvl
// and above to the Service's logger: those expected (benign, listed in
// etcdBenign, or logged while closing) at Debug.
type slogCore struct {
	s       *Service
	lvl     zapcore.Level
	closing *atomic.Bool
	fields  []zapcore.Field
}

// etcdBenign are warnings the embedded etcd always logs, about choices
// made on purpose: one port for its clients; no authentication, so no
// signed tokens.
var etcdBenign = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.lvl }

func (c *slogCore) With(fs []zapcore.Field) zapcore.Core {
	return &slogCore{s: c.s, lvl: c.lvl, closing: c.closing, fields: append(append([]zapcore.Field(nil), c.fields...), fs...)}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *slogCore) Write(e zapcore.Entry, fs []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range c.fields {
		f.AddTo(enc)
	}
	for _, f := range fs {
		f.AddTo(enc)
	}
	args := []any{"component", "discovery-v3-etcd"}
	for k, v := range enc.Fields {
		args = append(args, k, v)
	}
	msg := "discovery v3 etcd: " + e.Message
	switch {
	case etcdBenign[e.Message] || c.closing.Load():
		c.s.log.Debug(msg, args...)
	case e.Level >= zapcore.ErrorLevel:
		c.s.log.Error(msg, args...)
	default:
		c.s.log.Warn(msg, args...)
	}
	return nil
}

func (c *slogCore) Sync() error { return nil }
