package oauth

import (
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// testIdP is a real HTTP identity provider: discovery and a token endpoint
// that checks client authentication and grant parameters as RFC 6749,
// RFC 7523 and RFC 8693 say, and answers with numbered tokens.
type testIdP struct {
	srv    *httptest.Server
	issuer string

	clientID string
	secret   string           // client_secret_basic when set
	pub      crypto.PublicKey // private_key_jwt when set
	alg      jwa.SignatureAlgorithm
	now      func() time.Time // for the assertion's exp

	tokenHits atomic.Int64
	discHits  atomic.Int64
	issued    atomic.Int64

	mu         sync.Mutex
	expiresIn  any                                                   // the expires_in answered (default 3600)
	respond    func(w http.ResponseWriter, r *http.Request, n int64) // replaces the answer after the checks pass
	gate       chan struct{}                                         // when set, token requests wait for it to close
	forms      []url.Values                                          // what each token request carried
	jtis       map[string]bool
	discovery  func(w http.ResponseWriter) // replaces the discovery document
	assertions []string
}

func newTestIdP(t testing.TB) *testIdP {
	t.Helper()
	p := &testIdP{clientID: "checkout", expiresIn: 3600, jtis: map[string]bool{}, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", p.serveDiscovery)
	mux.HandleFunc("/token", p.serveToken)
	p.srv = httptest.NewServer(mux)
	p.issuer = p.srv.URL
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testIdP) tokenURL() string { return p.srv.URL + "/token" }

func (p *testIdP) set(f func(p *testIdP)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

func (p *testIdP) lastForm() url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.forms) == 0 {
		return nil
	}
	return p.forms[len(p.forms)-1]
}

func (p *testIdP) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	p.discHits.Add(1)
	p.mu.Lock()
	d := p.discovery
	p.mu.Unlock()
	if d != nil {
		d(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"issuer": p.issuer, "token_endpoint": p.tokenURL(), "jwks_uri": p.srv.URL + "/jwks",
		"grant_types_supported": []string{"client_credentials", string(TokenExchange)},
	})
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
	}
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func (p *testIdP) serveToken(w http.ResponseWriter, r *http.Request) {
	n := p.tokenHits.Add(1)
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" || r.URL.RawQuery != "" {
		oauthError(w, 400, "invalid_request", "POST form expected")
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request", "bad form")
		return
	}
	form := r.PostForm
	for k, v := range form {
		if len(v) != 1 { // RFC 6749 3.2: parameters must not be repeated
			oauthError(w, 400, "invalid_request", "repeated "+k)
			return
		}
	}
	p.mu.Lock()
	p.forms = append(p.forms, form)
	p.mu.Unlock()
	if msg := p.checkClient(r, form); msg != "" {
		oauthError(w, 401, "invalid_client", msg)
		return
	}
	switch form.Get("grant_type") {
	case "client_credentials":
		if form.Has("subject_token") {
			oauthError(w, 400, "invalid_request", "subject_token in client_credentials")
			return
		}
	case string(TokenExchange):
		if form.Get("subject_token") == "" || form.Get("subject_token_type") != tokenTypeAccessToken {
			oauthError(w, 400, "invalid_request", "subject_token and subject_token_type required")
			return
		}
		if rt := form.Get("requested_token_type"); rt != "" && rt != tokenTypeAccessToken {
			oauthError(w, 400, "invalid_request", "unsupported requested_token_type")
			return
		}
	default:
		oauthError(w, 400, "unsupported_grant_type", "")
		return
	}
	p.mu.Lock()
	respond, exp := p.respond, p.expiresIn
	p.mu.Unlock()
	if respond != nil {
		respond(w, r, n)
		return
	}
	body := map[string]any{
		"access_token": fmt.Sprintf("at-%d", p.issued.Add(1)),
		"token_type":   "Bearer",
	}
	if exp != nil {
		body["expires_in"] = exp
	}
	if form.Get("grant_type") == string(TokenExchange) {
		body["issued_token_type"] = tokenTypeAccessToken
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(body)
}

// checkClient authenticates the client; "" when it passes.
func (p *testIdP) checkClient(r *http.Request, form url.Values) string {
	if p.secret != "" {
		if form.Has("client_secret") || form.Has("client_assertion") {
			return "more than one client authentication" // RFC 6749 2.3
		}
		auth, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Basic ")
		if !ok {
			return "no basic auth"
		}
		raw, err := base64.StdEncoding.DecodeString(auth)
		if err != nil {
			return "bad base64"
		}
		id, secret, ok := strings.Cut(string(raw), ":")
		if !ok {
			return "no colon"
		}
		// RFC 6749 2.3.1: form-urlencoded before base64.
		id, err1 := url.QueryUnescape(id)
		secret, err2 := url.QueryUnescape(secret)
		if err1 != nil || err2 != nil || id != p.clientID || secret != p.secret {
			return "wrong client"
		}
		return ""
	}
	if r.Header.Get("Authorization") != "" {
		return "more than one client authentication"
	}
	if form.Get("client_assertion_type") != assertionType {
		return "client_assertion_type"
	}
	if id := form.Get("client_id"); id != "" && id != p.clientID {
		return "client_id"
	}
	a := form.Get("client_assertion")
	p.mu.Lock()
	p.assertions = append(p.assertions, a)
	p.mu.Unlock()
	msg, err := jws.Parse([]byte(a))
	if err != nil || len(msg.Signatures()) != 1 {
		return "assertion not a JWS"
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if hdr.Algorithm() != p.alg || hdr.Type() != "JWT" || hdr.KeyID() == "" {
		return "assertion header"
	}
	payload, err := jws.Verify([]byte(a), jws.WithKey(p.alg, p.pub))
	if err != nil {
		return "assertion signature"
	}
	var cl struct {
		Iss, Sub, Jti string
		Aud           any
		Iat, Exp      int64
	}
	if err := json.Unmarshal(payload, &cl); err != nil {
		return "assertion claims"
	}
	now := p.now().Unix()
	if cl.Iss != p.clientID || cl.Sub != p.clientID || cl.Aud != p.tokenURL() {
		return "assertion iss/sub/aud"
	}
	if cl.Exp <= now || cl.Exp-cl.Iat > 60 || cl.Iat > now+5 {
		return "assertion times"
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cl.Jti == "" || p.jtis[cl.Jti] {
		return "assertion jti replayed"
	}
	p.jtis[cl.Jti] = true
	return ""
}

// waitFor polls cond for up to 30 s: an event, never a duration, is what the
// tests wait for.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30 s for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeClock is a settable clock for expiry, refresh and backoff.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
