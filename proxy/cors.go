package proxy

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/policy"
)

// PreflightMode is `cors.preflight` (SPEC.md 15).
type PreflightMode uint8

const (
	// PreflightDeny: a preflight is an ordinary request (the default).
	PreflightDeny PreflightMode = iota
	// PreflightPass: a preflight goes to the upstream without token checks.
	PreflightPass
	// PreflightAnswer: gatehouse answers a preflight itself.
	PreflightAnswer
)

// CORSConfig is the `cors` section.
type CORSConfig struct {
	Preflight PreflightMode
	// AllowOrigins are exact origins (scheme://host[:port], as browsers
	// send them); AnyOrigin is `["*"]`.
	AllowOrigins []string
	AnyOrigin    bool
	// AllowMethods; empty: the methods of the routes whose location matches
	// the path, else every standard method.
	AllowMethods []string
	// AllowHeaders are compared case-insensitively; AnyHeader is `["*"]`,
	// which echoes the requested headers.
	AllowHeaders []string
	AnyHeader    bool
	MaxAge       time.Duration // default 10m; sent in whole seconds
}

// corsPreflightRoute is the route label of every preflight gatehouse handles
// itself or passes: a fixed name keeps the label set bounded and keeps
// preflights (allowed without a token) apart from the protected routes'
// own counts.
const corsPreflightRoute = "cors_preflight"

// standardMethods are the default Access-Control-Allow-Methods when no route
// says otherwise (RFC 9110 9.3, without CONNECT, OPTIONS and TRACE, which no
// browser preflights for).
var standardMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}

// defaultCORSMaxAge is cors.max_age when not given. Browsers cap it lower
// (Chromium at 2h, Firefox at 24h), never higher.
const defaultCORSMaxAge = 10 * time.Minute

func decodeCORS(d *yamlpos.Decoder, n *yaml.Node, c *Config) {
	if yamlpos.IsNull(n) {
		return
	}
	m := d.Map(n, "preflight", "allow_origins", "allow_methods", "allow_headers", "max_age")
	cc := &c.CORS
	if pn := m.Get("preflight"); !yamlpos.IsNull(pn) {
		var s string
		if d.String(pn, &s) {
			switch s {
			case "deny":
				cc.Preflight = PreflightDeny
			case "pass":
				cc.Preflight = PreflightPass
			case "answer":
				cc.Preflight = PreflightAnswer
			default:
				d.Errorf(pn, "cors.preflight must be deny, pass or answer, got %q", s)
			}
		}
	}
	if cc.Preflight != PreflightAnswer {
		// Keys that would do nothing are errors: an operator who sets
		// allow_origins expects it to be enforced.
		for _, k := range []string{"allow_origins", "allow_methods", "allow_headers", "max_age"} {
			if m.Has(k) {
				d.Errorf(m.KeyNode(k), "cors.%s applies only to preflight: answer", k)
			}
		}
		return
	}

	on := m.Get("allow_origins")
	if yamlpos.IsNull(on) {
		d.Errorf(m.Node, "cors: preflight: answer needs allow_origins (exact origins, or [\"*\"])")
	} else if d.Strings(on, &cc.AllowOrigins) {
		elems := d.Seq(on)
		if len(cc.AllowOrigins) == 0 {
			d.Errorf(on, "cors.allow_origins: preflight: answer needs at least one origin (or [\"*\"])")
		}
		for i, o := range cc.AllowOrigins {
			if o == "*" {
				if len(cc.AllowOrigins) > 1 {
					d.Errorf(elems[i], "cors.allow_origins: \"*\" stands alone")
				}
				cc.AnyOrigin = true
				continue
			}
			if msg := checkOrigin(o); msg != "" {
				d.Errorf(elems[i], "cors.allow_origins: %q: %s", o, msg)
			}
			if slices.Index(cc.AllowOrigins, o) < i {
				d.Errorf(elems[i], "cors.allow_origins: %q given twice", o)
			}
		}
	}
	if mn := m.Get("allow_methods"); !yamlpos.IsNull(mn) && d.Strings(mn, &cc.AllowMethods) {
		for i, meth := range cc.AllowMethods {
			if !isToken(meth) || strings.ToUpper(meth) != meth {
				d.Errorf(d.Seq(mn)[i], "cors.allow_methods: %q is not an upper-case HTTP method", meth)
			}
		}
	}
	if hn := m.Get("allow_headers"); !yamlpos.IsNull(hn) && d.Strings(hn, &cc.AllowHeaders) {
		for i, h := range cc.AllowHeaders {
			switch {
			case h == "*" && len(cc.AllowHeaders) > 1:
				d.Errorf(d.Seq(hn)[i], "cors.allow_headers: \"*\" stands alone")
			case h == "*":
				cc.AnyHeader = true
			case !isToken(h):
				d.Errorf(d.Seq(hn)[i], "cors.allow_headers: %q is not a header name", h)
			}
		}
	}
	d.Duration(m.Get("max_age"), &cc.MaxAge) // yamlpos refuses a negative one
}

// checkOrigin says why o can never equal an Origin header a browser sends
// (RFC 6454 6.1: scheme "://" host [":" port], lower case, no default port,
// no path), or "" when it can.
func checkOrigin(o string) string {
	if o == "null" {
		return `"null" is the origin of sandboxed and file: documents, which any page can produce; list real origins`
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme == "" || u.Host == "" || u.Opaque != "" {
		return "want scheme://host[:port]"
	}
	if u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
		return "an origin has no path, query, fragment or user info (browsers send no trailing slash)"
	}
	if strings.ToLower(o) != o {
		return "browsers send scheme and host in lower case; origins compare exactly"
	}
	if p := u.Port(); u.Scheme == "https" && p == "443" || u.Scheme == "http" && p == "80" {
		return "browsers leave out the default port; origins compare exactly"
	}
	return ""
}

// isToken reports whether s is an RFC 9110 token (method and header names).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

// methodLister is what answer mode needs from the policy: the methods of
// the routes whose location matches path, matched by path alone; nil when
// no route's location matches, the standard methods for a route that
// admits every method.
type methodLister interface {
	Methods(path string) []string
}

// engineMethods adapts policy.Engine.Methods, which reports "every method"
// apart (a route without `methods`, or no route and a permissive default),
// to that contract: every method is the standard ones here.
type engineMethods struct{ e *policy.Engine }

func (m engineMethods) Methods(path string) []string {
	if ms, every := m.e.Methods(path); !every {
		return ms
	}
	return standardMethods
}

// corsPolicy is the compiled `cors` section of one Handler.
type corsPolicy struct {
	cfg     CORSConfig
	methods methodLister
	engine  *policy.Engine
	maxAge  []string
	allowH  []string // the configured Access-Control-Allow-Headers value
	metrics *routeMetrics
}

// newCORS returns nil when preflights are ordinary requests.
func newCORS(cfg *Config, m *Metrics) *corsPolicy {
	if cfg.CORS.Preflight == PreflightDeny {
		return nil
	}
	c := &corsPolicy{
		cfg:     cfg.CORS,
		methods: engineMethods{cfg.Policy},
		engine:  cfg.Policy,
		maxAge:  []string{strconv.FormatInt(int64(cfg.CORS.MaxAge/time.Second), 10)},
		metrics: &routeMetrics{name: corsPreflightRoute, m: m},
	}
	if len(cfg.CORS.AllowHeaders) > 0 && !cfg.CORS.AnyHeader {
		c.allowH = []string{strings.Join(cfg.CORS.AllowHeaders, ", ")}
	}
	return c
}

// isPreflight: an OPTIONS request with one Origin and one
// Access-Control-Request-Method (Fetch standard, CORS-preflight request),
// and no body: a browser never sends one with a body, and a request that
// carries data to the app without a token is not a preflight but an
// ordinary request. Ambiguous (repeated) headers make it ordinary too.
// ContentLength, not Body == http.NoBody: the HTTP/2 server gives a
// request without body a body of its own type, with ContentLength 0; a
// chunked or unannounced body is -1.
func isPreflight(r *http.Request) bool {
	if r.Method != http.MethodOptions || r.ContentLength != 0 {
		return false
	}
	o, m := r.Header["Origin"], r.Header["Access-Control-Request-Method"]
	return len(o) == 1 && len(m) == 1 && o[0] != "" && m[0] != ""
}

// servePreflight handles a CORS preflight under cors.preflight pass or
// answer and reports true; for any other request it does nothing and
// reports false. Headers are already stripped and path is canonical.
func (h *Handler) servePreflight(w http.ResponseWriter, r *http.Request, o *outcome) bool {
	c := h.cors
	if c == nil || !isPreflight(r) {
		return false
	}
	// The route the actual request would take: its upstream answers under
	// pass, and a default: deny there refuses the preflight too.
	route := c.engine.Match(r.Header["Access-Control-Request-Method"][0], o.path)
	o.route, o.label, o.reason = route, c.metrics, reasonPublic
	if c.cfg.Preflight == PreflightPass {
		if route == h.denyAll {
			o.reason, o.detail = reasonForbidden, policy.DetailNoRoute
		}
		h.finish(r, o)
		if !o.reason.allowed() {
			h.answer(w, r, o)
			return true
		}
		h.forward(w, r, o)
		return true
	}
	hdr := w.Header()
	hdr["Vary"] = []string{"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"}
	allow := c.answer(hdr, r, o.path)
	if !allow {
		o.reason, o.detail = reasonForbidden, "preflight not allowed"
	}
	h.finish(r, o)
	if !allow {
		h.answer(w, r, o)
		return true
	}
	hdr["X-Request-Id"] = []string{o.id}
	w.WriteHeader(http.StatusNoContent)
	return true
}

// answer sets the CORS headers of a preflight answer and reports whether
// the origin, the method and every requested header are allowed. On false
// it has set nothing but what it found: the caller answers 403 instead.
func (c *corsPolicy) answer(hdr http.Header, r *http.Request, path string) bool {
	origin := r.Header["Origin"][0]
	if !c.cfg.AnyOrigin && !slices.Contains(c.cfg.AllowOrigins, origin) {
		return false
	}
	methods := c.cfg.AllowMethods
	if len(methods) == 0 {
		if methods = c.methods.Methods(path); len(methods) == 0 {
			methods = standardMethods
		}
	}
	if !slices.Contains(methods, r.Header["Access-Control-Request-Method"][0]) {
		return false
	}
	requested, ok := requestedHeaders(r.Header["Access-Control-Request-Headers"])
	if !ok {
		return false
	}
	allowH := c.allowH
	if c.cfg.AnyHeader {
		if len(requested) > 0 {
			allowH = []string{strings.Join(requested, ", ")}
		}
	} else {
		for _, q := range requested {
			if !slices.ContainsFunc(c.cfg.AllowHeaders, func(a string) bool { return strings.EqualFold(a, q) }) {
				return false
			}
		}
	}
	if c.cfg.AnyOrigin {
		// "*" and credentials never go together (Fetch standard, CORS
		// protocol and credentials).
		hdr["Access-Control-Allow-Origin"] = []string{"*"}
	} else {
		hdr["Access-Control-Allow-Origin"] = []string{origin}
		hdr["Access-Control-Allow-Credentials"] = []string{"true"}
	}
	hdr["Access-Control-Allow-Methods"] = []string{strings.Join(methods, ", ")}
	if len(allowH) > 0 {
		hdr["Access-Control-Allow-Headers"] = allowH
	}
	hdr["Access-Control-Max-Age"] = c.maxAge
	return true
}

// requestedHeaders parses Access-Control-Request-Headers: a comma list of
// header names, lower case from browsers. Anything that is not a name makes
// the preflight unanswerable rather than echoed back.
func requestedHeaders(values []string) ([]string, bool) {
	var out []string
	for _, v := range values {
		for _, f := range strings.Split(v, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			if !isToken(f) {
				return nil, false
			}
			out = append(out, f)
		}
	}
	return out, true
}
