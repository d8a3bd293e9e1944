package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/policy"
)

// Handler is one compiled config snapshot: the whole pipeline of SPEC.md 3
// to 5. It is immutable; a reload builds a new one and swaps it in.
type Handler struct {
	cfg      *Config
	engine   *policy.Engine
	verifier *jwks.Verifier
	emitter  *audit.Emitter
	// emitterUsers counts the handlers sharing emitter; the last to retire closes it.
	emitterUsers *atomic.Int32
	strip        *stripper
	headers      *headerTable
	routes       []routeState // by policy.Route.Index
	ups          []*upstream  // distinct upstreams, for closing idle connections
	metrics      *Metrics
	badPath      *routeMetrics
	cors         *corsPolicy // nil: preflights are ordinary requests

	authAllow, authDeny prometheus.Observer
	log                 *slog.Logger
	now                 func() time.Time

	// deciding counts requests between arrival and their audit event, so a
	// replaced emitter is closed only when no request can still emit to it.
	deciding atomic.Int64
}

var _ http.Handler = (*Handler)(nil)

type routeState struct {
	route   *policy.Route
	up      *upstream
	metrics *routeMetrics
}

// outcome is what the auth steps decided for one request.
type outcome struct {
	route       *policy.Route
	code        string // reason code (SPEC.md 4, or ok/public)
	description string // verifier's text for error_description
	res         *jwks.Result
	tokenSrc    int           // the source the verified token came from, -1 none
	label       *routeMetrics // the metrics and audit route when not route's own (cors_preflight)
	shadow      *audit.Shadow // what a shadow route in line would have decided (SPEC.md 13)
}

func (o *outcome) allowed() bool { return o.code == codeOK || o.code == codePublic }

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := h.now()
	h.deciding.Add(1)
	// The answer's X-Request-Id is set by writeError or, for a forwarded
	// request, by ModifyResponse: ReverseProxy adds the upstream's headers to
	// any already set, which would send two.
	id := requestID(r)

	path, ok := policy.Normalize(rawPath(r))
	if !ok {
		bad := outcome{code: codeBadRequest, tokenSrc: -1}
		h.finish(r, &bad, start, id, r.URL.Path)
		refuseBody(w, r)
		writeError(w, r, codeBadRequest, id, "")
		return
	}
	h.strip.strip(r.Header)
	if h.servePreflight(w, r, path, start, id) {
		return
	}
	shadow := h.decideShadow(r, path)
	// A value, not a pointer: the outcome stays on the stack.
	o := h.authorize(r, path)
	o.shadow = shadow
	h.finish(r, &o, start, id, path)
	if !o.allowed() {
		refuseBody(w, r)
		writeError(w, r, o.code, id, o.description)
		return
	}
	h.forward(w, r, &o, path)
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

// authorize runs route match, token extraction, verification and decision.
func (h *Handler) authorize(r *http.Request, path string) outcome {
	route := h.engine.Match(r.Method, path)
	o := outcome{route: route, tokenSrc: -1}
	if route.Auth == policy.AuthNone {
		removeBearer(r.Header)
		o.code = string(h.decide(r, path, route, nil).Reason)
		return o
	}
	if d := route.Decide(nil); d.Reason == policy.ReasonForbidden {
		o.code = codeForbidden // default deny: no token is worth verifying
		return o
	}
	raw, src, st, why := extractToken(r, h.cfg.Token.Sources)
	switch st {
	case tokenAbsent:
		o.code = string(h.decide(r, path, route, nil).Reason)
		return o
	case tokenInvalid:
		o.code, o.description = codeInvalidToken, why
		return o
	}
	res, err := h.verifier.Verify(r.Context(), raw)
	if err != nil {
		o.code, o.description = verifyCode(err)
		return o
	}
	o.res, o.tokenSrc = res, src
	subject := policy.Subject{Roles: res.Roles, Scopes: res.Scopes, Claims: res}
	o.code = string(h.decide(r, path, route, &subject).Reason)
	return o
}

func verifyCode(err error) (string, string) {
	var e *jwks.Error
	if !errors.As(err, &e) {
		return codeInvalidToken, ""
	}
	switch e.Reason {
	case jwks.ReasonExpired:
		return codeTokenExpired, e.Msg
	case jwks.ReasonKeysUnavailable:
		return codeKeysUnavailable, e.Msg
	}
	return codeInvalidToken, e.Msg
}

// finish records the decision: metrics, the audit event, one debug line.
func (h *Handler) finish(r *http.Request, o *outcome, start time.Time, id, path string) {
	defer h.deciding.Add(-1)
	elapsed := h.now().Sub(start)
	allowed := o.allowed()
	decision := "deny"
	if allowed {
		decision = "allow"
	}
	rm := h.badPath
	routeName := "default"
	switch {
	case o.label != nil:
		rm, routeName = o.label, o.label.name
	case o.route != nil:
		rm = h.routes[o.route.Index].metrics
		routeName = o.route.Name
	}
	rm.count(o.code)
	if allowed {
		h.authAllow.Observe(elapsed.Seconds())
	} else {
		h.authDeny.Observe(elapsed.Seconds())
	}

	if h.emitter.Wants(decision) {
		ev := audit.Event{
			Time:      start,
			RequestID: id,
			Decision:  decision,
			Reason:    o.code,
			Status:    statusOf(o.code),
			Route:     routeName,
			Method:    r.Method,
			Path:      path,
			Host:      r.Host,
			ClientIP:  clientIP(r.RemoteAddr, r.Header["X-Forwarded-For"], h.cfg.TrustedProxies),
			Duration:  elapsed,
			Shadow:    o.shadow,
		}
		if o.res != nil {
			ev.Subject, ev.Issuer, ev.JTI, ev.Roles = o.res.Subject, o.res.Issuer, o.res.JTI, o.res.Roles
		}
		if !allowed && isGRPC(r) {
			ev.GRPCStatus = grpcStatusOf(ev.Status)
		}
		h.emitter.Emit(ev)
	}
	if h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.Debug("decision", "request_id", id, "route", routeName, "decision", decision, "reason", o.code)
	}
}

func statusOf(code string) int {
	if d, ok := denials[code]; ok {
		return d.status
	}
	return http.StatusOK
}

// forward sends an allowed request upstream with the canonical path, the
// claim headers, and the token only when it was verified here.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, o *outcome, path string) {
	// Every configured source goes unless it holds the token verified here
	// and forward_token is on: auth: none too (SPEC.md 5).
	keep := -1
	if o.res != nil && h.cfg.ForwardToken {
		keep = o.tokenSrc
	}
	removeTokens(r, h.cfg.Token.Sources, keep)
	if o.res != nil {
		h.headers.inject(r.Header, o.res)
	}
	setPath(r.URL, path)
	if limit := h.cfg.Limits.MaxBodyBytes; limit > 0 && r.Body != nil && r.Body != http.NoBody {
		if r.ContentLength > limit {
			refuseBody(w, r)
			writeError(w, r, codePayloadTooLarge, r.Header.Get("X-Request-Id"), "")
			return
		}
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
	rs := &h.routes[o.route.Index]
	sw := statusWriter{ResponseWriter: w}
	watchClientBody(r)
	began := h.now()
	rs.up.rp.ServeHTTP(&sw, r)
	status := sw.status
	if sw.failed && clientBodyError(r) != nil {
		return // the client's error (400): not an upstream outcome
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
