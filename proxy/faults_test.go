package proxy_test

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"

	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// Fault injection against the built binary. Every test checks the answer
// the client gets, that no request and no audit event is lost (each request
// carries its own X-Request-Id, matched against the audit file), that the
// process logged no panic, and that its goroutine count (go_goroutines on
// /metrics) returns near its baseline once the fault is over. Figures are
// logged as "FIGURE fault ..." lines for SECURITY.md.

// faultWorld is an upstream that closes every connection (so gatehouse
// keeps no idle upstream connections and goroutine counts are comparable),
// a JWKS server with one key, and an audit file.
type faultWorld struct {
	up    *recorder
	key   *jwkstest.Key
	jwks  *jwkstest.Server
	audit string
}

func newFaultWorld(t *testing.T) *faultWorld {
	w := &faultWorld{up: newRecorder(t), key: jwkstest.NewKey("RS256", "k1"), audit: filepath.Join(t.TempDir(), "audit.jsonl")}
	w.up.SetHandler(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Connection", "close")
		io.WriteString(rw, "ok")
	})
	w.jwks = jwkstest.NewServer(w.key)
	t.Cleanup(w.jwks.Close)
	return w
}

type faultOpts struct {
	issuer   string // extra lines for the issuer entry (4-space indent)
	timeouts string // lines under timeouts: (2-space indent)
	routes   string // extra routes (2-space indent), before the defaults
	audit    string // the audit section; default: the file sink
}

func (w *faultWorld) config(o faultOpts) string {
	if o.audit == "" {
		o.audit = fmt.Sprintf("audit:\n  sink: file\n  file: %q\n", w.audit)
	}
	return fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: %q
admin:
  listen: "127.0.0.1:0"
timeouts:
  shutdown: 10s
%s
issuers:
  - issuer: %q
    audiences: [api]
    jwks_url: %q
%s
routes:
%s
  - location: "/api/"
    roles: { any: [user] }
  - location: "/open/"
    auth: none
%s
log:
  level: info
`, w.up.URL, o.timeouts, issuer, w.jwks.URL, o.issuer, o.routes, o.audit)
}

func (w *faultWorld) token(k *jwkstest.Key) string {
	return k.Sign(map[string]any{
		"iss": issuer, "aud": "api", "sub": "123", "roles": []any{"user"},
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
	})
}

// faultClient opens a new connection per request, so that the server's
// goroutine count reflects requests, not idle keep-alives.
func faultClient() *http.Client {
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

// answer is what one request got.
type answer struct {
	status int
	code   string
	body   string
	err    error
}

// send makes one request with X-Request-Id id and the token (if any).
func send(c *http.Client, method, url, id, token string) answer {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return answer{err: err}
	}
	req.Header.Set("X-Request-Id", id)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	a := answer{status: res.StatusCode, body: string(b), err: err}
	var eb errorBody
	if json.Unmarshal(b, &eb) == nil {
		a.code = eb.Error
	}
	return a
}

// tally counts requests by id: every id that got an HTTP answer must have
// exactly one audit event.
type tally struct {
	prefix string
	seq    atomic.Int64
	mu     sync.Mutex
	got    map[string]answer
	bad    []string // unexpected answers, described
}

func newTally(prefix string) *tally { return &tally{prefix: prefix, got: map[string]answer{}} }

func (tl *tally) nextID() string { return fmt.Sprintf("%s-%d", tl.prefix, tl.seq.Add(1)) }

// record keeps a; want says whether it is the documented answer.
func (tl *tally) record(id string, a answer, want bool, what string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.got[id] = a
	if !want {
		tl.bad = append(tl.bad, fmt.Sprintf("%s: %s: status %d code %q err %v", id, what, a.status, a.code, a.err))
	}
}

// expect sends one request and records whether it got status and code.
func (tl *tally) expect(c *http.Client, url, token string, status int, code string) answer {
	id := tl.nextID()
	a := send(c, "GET", url, id, token)
	tl.record(id, a, a.err == nil && a.status == status && a.code == code, fmt.Sprintf("want %d %q", status, code))
	return a
}

func (tl *tally) counts() (answered, bad int) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, a := range tl.got {
		if a.status != 0 {
			answered++
		}
	}
	return answered, len(tl.bad)
}

func (tl *tally) failIfBad(t *testing.T) {
	t.Helper()
	tl.mu.Lock()
	defer tl.mu.Unlock()
	if len(tl.bad) > 0 {
		n := min(len(tl.bad), 10)
		t.Errorf("%d of %d requests got an undocumented answer; first %d:\n%s", len(tl.bad), len(tl.got), n, strings.Join(tl.bad[:n], "\n"))
	}
}

// load runs workers that call one() in a loop until the returned stop is
// called (or the process exits); stop waits for them.
func load(g *gatehouse, workers int, one func(c *http.Client)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := faultClient()
			for {
				select {
				case <-done:
					return
				case <-g.Exited():
					return
				default:
				}
				one(c)
			}
		}()
	}
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// waitFor polls cond every 20ms until it holds or within passes.
func waitFor(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var goroutinesRe = regexp.MustCompile(`(?m)^go_goroutines (\d+)`)

// goroutines reads the process's go_goroutines gauge.
func goroutines(t *testing.T, g *gatehouse) int {
	t.Helper()
	c := faultClient()
	res, err := c.Get(g.AdminURL + "/metrics")
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	m := goroutinesRe.FindSubmatch(b)
	if m == nil {
		t.Fatalf("/metrics has no go_goroutines")
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// goroutineSlack is what may differ from the baseline once things settle:
// a JWKS keep-alive connection, a timer, the admin request itself.
const goroutineSlack = 8

// settle waits (bounded) until the goroutine count is back within
// goroutineSlack of baseline, and returns it.
func settle(t *testing.T, g *gatehouse, baseline int) int {
	t.Helper()
	var n int
	if !waitFor(15*time.Second, func() bool { n = goroutines(t, g); return n <= baseline+goroutineSlack }) {
		t.Errorf("goroutines did not settle: %d now, baseline %d (+%d allowed)", n, baseline, goroutineSlack)
	}
	return n
}

func noPanic(t *testing.T, g *gatehouse) {
	t.Helper()
	if s := g.Stderr.String(); strings.Contains(s, "panic") || strings.Contains(s, "DATA RACE") {
		t.Errorf("gatehouse logged a panic:\n%s", s)
	}
}

// auditIDs reads the file sink: request_id -> number of events.
func auditIDs(t *testing.T, path string) map[string]int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("audit file: %v", err)
	}
	defer f.Close()
	ids := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Data struct {
				RequestID string `json:"request_id"`
			} `json:"data"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Errorf("audit line %q: %v", sc.Text(), err)
			continue
		}
		ids[ev.Data.RequestID]++
	}
	return ids
}

// checkAudit stops gatehouse (SIGTERM flushes the queue) and checks that
// every answered request of tl has exactly one event. It returns the number
// of events matched.
func checkAudit(t *testing.T, g *gatehouse, path string, tl *tally) int {
	t.Helper()
	g.Stop()
	if code := g.ExitCode(); code != 0 {
		t.Errorf("gatehouse exited %d", code)
	}
	ids := auditIDs(t, path)
	tl.mu.Lock()
	defer tl.mu.Unlock()
	matched, missing := 0, 0
	for id, a := range tl.got {
		if a.status == 0 {
			continue // never answered: no decision may have been made
		}
		switch ids[id] {
		case 1:
			matched++
		case 0:
			missing++
			if missing <= 5 {
				t.Errorf("no audit event for answered request %s (%d)", id, a.status)
			}
		default:
			t.Errorf("%d audit events for request %s", ids[id], id)
		}
	}
	if missing > 0 {
		t.Errorf("%d answered requests have no audit event", missing)
	}
	return matched
}

// figure logs one line of SECURITY.md's figures.
func figure(t *testing.T, name string, tl *tally, events, base, after int) {
	answered, bad := tl.counts()
	t.Logf("FIGURE fault %s: %d requests answered, %d undocumented answers, %d/%d audit events delivered, goroutines %d -> %d",
		name, answered, bad, events, answered, base, after)
}

// metric returns the value of the first /metrics line starting with prefix.
func metric(t *testing.T, g *gatehouse, prefix string) float64 {
	t.Helper()
	_, _, body := do(t, "GET", g.AdminURL+"/metrics", nil, "")
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			f, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
			return f
		}
	}
	return -1
}

// TestFaultJWKSDown: an IdP down at start answers 503 keys_unavailable and
// /readyz 503 naming the issuer; once keys arrived, an IdP down again
// changes nothing for clients (the cached keys serve).
func TestFaultJWKSDown(t *testing.T) {
	w := newFaultWorld(t)
	w.jwks.SetHandler(func(rw http.ResponseWriter, r *http.Request) { http.Error(rw, "down", http.StatusServiceUnavailable) })
	g := startProcess(t, w.config(faultOpts{issuer: "    refresh_interval: 2s\n    min_refresh_interval: 1s\n"}))
	c, tl, tok := faultClient(), newTally("down"), w.token(w.key)

	for i := 0; i < 20; i++ {
		tl.expect(c, g.URL+"/api/x", tok, 503, "keys_unavailable")
	}
	status, _, body := do(t, "GET", g.AdminURL+"/readyz", nil, "")
	if status != 503 || !strings.Contains(body, `"issuers_without_keys"`) || !strings.Contains(body, issuer) {
		t.Errorf("/readyz with the IdP down = %d %s", status, body)
	}
	tl.expect(c, g.URL+"/open/x", "", 200, "") // routes without tokens serve meanwhile
	base := goroutines(t, g)

	w.jwks.SetHandler(nil)
	if !waitFor(20*time.Second, func() bool { s, _, _ := do(t, "GET", g.AdminURL+"/readyz", nil, ""); return s == 200 }) {
		t.Fatalf("/readyz never turned 200 after the IdP came back:\n%s", g.Stderr.String())
	}
	tl.expect(c, g.URL+"/api/x", tok, 200, "")

	fetches := w.jwks.Fetches()
	w.jwks.SetHandler(func(rw http.ResponseWriter, r *http.Request) { http.Error(rw, "down", http.StatusServiceUnavailable) })
	stop := load(g, 3, func(c *http.Client) { tl.expect(c, g.URL+"/api/x", tok, 200, "") })
	if !waitFor(20*time.Second, func() bool { return w.jwks.Fetches() >= fetches+2 }) {
		t.Errorf("no failed refresh within 20s (fetches %d -> %d)", fetches, w.jwks.Fetches())
	}
	stop()
	if n := metric(t, g, fmt.Sprintf(`gatehouse_jwks_refresh_total{issuer=%q,result="error"}`, issuer)); n < 1 {
		t.Errorf("failed refreshes not counted: %v", n)
	}
	tl.failIfBad(t)
	after := settle(t, g, base)
	noPanic(t, g)
	figure(t, "jwks down", tl, checkAudit(t, g, w.audit, tl), base, after)
}

// TestFaultJWKSSlow: a JWKS endpoint that hangs past the fetch timeout
// does not slow requests with known keys; an unknown kid is refused after
// the bounded wait.
func TestFaultJWKSSlow(t *testing.T) {
	w := newFaultWorld(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the JWKS server's Close, which waits for handlers
	g := startProcess(t, w.config(faultOpts{issuer: "    refresh_interval: 1s\n    min_refresh_interval: 500ms\n"}))
	tl, tok := newTally("slow"), w.token(w.key)
	tl.expect(faultClient(), g.URL+"/api/x", tok, 200, "")
	base := goroutines(t, g)

	fetches := w.jwks.Fetches()
	w.jwks.SetHandler(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		case <-time.After(30 * time.Second):
		}
	})
	if !waitFor(10*time.Second, func() bool { return w.jwks.Fetches() > fetches }) {
		t.Fatal("no refresh reached the slow JWKS endpoint")
	}
	// The refresh hangs now. Known keys keep working, and an unknown kid
	// waits for the shared refetch (bounded) and is refused.
	stop := load(g, 3, func(c *http.Client) { tl.expect(c, g.URL+"/api/x", tok, 200, "") })
	stranger := jwkstest.NewKey("RS256", "k-unknown")
	tl.expect(faultClient(), g.URL+"/api/x", w.token(stranger), 401, "invalid_token")
	stop()
	tl.failIfBad(t)
	unblock()
	w.jwks.SetHandler(nil)
	after := settle(t, g, base)
	noPanic(t, g)
	figure(t, "jwks slow", tl, checkAudit(t, g, w.audit, tl), base, after)
}

// TestFaultJWKSBadAnswers: garbage, a 10 MiB body, a 500 and a set with no
// usable key each fail the refresh and never replace the good keys.
func TestFaultJWKSBadAnswers(t *testing.T) {
	huge := func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		io.WriteString(rw, `{"keys":[`)
		chunk := strings.Repeat(" ", 64<<10)
		for i := 0; i < 160; i++ { // 10 MiB
			if _, err := io.WriteString(rw, chunk); err != nil {
				return
			}
		}
		io.WriteString(rw, `]}`)
	}
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
	}{
		{"garbage", func(rw http.ResponseWriter, r *http.Request) { io.WriteString(rw, "<html>not json{{{") }},
		{"10 MiB", huge},
		{"500", func(rw http.ResponseWriter, r *http.Request) { http.Error(rw, "boom", 500) }},
		{"no usable key", func(rw http.ResponseWriter, r *http.Request) {
			io.WriteString(rw, `{"keys":[{"kty":"RSA","kid":"k1","use":"enc","n":"AQAB","e":"AQAB"},{"kty":"zz"}]}`)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := newFaultWorld(t)
			g := startProcess(t, w.config(faultOpts{issuer: "    refresh_interval: 1s\n    min_refresh_interval: 500ms\n"}))
			tl, tok := newTally("bad"), w.token(w.key)
			tl.expect(faultClient(), g.URL+"/api/x", tok, 200, "")
			base := goroutines(t, g)
			fetches := w.jwks.Fetches()
			w.jwks.SetHandler(tc.handler)
			stop := load(g, 2, func(c *http.Client) { tl.expect(c, g.URL+"/api/x", tok, 200, "") })
			// More failed refreshes than goroutineSlack, so that a goroutine
			// leaked per failed refresh (an unclosed body's connection, say)
			// shows in settle below.
			want := int64(goroutineSlack + 4)
			if !waitFor(30*time.Second, func() bool { return w.jwks.Fetches() >= fetches+want }) {
				t.Errorf("fewer than %d refreshes within 30s", want)
			}
			stop()
			tl.failIfBad(t)
			if n := metric(t, g, fmt.Sprintf(`gatehouse_jwks_refresh_total{issuer=%q,result="error"}`, issuer)); n < 1 {
				t.Errorf("failed refreshes not counted: %v", n)
			}
			if n := metric(t, g, fmt.Sprintf(`gatehouse_jwks_keys{issuer=%q}`, issuer)); n != 1 {
				t.Errorf("gatehouse_jwks_keys = %v after bad answers, want the 1 good key kept", n)
			}
			w.jwks.SetHandler(nil)
			after := settle(t, g, base)
			noPanic(t, g)
			figure(t, "jwks "+tc.name, tl, checkAudit(t, g, w.audit, tl), base, after)
		})
	}
}

// TestFaultIssuerRotation: the IdP publishes a new key and signs with it
// while requests flow; no valid token is ever refused.
func TestFaultIssuerRotation(t *testing.T) {
	w := newFaultWorld(t)
	g := startProcess(t, w.config(faultOpts{}))
	tl := newTally("rot")
	k2 := jwkstest.NewKey("RS256", "k2")
	var current atomic.Pointer[string]
	old := w.token(w.key)
	current.Store(&old)
	tl.expect(faultClient(), g.URL+"/api/x", old, 200, "")
	base := goroutines(t, g)
	var served atomic.Int64
	stop := load(g, 4, func(c *http.Client) {
		if tl.expect(c, g.URL+"/api/x", *current.Load(), 200, "").status == 200 {
			served.Add(1)
		}
	})
	waitFor(10*time.Second, func() bool { return served.Load() >= 50 })
	w.jwks.SetKeys(w.key, k2) // publish first, as IdPs do
	fresh := w.token(k2)
	current.Store(&fresh)
	mark := served.Load()
	if !waitFor(15*time.Second, func() bool { return served.Load() >= mark+100 }) {
		t.Errorf("only %d requests with the new key within 15s", served.Load()-mark)
	}
	stop()
	tl.failIfBad(t)
	after := settle(t, g, base)
	noPanic(t, g)
	figure(t, "issuer rotation", tl, checkAudit(t, g, w.audit, tl), base, after)
}

// TestFaultUpstream: an upstream that refuses, resets, hangs or streams
// slowly gets the documented answer, and gatehouse keeps serving.
func TestFaultUpstream(t *testing.T) {
	w := newFaultWorld(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String()
	dead.Close()

	reset := newRecorder(t)
	reset.SetHandler(func(rw http.ResponseWriter, r *http.Request) {
		if conn, _, err := http.NewResponseController(rw).Hijack(); err == nil {
			conn.Close()
		}
	})
	cut := newRecorder(t)
	cut.SetHandler(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Length", "1000")
		io.WriteString(rw, "first part")
		http.NewResponseController(rw).Flush()
		if conn, _, err := http.NewResponseController(rw).Hijack(); err == nil {
			conn.Close()
		}
	})
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hang := newRecorder(t)
	hang.SetHandler(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	slow := newRecorder(t)
	slow.SetHandler(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Connection", "close")
		for i := 0; i < 6; i++ {
			fmt.Fprintf(rw, "chunk %d\n", i)
			http.NewResponseController(rw).Flush()
			select {
			case <-time.After(200 * time.Millisecond): // the stream's pace, longer than timeouts.upstream in total
			case <-r.Context().Done():
				return
			}
		}
	})
	routes := fmt.Sprintf(`  - location: "/refused/"
    auth: none
    upstream: %q
  - location: "/reset/"
    auth: none
    upstream: %q
  - location: "/cut/"
    auth: none
    upstream: %q
  - location: "/hang/"
    auth: none
    upstream: %q
  - location: "/slow/"
    auth: none
    upstream: %q
`, deadURL, reset.URL, cut.URL, hang.URL, slow.URL)
	g := startProcess(t, w.config(faultOpts{routes: routes, timeouts: "  upstream: 500ms"}))
	tl := newTally("up")
	tl.expect(faultClient(), g.URL+"/open/x", "", 200, "")
	base := goroutines(t, g)

	// concurrently sends n requests to path; check judges each answer.
	concurrently := func(n int, path string, check func(a answer) bool) {
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := tl.nextID()
				a := send(faultClient(), "GET", g.URL+path, id, "")
				tl.record(id, a, check(a), path)
			}()
		}
		wg.Wait()
		// gatehouse keeps serving.
		tl.expect(faultClient(), g.URL+"/open/x", "", 200, "")
	}
	is := func(status int, code string) func(a answer) bool {
		return func(a answer) bool { return a.err == nil && a.status == status && a.code == code }
	}
	t.Run("refusing", func(t *testing.T) { concurrently(20, "/refused/x", is(502, "upstream_unavailable")) })
	t.Run("reset before the answer", func(t *testing.T) { concurrently(20, "/reset/x", is(502, "upstream_unavailable")) })
	t.Run("reset mid-answer", func(t *testing.T) {
		concurrently(20, "/cut/x", func(a answer) bool {
			// ReverseProxy aborts the answer (http.ErrAbortHandler): the
			// client sees a 502, or a cut connection, never a whole answer.
			return a.status == 502 && a.code == "upstream_unavailable" ||
				a.status == 0 && a.err != nil ||
				a.status == 200 && a.err != nil && len(a.body) < 1000
		})
	})
	t.Run("hanging", func(t *testing.T) { concurrently(20, "/hang/x", is(504, "upstream_timeout")) })
	t.Run("slow streaming is passed through whole", func(t *testing.T) {
		concurrently(5, "/slow/x", func(a answer) bool {
			return a.err == nil && a.status == 200 && a.body == "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\nchunk 5\n"
		})
	})
	tl.failIfBad(t)
	after := settle(t, g, base)
	noPanic(t, g)
	figure(t, "upstream refusing/resetting/hanging/slow", tl, checkAudit(t, g, w.audit, tl), base, after)
}

// TestFaultReloadUnderLoad: SIGHUP three times while allowed and denied
// requests flow: every answer is the documented one, every event written.
func TestFaultReloadUnderLoad(t *testing.T) {
	w := newFaultWorld(t)
	g := startProcess(t, w.config(faultOpts{}))
	tl, tok := newTally("hup"), w.token(w.key)
	tl.expect(faultClient(), g.URL+"/api/x", tok, 200, "")
	base := goroutines(t, g)
	var n atomic.Int64
	stop := load(g, 4, func(c *http.Client) {
		if n.Add(1)%2 == 0 {
			tl.expect(c, g.URL+"/api/x", tok, 200, "")
		} else {
			tl.expect(c, g.URL+"/api/x", "", 401, "missing_token")
		}
	})
	for i := 0; i < 3; i++ {
		cfg := w.config(faultOpts{routes: fmt.Sprintf("  - location: \"= /added%d\"\n    auth: none\n", i)})
		if err := os.WriteFile(g.ConfigPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		mark := n.Load()
		g.Signal(syscall.SIGHUP)
		if !waitFor(10*time.Second, func() bool { return strings.Count(g.Stderr.String(), `"msg":"config reloaded"`) == i+1 }) {
			t.Fatalf("reload %d not logged:\n%s", i, g.Stderr.String())
		}
		waitFor(5*time.Second, func() bool { return n.Load() >= mark+50 }) // keep the load across the swap
	}
	stop()
	tl.failIfBad(t)
	after := settle(t, g, base)
	noPanic(t, g)
	figure(t, "config reloaded under load (3 SIGHUPs)", tl, checkAudit(t, g, w.audit, tl), base, after)
}

// TestFaultSIGTERMUnderLoad: every request that reached the upstream before
// SIGTERM is answered 200; requests after it are refused at connect, never
// cut; the process exits 0; every answered request has its audit event.
func TestFaultSIGTERMUnderLoad(t *testing.T) {
	w := newFaultWorld(t)
	w.up.SetHandler(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Connection", "close")
		time.Sleep(50 * time.Millisecond) // an upstream that takes its time: requests are in flight at SIGTERM
		io.WriteString(rw, "ok")
	})
	g := startProcess(t, w.config(faultOpts{}))
	tl, tok := newTally("term"), w.token(w.key)
	var n atomic.Int64
	var lateErrs atomic.Int64
	stop := load(g, 6, func(c *http.Client) {
		id := tl.nextID()
		a := send(c, "GET", g.URL+"/api/x", id, tok)
		if a.err != nil && a.status == 0 {
			lateErrs.Add(1) // judged below against what the upstream saw
			tl.record(id, a, true, "")
			return
		}
		n.Add(1)
		tl.record(id, a, a.err == nil && a.status == 200 && a.body == "ok", "in flight at SIGTERM")
	})
	waitFor(10*time.Second, func() bool { return n.Load() >= 60 })
	g.Signal(syscall.SIGTERM)
	select {
	case <-g.Exited():
	case <-time.After(20 * time.Second):
		t.Fatal("gatehouse did not exit within 20s of SIGTERM")
	}
	stop()
	if code := g.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}
	// Every request the upstream saw was in flight: its client got 200.
	tl.mu.Lock()
	for _, r := range w.up.Requests() {
		id := r.Header.Get("X-Request-Id")
		if a, ok := tl.got[id]; !ok || a.status != 200 || a.err != nil {
			t.Errorf("request %s reached the upstream but its client got %d %v", id, a.status, a.err)
		}
	}
	tl.mu.Unlock()
	tl.failIfBad(t)
	noPanic(t, g)
	events := checkAudit(t, g, w.audit, tl)
	answered, _ := tl.counts()
	t.Logf("FIGURE fault SIGTERM under load: %d requests answered, %d not accepted after the listener closed (never reached the upstream), %d/%d audit events delivered, exit 0",
		answered, lateErrs.Load(), events, answered)
}

// TestFaultRabbitMQCut: the link to the broker is cut for a few seconds
// while requests flow, then restored; clients notice nothing, and every
// answered request's audit event arrives in a queue bound to the exchange.
//
// Set GATEHOUSE_TEST_DUMP=FILE to get the process's goroutine dump (SIGQUIT)
// in FILE when events are missing.
func TestFaultRabbitMQCut(t *testing.T) {
	brokerURL := audittest.BrokerURL(t)
	bu, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	aq := newAuditQueue(t, brokerURL)
	exchange := aq.exchange

	fwd := proxytest.NewForwarder(t, bu.Host)
	gu := *bu
	gu.Host = fwd.Addr()
	w := newFaultWorld(t)
	cfg := w.config(faultOpts{audit: fmt.Sprintf("audit:\n  sink: rabbitmq\n  rabbitmq:\n    url_env: GATEHOUSE_AMQP_URL\n    exchange: %q\n", exchange)})
	g := startProcess(t, cfg, "GATEHOUSE_AMQP_URL="+gu.String())
	tl, tok := newTally("amqp"), w.token(w.key)
	tl.expect(faultClient(), g.URL+"/api/x", tok, 200, "")
	base := goroutines(t, g)

	var n atomic.Int64
	stop := load(g, 3, func(c *http.Client) {
		if n.Add(1)%2 == 0 {
			tl.expect(c, g.URL+"/api/x", tok, 200, "")
		} else {
			tl.expect(c, g.URL+"/api/x", "", 401, "missing_token")
		}
	})
	waitFor(10*time.Second, func() bool { return n.Load() >= 100 })
	// Cut only a working link: events are arriving.
	if !waitFor(20*time.Second, func() bool { return aq.distinct() >= 10 }) {
		t.Fatalf("no audit event arrived before the cut:\n%s", g.Stderr.String())
	}
	fwd.SetCut(true)
	cutAt, mark := time.Now(), n.Load()
	// Hold the cut for at least 2s and 100 requests.
	waitFor(20*time.Second, func() bool { return time.Since(cutAt) >= 2*time.Second && n.Load() >= mark+100 })
	duringCut, cutFor := n.Load()-mark, time.Since(cutAt).Round(100*time.Millisecond)
	if !g.WaitLog("audit broker connection lost", 10*time.Second) {
		t.Errorf("gatehouse did not notice the cut:\n%s", g.Stderr.String())
	}
	fwd.SetCut(false)
	mark = n.Load()
	waitFor(10*time.Second, func() bool { return n.Load() >= mark+100 })
	stop()
	tl.failIfBad(t)

	// Every answered request's event arrives (at least once: events not
	// confirmed before the cut are published again).
	tl.mu.Lock()
	var want []string
	for id, a := range tl.got {
		if a.status != 0 {
			want = append(want, id)
		}
	}
	tl.mu.Unlock()
	missing := func() (m []string) {
		for _, id := range want {
			if aq.count(id) == 0 {
				m = append(m, id)
			}
		}
		return m
	}
	if !waitFor(30*time.Second, func() bool { return len(missing()) == 0 }) {
		m := missing()
		t.Errorf("%d of %d audit events never arrived after the broker came back, e.g. %v", len(m), len(want), m[:min(5, len(m))])
		if os.Getenv("GATEHOUSE_TEST_DUMP") != "" {
			g.Signal(syscall.SIGQUIT)
			<-g.Exited()
			os.WriteFile(os.Getenv("GATEHOUSE_TEST_DUMP"), []byte(g.Stderr.String()), 0o644)
		}
	}
	dups := 0
	for _, id := range want {
		dups += max(aq.count(id)-1, 0)
	}
	if v := metric(t, g, `gatehouse_audit_events_total{result="dropped",sink="rabbitmq"}`); v > 0 {
		t.Errorf("%v events dropped", v)
	}
	after := settle(t, g, base)
	noPanic(t, g)
	g.Stop()
	if code := g.ExitCode(); code != 0 {
		t.Errorf("exit code %d", code)
	}
	answered, bad := tl.counts()
	t.Logf("FIGURE fault RabbitMQ cut %s and restored under load: %d requests answered (%d during the cut), %d undocumented answers, %d/%d audit events delivered (%d re-sent duplicates), goroutines %d -> %d",
		cutFor, answered, duringCut, bad, len(want)-len(missing()), answered, dups, base, after)
}

// auditQueue is a fresh durable topic exchange on the test broker with a
// queue bound to every key, counting the request ids of arriving events.
type auditQueue struct {
	exchange string
	mu       sync.Mutex
	seen     map[string]int
}

func newAuditQueue(t *testing.T, brokerURL string) *auditQueue {
	t.Helper()
	conn, err := amqp.Dial(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	aq := &auditQueue{exchange: "gatehouse.test.fault." + hex.EncodeToString(rnd[:]), seen: map[string]int{}}
	if err := ch.ExchangeDeclare(aq.exchange, "topic", true, false, false, false, nil); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err == nil {
		err = ch.QueueBind(q.Name, "#", aq.exchange, false, nil)
	}
	var deliveries <-chan amqp.Delivery
	if err == nil {
		deliveries, err = ch.Consume(q.Name, "", true, true, false, false, nil)
	}
	if err != nil {
		ch.ExchangeDelete(aq.exchange, false, false)
		conn.Close()
		t.Fatal(err)
	}
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for d := range deliveries {
			var ev struct {
				Data struct {
					RequestID string `json:"request_id"`
				} `json:"data"`
			}
			json.Unmarshal(d.Body, &ev)
			aq.mu.Lock()
			aq.seen[ev.Data.RequestID]++
			aq.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ch.ExchangeDelete(aq.exchange, false, false)
		ch.Close()
		<-consumed
		conn.Close()
	})
	return aq
}

func (q *auditQueue) count(id string) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.seen[id]
}

func (q *auditQueue) distinct() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.seen)
}

// TestRabbitMQConnectionSurvivesReload: SPEC.md 2, the audit connection
// survives a reload unless the audit section changed. The broker is reached
// through a forwarder that counts connections.
func TestRabbitMQConnectionSurvivesReload(t *testing.T) {
	brokerURL := audittest.BrokerURL(t)
	bu, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	aq := newAuditQueue(t, brokerURL)
	fwd := proxytest.NewForwarder(t, bu.Host)
	gu := *bu
	gu.Host = fwd.Addr()
	w := newFaultWorld(t)
	auditCfg := func(events string) string {
		return fmt.Sprintf("audit:\n  sink: rabbitmq\n  events: %s\n  rabbitmq:\n    url_env: GATEHOUSE_AMQP_URL\n    exchange: %q\n", events, aq.exchange)
	}
	g := startProcess(t, w.config(faultOpts{audit: auditCfg("[allow, deny]")}), "GATEHOUSE_AMQP_URL="+gu.String())
	tok := w.token(w.key)
	delivered := func(what string) {
		t.Helper()
		_, h, _ := do(t, "GET", g.URL+"/api/x", bearerHeader(tok), "")
		id := h.Get("X-Request-Id")
		if !waitFor(15*time.Second, func() bool { return aq.count(id) > 0 }) {
			t.Fatalf("%s: the audit event of request %s never arrived:\n%s", what, id, g.Stderr.String())
		}
	}
	delivered("at start")
	if n := fwd.Accepted(); n != 1 {
		t.Fatalf("%d broker connections at start, want 1", n)
	}
	reload := func(cfg string, n int) {
		t.Helper()
		if err := os.WriteFile(g.ConfigPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		g.Signal(syscall.SIGHUP)
		if !g.WaitLogCount(`"msg":"config reloaded"`, n, 10*time.Second) {
			t.Fatalf("reload %d not logged:\n%s", n, g.Stderr.String())
		}
	}
	// Two reloads with the audit section unchanged (the routes differ).
	for i := 1; i <= 2; i++ {
		cfg := strings.Replace(w.config(faultOpts{audit: auditCfg("[allow, deny]")}), "routes:\n", fmt.Sprintf("routes:\n  - location: \"= /added%d\"\n    auth: none\n", i), 1)
		reload(cfg, i)
	}
	delivered("after two reloads")
	if n := fwd.Accepted(); n != 1 {
		t.Errorf("%d broker connections after reloads that kept the audit section, want the first one only", n)
	}
	// Control: a changed audit section gets a new emitter and connection.
	reload(w.config(faultOpts{audit: auditCfg("[deny, allow]")}), 3)
	delivered("after the audit section changed")
	if n := fwd.Accepted(); n != 2 {
		t.Errorf("%d broker connections after the audit section changed, want 2", n)
	}
}
