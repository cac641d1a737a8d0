package dhcp

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the DHCP server's Prometheus metrics.
type Metrics struct {
	// Packets counts received packets by DHCP message type ("discover",
	// "request", …; "invalid" for packets that do not parse).
	Packets *prometheus.CounterVec
	// Replies counts sent replies by type (offer, ack, nak, proxy-offer,
	// proxy-ack) and client architecture.
	Replies *prometheus.CounterVec
	// Dropped counts packets that got no reply, by reason.
	Dropped *prometheus.CounterVec
	// Leases is the number of bound, unexpired leases (server mode).
	Leases prometheus.Gauge
}

// NewMetrics makes the metrics and registers them on reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_dhcp_packets_total", Help: "DHCP packets received, by message type.",
		}, []string{"type"}),
		Replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_dhcp_replies_total", Help: "DHCP replies sent, by reply type and client architecture.",
		}, []string{"type", "arch"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kindling_dhcp_dropped_total", Help: "DHCP packets that got no reply, by reason.",
		}, []string{"reason"}),
		Leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kindling_dhcp_leases", Help: "Bound, unexpired DHCP leases.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Packets, m.Replies, m.Dropped, m.Leases)
	}
	return m
}
