package tftp

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the TFTP server's Prometheus metrics.
type Metrics struct {
	// Transfers counts finished transfers by result: "ok" (the client
	// acknowledged the last block), "error" (started, then failed: timeout,
	// client abort, read error) or "refused" (answered with an ERROR
	// packet before any data: not found, access violation, write request,
	// bad mode, server busy).
	Transfers *prometheus.CounterVec
	// Bytes counts file bytes the clients acknowledged.
	Bytes prometheus.Counter
	// Active is the number of transfers in progress.
	Active prometheus.Gauge

	ok, failed, refused prometheus.Counter
}

// NewMetrics makes the metrics and registers them on reg; a nil reg leaves
// them unregistered (private). Registering twice on one registry panics, as
// with any collector.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Transfers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_tftp_transfers_total", Help: "TFTP transfers by result (ok, error, refused).",
		}, []string{"result"}),
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kindling_tftp_bytes_total", Help: "File bytes sent over TFTP and acknowledged by clients.",
		}),
		Active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kindling_tftp_transfers_active", Help: "TFTP transfers in progress.",
		}),
	}
	m.ok = m.Transfers.WithLabelValues("ok")
	m.failed = m.Transfers.WithLabelValues("error")
	m.refused = m.Transfers.WithLabelValues("refused")
	if reg != nil {
		reg.MustRegister(m.Transfers, m.Bytes, m.Active)
	}
	return m
}
