package audit

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the audit collectors. Make it once per process (it survives
// reloads) and pass it to every New.
type Metrics struct {
	events *prometheus.CounterVec

	mu       sync.Mutex
	emitters map[*Emitter]struct{} // live emitters, summed by the queue gauge
}

// Results of gatehouse_audit_events_total.
const (
	resultPublished = "published" // written (stdout, file) or confirmed by the broker
	resultSpooled   = "spooled"   // written to the spool (counted again as published once delivered)
	resultDropped   = "dropped"   // lost: queue full with no spool room, Emit after Close, shutdown timeout
	resultFailed    = "failed"    // the sink refused it (write error); not retried
)

// NewMetrics registers gatehouse_audit_events_total{sink,result} and
// gatehouse_audit_queue_length on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_audit_events_total",
			Help: "Audit events by sink and result (published, spooled, dropped, failed).",
		}, []string{"sink", "result"}),
		emitters: map[*Emitter]struct{}{},
	}
	queue := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_audit_queue_length",
		Help: "Audit events waiting in the in-memory queue.",
	}, m.queueLength)
	if reg != nil {
		reg.MustRegister(m.events, queue)
	}
	return m
}

func (m *Metrics) queueLength() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for e := range m.emitters {
		n += len(e.q)
	}
	return float64(n)
}

func (m *Metrics) add(e *Emitter) {
	m.mu.Lock()
	m.emitters[e] = struct{}{}
	m.mu.Unlock()
}

func (m *Metrics) remove(e *Emitter) {
	m.mu.Lock()
	delete(m.emitters, e)
	m.mu.Unlock()
}

// counters are one sink's children of the counter vector, resolved once so
// that counting costs one atomic add.
type counters struct {
	published, spooled, dropped, failed prometheus.Counter
}

func (m *Metrics) forSink(sink string) counters {
	return counters{
		published: m.events.WithLabelValues(sink, resultPublished),
		spooled:   m.events.WithLabelValues(sink, resultSpooled),
		dropped:   m.events.WithLabelValues(sink, resultDropped),
		failed:    m.events.WithLabelValues(sink, resultFailed),
	}
}
