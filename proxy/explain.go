package proxy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/policy"
)

// Explanation is what `gatehouse explain` prints (SPEC.md 13): in text, or
// as this JSON with -json.
type Explanation struct {
	Method       string         `json:"method"`
	URL          string         `json:"url"`
	Path         string         `json:"path,omitempty"` // canonical
	PathError    string         `json:"path_error,omitempty"`
	Routes       []policy.Step  `json:"routes,omitempty"`
	Route        string         `json:"route,omitempty"` // the winner
	Shadow       *ShadowExplain `json:"shadow,omitempty"`
	Token        *TokenExplain  `json:"token,omitempty"`
	Requirements []policy.Check `json:"requirements,omitempty"`
	Decision     string         `json:"decision"` // allow | deny
	Status       int            `json:"status"`
	Reason       string         `json:"reason"`
}

// ShadowExplain is what a shadow route in line would have decided.
type ShadowExplain struct {
	Route    string `json:"route"`
	Decision string `json:"decision"`
	Reason   string `json:"reason"`
}

// TokenExplain is the token checks.
type TokenExplain struct {
	Source    string    `json:"source"` // token | claims | none
	Issuer    string    `json:"issuer,omitempty"`
	Kid       string    `json:"kid,omitempty"`
	Alg       string    `json:"alg,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Expiry    time.Time `json:"expiry,omitzero"`
	Roles     []string  `json:"roles,omitempty"`
	Scopes    []string  `json:"scopes,omitempty"`
	Verified  bool      `json:"verified"`
	Error     string    `json:"error,omitempty"`
	Unchecked string    `json:"unchecked,omitempty"`
}

// identity is who a request is explained for: a raw token, claims given
// directly (no signature), or nobody.
type identity struct {
	token  string
	claims map[string]any
	issuer string // with claims: which issuer entry interprets them; "" the first
}

// explainer decides requests as the Handler would, without a listener.
type explainer struct {
	cfg      *Config
	strip    *stripper
	verifier *jwks.Verifier // nil unless a token is explained
	now      func() time.Time
}

func newExplainer(cfg *Config) *explainer {
	return &explainer{cfg: cfg, strip: newStripper(cfg), now: time.Now}
}

// explain decides one request. header may be nil.
func (x *explainer) explain(ctx context.Context, method, rawURL string, header http.Header, id identity) *Explanation {
	ex := &Explanation{Method: method, URL: rawURL}
	deny := func(rs reason) *Explanation {
		ex.Decision, ex.Reason, ex.Status = "deny", rs.String(), rs.info().status
		return ex
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		ex.PathError = "unparsable URL: " + err.Error()
		return deny(reasonBadRequest)
	}
	raw := u.EscapedPath()
	if u.RawPath != "" {
		raw = u.RawPath
	}
	if raw == "" {
		raw = "/"
	}
	path, ok := policy.Normalize(raw)
	if !ok {
		ex.PathError = fmt.Sprintf("%q is a bad path (SPEC.md 3): answered 400 and never forwarded", raw)
		return deny(reasonBadRequest)
	}
	ex.Path = path
	r := &http.Request{Method: method, URL: u, Host: u.Host, Header: http.Header{}, RemoteAddr: "127.0.0.1:0"}
	if r.Host == "" {
		r.Host = "localhost"
	}
	for k, v := range header {
		r.Header[http.CanonicalHeaderKey(k)] = v
	}
	x.strip.strip(r.Header)

	engine := x.cfg.Policy
	var route *policy.Route
	ex.Routes, route = engine.Trace(method, path)
	ex.Route = route.Name

	subject, tok, refused := x.subject(ctx, r, id, route)
	ex.Token = tok
	if sh := engine.Shadow(method, path); sh != nil {
		rs := fromPolicy(x.decide(r, path, sh, subject).Reason)
		if refused != reasonOK && sh.Auth != policy.AuthNone {
			rs = refused
		}
		ex.Shadow = &ShadowExplain{Route: sh.Name, Decision: rs.decision(), Reason: rs.String()}
	}
	if route.Auth != policy.AuthNone && refused != reasonOK {
		if d := route.Decide(nil); d.Reason == policy.ReasonForbidden {
			refused = reasonForbidden
		}
		return deny(refused)
	}
	if route.Auth == policy.AuthNone {
		subject = nil
	}
	req := whenRequest(r, path, route, x.cfg, x.now)
	ex.Requirements = route.Explain(subject, &req)
	d := route.DecideRequest(subject, &req)
	if !d.Allow {
		return deny(fromPolicy(d.Reason))
	}
	ex.Decision, ex.Reason, ex.Status = "allow", string(d.Reason), http.StatusOK
	return ex
}

func (x *explainer) decide(r *http.Request, path string, route *policy.Route, s *policy.Subject) policy.Decision {
	if route.Auth == policy.AuthNone {
		s = nil
	}
	req := whenRequest(r, path, route, x.cfg, x.now)
	return route.DecideRequest(s, &req)
}

// subject is the identity as the route would see it: refused is the reason
// when the token itself is refused (invalid_token, token_expired, ...), else
// reasonOK.
func (x *explainer) subject(ctx context.Context, r *http.Request, id identity, route *policy.Route) (_ *policy.Subject, _ *TokenExplain, refused reason) {
	switch {
	case id.claims != nil:
		is := x.issuer(id.issuer)
		tok := &TokenExplain{Source: "claims", Unchecked: "claims given directly: signature, exp, nbf, iat, audience and required claims not checked"}
		if is == nil {
			tok.Error = fmt.Sprintf("no issuer entry %q in the config", id.issuer)
			return nil, tok, reasonInvalidToken
		}
		res, err := jwks.ClaimsResult(is, id.claims)
		if err != nil {
			tok.Error = err.Error()
			return nil, tok, reasonInvalidToken
		}
		tok.Issuer, tok.Subject, tok.Expiry, tok.Roles, tok.Scopes = is.Name, res.Subject, res.Expiry, res.Roles, res.Scopes
		return &policy.Subject{Roles: res.Roles, Scopes: res.Scopes, Claims: res}, tok, reasonOK
	case id.token != "":
		r.Header.Set("Authorization", "Bearer "+id.token)
	}
	if route.Auth == policy.AuthNone {
		return nil, &TokenExplain{Source: "none"}, reasonOK
	}
	raw, _, st, why := extractToken(r, x.cfg.Token.Sources)
	switch st {
	case tokenAbsent:
		return nil, &TokenExplain{Source: "none"}, reasonOK
	case tokenInvalid:
		return nil, &TokenExplain{Source: "token", Error: why}, reasonInvalidToken
	}
	tok := &TokenExplain{Source: "token"}
	tok.Alg, tok.Kid = peekHeader(raw)
	if x.verifier == nil {
		tok.Error = "no verifier"
		return nil, tok, reasonInvalidToken
	}
	res, err := x.verifier.Verify(ctx, raw)
	if err != nil {
		rs, msg, detail := verifyReason(err)
		tok.Error = msg
		if msg == "" {
			tok.Error = err.Error()
		}
		if detail != "" && detail != msg {
			tok.Error = detail + ": " + tok.Error
		}
		return nil, tok, rs
	}
	tok.Verified = true
	tok.Issuer, tok.Kid, tok.Subject, tok.Expiry, tok.Roles, tok.Scopes = res.Issuer, res.Kid, res.Subject, res.Expiry, res.Roles, res.Scopes
	return &policy.Subject{Roles: res.Roles, Scopes: res.Scopes, Claims: res}, tok, reasonOK
}

// issuer is the entry named name, the first when name is "".
func (x *explainer) issuer(name string) *jwks.Issuer {
	for i := range x.cfg.Issuers {
		if name == "" || x.cfg.Issuers[i].Name == name {
			return &x.cfg.Issuers[i]
		}
	}
	return nil
}

// peekHeader reads alg and kid from a token's header, unverified, for the
// explanation only.
func peekHeader(raw string) (alg, kid string) {
	h, _, _ := strings.Cut(raw, ".")
	b, err := base64.RawURLEncoding.DecodeString(h)
	if err != nil {
		return "", ""
	}
	var v struct{ Alg, Kid string }
	_ = json.Unmarshal(b, &v)
	return v.Alg, v.Kid
}

// peekIssuer reads iss from a token's payload, unverified: it picks the one
// issuer entry whose keys explain fetches.
func peekIssuer(raw string) string {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var v struct{ Iss string }
	_ = json.Unmarshal(b, &v)
	return v.Iss
}

// Explain runs `gatehouse explain [-config FILE] [-token TOKEN | -token-file
// FILE | -claims JSON] [-issuer NAME] [-json] METHOD URL` (SPEC.md 13):
// exit 0 allowed, 1 denied, 2 usage or config error.
func Explain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("gatehouse explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", defaultConfigPath(), "config file")
	token := fs.String("token", "", "a token to verify (keys from files, or fetched once from the issuer)")
	tokenFile := fs.String("token-file", "", "read the token from this file")
	claims := fs.String("claims", "", "claims as JSON, instead of a token: the signature and time checks are skipped")
	issuer := fs.String("issuer", "", "with -claims: the issuer entry that interprets them (default: the first)")
	asJSON := fs.Bool("json", false, "print JSON")
	var headers headerFlags
	fs.Var(&headers, "H", "a request header 'Name: value' (repeatable)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fmt.Fprintln(stderr, "usage: gatehouse explain [-config FILE] [-token TOKEN | -token-file FILE | -claims JSON] [-json] METHOD URL")
		return 2
	}
	n := 0
	for _, s := range []string{*token, *tokenFile, *claims} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		fmt.Fprintln(stderr, "gatehouse explain: give one of -token, -token-file, -claims")
		return 2
	}
	id := identity{token: *token, issuer: *issuer}
	if *tokenFile != "" {
		b, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "gatehouse explain: %v\n", err)
			return 2
		}
		id.token = strings.TrimSpace(string(b))
	}
	if *claims != "" {
		if err := json.Unmarshal([]byte(*claims), &id.claims); err != nil || id.claims == nil {
			fmt.Fprintf(stderr, "gatehouse explain: -claims must be a JSON object: %v\n", err)
			return 2
		}
	}
	cfg, err := LoadConfig(*configPath)
	if err != nil {
		for _, e := range yamlpos.Errors(err) {
			fmt.Fprintln(stderr, e)
		}
		return 2
	}
	x := newExplainer(cfg)
	ctx := context.Background()
	if id.token != "" {
		// Only the token's own issuer entry: its keys come from files, or
		// are fetched once.
		iss := peekIssuer(id.token)
		var use []jwks.Issuer
		for _, is := range cfg.Issuers {
			if is.Name == iss {
				use = append(use, is)
			}
		}
		if len(use) == 0 {
			use = cfg.Issuers[:1]
		}
		v, err := jwks.New(ctx, jwks.Options{Issuers: use, MaxTokenSize: int(cfg.Token.MaxSize), CacheSize: -1,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			fmt.Fprintf(stderr, "gatehouse explain: %v\n", err)
			return 2
		}
		defer v.Close()
		x.verifier = v
	}
	ex := x.explain(ctx, strings.ToUpper(fs.Arg(0)), fs.Arg(1), headers.h, id)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(ex)
	} else {
		writeExplanation(stdout, ex, "")
	}
	if ex.Decision == "allow" {
		return 0
	}
	return 1
}

func defaultConfigPath() string {
	if p := os.Getenv("GATEHOUSE_CONFIG"); p != "" {
		return p
	}
	return "gatehouse.yaml"
}

// headerFlags collects -H "Name: value".
type headerFlags struct{ h http.Header }

func (f *headerFlags) String() string { return "" }

func (f *headerFlags) Set(s string) error {
	name, value, ok := strings.Cut(s, ":")
	if !ok || strings.TrimSpace(name) == "" {
		return errors.New("want 'Name: value'")
	}
	if f.h == nil {
		f.h = http.Header{}
	}
	f.h.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	return nil
}

// writeExplanation prints ex as text, each line after indent.
func writeExplanation(w io.Writer, ex *Explanation, indent string) {
	p := func(format string, args ...any) { fmt.Fprintf(w, indent+format+"\n", args...) }
	p("request: %s %s", ex.Method, ex.URL)
	if ex.PathError != "" {
		p("path: refused: %s", ex.PathError)
	} else {
		p("path: %s (canonical)", ex.Path)
		p("routes, in matching order:")
		for _, s := range ex.Routes {
			mark := "  no "
			switch {
			case s.Winner:
				mark = "  WIN"
			case s.Matched:
				mark = "  yes"
			}
			p("%s %-32s %s", mark, s.Route, s.Why)
		}
		p("route: %s", ex.Route)
	}
	if ex.Shadow != nil {
		p("shadow: %s would %s (%s); recorded only, the request is decided without it", ex.Shadow.Route, ex.Shadow.Decision, ex.Shadow.Reason)
	}
	if t := ex.Token; t != nil {
		switch t.Source {
		case "none":
			p("token: none")
		case "claims":
			p("token: %s", t.Unchecked)
		default:
			p("token: alg %s, kid %s", t.Alg, t.Kid)
		}
		if t.Error != "" {
			p("  refused: %s", t.Error)
		}
		if t.Issuer != "" || t.Verified {
			exp := "no exp"
			if !t.Expiry.IsZero() {
				exp = "exp " + t.Expiry.UTC().Format(time.RFC3339)
			}
			p("  issuer %q, subject %q, %s, roles %v, scopes %v, signature verified %v",
				t.Issuer, t.Subject, exp, t.Roles, t.Scopes, t.Verified)
		}
	}
	if len(ex.Requirements) > 0 {
		p("requirements:")
		for _, c := range ex.Requirements {
			mark := "  ok  "
			if !c.OK {
				mark = "  FAIL"
			}
			p("%s %s: %s", mark, c.Name, c.Detail)
		}
	}
	p("result: %s %d %s", ex.Decision, ex.Status, ex.Reason)
}
