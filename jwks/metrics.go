package jwks

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the gatehouse_jwks_* and gatehouse_token_cache_* collectors
// (SPEC.md 7). Make them once per process with NewMetrics and pass them to
// every New, so that they survive reloads.
type Metrics struct {
	refreshTotal *prometheus.CounterVec
	keys         *prometheus.GaugeVec
	lastSuccessT *prometheus.GaugeVec
	keyInfo      *prometheus.GaugeVec
	skippedTotal *prometheus.CounterVec
	cacheHit     prometheus.Counter
	cacheMiss    prometheus.Counter
	refetchTotal *prometheus.CounterVec
}

// NewMetrics registers the collectors on reg (nil: a private registry, so
// nothing is exported).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		refreshTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_jwks_refresh_total", Help: "Key set fetches by issuer and result (success includes 304 Not Modified).",
		}, []string{"issuer", "result"}),
		keys: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_jwks_keys", Help: "Signing keys currently loaded per issuer.",
		}, []string{"issuer"}),
		lastSuccessT: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_jwks_last_success_timestamp_seconds", Help: "Unix time of the last successful key fetch per issuer.",
		}, []string{"issuer"}),
		keyInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gatehouse_jwks_key_info", Help: "1 per loaded key (kid cut to 64 bytes).",
		}, []string{"issuer", "kid", "alg"}),
		skippedTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_jwks_keys_skipped_total", Help: "Keys left out of fetched sets, by reason (unparseable, use_enc, unsupported).",
		}, []string{"issuer", "reason"}),
		refetchTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_jwks_unknown_kid_refetch_total", Help: "Out-of-schedule refreshes triggered by an unknown kid.",
		}, []string{"issuer"}),
	}
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_token_cache_requests_total", Help: "Verified-token cache lookups by result (hit/miss).",
	}, []string{"result"})
	m.cacheHit = cache.WithLabelValues("hit")
	m.cacheMiss = cache.WithLabelValues("miss")
	reg.MustRegister(m.refreshTotal, m.keys, m.lastSuccessT, m.keyInfo, m.skippedTotal, m.refetchTotal, cache)
	return m
}

func (m *Metrics) refresh(issuer string, ok bool) {
	r := "error"
	if ok {
		r = "success"
	}
	m.refreshTotal.WithLabelValues(issuer, r).Inc()
}

func (m *Metrics) lastSuccess(issuer string, t time.Time) {
	m.lastSuccessT.WithLabelValues(issuer).Set(float64(t.UnixNano()) / 1e9)
}

func (m *Metrics) skipped(issuer string, s map[string]int) {
	for reason, n := range s {
		m.skippedTotal.WithLabelValues(issuer, reason).Add(float64(n))
	}
}

func (m *Metrics) published(issuer string, ks *keySet) {
	m.keys.WithLabelValues(issuer).Set(float64(len(ks.keys)))
	m.keyInfo.DeletePartialMatch(prometheus.Labels{"issuer": issuer})
	for _, k := range ks.keys {
		kid := logKid(k.kid)
		alg := k.alg
		if alg == "" {
			alg = string(k.kind)
		}
		m.keyInfo.WithLabelValues(issuer, kid, alg).Set(1)
	}
}

// forget drops the per-issuer series of an issuer no running key cache
// serves any more (removed from the config by a reload).
func (m *Metrics) forget(issuer string) {
	l := prometheus.Labels{"issuer": issuer}
	m.keys.DeletePartialMatch(l)
	m.keyInfo.DeletePartialMatch(l)
	m.lastSuccessT.DeletePartialMatch(l)
}
