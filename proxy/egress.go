package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/internal/oauth"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/policy"
)

// The egress listener (SPEC.md 11) is the app's way out: it sends its
// outbound calls here, as a plain HTTP proxy (absolute-form) or with the
// destination in Host, and gatehouse forwards those that egress.routes
// allows, with the Authorization the route's strategy gives. It is an
// adapter around the same parts as the main listener: the header
// stripper, path normalisation, the reason table and writeError, the
// audit emitter; what is its own is the destination match and the token.

// tokenSource is the OAuth client (internal/oauth) as egress uses it:
// exchange and client_credentials ask it for a token.
type tokenSource interface {
	Token(ctx context.Context, r oauth.Request) (oauth.Token, error)
}

var _ tokenSource = (*oauth.Client)(nil)

// egress is one config snapshot's egress side.
type egress struct {
	byHost    map[string][]*egressRoute // by route host; longest path_prefix first
	unmatched *egressRoute              // metrics of destinations no route lists
	tokens    tokenSource               // nil: no route needs the IdP
	grace     int64                     // inbound_grace, ns
}

type egressRoute struct {
	EgressRoute
	up       *upstream
	grant    oauth.Grant // for exchange and client_credentials
	requests [numReasons]lazyCounter
	m        *Metrics
}

func (er *egressRoute) count(rs reason) {
	lc := &er.requests[rs]
	lc.once.Do(func() {
		name := er.Host
		if er.up == nil {
			name = "default"
		}
		lc.c = er.m.egress.WithLabelValues(name, string(er.Token), rs.String())
	})
	lc.c.Inc()
}

// newEgress builds the egress side of h from h.cfg.Egress.
func (h *Handler) newEgress(tokens tokenSource) (*egress, error) {
	c := h.cfg.Egress
	e := &egress{
		byHost:    map[string][]*egressRoute{},
		unmatched: &egressRoute{m: h.metrics},
		tokens:    tokens,
		grace:     int64(c.InboundGrace),
	}
	for _, r := range c.Routes {
		er := &egressRoute{EgressRoute: r, m: h.metrics}
		switch r.Token {
		case StrategyExchange:
			er.grant = oauth.TokenExchange
		case StrategyClientCredentials:
			er.grant = oauth.ClientCredentials
		}
		// Sorted once here: the IdP client's cache key is the same for
		// the same set in any order, and sorting per call would copy.
		er.Scopes = slices.Sorted(slices.Values(r.Scopes))
		up, err := h.newEgressUpstream(&er.EgressRoute)
		if err != nil {
			return nil, fmt.Errorf("egress upstream %s: %w", r.Upstream, err)
		}
		er.up = up
		h.ups = append(h.ups, up)
		e.byHost[r.Host] = append(e.byHost[r.Host], er)
	}
	for _, rs := range e.byHost {
		slices.SortStableFunc(rs, func(a, b *egressRoute) int { return len(b.PathPrefix) - len(a.PathPrefix) })
	}
	return e, nil
}

// newEgressUpstream is the reverse proxy of one egress route. Unlike the
// main listener's, it sets no X-Forwarded-*: the call leaves the pod as
// the app's own (Rewrite drops the app's X-Forwarded-* as well), and the
// Host the destination sees is the upstream's.
func (h *Handler) newEgressUpstream(r *EgressRoute) (*upstream, error) {
	u, err := url.Parse(r.Upstream)
	if err != nil {
		return nil, err
	}
	t := newTransport(h.cfg, u)
	if u.Scheme == "https" {
		t.TLSClientConfig = &tls.Config{RootCAs: r.cas, MinVersion: tls.VersionTLS12}
	}
	up := &upstream{target: u, transport: t}
	up.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Trailer = pr.In.Trailer
			pr.SetURL(up.target)
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
		},
		Transport:      t,
		BufferPool:     copyBuffers,
		ErrorLog:       slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
		ErrorHandler:   h.upstreamError,
		ModifyResponse: keepRequestID,
	}
	return up, nil
}

// Egress is the handler of the egress listener for this config snapshot;
// nil when the config has no egress section. Run serves it on
// egress.listen; it is exported for in-process use, as New is.
func (h *Handler) Egress() http.Handler {
	if h.egress == nil {
		return nil
	}
	return http.HandlerFunc(h.serveEgress)
}

// egressOutcome is what the egress listener decided for one call.
type egressOutcome struct {
	start  time.Time
	id     string
	path   string
	dest   string // the destination host as the app named it
	route  *egressRoute
	reason reason
	detail string
	res    *jwks.Result // the inbound token's, for propagate and exchange
}

// serveEgress answers one outbound call of the app: find the route, put
// the strategy's token on, record, forward or refuse.
func (h *Handler) serveEgress(w http.ResponseWriter, r *http.Request) {
	h.inflight.enter()
	defer h.inflight.leave()
	if h.egress == nil {
		// Not reachable through Run (egress.listen is restart-only).
		writeError(w, r, reasonForbidden, requestID(r), "")
		return
	}
	o := egressOutcome{start: h.now(), route: h.egress.unmatched}
	defer h.recoverEgressPanic(w, r, &o)
	o.id = requestID(r)
	h.decideEgress(r, &o)
	h.finishEgress(r, &o)
	if !o.reason.allowed() {
		refuseBody(w, r)
		writeError(w, r, o.reason, o.id, "")
		return
	}
	if limit := h.cfg.Limits.MaxBodyBytes; limit > 0 && r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	setPath(r.URL, o.path)
	o.route.up.rp.ServeHTTP(w, r)
}

// decideEgress sets o.reason: the refusals of SPEC.md 11 in the order a
// call is read (method, target, path, route, token), or ok with the
// request's Authorization set as the route's strategy says.
func (h *Handler) decideEgress(r *http.Request, o *egressOutcome) {
	// The app's own Authorization never passes, whatever the strategy:
	// replaced, never merged.
	delete(r.Header, "Authorization")
	h.strip.strip(r.Header)
	if r.Method == http.MethodConnect {
		o.reason, o.detail = reasonBadRequest, "CONNECT"
		return
	}
	// As the main listener's checkBody: a declared length over the limit is
	// refused before anything is recorded or forwarded (a body of unknown
	// length is cut by MaxBytesReader in serveEgress).
	if limit := h.cfg.Limits.MaxBodyBytes; limit > 0 && r.ContentLength > limit {
		o.reason, o.detail = reasonPayloadTooLarge, "body over max_body_bytes"
		return
	}
	dest := r.Host
	if r.URL.IsAbs() {
		// absolute-form (HTTP_PROXY): its host is the destination, the
		// Host header is not consulted (RFC 9112 3.2.2).
		if r.URL.User != nil {
			o.reason, o.detail = reasonBadRequest, "userinfo in the URL"
			return
		}
		if r.URL.Scheme != "http" {
			o.reason, o.detail = reasonBadRequest, "scheme "+r.URL.Scheme
			return
		}
		dest = r.URL.Host
	}
	o.dest = dest
	if checkEgressHost(dest) != nil {
		o.reason, o.detail = reasonBadRequest, "destination host"
		return
	}
	path, ok := policy.Normalize(rawPath(r))
	if !ok {
		o.reason, o.detail = reasonBadRequest, "path"
		return
	}
	o.path = path
	route := h.egress.match(dest, path)
	if route == nil {
		o.reason, o.detail = reasonForbidden, "no egress route"
		return
	}
	o.route = route
	switch route.Token {
	case StrategyNone:
		o.reason = reasonOK
	case StrategyPropagate:
		tok, res, ok := h.inboundToken(r)
		if !ok {
			o.reason, o.detail = reasonNoInboundToken, "no inbound request matches X-Request-Id or traceparent"
			return
		}
		o.res = res
		setBearer(r.Header, tok)
		o.reason = reasonOK
	case StrategyExchange, StrategyClientCredentials:
		req := oauth.Request{Grant: route.grant, Audience: route.Audience, Scopes: route.Scopes}
		if route.Token == StrategyExchange {
			tok, res, ok := h.inboundToken(r)
			if !ok {
				o.reason, o.detail = reasonNoInboundToken, "no inbound request matches X-Request-Id or traceparent"
				return
			}
			o.res, req.SubjectToken, req.SubjectDigest = res, tok, subjectDigest(res, tok)
		}
		t, err := h.egress.tokens.Token(r.Context(), req)
		if err != nil {
			o.reason, o.detail = reasonTokenUnavailable, "identity provider"
			h.log.Warn("egress token unavailable", "request_id", o.id, "route", route.Host, "strategy", string(route.Token), "error", err.Error())
			return
		}
		setBearer(r.Header, t.AccessToken)
		o.reason = reasonOK
	}
}

// subjectDigest is tok's SHA-256, kept with its verified result: a cached
// exchange then costs a map lookup, not a hash of a kilobyte of token. Two
// requests racing may both hash; either result is the same.
func subjectDigest(res *jwks.Result, tok string) *[sha256.Size]byte {
	m := memoOf(res)
	if d := m.digest.Load(); d != nil {
		return d
	}
	d := sha256.Sum256([]byte(tok))
	m.digest.Store(&d)
	return &d
}

// inboundToken is the verified token of the inbound request the call
// names by X-Request-Id or traceparent.
func (h *Handler) inboundToken(r *http.Request) (string, *jwks.Result, bool) {
	var id string
	if v := r.Header["X-Request-Id"]; len(v) == 1 {
		id = v[0]
	}
	tr, hasTrace := parseTraceparent(r.Header["Traceparent"])
	return h.inbound.lookup(id, tr, hasTrace)
}

func setBearer(h http.Header, tok string) {
	h["Authorization"] = []string{"Bearer " + tok}
}

// match finds the route of a destination: an entry with the destination's
// host and port first, else one with its host alone; then the longest
// path_prefix the path starts with.
func (e *egress) match(dest, path string) *egressRoute {
	dest = strings.ToLower(dest)
	if er := matchPrefix(e.byHost[dest], path); er != nil {
		return er
	}
	if host, _, err := net.SplitHostPort(dest); err == nil {
		return matchPrefix(e.byHost[host], path)
	}
	if strings.HasPrefix(dest, "[") && strings.HasSuffix(dest, "]") {
		return matchPrefix(e.byHost[dest[1:len(dest)-1]], path)
	}
	return nil
}

func matchPrefix(rs []*egressRoute, path string) *egressRoute {
	for _, er := range rs {
		if strings.HasPrefix(path, er.PathPrefix) {
			return er
		}
	}
	return nil
}

// finishEgress records the decision: gatehouse_egress_requests_total and
// the audit event of type gatehouse.egress.<decision>.
func (h *Handler) finishEgress(r *http.Request, o *egressOutcome) {
	o.route.count(o.reason)
	decision := o.reason.decision()
	if !h.emitter.Wants(decision) {
		return
	}
	route := o.route.Host
	if o.route.up == nil {
		route = "default"
	}
	path := o.path
	if path == "" {
		path = r.URL.Path
	}
	ev := audit.Event{
		Time:      o.start,
		RequestID: o.id,
		Decision:  decision,
		Reason:    o.reason.String(),
		Status:    o.reason.info().status,
		Route:     route,
		Method:    r.Method,
		Path:      path,
		Host:      o.dest,
		ClientIP:  peerHost(r.RemoteAddr),
		Duration:  h.now().Sub(o.start),
		Egress:    true,
		Strategy:  string(o.route.Token),
	}
	if o.res != nil {
		ev.Subject, ev.Issuer, ev.JTI, ev.Roles = o.res.Subject, o.res.Issuer, o.res.JTI, o.res.Roles
	}
	if !o.reason.allowed() {
		ev.Detail = o.detail
	}
	h.emitter.Emit(ev)
}

// recoverEgressPanic is recoverPanic for the egress listener.
func (h *Handler) recoverEgressPanic(w http.ResponseWriter, r *http.Request, o *egressOutcome) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	h.metrics.panics.Inc()
	h.log.Error("panic serving egress request", "request_id", o.id, "panic", fmt.Sprint(v))
	panic(http.ErrAbortHandler)
}
