// Package matchbox is Kindling's server: Run composes the catalog, its
// reloads and the machine-plane HTTP server under one errgroup. Nothing
// else wires the parts together.
package matchbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kindlingboot/kindling/assets"
	"github.com/kindlingboot/kindling/matchbox/api"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/dhcp"
	"github.com/kindlingboot/kindling/matchbox/discovery"
	"github.com/kindlingboot/kindling/matchbox/events"
	"github.com/kindlingboot/kindling/matchbox/store"
	"github.com/kindlingboot/kindling/matchbox/web"
)

// Config configures the server. The zero value serves Data (required when
// DataPath is empty) on 127.0.0.1:8080.
type Config struct {
	// Address is the HTTP listen address; empty means 127.0.0.1:8080.
	Address string
	// Listener, when set, is used instead of listening on Address.
	Listener net.Listener
	// DataPath is a data directory in matchbox's layout, watched for
	// changes. Empty means serve Data.
	DataPath string
	// Data is the catalog source when DataPath is empty (the embedded
	// default); it is never reloaded.
	Data fs.FS
	// AssetsPath is the asset tree served at /assets/. Empty means
	// DataPath/assets if that exists, else no assets.
	AssetsPath string
	// Catalog tunes catalog loading.
	Catalog catalog.Options
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Reload triggers a reload (SIGHUP); nil means only file changes do.
	Reload <-chan struct{}
	// Ready, when set, is called with the listening address once the
	// server accepts connections.
	Ready func(net.Addr)
	// ShutdownTimeout bounds how long in-flight requests (asset downloads)
	// may take to finish after ctx ends; 0 means 5 minutes.
	ShutdownTimeout time.Duration
	// NoWatch turns off watching DataPath: only Reload triggers reloads
	// (for file systems without inotify, or operators who want control).
	NoWatch bool
	// DHCP, when set, answers PXE clients' DHCP on an interface (proxy or
	// full server); Logger, Record, Metrics, Reservations, HTTPPort and
	// LeaseFile (DataPath/dhcp-leases.json) are filled in by New.
	DHCP *dhcp.Config
	// TFTPAddress, when set, serves TFTP there (":69").
	TFTPAddress string
	// TFTPRoot is the directory served over TFTP; empty means the first of
	// ASSETS/ipxe and /usr/lib/ipxe that exists.
	TFTPRoot string
	// DiscoveryV3Address, when set, serves etcd's v3 discovery (an
	// embedded etcd holding only discovery keys) there, for etcd 3.6 and
	// later: --discovery-endpoints=http://ADDR --discovery-token=TOKEN.
	DiscoveryV3Address string
	// DiscoveryTTL is how long etcd discovery tokens live; 0 means 7 days.
	// Tokens persist in DataPath/discovery (in memory with embedded data).
	DiscoveryTTL time.Duration
	// WatchQuiet is how long the data directory must be still before a
	// change is reloaded; 0 means 250ms.
	WatchQuiet time.Duration
	// RPCAddress, when set, serves the control plane there (see package
	// api): matchbox's gRPC services and the JSON API under /api/v1/, over
	// TLS. Writes need DataPath. With it, references to a missing profile
	// or config are warnings when loading (catalog.Options.AllowDangling).
	RPCAddress string
	// RPCListener, when set, is used instead of listening on RPCAddress
	// (and turns the control plane on).
	RPCListener net.Listener
	// CertFile and KeyFile are the control plane's TLS certificate and key
	// (PEM); required with RPCAddress.
	CertFile, KeyFile string
	// CAFile is the CA bundle (PEM) that signs client certificates.
	CAFile string
	// APITokenFile, when set, holds a bearer token that authenticates
	// control-plane clients without a certificate.
	APITokenFile string
	// RPCReady, when set, is called with the control plane's address once
	// it accepts connections.
	RPCReady func(net.Addr)
}

// state is one immutable view of what the server is serving.
type state struct {
	cat      *catalog.Catalog
	loadedAt time.Time
	err      error // last reload failure, nil if the last load succeeded
	failedAt time.Time
}

// Server is a configured, loaded server, ready to Serve.
type Server struct {
	cfg       Config
	dir       *store.Dir
	src       fs.FS
	assets    *assets.Root
	state     atomic.Pointer[state]
	metrics   *web.Metrics
	log       *slog.Logger
	handler   http.Handler
	events    *events.Log
	reports   *events.Reports
	discovery *discovery.Service
	netboot   *netboot
	api       *api.Server
	// writeMu serialises control-plane writes and reloads, so a reload
	// never swaps in a catalog older than a write that returned.
	writeMu sync.Mutex
	// stamp is the data directory's store.Dir.Stamp as the serving catalog
	// knows it (taken before each load, kept current by Update), so the
	// watcher does not reload after the control plane's own writes.
	// Guarded by writeMu.
	stamp uint64
	// loadedPrint is the data directory's fingerprint taken just before
	// the first load, to catch changes made before the watch began.
	loadedPrint uint64
}

// New loads and validates the catalog; a data directory with any problem
// is an error listing every problem (a *catalog.LoadError).
func New(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, metrics: web.NewMetrics(), log: cfg.Logger, events: events.NewLog(0, 0), reports: events.NewReports(0)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case cfg.DataPath != "":
		d, err := store.OpenDir(cfg.DataPath)
		if err != nil {
			return nil, err
		}
		s.dir, s.src = d, d.FS()
		s.loadedPrint = d.Fingerprint()
		s.stamp = d.Stamp()
	case cfg.Data != nil:
		s.src = cfg.Data
	default:
		return nil, errors.New("no data: set a data directory (-data-path)")
	}
	assetsPath := cfg.AssetsPath
	if assetsPath == "" && cfg.DataPath != "" {
		if fi, err := os.Stat(filepath.Join(cfg.DataPath, "assets")); err == nil && fi.IsDir() {
			assetsPath = filepath.Join(cfg.DataPath, "assets")
		}
	}
	if assetsPath != "" {
		r, err := assets.Open(assetsPath)
		if err != nil {
			return nil, err
		}
		s.assets = r
	}
	// Discovery first: templates may name discovery tokens.
	dcfg := discovery.Config{TTL: cfg.DiscoveryTTL, Logger: s.log}
	if cfg.DataPath != "" {
		dcfg.Dir = filepath.Join(cfg.DataPath, "discovery")
	}
	var err error
	if s.discovery, err = discovery.New(dcfg); err != nil {
		s.closeAssets()
		return nil, err
	}
	s.cfg.Catalog.Discovery = s.discovery.Named
	controlPlane := cfg.RPCAddress != "" || cfg.RPCListener != nil
	if controlPlane {
		s.cfg.Catalog.AllowDangling = true
		if s.dir != nil {
			if err := s.dir.RemoveTemps(); err != nil {
				s.log.Warn("data directory: could not remove temporary files left by a crash", "error", err.Error())
			}
		}
	}
	start := time.Now()
	cat, err := catalog.Load(s.src, s.cfg.Catalog)
	if err != nil {
		s.closeAssets()
		return nil, err
	}
	s.logWarnings(cat)
	s.state.Store(&state{cat: cat, loadedAt: time.Now()})
	s.observe(cat, time.Since(start))
	s.metrics.CatalogHealthy.Set(1)
	if s.netboot, err = s.newNetboot(); err != nil {
		s.closeAssets()
		return nil, err
	}
	s.handler = web.NewHandler(web.Config{
		Catalog: func() *catalog.Catalog { return s.state.Load().cat },
		Health:  s.health,
		Assets:  s.assets,
		Logger:  s.log,
		Metrics: s.metrics,
		Events:  s.events,
		Reports: s.reports,
		MACFor:  s.netboot.macFor,
		IPXE:    s.netboot.ipxeRoot(),
		// Discovery is on the machine plane: etcd members reach it
		// without credentials, as they reach discovery.etcd.io.
		Discovery: s.discovery.Handler(),
	})
	if controlPlane {
		s.api, err = api.New(api.Config{
			Address:   cfg.RPCAddress,
			Listener:  cfg.RPCListener,
			CertFile:  cfg.CertFile,
			KeyFile:   cfg.KeyFile,
			CAFile:    cfg.CAFile,
			TokenFile: cfg.APITokenFile,
			Catalog:   s.Catalog,
			Update:    s.Update,
			Events:    s.events,
			Reports:   s.reports,
			Logger:    s.log,
			Ready:     cfg.RPCReady,
		})
		if err != nil {
			s.closeAssets()
			return nil, err
		}
	}
	return s, nil
}

// Update makes one control-plane change: edit computes it from the
// serving catalog, catalog.Apply validates it as a load would, the data
// directory gets it atomically, and the new catalog is served before
// Update returns, so the next machine request sees it. Writes and reloads
// are serialised. An error from edit is returned as is, with nothing
// written; without a data directory every write is store.ErrReadOnly.
func (s *Server) Update(edit func(*catalog.Catalog) (catalog.Change, error)) (*catalog.Catalog, error) {
	if s.dir == nil {
		return nil, store.ErrReadOnly
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	old := s.state.Load()
	ch, err := edit(old.cat)
	if err != nil {
		return nil, err
	}
	next, err := old.cat.Apply(ch)
	if err != nil {
		return nil, err
	}
	before := s.dir.FileStamp(ch.File)
	if ch.Data == nil {
		err = s.dir.Remove(ch.File)
	} else {
		err = s.dir.WriteFile(ch.File, ch.Data)
	}
	if err != nil {
		return nil, err
	}
	s.stamp += s.dir.FileStamp(ch.File) - before
	s.logWarnings(next)
	s.state.Store(&state{cat: next, loadedAt: time.Now(), err: old.err, failedAt: old.failedAt})
	g, _, _ := next.Counts()
	s.metrics.CatalogGroups.Set(float64(g))
	return next, nil
}

// Handler is the machine-plane HTTP handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// Catalog is the serving catalog.
func (s *Server) Catalog() *catalog.Catalog { return s.state.Load().cat }

func (s *Server) closeAssets() {
	if s.assets != nil {
		s.assets.Close()
	}
}

func (s *Server) observe(cat *catalog.Catalog, took time.Duration) {
	g, p, _ := cat.Counts()
	s.metrics.CatalogGroups.Set(float64(g))
	s.metrics.CatalogLoadSeconds.Set(took.Seconds())
	s.log.Info("catalog loaded", "groups", g, "profiles", p, "took", took.Round(time.Microsecond))
}

func (s *Server) logWarnings(cat *catalog.Catalog) {
	for _, w := range cat.Warnings {
		s.log.Warn("data directory", "path", w.File, "warning", w.Err.Error())
	}
}

func (s *Server) health() web.Health {
	st := s.state.Load()
	g, p, _ := st.cat.Counts()
	h := web.Health{LoadedAt: st.loadedAt, Groups: g, Profiles: p}
	if st.err != nil {
		h.ReloadError, h.ReloadFailedAt = st.err.Error(), st.failedAt
	}
	return h
}

// Reload rebuilds the catalog from the data directory. On failure the
// serving catalog stays, and the failure is logged, counted and shown by
// /healthz until a reload succeeds.
func (s *Server) Reload() error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.dir != nil {
		s.stamp = s.dir.Stamp() // before loading: a change while loading shows later
	}
	start := time.Now()
	cat, err := catalog.Load(s.src, s.cfg.Catalog)
	old := s.state.Load()
	if err != nil {
		s.metrics.CatalogReloads.WithLabelValues("failure").Inc()
		s.metrics.CatalogHealthy.Set(0)
		s.state.Store(&state{cat: old.cat, loadedAt: old.loadedAt, err: err, failedAt: time.Now()})
		s.log.Error("catalog reload failed; still serving the previous catalog", "loaded_at", old.loadedAt, "error", err.Error())
		return err
	}
	s.logWarnings(cat)
	s.state.Store(&state{cat: cat, loadedAt: time.Now()})
	s.metrics.CatalogReloads.WithLabelValues("success").Inc()
	s.metrics.CatalogHealthy.Set(1)
	s.observe(cat, time.Since(start))
	return nil
}

// Serve runs the server until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context) error {
	defer s.closeAssets()
	ln := s.cfg.Listener
	if ln == nil {
		addr := s.cfg.Address
		if addr == "" {
			addr = "127.0.0.1:8080"
		}
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return fmt.Errorf("listening: %w", err)
		}
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		s.log.Info("serving", "address", ln.Addr().String(), "data", s.source(), "assets", s.assetsDir())
		if s.cfg.Ready != nil {
			s.cfg.Ready(ln.Addr())
		}
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-ctx.Done()
		timeout := s.cfg.ShutdownTimeout
		if timeout == 0 {
			timeout = 5 * time.Minute
		}
		s.log.Info("shutting down; waiting for in-flight requests", "timeout", timeout)
		sctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
			return fmt.Errorf("shutting down: %w", err)
		}
		return nil
	})
	if s.api != nil {
		g.Go(func() error { return s.api.Serve(ctx) })
	}
	s.netboot.serve(ctx, g)
	g.Go(func() error { return s.discovery.Run(ctx) })
	if s.cfg.DiscoveryV3Address != "" {
		g.Go(func() error {
			return s.discovery.ServeV3(ctx, discovery.V3Config{Addr: s.cfg.DiscoveryV3Address})
		})
	}
	if s.dir != nil && !s.cfg.NoWatch {
		quiet := s.cfg.WatchQuiet
		if quiet == 0 {
			quiet = 250 * time.Millisecond
		}
		g.Go(func() error {
			reload := func() {
				if s.ownChanges() {
					return
				}
				s.log.Info("data directory changed; reloading", "path", s.dir.Path())
				_ = s.Reload()
			}
			ready := func() {
				if s.dir.Fingerprint() != s.loadedPrint {
					reload() // changed between the first load and the watch
				}
			}
			return s.dir.Watch(ctx, quiet, ready, reload)
		})
	}
	if s.cfg.Reload != nil {
		g.Go(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case <-s.cfg.Reload:
					if s.dir == nil {
						s.log.Info("reload requested; the embedded data never changes")
						continue
					}
					s.log.Info("reload requested", "path", s.dir.Path())
					_ = s.Reload()
				}
			}
		})
	}
	return g.Wait()
}

// ownChanges reports whether the data directory holds exactly what the
// serving catalog was loaded or written from: the changes the watcher saw
// were the control plane's own writes, and a reload would rebuild the
// same catalog.
func (s *Server) ownChanges() bool {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.dir.Stamp() == s.stamp
}

func (s *Server) source() string {
	if s.dir != nil {
		return s.dir.Path()
	}
	return "(embedded default)"
}

func (s *Server) assetsDir() string {
	if s.assets != nil {
		return s.assets.Dir()
	}
	return "(none)"
}

// Run loads the catalog and serves until ctx ends.
func Run(ctx context.Context, cfg Config) error {
	s, err := New(cfg)
	if err != nil {
		return err
	}
	return s.Serve(ctx)
}

// Events returns the server's boot events (for the control plane).
func (s *Server) Events() *events.Log { return s.events }

// Reports returns the agents' latest reports (for the control plane).
func (s *Server) Reports() *events.Reports { return s.reports }
