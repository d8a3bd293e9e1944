package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/internal/oauth"
	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// recordingSource is a tokenSource that records what it was asked and
// answers a token per request, or err.
type recordingSource struct {
	mu   sync.Mutex
	got  []oauth.Request
	err  error
	hits atomic.Int64
}

func (s *recordingSource) Token(_ context.Context, r oauth.Request) (oauth.Token, error) {
	s.hits.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, r)
	if s.err != nil {
		return oauth.Token{}, fmt.Errorf("idp: %w", s.err)
	}
	return oauth.Token{AccessToken: "minted-for-" + r.Audience}, nil
}

// egressRig is a Handler with an egress section, an app upstream that
// makes one egress call per inbound request (in-process, through
// h.Egress()), a downstream, and a clock the test moves.
type egressRig struct {
	h     *Handler
	key   *jwkstest.Key
	down  *httptest.Server
	downA atomic.Value // last Authorization the downstream got
	clock atomic.Int64
	// call is what the app's egress call sends; its answer is kept.
	call   func(inbound *http.Request) *http.Request
	answer atomic.Value // *httptest.ResponseRecorder
	src    *recordingSource
}

func newEgressRig(t *testing.T) *egressRig {
	t.Helper()
	rig := &egressRig{key: jwkstest.NewKey("ES256", "k1"), src: &recordingSource{}}
	rig.clock.Store(time.Now().UnixNano())
	js := jwkstest.NewServer(rig.key)
	t.Cleanup(js.Close)
	rig.down = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rig.downA.Store(r.Header.Get("Authorization"))
		_, _ = io.WriteString(w, "down")
	}))
	t.Cleanup(rig.down.Close)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rig.call != nil {
			rec := httptest.NewRecorder()
			rig.h.Egress().ServeHTTP(rec, rig.call(r))
			rig.answer.Store(rec)
		}
		_, _ = io.WriteString(w, "app")
	}))
	t.Cleanup(app.Close)
	t.Setenv("EGRESS_TEST_SECRET", "s3cret")
	text := fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: %q
issuers:
  - issuer: "https://issuer.test"
    audiences: [api]
    jwks_url: %q
routes:
  - location: /
    auth: required
audit:
  sink: none
egress:
  listen: "127.0.0.1:0"
  inbound_grace: 5s
  routes:
    - host: orders
      upstream: %q
      token: propagate
    - host: ex
      upstream: %q
      token: exchange
      audience: ex-api
      scopes: [write, read]
    - host: cc
      upstream: %q
      token: client_credentials
      audience: cc-api
  idp:
    token_endpoint: "http://127.0.0.1:1/token"
    client_id: checkout
    client_secret_env: EGRESS_TEST_SECRET
`, app.URL, js.URL, rig.down.URL, rig.down.URL, rig.down.URL)
	file := filepath.Join(t.TempDir(), "g.yaml")
	if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(file)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(context.Background(), cfg, HandlerOptions{Now: func() time.Time { return time.Unix(0, rig.clock.Load()) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close(context.Background()) })
	h.egress.tokens = rig.src
	rig.h = h
	return rig
}

func (rig *egressRig) token() string {
	now := time.Unix(0, rig.clock.Load())
	return rig.key.Sign(map[string]any{"iss": "https://issuer.test", "aud": "api", "sub": "alice",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
}

// inbound sends one inbound request through h (as the main listener would).
func (rig *egressRig) inbound(t *testing.T, tok string) {
	t.Helper()
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Request-Id", "inbound-1")
	rec := httptest.NewRecorder()
	rig.h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		t.Fatalf("inbound = %d %s", rec.Code, rec.Body)
	}
}

func egressCall(host, id string) *http.Request {
	r := httptest.NewRequest("GET", "/v1", nil)
	r.Host = host
	if id != "" {
		r.Header.Set("X-Request-Id", id)
	}
	r.Header.Set("Authorization", "Bearer app-own")
	return r
}

func errorCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var b struct{ Error string }
	if err := json.Unmarshal(rec.Body.Bytes(), &b); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	return b.Error
}

// TestEgressStrategies: exchange sends the inbound token as subject_token
// with the route's audience and scopes, client_credentials needs no
// inbound request, and the minted token replaces the app's Authorization.
func TestEgressStrategies(t *testing.T) {
	rig := newEgressRig(t)
	tok := rig.token()

	rig.call = func(*http.Request) *http.Request { return egressCall("ex", "inbound-1") }
	rig.inbound(t, tok)
	if rec := rig.answer.Load().(*httptest.ResponseRecorder); rec.Code != 200 {
		t.Fatalf("exchange = %d %s", rec.Code, rec.Body)
	}
	if a := rig.downA.Load(); a != "Bearer minted-for-ex-api" {
		t.Errorf("exchange: downstream Authorization = %q", a)
	}
	got := rig.src.got[len(rig.src.got)-1]
	if got.Grant != oauth.TokenExchange || got.SubjectToken != tok || got.Audience != "ex-api" || fmt.Sprint(got.Scopes) != "[read write]" {
		t.Errorf("exchange asked %+v", got)
	}

	// client_credentials: no inbound request at all.
	rec := httptest.NewRecorder()
	rig.h.Egress().ServeHTTP(rec, egressCall("cc", ""))
	if rec.Code != 200 || rig.downA.Load() != "Bearer minted-for-cc-api" {
		t.Fatalf("client_credentials = %d %s, downstream Authorization %q", rec.Code, rec.Body, rig.downA.Load())
	}
	if got := rig.src.got[len(rig.src.got)-1]; got.Grant != oauth.ClientCredentials || got.SubjectToken != "" {
		t.Errorf("client_credentials asked %+v", got)
	}

	// exchange without an inbound token: 403, the IdP is not asked.
	before := rig.src.hits.Load()
	rec = httptest.NewRecorder()
	rig.h.Egress().ServeHTTP(rec, egressCall("ex", "unknown"))
	if rec.Code != 403 || errorCode(t, rec) != "no_inbound_token" || rig.src.hits.Load() != before {
		t.Errorf("exchange without inbound = %d %s (IdP asked %d times)", rec.Code, rec.Body, rig.src.hits.Load()-before)
	}

	// The IdP fails: 502 token_unavailable, nothing forwarded.
	rig.src.err = oauth.ErrUnavailable
	rig.downA.Store("none")
	rec = httptest.NewRecorder()
	rig.h.Egress().ServeHTTP(rec, egressCall("cc", ""))
	if rec.Code != 502 || errorCode(t, rec) != "token_unavailable" || rig.downA.Load() != "none" {
		t.Errorf("IdP down = %d %s, downstream %q", rec.Code, rec.Body, rig.downA.Load())
	}
}

// TestEgressGraceClock: with the handler's clock, the inbound token is
// propagated up to inbound_grace after its request ended, and not after.
func TestEgressGraceClock(t *testing.T) {
	rig := newEgressRig(t)
	tok := rig.token()
	rig.call = func(*http.Request) *http.Request { return egressCall("orders", "inbound-1") }
	rig.inbound(t, tok)
	if rec := rig.answer.Load().(*httptest.ResponseRecorder); rec.Code != 200 || rig.downA.Load() != "Bearer "+tok {
		t.Fatalf("in flight: %d %s, downstream %q", rec.Code, rec.Body, rig.downA.Load())
	}
	ask := func() *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		rig.h.Egress().ServeHTTP(rec, egressCall("orders", "inbound-1"))
		return rec
	}
	rig.clock.Add(int64(5*time.Second) - 1)
	if rec := ask(); rec.Code != 200 {
		t.Fatalf("within grace: %d %s", rec.Code, rec.Body)
	}
	rig.clock.Add(1)
	if rec := ask(); rec.Code != 403 || errorCode(t, rec) != "no_inbound_token" {
		t.Fatalf("grace over: %d %s, want 403 no_inbound_token", rec.Code, rec.Body)
	}
}

var _ tokenSource = (*recordingSource)(nil)

// TestEgressListenRestartOnly: turning egress on or off, or moving its
// listener, needs a restart; a reload that tries is refused.
func TestEgressListenRestartOnly(t *testing.T) {
	base := &Config{File: "g.yaml"}
	on := &Config{File: "g.yaml", Egress: &EgressConfig{Listen: "127.0.0.1:15001"}}
	moved := &Config{File: "g.yaml", Egress: &EgressConfig{Listen: "127.0.0.1:15002"}}
	for _, tt := range []struct {
		name     string
		old, now *Config
		refused  bool
	}{
		{"on", base, on, true}, {"off", on, base, true}, {"moved", on, moved, true}, {"same", on, on, false},
	} {
		err := restartOnly(tt.old, tt.now)
		if (err != nil) != tt.refused || tt.refused && !strings.Contains(err.Error(), "egress.listen changed") {
			t.Errorf("%s: restartOnly = %v, want refused=%v", tt.name, err, tt.refused)
		}
	}
}
