// Package web is the machine plane's HTTP face: the matchbox-compatible
// boot endpoints, assets, health and metrics. Handlers read the current
// catalog snapshot and never touch the data directory.
package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kindlingboot/kindling/assets"
	"github.com/kindlingboot/kindling/groups"
	"github.com/kindlingboot/kindling/matchbox/catalog"
	"github.com/kindlingboot/kindling/matchbox/events"
	"github.com/kindlingboot/kindling/matchbox/render"
)

// Health is what /healthz reports.
type Health struct {
	// LoadedAt is when the serving catalog was built.
	LoadedAt time.Time `json:"loaded_at"`
	// Groups and Profiles count the serving catalog.
	Groups   int `json:"groups"`
	Profiles int `json:"profiles"`
	// ReloadError is why the last reload failed; empty when it did not.
	ReloadError string `json:"reload_error,omitempty"`
	// ReloadFailedAt is when it failed.
	ReloadFailedAt time.Time `json:"reload_failed_at,omitzero"`
}

// Config is what the handler needs. Catalog is required.
type Config struct {
	// Catalog returns the serving snapshot; called once per request.
	Catalog func() *catalog.Catalog
	// Health returns the server's health; nil reports only "ok".
	Health func() Health
	// Assets is the asset tree; nil disables /assets.
	Assets *assets.Root
	// IPXE is the directory of iPXE binaries (the TFTP root). Requests for
	// /assets/ipxe/NAME that the asset tree cannot answer are served from
	// it, so the http:// boot file given to UEFI HTTP-boot clients always
	// exists. nil: only the asset tree.
	IPXE *assets.Root
	// Logger receives one Info line per served boot step; nil discards.
	Logger *slog.Logger
	// Metrics are updated per request; nil makes a private set.
	Metrics *Metrics
	// Events, when set, records each machine's HTTP boot steps and is
	// served at /events; nil disables both.
	Events *events.Log
	// Reports, when set, stores agent reports (POST /report) and serves
	// them (GET /report); nil makes both 404.
	Reports *events.Reports
	// MACFor names the machine behind an IP address (the DHCP side's
	// leases), for requests that carry no mac label such as /boot.ipxe;
	// nil or "" means unknown.
	MACFor func(ip net.IP) string
	// Discovery, when set, serves etcd's v2 discovery protocol at
	// /discovery/ (all methods: etcd members register with PUT).
	Discovery http.Handler
	// WriteTimeout bounds writing a rendered response (assets are exempt so
	// slow links can finish big images); 0 means 30s.
	WriteTimeout time.Duration
}

type server struct {
	Config
	selections sync.Map // group ID → prometheus.Counter, to skip the label hash per request
}

func (s *server) selected(group string) {
	if c, ok := s.selections.Load(group); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := s.Metrics.Selections.WithLabelValues(group)
	s.selections.Store(group, c)
	c.Inc()
}

// Shared header values: net/http only reads them.
var (
	hdrText    = []string{"text/plain; charset=utf-8"}
	hdrJSON    = []string{"application/json"}
	hdrNoStore = []string{"no-store"}
)

// NewHandler returns the machine-plane HTTP handler.
func NewHandler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics()
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 30 * time.Second
	}
	s := &server{Config: cfg}
	r := chi.NewRouter()
	r.MethodNotAllowed(s.count("other", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		text(w, http.StatusMethodNotAllowed, "405 method not allowed: the machine plane is read-only (GET, HEAD; POST only for /report)\n")
	}))
	get := func(pattern, endpoint string, h http.HandlerFunc) {
		wrapped := s.count(endpoint, h)
		r.Method(http.MethodGet, pattern, wrapped)
		r.Method(http.MethodHead, pattern, wrapped)
	}
	get("/", "home", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusOK, "kindling\n")
	})
	get("/boot.ipxe", "boot.ipxe", s.bootIPXE)
	get("/boot.ipxe.0", "boot.ipxe", s.bootIPXE)
	get("/ipxe", "ipxe", s.machine("ipxe", catalog.IPXE))
	get("/grub", "grub", s.machine("grub", catalog.GRUB))
	get("/ignition", "ignition", s.machine("ignition", catalog.Ignition))
	get("/generic", "generic", s.machine("generic", catalog.Generic))
	get("/metadata", "metadata", s.machine("metadata", catalog.MetadataEnv))
	get("/assets/*", "assets", s.asset)
	get("/healthz", "healthz", s.healthz)
	get("/events", "events", s.events)
	get("/report", "report", s.getReport)
	r.Method(http.MethodPost, "/report", s.count("report", s.postReport))
	if cfg.Discovery != nil {
		r.Handle("/discovery/*", s.count("discovery", cfg.Discovery.ServeHTTP))
	}
	get("/metrics", "metrics", promhttp.HandlerFor(cfg.Metrics.Registry, promhttp.HandlerOpts{}).ServeHTTP)
	r.NotFound(s.count("other", func(w http.ResponseWriter, r *http.Request) {
		text(w, http.StatusNotFound, "404 not found: "+r.URL.Path+"\n")
	}))
	return r
}

// BootIPXE is the chainload script served at /boot.ipxe: it sends the
// machine's identity to /ipxe. The URL is relative, so it resolves against
// whichever address served this script. Values that can hold spaces or
// '&' are URI-escaped by iPXE (:uristring).
const BootIPXE = "#!ipxe\n" + "chain " + chainQuery + "\n"

const chainQuery = "ipxe?uuid=${uuid}&mac=${mac:hexhyp}&domain=${domain:uristring}&hostname=${hostname:uristring}&serial=${serial:uristring}&arch=${buildarch:uristring}"

// BootIPXEFor is the chainload script with an absolute URL under base
// (e.g. "http://10.0.0.1:8080/"), for boot.ipxe fetched over TFTP, where a
// relative URL would resolve to tftp:// and never reach /ipxe.
func BootIPXEFor(base string) string {
	return "#!ipxe\n" + "chain " + base + chainQuery + "\n"
}

func (s *server) bootIPXE(w http.ResponseWriter, r *http.Request) {
	// The first time a machine reaches Kindling over HTTP: iPXE is running.
	ip := remoteIP(r)
	mac := s.macFor(ip)
	s.Logger.LogAttrs(r.Context(), slog.LevelInfo, "served", slog.String("endpoint", "boot.ipxe"), slog.String("mac", mac), slog.String("ip", ip))
	s.record(events.Event{MAC: mac, Source: "http", Step: "boot.ipxe", IP: ip, File: r.URL.Path})
	text(w, http.StatusOK, BootIPXE)
}

// recordFailure adds a failed machine request to the machine's events, so
// /events (and kindling lab) show why a boot stopped, not only the log.
func (s *server) recordFailure(r *http.Request, endpoint string, labels groups.Labels, m *catalog.Match, why string) {
	if s.Events == nil {
		return
	}
	mac := labels["mac"]
	if mac == "" {
		mac = s.macFor(remoteIP(r))
	}
	if len(why) > 300 {
		cut := 300
		for cut > 0 && !utf8.RuneStart(why[cut]) {
			cut--
		}
		why = why[:cut] + "…"
	}
	e := events.Event{MAC: mac, Source: "http", Step: endpoint, IP: remoteIP(r), File: r.URL.Path, Error: why}
	if m != nil && m.Group != nil {
		e.Group = m.Group.ID
		if m.Profile != nil {
			e.Profile = m.Profile.ID
		}
	}
	s.record(e)
}

func (s *server) macFor(ip string) string {
	if s.MACFor == nil {
		return ""
	}
	return s.MACFor(net.ParseIP(ip))
}

func (s *server) record(e events.Event) {
	if s.Events != nil && e.MAC != "" {
		s.Events.Record(e)
	}
}

// events serves a machine's recent boot events as JSON, oldest first:
// GET /events?mac=52:54:00:a1:9c:ae. Without mac it lists the machines
// that have events, most recently seen first.
func (s *server) events(w http.ResponseWriter, r *http.Request) {
	if s.Events == nil {
		text(w, http.StatusNotFound, "404 not found: boot events are not recorded by this server\n")
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		text(w, http.StatusBadRequest, "400 bad request: "+err.Error()+"\n")
		return
	}
	var body any
	if raw := q.Get("mac"); raw != "" {
		mac, err := groups.NormalizeValue("mac", raw)
		if err != nil {
			text(w, http.StatusBadRequest, "400 bad request: "+err.Error()+"\n")
			return
		}
		evs := s.Events.Events(mac)
		if evs == nil {
			evs = []events.Event{}
		}
		body = evs
	} else {
		body = map[string][]string{"macs": s.Events.MACs()}
	}
	writeJSON(w, body)
}

// writeJSON writes body as indented JSON that no cache keeps (live state:
// events, reports).
func writeJSON(w http.ResponseWriter, body any) {
	b, err := json.MarshalIndent(body, "", "  ")
	if err != nil {
		text(w, http.StatusInternalServerError, "500 internal server error: "+err.Error()+"\n")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(append(b, '\n'))
}

// machine serves one of the per-machine endpoints.
func (s *server) machine(endpoint string, kind catalog.Kind) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		_ = http.NewResponseController(w).SetWriteDeadline(start.Add(s.WriteTimeout))
		// Not r.URL.Query(): it silently drops pairs that do not decode
		// (mac=%zz, a ';'), which would send the machine to a less
		// specific group. A query that does not parse is a 400.
		q, err := url.ParseQuery(r.URL.RawQuery)
		var labels groups.Labels
		if err == nil {
			labels, err = groups.FromQuery(q)
		}
		if err != nil {
			s.Logger.LogAttrs(r.Context(), slog.LevelWarn, "bad request", slog.String("endpoint", endpoint),
				slog.String("ip", remoteIP(r)), slog.String("query", r.URL.RawQuery), slog.String("error", err.Error()))
			text(w, http.StatusBadRequest, "400 bad request: "+err.Error()+"\n")
			return
		}
		k := kind
		if kind == catalog.MetadataEnv && labels["format"] == "json" {
			k = catalog.MetadataJSON
		}
		c := s.Catalog()
		m, err := c.Select(labels)
		if err != nil {
			s.Logger.LogAttrs(r.Context(), slog.LevelWarn, "no group matches", slog.String("endpoint", endpoint),
				slog.String("mac", labels["mac"]), slog.String("uuid", labels["uuid"]), slog.String("ip", remoteIP(r)),
				slog.String("query", r.URL.RawQuery))
			text(w, http.StatusNotFound, fmt.Sprintf("404 not found: no group matches %s (kindling select %s explains why)\n", describe(labels), selectArgs(labels)))
			s.recordFailure(r, endpoint, labels, nil, "404 no group matches")
			return
		}
		s.selected(m.Group.ID)
		body, cached, err := c.Render(k, m, catalog.Request{Labels: labels, RawQuery: r.URL.RawQuery, Host: r.Host})
		attrs := []slog.Attr{
			slog.String("endpoint", endpoint), slog.String("mac", labels["mac"]), slog.String("uuid", labels["uuid"]),
			slog.String("group", m.Group.ID), slog.String("profile", m.Profile.ID),
		}
		switch {
		case errors.Is(err, catalog.ErrNotConfigured):
			s.Logger.LogAttrs(r.Context(), slog.LevelWarn, "not configured", append(attrs, slog.String("error", err.Error()))...)
			text(w, http.StatusNotFound, "404 not found: "+err.Error()+"\n")
			s.recordFailure(r, endpoint, labels, &m, "404 "+err.Error())
			return
		case err != nil:
			s.Logger.LogAttrs(r.Context(), slog.LevelError, "render failed", append(attrs, slog.String("error", err.Error()))...)
			text(w, http.StatusInternalServerError, "500 internal server error: "+err.Error()+"\n")
			s.recordFailure(r, endpoint, labels, &m, "500 "+err.Error())
			return
		}
		mac := labels["mac"]
		if mac == "" {
			mac = s.macFor(remoteIP(r))
		}
		s.record(events.Event{MAC: mac, Source: "http", Step: endpoint, IP: remoteIP(r), File: r.URL.Path,
			Group: m.Group.ID, Profile: m.Profile.ID})
		if cached {
			s.Metrics.CacheHits.WithLabelValues(k.String()).Inc()
		} else {
			s.Metrics.RenderSeconds.WithLabelValues(k.String()).Observe(time.Since(start).Seconds())
		}
		if s.Logger.Enabled(r.Context(), slog.LevelInfo) {
			s.Logger.LogAttrs(r.Context(), slog.LevelInfo, "served", append(attrs, slog.Bool("cached", cached),
				slog.Duration("took", time.Since(start)))...)
		}
		h := w.Header()
		switch k {
		case catalog.Ignition, catalog.MetadataJSON:
			h["Content-Type"] = hdrJSON
		case catalog.Generic:
			h["Content-Type"] = []string{http.DetectContentType(body)}
		default:
			h["Content-Type"] = hdrText
		}
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
		h["Cache-Control"] = hdrNoStore
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			w.Write(body)
		}
	}
}

func (s *server) asset(w http.ResponseWriter, r *http.Request) {
	// The decoded path: chi matches on the raw one, which keeps escapes
	// such as %2b that Go would not have produced itself.
	name := strings.TrimPrefix(r.URL.Path, "/assets/")
	var f *os.File
	var fi fs.FileInfo
	err := fs.ErrNotExist
	if s.Assets != nil {
		f, fi, err = s.Assets.Open(name)
	}
	if bin, ok := strings.CutPrefix(name, "ipxe/"); ok && s.IPXE != nil && errors.Is(err, fs.ErrNotExist) {
		f, fi, err = s.IPXE.Open(bin)
	}
	if s.Assets == nil && s.IPXE == nil {
		text(w, http.StatusNotFound, "404 not found: no assets directory is configured (-assets-path)\n")
		return
	}
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, assets.ErrNotFile) {
			s.Logger.LogAttrs(r.Context(), slog.LevelWarn, "asset refused", slog.String("path", name),
				slog.String("ip", remoteIP(r)), slog.String("error", err.Error()))
		}
		text(w, http.StatusNotFound, "404 not found: /assets/"+name+"\n")
		return
	}
	defer f.Close()
	ip := remoteIP(r)
	mac := s.macFor(ip)
	s.Logger.LogAttrs(r.Context(), slog.LevelInfo, "asset", slog.String("path", name), slog.String("mac", mac), slog.String("ip", ip),
		slog.Int64("size", fi.Size()), slog.String("range", r.Header.Get("Range")))
	if r.Header.Get("Range") == "" || strings.HasPrefix(r.Header.Get("Range"), "bytes=0-") {
		s.record(events.Event{MAC: mac, Source: "http", Step: "asset", IP: ip, File: "/assets/" + name})
	}
	w.Header().Set("ETag", assets.ETag(fi))
	// ServeContent answers Range, If-None-Match, If-Modified-Since, and
	// copies an *os.File with sendfile.
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), f)
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.Health == nil {
		text(w, http.StatusOK, "ok\n")
		return
	}
	h := s.Health()
	// A failed reload leaves the last good catalog serving: the server is
	// degraded, not down, so the status stays 200 (a liveness probe must not
	// restart it into a start-up that fails on the same bad file).
	status := "ok"
	if h.ReloadError != "" {
		status = "degraded"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\ncatalog loaded %s: %d groups, %d profiles\n", status, h.LoadedAt.UTC().Format(time.RFC3339), h.Groups, h.Profiles)
	if h.ReloadError != "" {
		fmt.Fprintf(&b, "reload failed %s, still serving the catalog above:\n%s\n", h.ReloadFailedAt.UTC().Format(time.RFC3339), h.ReloadError)
	}
	text(w, http.StatusOK, b.String())
}

func text(w http.ResponseWriter, code int, s string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, s)
}

func describe(l groups.Labels) string {
	if len(l) == 0 {
		return "a request without labels"
	}
	return "labels " + selectArgs(l)
}

func selectArgs(l groups.Labels) string {
	var parts []string
	for _, k := range []string{"mac", "uuid", "hostname", "serial", "arch", "domain"} {
		if v, ok := l[k]; ok {
			parts = append(parts, k+"="+render.ShellQuote(v))
		}
	}
	var other []string
	for k, v := range l {
		switch k {
		case "mac", "uuid", "hostname", "serial", "arch", "domain":
		default:
			other = append(other, k+"="+render.ShellQuote(v))
		}
	}
	sort.Strings(other)
	return strings.Join(append(parts, other...), " ")
}

func remoteIP(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return strings.Trim(host, "[]")
}

// statusWriter records the status code for metrics. It forwards ReadFrom
// so http.ServeContent still uses sendfile through it.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) ReadFrom(r io.Reader) (int64, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return io.Copy(w.ResponseWriter, r)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *server) count(endpoint string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h(sw, r)
		code := sw.code
		if code == 0 {
			code = http.StatusOK
		}
		s.Metrics.Requests.WithLabelValues(endpoint, codeText(code)).Inc()
	}
}

func codeText(code int) string {
	switch code {
	case 200:
		return "200"
	case 206:
		return "206"
	case 304:
		return "304"
	case 400:
		return "400"
	case 404:
		return "404"
	case 500:
		return "500"
	}
	return fmt.Sprint(code)
}
