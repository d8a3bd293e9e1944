package proxy

import (
	"runtime"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/jwks/revoke"
)

// Metrics is every collector of SPEC.md 7 on a registry of gatehouse's own.
// It is made once per process and outlives reloads.
type Metrics struct {
	Registry *prometheus.Registry

	requests         *prometheus.CounterVec
	authDuration     *prometheus.HistogramVec
	upstreamDuration *prometheus.HistogramVec
	reloads          *prometheus.CounterVec
	panics           prometheus.Counter
	shadow           *prometheus.CounterVec
	assertionsSigned prometheus.Counter
	egress           *prometheus.CounterVec
	idp              *prometheus.CounterVec
	idpDuration      *prometheus.HistogramVec
	idpHits          *prometheus.CounterVec

	jwks  *jwks.Metrics
	audit *audit.Metrics
	// revoke is process-wide like the store the feeds fill.
	revoke *revoke.Metrics
}

// NewMetrics makes the collectors on a new registry; version is the
// gatehouse_build_info label.
func NewMetrics(version string) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_requests_total",
			Help: "Requests by route (location string or default), decision and reason.",
		}, []string{"route", "decision", "reason"}),
		authDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_auth_duration_seconds",
			Help:    "Time from receiving a request to its auth decision.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .05, .25, 1},
		}, []string{"decision"}),
		upstreamDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gatehouse_upstream_duration_seconds",
			Help:    "Time from forwarding to the upstream until the response ended, by route and status class.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "code"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_config_reloads_total",
			Help: "Config reloads by result.",
		}, []string{"result"}),
	}
	m.panics = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_panics_total",
		Help: "Panics recovered on the request path (each answered 500 internal_error and logged with its stack).",
	})
	m.assertionsSigned = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "gatehouse_assertions_signed_total",
		Help: "Upstream assertions signed (SPEC.md 11); a token seen again within its window reuses its assertion.",
	})
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "gatehouse_build_info",
		Help: "Build information; always 1.",
	}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	m.shadow = newShadowMetric()
	m.egress = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_egress_requests_total",
		Help: "Egress calls by route (the egress host, or default when none matched), token strategy and result (ok, or the refusal's code).",
	}, []string{"route", "strategy", "result"})
	m.idp = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_idp_requests_total",
		Help: "Token requests to the identity provider by grant and result (ok, error, unavailable); cache hits are not requests.",
	}, []string{"grant", "result"})
	m.idpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "gatehouse_idp_request_duration_seconds",
		Help:    "Time of each token request to the identity provider, by grant, whatever its result.",
		Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"grant"})
	m.idpHits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_idp_cache_hits_total",
		Help: "Egress tokens served from the identity provider client's cache, by grant.",
	}, []string{"grant"})
	reg.MustRegister(m.requests, m.authDuration, m.upstreamDuration, m.reloads, m.panics, m.shadow, m.egress, m.idp, m.idpDuration, m.idpHits, m.assertionsSigned, build)
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("error")
	m.jwks = jwks.NewMetrics(reg)
	m.audit = audit.NewMetrics(reg)
	m.revoke = revoke.NewMetrics(reg)
	return m
}

// routeMetrics holds one route's series, made on first use so that a route
// exposes only the reasons it has seen; the request path then costs an
// atomic load, not a label lookup.
type routeMetrics struct {
	name     string
	m        *Metrics
	requests [numReasons]lazyCounter // by reason: every reason has its slot
	upstream [5]lazyObserver         // 2xx 3xx 4xx 5xx error
}

type lazyCounter struct {
	once sync.Once
	c    prometheus.Counter
}

type lazyObserver struct {
	once sync.Once
	o    prometheus.Observer
}

func (r *routeMetrics) count(rs reason) {
	lc := &r.requests[rs]
	lc.once.Do(func() { lc.c = r.m.requests.WithLabelValues(r.name, rs.decision(), rs.String()) })
	lc.c.Inc()
}

var codeClasses = [5]string{"2xx", "3xx", "4xx", "5xx", "error"}

func (r *routeMetrics) observeUpstream(status int, seconds float64) {
	i := 4
	if status >= 200 && status < 600 {
		i = status/100 - 2
		if i < 0 {
			i = 0
		}
	}
	lo := &r.upstream[i]
	lo.once.Do(func() { lo.o = r.m.upstreamDuration.WithLabelValues(r.name, codeClasses[i]) })
	lo.o.Observe(seconds)
}
