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
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kindlingboot/kindling/assets"
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
	return s, nil
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
