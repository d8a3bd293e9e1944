package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/internal/ratelimit"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/jwks/revoke"
	"github.com/gatehouse/gatehouse/policy"
)

// Handler is one compiled config snapshot: the whole pipeline of SPEC.md 3
// to 5. It is immutable; a reload builds a new one and swaps it in.
type Handler struct {
	cfg      *Config
	engine   *policy.Engine
	verifier *jwks.Verifier
	emitter  *audit.Emitter
	parts    *parts       // the server's pools: what this handler holds across reloads
	auditKey auditKey     // this handler's reference to its emitter in parts
	feed     *revoke.Feed // nil: revocation off
	feedKey  feedKey
	strip    *stripper
	headers  *headerTable
	// denyAll is the default route when it is `default: deny`, else nil:
	// such a request is refused before any token is read.
	denyAll *policy.Route
	routes  []routeState // by policy.Route.Index
	ups     []*upstream  // distinct upstreams, for closing idle connections
	metrics *Metrics
	badPath *routeMetrics
	cors    *corsPolicy      // nil: preflights are ordinary requests
	assert  *assertionSigner // nil: upstream_assertion is off
	// throttle is the limits.failed_auth table, shared through parts with
	// the handlers of other reloads of the same section; nil: off.
	throttle    *ratelimit.Table
	throttleKey throttleKey
	// egress is the egress listener's side (egress.go), nil when off; then
	// inbound is nil too, and the main listener registers nothing.
	egress  *egress
	inbound *inboundTable
	idpKey  string // this handler's reference to its OAuth client in parts; "" for none

	authAllow, authDeny prometheus.Observer
	log                 *slog.Logger
	now                 func() time.Time

	// inflight counts requests from arrival to their end, so that what a
	// replaced handler holds is released only when no request still uses it.
	inflight inflight
	retired  atomic.Bool // retire ran
}

var _ http.Handler = (*Handler)(nil)

type routeState struct {
	route   *policy.Route
	up      *upstream
	metrics *routeMetrics
	aud     string // the upstream assertion's aud for this route's upstream
}

// outcome is what gatehouse decided for one request, and what it needs to
// record and answer it. It lives on ServeHTTP's stack.
type outcome struct {
	start       time.Time
	id          string // X-Request-Id
	path        string // normalised (or, for a bad path, as net/http parsed it)
	route       *policy.Route
	reason      reason
	description string // verifier's text for error_description
	detail      string // the failed check in words (audit data.detail, debug log); never a token or claim value
	res         *jwks.Result
	raw         string        // the verified token, for egress propagate and exchange
	tokenSrc    int           // the source the verified token came from, -1 none
	label       *routeMetrics // the metrics and audit route when not route's own (cors_preflight)
	shadow      *audit.Shadow // what a shadow route in line would have decided (SPEC.md 13)
	recorded    bool          // finish ran: metrics and audit have this request
	decided     time.Time     // when the decision was taken, for a request recorded after forwarding
	sw          *statusWriter
	client      netip.Addr // the failed-auth throttle's client, when it is on
}

// ServeHTTP runs the pipeline of SPEC.md 3 to 5 for one request. Every
// answer gatehouse makes itself goes through finish (metrics, audit, once)
// and answer (the rendering of the reason table). A panic anywhere below is
// recovered here, answered 500 and counted; the in-flight count that retire
// waits on goes up and down only here.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.inflight.enter()
	defer h.inflight.leave()
	o := outcome{tokenSrc: -1}
	defer h.recoverPanic(w, r, &o)
	o.start = h.now()
	// The answer's X-Request-Id is set by writeError or, for a forwarded
	// request, by ModifyResponse: ReverseProxy adds the upstream's headers to
	// any already set, which would send two.
	o.id = requestID(r)

	path, ok := policy.Normalize(rawPath(r))
	if !ok {
		o.reason, o.path, o.detail = reasonBadRequest, r.URL.Path, "path"
		h.finish(r, &o)
		h.answer(w, r, &o)
		return
	}
	o.path = path
	h.strip.strip(r.Header)
	if h.throttled(w, r, &o) {
		h.finish(r, &o)
		h.answer(w, r, &o)
		return
	}
	if h.servePreflight(w, r, &o) {
		return
	}
	o.shadow = h.decideShadow(r, o.path)
	h.authorize(r, &o)
	h.countFailure(&o)
	if o.reason.allowed() {
		h.checkBody(r, &o)
	}
	// A body of unknown length under limits.max_body_bytes is known to fit
	// only once it has been read: such a request is recorded when
	// forwarding ends, so that a 413 mid-stream is a deny (SPEC.md, the
	// table after section 8), never an allow. Requests that declare their
	// length, and every request without a limit, are recorded at once.
	late := o.reason.allowed() && h.cfg.Limits.MaxBodyBytes > 0 && r.ContentLength < 0 &&
		r.Body != nil && r.Body != http.NoBody
	if late {
		o.decided = h.now()
	} else {
		h.finish(r, &o)
	}
	if !o.reason.allowed() {
		h.answer(w, r, &o)
		return
	}
	if h.inbound != nil && o.res != nil {
		// The app's outbound calls for this request may use its token
		// (SPEC.md 11) while it is in flight and for inbound_grace after.
		slot := h.inbound.begin(o.id, r.Header["Traceparent"], o.raw, o.res)
		defer h.inbound.end(slot, h.egress.grace)
	}
	h.forward(w, r, &o)
	if late {
		if o.sw != nil && o.sw.tooLarge {
			o.reason, o.detail = reasonPayloadTooLarge, "body over max_body_bytes"
		}
		h.finish(r, &o)
	}
}

// answer renders a refusal of the reason table: writeError chooses the
// writer, a trailers-only answer for a gRPC request (proxy/grpc.go), the
// JSON body for everything else.
func (h *Handler) answer(w http.ResponseWriter, r *http.Request, o *outcome) {
	refuseBody(w, r)
	writeError(w, r, o.reason, o.id, o.description)
}

// recoverPanic turns a panic on the request path into a 500 with the JSON
// body, counted in gatehouse_panics_total and logged with its stack. A panic
// before the decision was recorded is recorded as internal_error; one while
// forwarding keeps the decision already recorded, and when the response
// has begun the connection is aborted instead (a status cannot follow a
// body). http.ErrAbortHandler is net/http's own way to abort a response
// (ReverseProxy uses it when the upstream's body breaks): not a bug, passed on.
func (h *Handler) recoverPanic(w http.ResponseWriter, r *http.Request, o *outcome) {
	v := recover()
	if v == nil {
		return
	}
	if v == http.ErrAbortHandler {
		panic(v)
	}
	h.metrics.panics.Inc()
	h.log.Error("panic serving request", "request_id", o.id, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	if o.sw != nil && o.sw.status != 0 {
		panic(http.ErrAbortHandler)
	}
	if !o.recorded {
		o.reason, o.description, o.detail = reasonInternalError, "", "panic"
		if o.path == "" {
			o.path = r.URL.Path
		}
		h.finish(r, o)
	}
	// Through answer, so a gRPC client gets its trailers-only 500 too; the
	// record above keeps the reason it had.
	a := outcome{id: o.id, reason: reasonInternalError}
	h.answer(w, r, &a)
}

// checkBody refuses, before anything is recorded or forwarded, a body
// whose declared length is over limits.max_body_bytes: 413, a deny. A body
// of unknown length (chunked) is cut by http.MaxBytesReader in forward
// instead; see upstreamError for how that one is recorded.
func (h *Handler) checkBody(r *http.Request, o *outcome) {
	if limit := h.cfg.Limits.MaxBodyBytes; limit > 0 && r.ContentLength > limit {
		o.reason, o.detail = reasonPayloadTooLarge, "body over max_body_bytes"
	}
}

// refuseBody closes the connection after a denial of a request that has a
// body, without reading it. Otherwise net/http reads and discards up to
// 256 KiB of the unread body, once before it writes the answer and again
// when it closes the body, with no deadline (read_header has passed, and
// there is no whole-request timeout): a client that announces a body and
// never sends it would hold the connection, and get no answer. The read
// deadline in the past ends that read at once; Connection: close because the
// rest of the body would otherwise be read as the next request. Requests
// without a body keep their keep-alive.
func refuseBody(w http.ResponseWriter, r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || r.ProtoMajor >= 2 {
		// HTTP/2 resets the stream of an unread body by itself; a
		// Connection: close there would send GOAWAY to every stream sharing
		// the connection.
		return
	}
	w.Header()["Connection"] = []string{"close"}
	_ = http.NewResponseController(w).SetReadDeadline(time.Unix(1, 0))
}

// requestID keeps a well-formed client id or makes one, and puts it on the
// request for the upstream.
func requestID(r *http.Request) string {
	if v := r.Header["X-Request-Id"]; len(v) == 1 && validRequestID(v[0]) {
		return v[0]
	}
	id, v := newRequestIDHeader()
	r.Header["X-Request-Id"] = v
	return id
}

// rawPath is the path exactly as the client sent it: nothing may clean it
// before Normalize (SPEC.md 3). It reads RequestURI, never r.URL: net/url
// rebuilds the path from its decoded form when the raw one holds a byte it
// would escape, turning %2F into / before Normalize could refuse it.
func rawPath(r *http.Request) string {
	uri := r.RequestURI
	if !strings.HasPrefix(uri, "/") {
		// absolute-form (scheme://authority/path) or "*": keep only the path.
		_, rest, ok := strings.Cut(uri, "://")
		if !ok {
			return ""
		}
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return ""
		}
		uri = rest[i:]
	}
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		return uri[:i]
	}
	return uri
}

// authorize runs route match, token extraction, verification and the one
// decision of the route.
func (h *Handler) authorize(r *http.Request, o *outcome) {
	route := h.engine.Match(r.Method, o.path)
	o.route = route
	switch {
	case route == h.denyAll:
		o.reason, o.detail = reasonForbidden, policy.DetailNoRoute // default deny: no token is worth verifying
		return
	case route.Auth == policy.AuthNone:
		removeBearer(r.Header)
		d := h.decide(r, o.path, route, nil)
		o.reason, o.detail = fromPolicy(d.Reason), d.Detail
		return
	}
	var subject *policy.Subject
	raw, src, st, why := extractToken(r, h.cfg.Token.Sources)
	switch st {
	case tokenInvalid:
		o.reason, o.description, o.detail = reasonInvalidToken, why, why
		return
	case tokenFound:
		res, err := h.verifier.Verify(r.Context(), raw)
		if err != nil {
			o.reason, o.description, o.detail = verifyReason(err)
			return
		}
		o.res, o.tokenSrc, o.raw = res, src, raw
		if rs, desc, detail, ok := h.revocation(res, o.start.UnixNano()); ok {
			o.reason, o.description, o.detail = rs, desc, detail
			return
		}
		subject = &policy.Subject{Roles: res.Roles, Scopes: res.Scopes, Claims: res}
	}
	d := h.decide(r, o.path, route, subject)
	o.reason, o.detail = fromPolicy(d.Reason), d.Detail
}

// revokedDetail is the audit detail per revocation kind, made once.
var revokedDetail = [...]string{"revoked by jti", "revoked by subject", "revoked by key id"}

// revocation is the answer to a verified token (cache hits included) that
// a revocation names, or to any token while a fail_closed feed is down;
// ok is false when neither holds or revocation is off. No lock, no
// allocation: the store is an atomic snapshot and the token's hashes were
// computed when it verified. The pipeline and shadow routes both ask it.
func (h *Handler) revocation(res *jwks.Result, now int64) (rs reason, description, detail string, ok bool) {
	switch {
	case h.feed == nil:
		return 0, "", "", false
	case h.feed.Refuse(now):
		return reasonKeysUnavailable, "the revocation feed is unavailable", "revocation feed down (fail_closed)", true
	}
	if k, hit := h.parts.revocations.CheckResult(res, now); hit {
		return reasonTokenRevoked, "token revoked", revokedDetail[k], true
	}
	return 0, "", "", false
}

// verifyReason returns the reason, the error_description and the audit
// detail of a refused token.
func verifyReason(err error) (reason, string, string) {
	var e *jwks.Error
	if !errors.As(err, &e) {
		return reasonInvalidToken, "", "invalid token"
	}
	return fromJWKS(e.Reason), e.Msg, e.Detail
}

// finish records the decision: metrics, the audit event, one debug line.
func (h *Handler) finish(r *http.Request, o *outcome) {
	o.recorded = true
	end := o.decided
	if end.IsZero() {
		end = h.now()
	}
	elapsed := end.Sub(o.start)
	allowed := o.reason.allowed()
	decision := o.reason.decision()
	rm := h.badPath
	routeName := "default"
	switch {
	case o.label != nil:
		rm, routeName = o.label, o.label.name
	case o.route != nil:
		rm = h.routes[o.route.Index].metrics
		routeName = o.route.Name
	}
	rm.count(o.reason)
	if allowed {
		h.authAllow.Observe(elapsed.Seconds())
	} else {
		h.authDeny.Observe(elapsed.Seconds())
	}

	if h.emitter.Wants(decision) {
		ev := audit.Event{
			Time:      o.start,
			RequestID: o.id,
			Decision:  decision,
			Reason:    o.reason.String(),
			Status:    o.reason.info().status,
			Route:     routeName,
			Method:    r.Method,
			Path:      o.path,
			Host:      r.Host,
			ClientIP:  clientIP(r.RemoteAddr, r.Header["X-Forwarded-For"], h.cfg.TrustedProxies),
			Duration:  elapsed,
			Shadow:    o.shadow,
		}
		if o.res != nil {
			ev.Subject, ev.Issuer, ev.JTI, ev.Roles = o.res.Subject, o.res.Issuer, o.res.JTI, o.res.Roles
		}
		if !allowed {
			ev.Detail = o.detail
			if isGRPC(r) {
				ev.GRPCStatus = grpcStatusOf(ev.Status)
			}
		}
		h.emitter.Emit(ev)
	}
	if h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.Debug("decision", "request_id", o.id, "route", routeName, "decision", decision, "reason", o.reason.String(), "detail", o.detail)
	}
}

// forward sends an allowed request upstream with the canonical path, the
// claim headers, and the token only when it was verified here.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, o *outcome) {
	// Every configured source goes unless it holds the token verified here
	// and forward_token is on: auth: none too (SPEC.md 5).
	keep := -1
	if o.res != nil && h.cfg.ForwardToken {
		keep = o.tokenSrc
	}
	removeTokens(r, h.cfg.Token.Sources, keep)
	rs := &h.routes[o.route.Index]
	if o.res != nil {
		h.headers.inject(r.Header, o.res)
		if h.assert != nil {
			if err := h.assert.set(r.Header, o.res, rs.aud, o.id, o.start); err != nil {
				// Forwarded without it: an app that relies on the assertion
				// refuses the request, which is the safe side.
				h.log.Error("upstream assertion not signed", "request_id", o.id, "error", err.Error())
			}
		}
	}
	setPath(r.URL, o.path)
	if limit := h.cfg.Limits.MaxBodyBytes; limit > 0 && r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	if o.res != nil && isUpgrade(r) {
		// An upgraded connection lives as long as its token (SPEC.md 5):
		// ReverseProxy closes the backend when the request context ends.
		ctx, cancel := context.WithDeadline(r.Context(), o.res.NotAfter)
		defer cancel()
		r = r.WithContext(ctx)
	}
	r, cancel := withGRPCDeadline(r)
	defer cancel()
	sw := statusWriter{ResponseWriter: w}
	o.sw = &sw
	watchClientBody(r)
	began := h.now()
	rs.up.rp.ServeHTTP(&sw, r)
	status := sw.status
	if sw.failed && (sw.tooLarge || clientBodyError(r) != nil) {
		return // the client's error (413, 400): not an upstream outcome
	}
	if sw.failed {
		status = 0 // code="error", not the 502/504 gatehouse answered
	}
	rm := rs.metrics
	if o.label != nil {
		rm = o.label
	}
	rm.observeUpstream(status, h.now().Sub(began).Seconds())
}

// setPath makes the forwarded path the canonical one.
func setPath(u *url.URL, path string) {
	if strings.IndexByte(path, '%') < 0 {
		u.Path, u.RawPath = path, ""
		return
	}
	dec, err := url.PathUnescape(path)
	if err != nil {
		dec = path
	}
	u.Path, u.RawPath = dec, path
}

func isUpgrade(r *http.Request) bool {
	return isWebSocket(r.Header) && len(r.Header["Connection"]) > 0
}

// statusWriter remembers the status for the upstream metric; Unwrap lets
// ReverseProxy flush and hijack through it (http.ResponseController).
type statusWriter struct {
	http.ResponseWriter
	status int
	failed bool // the upstream gave no answer: the error handler wrote this one
	// tooLarge: the body passed limits.max_body_bytes while it was being
	// forwarded; the error handler answered 413.
	tooLarge bool
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 || s.status < 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
