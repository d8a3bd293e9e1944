package proxy_test

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// egressWorld is an app behind gatehouse that calls out through gatehouse's
// egress listener while it handles an inbound request, and the downstream
// services it calls.
type egressWorld struct {
	*world
	down     *recorder // "orders": propagate
	plain    *recorder // "public": token none
	g        *gatehouse
	egress   string // the egress listener's URL
	mu       sync.Mutex
	inbound  []string // X-Request-Id of each inbound request the app saw
	hold     chan struct{}
	appCalls []appCall
}

// appCall is what one outbound call of the app got back.
type appCall struct {
	status int
	body   string
}

const egressTraceID = "4bf92f3577b34da6a3ce929d0e0e4736"

func newEgressWorld(t *testing.T, grace string, extraRoutes string, env ...string) *egressWorld {
	t.Helper()
	ew := &egressWorld{world: newWorld(t), down: newRecorder(t), plain: newRecorder(t), hold: make(chan struct{})}
	// The app: what it does with each inbound request is chosen by its path.
	ew.up.SetHandler(func(w http.ResponseWriter, r *http.Request) {
		ew.mu.Lock()
		ew.inbound = append(ew.inbound, r.Header.Get("X-Request-Id"))
		ew.mu.Unlock()
		var req *http.Request
		client := &http.Client{Timeout: 15 * time.Second}
		switch r.URL.Path {
		case "/api/by-request-id":
			req, _ = http.NewRequest("GET", ew.egress+"/orders/1?x=1", nil)
			req.Host = "orders"
			req.Header.Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		case "/api/by-traceparent":
			req, _ = http.NewRequest("GET", ew.egress+"/orders/2", nil)
			req.Host = "ORDERS"
			// A child span of the same trace, as an OpenTelemetry client sends.
			req.Header.Set("Traceparent", "00-"+egressTraceID+"-00f067aa0ba902b7-01")
		case "/api/by-proxy":
			// HTTP_PROXY: Go's client sends the absolute-form URL to the proxy.
			proxyURL, _ := url.Parse(ew.egress)
			client.Transport = &http.Transport{Proxy: http.ProxyURL(proxyURL)}
			req, _ = http.NewRequest("GET", "http://orders/orders/3", nil)
			req.Header.Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		case "/api/exchange":
			req, _ = http.NewRequest("GET", ew.egress+"/ledger", nil)
			req.Host = "ledger"
			req.Header.Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		case "/api/after-sigterm":
			// Held until the test has sent SIGTERM: the call is made while
			// gatehouse drains.
			ew.hold <- struct{}{}
			<-ew.hold
			req, _ = http.NewRequest("GET", ew.egress+"/orders/late", nil)
			req.Host = "orders"
			req.Header.Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		case "/api/public":
			req, _ = http.NewRequest("GET", ew.egress+"/p", nil)
			req.Host = "public"
		}
		// The app's own credentials must never reach the downstream.
		req.Header.Set("Authorization", "Bearer app-own-token")
		res, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		ew.mu.Lock()
		ew.appCalls = append(ew.appCalls, appCall{res.StatusCode, string(b)})
		ew.mu.Unlock()
		w.WriteHeader(res.StatusCode)
		_, _ = w.Write(b)
	})
	egress := fmt.Sprintf(`
egress:
  listen: "127.0.0.1:0"
  inbound_grace: %s
  routes:
    - host: orders
      path_prefix: /orders/
      upstream: %q
      token: propagate
    - host: public
      upstream: %q
      token: none
%s`, grace, ew.down.URL, ew.plain.URL, strings.ReplaceAll(extraRoutes, "{{down}}", ew.down.URL))
	ew.g = startProcess(t, ew.config(egress, ""), env...)
	if ew.g.EgressURL == "" {
		t.Fatalf("no egress address in the listening line:\n%s", ew.g.Stderr.String())
	}
	ew.egress = ew.g.EgressURL
	return ew
}

func (ew *egressWorld) lastCall(t *testing.T) appCall {
	t.Helper()
	ew.mu.Lock()
	defer ew.mu.Unlock()
	if len(ew.appCalls) == 0 {
		t.Fatal("the app made no outbound call")
	}
	return ew.appCalls[len(ew.appCalls)-1]
}

// TestEgressPropagate: an outbound call made while the inbound request is
// in flight carries exactly the inbound token, whether the app names the
// request by X-Request-Id, by traceparent, or goes through HTTP_PROXY; the
// app's own Authorization never reaches the downstream.
func TestEgressPropagate(t *testing.T) {
	ew := newEgressWorld(t, "30s", "")
	tok := ew.token(nil)
	for _, tt := range []struct {
		name, path string
		header     http.Header
		wantURI    string
	}{
		{"X-Request-Id", "/api/by-request-id", http.Header{}, "/orders/1?x=1"},
		{"traceparent", "/api/by-traceparent", http.Header{"Traceparent": {"00-" + egressTraceID + "-b7ad6b7169203331-01"}}, "/orders/2"},
		{"HTTP_PROXY absolute-form", "/api/by-proxy", http.Header{}, "/orders/3"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(ew.down.Requests())
			h := bearerHeader(tok)
			for k, v := range tt.header {
				h[k] = v
			}
			status, _, body := do(t, "GET", ew.g.URL+tt.path, h, "")
			if status != 200 {
				t.Fatalf("inbound %s = %d %s, want 200 (the app's call: %+v)", tt.path, status, body, ew.lastCall(t))
			}
			got := ew.down.Requests()
			if len(got) != before+1 {
				t.Fatalf("downstream got %d requests, want 1", len(got)-before)
			}
			last := got[len(got)-1]
			if a := last.Header["Authorization"]; len(a) != 1 || a[0] != "Bearer "+tok {
				t.Errorf("downstream Authorization = %q, want exactly the inbound token", a)
			}
			if last.RequestURI != tt.wantURI {
				t.Errorf("downstream RequestURI = %q, want %q", last.RequestURI, tt.wantURI)
			}
			if strings.Contains(fmt.Sprint(last.Header), "app-own-token") {
				t.Errorf("the app's own token reached the downstream: %v", last.Header)
			}
		})
	}
}

// TestEgressNoInboundToken: a call naming no inbound request, or one that
// ended longer than inbound_grace ago, is 403 no_inbound_token and never
// reaches the downstream.
func TestEgressNoInboundToken(t *testing.T) {
	ew := newEgressWorld(t, "1s", "")
	status, _, body := do(t, "GET", ew.g.URL+"/api/public", bearerHeader(ew.token(nil)), "")
	if status != 200 {
		t.Fatalf("inbound = %d %s", status, body)
	}
	ew.mu.Lock()
	id := ew.inbound[len(ew.inbound)-1]
	ew.mu.Unlock()

	call := func(h http.Header) (int, string) {
		req, _ := http.NewRequest("GET", ew.egress+"/orders/9", nil)
		req.Host = "orders"
		for k, v := range h {
			req.Header[k] = v
		}
		res, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var eb errorBody
		_ = json.NewDecoder(res.Body).Decode(&eb)
		return res.StatusCode, eb.Error
	}
	if s, code := call(http.Header{"X-Request-Id": {"never-seen"}}); s != 403 || code != "no_inbound_token" {
		t.Errorf("unknown request id: %d %q, want 403 no_inbound_token", s, code)
	}
	if s, code := call(nil); s != 403 || code != "no_inbound_token" {
		t.Errorf("no correlation at all: %d %q, want 403 no_inbound_token", s, code)
	}
	// The ended request's token is gone once its grace (1s) is over.
	deadline := time.Now().Add(30 * time.Second)
	for {
		s, code := call(http.Header{"X-Request-Id": {id}})
		if s == 403 && code == "no_inbound_token" {
			break
		}
		if s != 200 {
			t.Fatalf("within grace: %d %q, want 200", s, code)
		}
		if time.Now().After(deadline) {
			t.Fatal("the token of a request ended 30 s ago is still propagated (inbound_grace 1s)")
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, r := range ew.down.Requests() {
		if len(r.Header["Authorization"]) == 0 {
			t.Errorf("downstream got a call without a token: %v", r.Header)
		}
	}
	// The stdout sink writes asynchronously: wait (bounded) for the event.
	for end := time.Now().Add(30 * time.Second); !strings.Contains(ew.g.Stdout.String(), `"type":"gatehouse.egress.deny"`); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no gatehouse.egress.deny audit event:\n%s", ew.g.Stdout.String())
		}
	}
	if s := ew.g.Stdout.String(); !strings.Contains(s, `"reason":"no_inbound_token","status":403,"route":"orders"`) || !strings.Contains(s, `"strategy":"propagate"`) {
		t.Errorf("egress audit events lack route or strategy:\n%s", s)
	}
}

// TestEgressRefusals: the refusals of SPEC.md 11 on the egress listener,
// each answered through the reason table and never forwarded.
func TestEgressRefusals(t *testing.T) {
	// The text after the routes is top level: limits for the 413 row.
	ew := newEgressWorld(t, "1s", "limits:\n  max_body_bytes: 16\n")
	addr := strings.TrimPrefix(ew.egress, "http://")
	for _, tt := range []struct {
		name, text, wantLine, wantCode string
	}{
		{"unlisted host", "GET /x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n", "HTTP/1.1 403 Forbidden", `"error":"forbidden"`},
		{"unlisted path", "GET /admin HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n", "HTTP/1.1 403 Forbidden", `"error":"forbidden"`},
		{"CONNECT", "CONNECT orders:443 HTTP/1.1\r\nHost: orders:443\r\nConnection: close\r\n\r\n", "HTTP/1.1 400 Bad Request", `"error":"bad_request"`},
		{"userinfo", "GET http://user:pw@public/p HTTP/1.1\r\nHost: public\r\nConnection: close\r\n\r\n", "HTTP/1.1 400 Bad Request", `"error":"bad_request"`},
		{"https absolute-form", "GET https://public/p HTTP/1.1\r\nHost: public\r\nConnection: close\r\n\r\n", "HTTP/1.1 400 Bad Request", `"error":"bad_request"`},
		{"dot-dot out of the prefix", "GET /orders/../admin HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n", "HTTP/1.1 403 Forbidden", `"error":"forbidden"`},
		{"encoded slash", "GET /p%2F..%2Fx HTTP/1.1\r\nHost: public\r\nConnection: close\r\n\r\n", "HTTP/1.1 400 Bad Request", `"error":"bad_request"`},
		// absolute-form: its host decides, not the Host header (RFC 9112 3.2.2).
		{"declared body over max_body_bytes", "POST /p HTTP/1.1\r\nHost: public\r\nContent-Length: 17\r\nConnection: close\r\n\r\n01234567890123456", "HTTP/1.1 413 Request Entity Too Large", `"error":"payload_too_large"`},
		{"absolute-form host wins", "GET http://evil.example/p HTTP/1.1\r\nHost: public\r\nConnection: close\r\n\r\n", "HTTP/1.1 403 Forbidden", `"error":"forbidden"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			line, all := rawRequest(t, addr, tt.text)
			if line != tt.wantLine || !strings.Contains(all, tt.wantCode) {
				t.Errorf("answer = %q\n%s\nwant %s with %s", line, all, tt.wantLine, tt.wantCode)
			}
		})
	}
	if n := len(ew.down.Requests()) + len(ew.plain.Requests()); n != 0 {
		t.Errorf("a refused call reached a downstream (%d requests)", n)
	}
	// Counted: the four unmatched destinations under route="default".
	_, _, metrics := do(t, "GET", ew.g.AdminURL+"/metrics", nil, "")
	if !strings.Contains(metrics, `gatehouse_egress_requests_total{result="forbidden",route="default",strategy=""} 4`) {
		t.Errorf("unlisted destinations not counted:\n%s", grepLines(metrics, "gatehouse_egress"))
	}
}

// TestEgressNoneAndHTTPS: token none passes no token at all (the app's is
// removed), and an https upstream is reached with its ca_file while the app
// speaks plain HTTP.
func TestEgressNoneAndHTTPS(t *testing.T) {
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls=%v host=%s auth=%q", r.TLS != nil, r.Host, r.Header.Get("Authorization"))
	}))
	t.Cleanup(secure.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	ew := newEgressWorld(t, "1s", fmt.Sprintf(`    - host: secure
      upstream: %q
      ca_file: %q
      token: none
`, secure.URL, ca))

	status, _, body := do(t, "GET", ew.g.URL+"/api/public", bearerHeader(ew.token(nil)), "")
	if status != 200 {
		t.Fatalf("inbound = %d %s", status, body)
	}
	last := ew.plain.Last(t)
	if a, ok := last.Header["Authorization"]; ok {
		t.Errorf("token none: downstream Authorization = %q, want none", a)
	}

	req, _ := http.NewRequest("GET", ew.egress+"/s", nil)
	req.Host = "secure"
	req.Header.Set("Authorization", "Basic YXBwOm93bg==")
	res, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if want := `tls=true host=` + strings.TrimPrefix(secure.URL, "https://") + ` auth=""`; res.StatusCode != 200 || string(b) != want {
		t.Errorf("https upstream: %d %q, want 200 %q", res.StatusCode, b, want)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// testIdP is a token endpoint (RFC 6749 4.4, RFC 8693) for client
// "checkout" with secret "s3cret" (client_secret_basic) that records the
// requests it answered, or answers 500 while down.
type testIdP struct {
	*httptest.Server
	mu       sync.Mutex
	subjects []string // subject_token of each exchange
	hits     int
	down     bool
}

func newTestIdP(t *testing.T) *testIdP {
	idp := &testIdP{}
	idp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		idp.mu.Lock()
		defer idp.mu.Unlock()
		if r.URL.Path != "/token" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		if idp.down {
			http.Error(w, "down", 500)
			return
		}
		id, secret, ok := r.BasicAuth()
		if !ok || id != "checkout" || secret != "s3cret" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(401)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", 400)
			return
		}
		idp.hits++
		var tok string
		switch r.PostForm.Get("grant_type") {
		case "client_credentials":
			tok = "service-" + r.PostForm.Get("audience")
		case "urn:ietf:params:oauth:grant-type:token-exchange":
			if r.PostForm.Get("subject_token") == "" || r.PostForm.Get("subject_token_type") != "urn:ietf:params:oauth:token-type:access_token" {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(400)
				io.WriteString(w, `{"error":"invalid_request"}`)
				return
			}
			idp.subjects = append(idp.subjects, r.PostForm.Get("subject_token"))
			tok = fmt.Sprintf("exchanged-%d-%s-%s", len(idp.subjects), r.PostForm.Get("audience"), strings.ReplaceAll(r.PostForm.Get("scope"), " ", "+"))
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(400)
			io.WriteString(w, `{"error":"unsupported_grant_type"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","expires_in":300}`, tok)
	}))
	t.Cleanup(idp.Close)
	return idp
}

func (idp *testIdP) state() (hits int, subjects []string) {
	idp.mu.Lock()
	defer idp.mu.Unlock()
	return idp.hits, append([]string(nil), idp.subjects...)
}

// TestEgressExchangeAndClientCredentials: through the binary and a real
// token endpoint, exchange trades exactly the inbound token for one of the
// route's audience and scopes, client_credentials gets the service's own,
// both cached (one IdP request per key); with the IdP down and nothing
// cached, 502 token_unavailable; every IdP request is counted.
func TestEgressExchangeAndClientCredentials(t *testing.T) {
	idp := newTestIdP(t)
	ew := newEgressWorld(t, "1s", fmt.Sprintf(`    - host: ledger
      upstream: %q
      token: exchange
      audience: ledger-api
      scopes: [ledger:write, ledger:read]
    - host: reports
      upstream: %q
      token: client_credentials
      audience: reports-api
  idp:
    token_endpoint: %q
    client_id: checkout
    client_secret_env: CHECKOUT_SECRET
`, "{{down}}", "{{down}}", idp.URL+"/token"), "CHECKOUT_SECRET=s3cret")

	tok := ew.token(nil)
	for i := 0; i < 2; i++ {
		status, _, body := do(t, "GET", ew.g.URL+"/api/exchange", bearerHeader(tok), "")
		if status != 200 {
			t.Fatalf("exchange %d: inbound = %d %s", i, status, body)
		}
		last := ew.down.Last(t)
		if a := last.Header.Get("Authorization"); a != "Bearer exchanged-1-ledger-api-ledger:read+ledger:write" {
			t.Fatalf("exchange %d: downstream Authorization = %q", i, a)
		}
	}
	if hits, subjects := idp.state(); hits != 1 || len(subjects) != 1 || subjects[0] != tok {
		t.Fatalf("IdP: %d requests, subject tokens %d, want 1 exchange of exactly the inbound token", hits, len(subjects))
	}

	callReports := func() (int, string) {
		req, _ := http.NewRequest("GET", ew.egress+"/r", nil)
		req.Host = "reports"
		res, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for i := 0; i < 2; i++ {
		if s, body := callReports(); s != 200 || ew.down.Last(t).Header.Get("Authorization") != "Bearer service-reports-api" {
			t.Fatalf("client_credentials %d: %d %s, downstream %q", i, s, body, ew.down.Last(t).Header.Get("Authorization"))
		}
	}
	if hits, _ := idp.state(); hits != 2 {
		t.Fatalf("IdP requests = %d, want 2 (one per key, then cached)", hits)
	}

	// The IdP goes down: a new subject token has nothing cached.
	idp.mu.Lock()
	idp.down = true
	idp.mu.Unlock()
	before := len(ew.down.Requests())
	status, _, body := do(t, "GET", ew.g.URL+"/api/exchange", bearerHeader(ew.token(map[string]any{"sub": "other"})), "")
	if status != 502 || !strings.Contains(body, `"error":"token_unavailable"`) {
		t.Fatalf("IdP down: inbound = %d %s, want the app to get 502 token_unavailable", status, body)
	}
	if len(ew.down.Requests()) != before {
		t.Error("a call without a token reached the downstream")
	}
	// The cached ones keep working.
	if s, _ := callReports(); s != 200 {
		t.Errorf("cached client_credentials with the IdP down = %d, want 200", s)
	}

	_, _, metrics := do(t, "GET", ew.g.AdminURL+"/metrics", nil, "")
	for _, want := range []string{
		`gatehouse_idp_requests_total{grant="token_exchange",result="ok"} 1`,
		`gatehouse_idp_requests_total{grant="client_credentials",result="ok"} 1`,
		`gatehouse_idp_requests_total{grant="token_exchange",result="unavailable"}`,
		`gatehouse_egress_requests_total{result="token_unavailable",route="ledger",strategy="exchange"} 1`,
		`gatehouse_egress_requests_total{result="ok",route="reports",strategy="client_credentials"} 3`,
		// Three calls: one request to the IdP, timed, and two cache hits.
		`gatehouse_idp_request_duration_seconds_count{grant="client_credentials"} 1`,
		`gatehouse_idp_cache_hits_total{grant="client_credentials"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(metrics, "gatehouse_"))
		}
	}
	if strings.Contains(ew.g.Stderr.String(), "s3cret") || strings.Contains(ew.g.Stderr.String(), tok) {
		t.Error("the client secret or the inbound token is in the logs")
	}
}

// TestEgressReload: SIGHUP reloads the egress routes (a new destination is
// served at once), and a reload that moves egress.listen is refused with
// the running config kept.
func TestEgressReload(t *testing.T) {
	ew := newEgressWorld(t, "1s", "")
	call := func(host string) int {
		req, _ := http.NewRequest("GET", ew.egress+"/x", nil)
		req.Host = host
		res, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if s := call("added"); s != 403 {
		t.Fatalf("before reload: %d, want 403", s)
	}
	text, err := os.ReadFile(ew.g.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	added := strings.Replace(string(text), "    - host: public\n", fmt.Sprintf("    - host: added\n      upstream: %q\n      token: none\n    - host: public\n", ew.plain.URL), 1)
	if err := os.WriteFile(ew.g.ConfigPath, []byte(added), 0o600); err != nil {
		t.Fatal(err)
	}
	ew.g.Signal(syscall.SIGHUP)
	if !ew.g.WaitLog(`"msg":"config reloaded"`, 10*time.Second) {
		t.Fatalf("no reload:\n%s", ew.g.Stderr.String())
	}
	if s := call("added"); s != 200 {
		t.Fatalf("after reload: %d, want 200", s)
	}
	moved := strings.Replace(added, "listen: \"127.0.0.1:0\"\n  inbound_grace", "listen: \"127.0.0.1:1\"\n  inbound_grace", 1)
	if moved == added {
		t.Fatal("the egress listen line was not found")
	}
	if err := os.WriteFile(ew.g.ConfigPath, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	ew.g.Signal(syscall.SIGHUP)
	if !ew.g.WaitLog(`egress.listen changed`, 10*time.Second) {
		t.Fatalf("moving egress.listen was not refused:\n%s", ew.g.Stderr.String())
	}
	if s := call("added"); s != 200 {
		t.Fatalf("after a refused reload: %d, want 200 (the running config kept)", s)
	}
}

// TestEgressDuringShutdown: on SIGTERM the egress listener keeps serving
// until the in-flight inbound requests have ended: an app that calls out
// while its request drains still gets its answer (and its token).
func TestEgressDuringShutdown(t *testing.T) {
	ew := newEgressWorld(t, "1s", "")
	tok := ew.token(nil)
	done := make(chan int, 1)
	go func() {
		status, _, _ := do(t, "GET", ew.g.URL+"/api/after-sigterm", bearerHeader(tok), "")
		done <- status
	}()
	select {
	case <-ew.hold:
	case <-time.After(30 * time.Second):
		t.Fatal("the inbound request never reached the app")
	}
	ew.g.Signal(syscall.SIGTERM)
	if !ew.g.WaitLog(`"msg":"shutting down"`, 10*time.Second) {
		t.Fatalf("no shutdown:\n%s", ew.g.Stderr.String())
	}
	ew.hold <- struct{}{}
	select {
	case status := <-done:
		if status != 200 {
			t.Fatalf("inbound during shutdown = %d, want 200 (the app's call: %+v)", status, ew.lastCall(t))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the inbound request did not end")
	}
	if a := ew.down.Last(t).Header.Get("Authorization"); a != "Bearer "+tok {
		t.Errorf("downstream Authorization = %q, want the inbound token", a)
	}
	select {
	case <-ew.g.Exited():
	case <-time.After(30 * time.Second):
		t.Fatal("gatehouse did not exit")
	}
	if code := ew.g.ExitCode(); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}
