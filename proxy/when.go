package proxy

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/policy"
	"github.com/gatehouse/gatehouse/policy/expr"
)

// decide asks route for its decision. A route with `when` reads the
// request (SPEC.md 13): its view is built here, with the client IP and the
// clock only when the condition reads them. A condition that could not be
// evaluated denies (insufficient_scope) and is logged here.
func (h *Handler) decide(r *http.Request, path string, route *policy.Route, s *policy.Subject) policy.Decision {
	if route.When() == nil {
		return route.Decide(s)
	}
	req := whenRequest(r, path, route, h.cfg, h.now)
	d := route.DecideRequest(s, &req)
	if d.Err != nil {
		h.log.Warn("when condition failed", "route", route.Name, "request_id", r.Header.Get("X-Request-Id"),
			"shadow", route.Shadow, "error", d.Err.Error())
	}
	return d
}

// whenRequest is the view of r that route's `when` reads: the client IP
// and the clock only when the condition reads them.
func whenRequest(r *http.Request, path string, route *policy.Route, cfg *Config, now func() time.Time) policy.Request {
	req := policy.Request{
		Method:   r.Method,
		Path:     path,
		Host:     r.Host,
		Header:   r.Header,
		RawQuery: r.URL.RawQuery,
	}
	w := route.When()
	if w == nil {
		return req
	}
	if w.Needs()&expr.NeedClientIP != 0 {
		req.ClientIP = clientIP(r.RemoteAddr, r.Header["X-Forwarded-For"], cfg.TrustedProxies)
	}
	if w.Needs()&expr.NeedNow != 0 {
		req.Now = now()
	}
	return req
}

// decideShadow decides for the shadow route that would have won (SPEC.md
// 13), before the request is authorised without it, and counts the
// decision; nil when no shadow route is in line. It verifies the token
// itself when the shadow route needs one: the route that decides may not
// look at it (auth: none removes it). A verified token is cached, so the
// second verification of the same token is a cache hit.
func (h *Handler) decideShadow(r *http.Request, path string) *audit.Shadow {
	if !h.engine.HasShadow() {
		return nil
	}
	sh := h.engine.Shadow(r.Method, path)
	if sh == nil {
		return nil
	}
	rs := h.shadowReason(r, path, sh)
	code, decision := rs.String(), rs.decision()
	h.metrics.shadow.WithLabelValues(sh.Name, decision, code).Inc()
	if h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.Debug("shadow decision", "route", sh.Name, "decision", decision, "reason", code)
	}
	return &audit.Shadow{Route: sh.Name, Decision: decision, Reason: code}
}

func (h *Handler) shadowReason(r *http.Request, path string, sh *policy.Route) reason {
	if d := sh.Decide(nil); sh.Auth == policy.AuthNone || d.Reason == policy.ReasonForbidden {
		return fromPolicy(h.decide(r, path, sh, nil).Reason)
	}
	raw, _, st, _ := extractToken(r, h.cfg.Token.Sources)
	switch st {
	case tokenAbsent:
		return fromPolicy(h.decide(r, path, sh, nil).Reason)
	case tokenInvalid:
		return reasonInvalidToken
	}
	res, err := h.verifier.Verify(r.Context(), raw)
	if err != nil {
		rs, _, _ := verifyReason(err)
		return rs
	}
	if rs, _, _, revoked := h.revocation(res, h.now().UnixNano()); revoked {
		return rs
	}
	s := policy.Subject{Roles: res.Roles, Scopes: res.Scopes, Claims: res}
	return fromPolicy(h.decide(r, path, sh, &s).Reason)
}

func newShadowMetric() *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gatehouse_shadow_decisions_total",
		Help: "Decisions of shadow routes (SPEC.md 13), recorded and not enforced, by route, decision and reason.",
	}, []string{"route", "decision", "reason"})
}
