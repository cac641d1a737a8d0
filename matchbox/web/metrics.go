package web

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the server's Prometheus metrics, registered on their own
// registry so several servers (tests) can live in one process.
type Metrics struct {
	Registry *prometheus.Registry
	// Requests counts HTTP requests by endpoint and status code.
	Requests *prometheus.CounterVec
	// Selections counts machine requests by the group they matched.
	Selections *prometheus.CounterVec
	// RenderSeconds times renders that missed the cache, by kind.
	RenderSeconds *prometheus.HistogramVec
	// CacheHits counts renders answered from the cache, by kind.
	CacheHits *prometheus.CounterVec
	// CatalogReloads counts reloads by result (success, failure).
	CatalogReloads *prometheus.CounterVec
	// CatalogHealthy is 1 when the last load or reload succeeded.
	CatalogHealthy prometheus.Gauge
	// CatalogGroups is the number of groups in the serving catalog.
	CatalogGroups prometheus.Gauge
	// AgentReports counts agent reports by result and failing stage.
	AgentReports *prometheus.CounterVec
	// CatalogLoadSeconds is how long the serving catalog took to build.
	CatalogLoadSeconds prometheus.Gauge
}

// NewMetrics makes and registers the metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_http_requests_total", Help: "HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		Selections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_selections_total", Help: "Machine requests by matched group.",
		}, []string{"group"}),
		RenderSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kindling_render_seconds", Help: "Time to render a config on a cache miss, by kind.",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"kind"}),
		CacheHits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_render_cache_hits_total", Help: "Renders answered from the cache, by kind.",
		}, []string{"kind"}),
		CatalogReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_catalog_reloads_total", Help: "Catalog reloads by result.",
		}, []string{"result"}),
		CatalogHealthy: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kindling_catalog_healthy", Help: "1 if the last catalog load or reload succeeded, 0 if the server is serving an older catalog.",
		}),
		CatalogGroups: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kindling_catalog_groups", Help: "Groups in the serving catalog.",
		}),
		AgentReports: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_agent_reports_total", Help: "Provisioning reports received from agents, by result and failing stage.",
		}, []string{"result", "stage"}),
		CatalogLoadSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kindling_catalog_load_seconds", Help: "Time taken to load and validate the serving catalog.",
		}),
	}
	m.Registry.MustRegister(m.Requests, m.Selections, m.RenderSeconds, m.CacheHits,
		m.CatalogReloads, m.CatalogHealthy, m.CatalogGroups, m.CatalogLoadSeconds, m.AgentReports,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range []string{"success", "failure"} {
		m.CatalogReloads.WithLabelValues(r)
	}
	return m
}
