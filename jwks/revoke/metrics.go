package revoke

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the gatehouse_revocation_* collectors (SPEC.md 12). Make them
// once per process; every Feed of the process reports to them.
type Metrics struct {
	entries  *prometheus.GaugeVec
	last     prometheus.Gauge
	messages *prometheus.CounterVec
}

// NewMetrics registers the collectors on reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		entries: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_revocation_entries", Help: "Revocations in force by kind (jti, sub, kid).",
		}, []string{"kind"}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gatehouse_revocation_last_message_timestamp_seconds", Help: "Unix time at which the last message was read from the revocation stream.",
		}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_revocation_messages_total", Help: "Revocation messages read, by result (applied, expired, invalid).",
		}, []string{"result"}),
	}
	for _, r := range []string{"applied", "expired", "invalid"} {
		m.messages.WithLabelValues(r)
	}
	for _, k := range kindNames {
		m.entries.WithLabelValues(k)
	}
	reg.MustRegister(m.entries, m.last, m.messages)
	return m
}

func (m *Metrics) setEntries(n [3]int) {
	if m == nil {
		return
	}
	for i, k := range kindNames {
		m.entries.WithLabelValues(k).Set(float64(n[i]))
	}
}
