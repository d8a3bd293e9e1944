package proxy_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/audit/audittest"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// revocationStream returns a unique stream name, deleted when the test ends.
func revocationStream(t *testing.T, brokerURL string) string {
	name := fmt.Sprintf("gatehouse.test.revocations.%x", rand.Uint64())
	t.Cleanup(func() {
		conn, err := amqp.Dial(brokerURL)
		if err != nil {
			return
		}
		defer conn.Close()
		if ch, err := conn.Channel(); err == nil {
			_, _ = ch.QueueDelete(name, false, false, false)
		}
	})
	return name
}

func revocationYAML(brokerURL, stream, extra string) string {
	return fmt.Sprintf("revocation:\n  rabbitmq:\n    url: %q\n    stream: %q\n    max_age: 1h\n%s", brokerURL, stream, extra)
}

// viaForwarder points brokerURL at a forwarder the test can cut.
func viaForwarder(t *testing.T, brokerURL string) (string, *proxytest.Forwarder) {
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	fw := proxytest.NewForwarder(t, u.Host)
	u.Host = fw.Addr()
	return u.String(), fw
}

// runRevoke runs `gatehouse revoke` of the real binary.
func runRevoke(t *testing.T, config string, args ...string) {
	t.Helper()
	cmd := exec.Command(proxytest.Binary(t), append([]string{"revoke", "-config", config}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "confirmed on stream") {
		t.Fatalf("gatehouse revoke %v: %v\n%s", args, err, out)
	}
}

func statusOf(t *testing.T, g *gatehouse, tok string) (int, string) {
	t.Helper()
	code, _, body := do(t, "GET", g.URL+"/api/x", bearerHeader(tok), "")
	var e errorBody
	_ = json.Unmarshal([]byte(body), &e)
	return code, e.Error
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out (30s) waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func readyz(t *testing.T, g *gatehouse) int {
	code, _, _ := do(t, "GET", g.AdminURL+"/readyz", nil, "")
	return code
}

func revMetric(t *testing.T, g *gatehouse, series string) float64 {
	t.Helper()
	_, _, body := do(t, "GET", g.AdminURL+"/metrics", nil, "")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(body)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestRevocationEndToEnd: tokens accepted (and cached) are refused
// token_revoked once `gatehouse revoke` (the real binary) confirmed, for
// each kind; an invalid message is counted and not applied; a gatehouse
// started later knows every revocation once /readyz says ready, and is not
// ready while it cannot read the backlog.
func TestRevocationEndToEnd(t *testing.T) {
	brokerURL := audittest.BrokerURL(t)
	stream := revocationStream(t, brokerURL)
	w := newWorld(t)
	cfg := w.config(revocationYAML(brokerURL, stream, "  ready_timeout: 30s\n"), "")
	g := startProcess(t, cfg)
	waitUntil(t, "/readyz 200", func() bool { return readyz(t, g) == http.StatusOK })

	now := time.Now()
	byJTI := w.token(map[string]any{"jti": "tok-1"})
	other := w.token(map[string]any{"jti": "tok-2"})
	aliceOld := w.token(map[string]any{"sub": "alice", "jti": "a-old", "iat": now.Add(-time.Hour).Unix()})
	aliceNew := w.token(map[string]any{"sub": "alice", "jti": "a-new", "iat": now.Add(time.Minute).Unix() - 61})
	for _, tok := range []string{byJTI, other, aliceOld, aliceNew, byJTI} { // byJTI twice: the second is a cache hit
		if code, e := statusOf(t, g, tok); code != http.StatusOK {
			t.Fatalf("before any revocation: %d %s", code, e)
		}
	}

	runRevoke(t, g.ConfigPath, "-jti", "tok-1", "-issuer", issuer, "-reason", "stolen laptop")
	waitUntil(t, "tok-1 refused token_revoked", func() bool {
		code, e := statusOf(t, g, byJTI)
		return code == http.StatusUnauthorized && e == "token_revoked"
	})
	if _, h, _ := do(t, "GET", g.URL+"/api/x", bearerHeader(byJTI), ""); h.Get("WWW-Authenticate") != `Bearer realm="gatehouse", error="invalid_token", error_description="token revoked"` {
		t.Errorf("WWW-Authenticate of a revoked token = %q (SPEC.md 4's table)", h.Get("WWW-Authenticate"))
	}
	if code, e := statusOf(t, g, other); code != http.StatusOK {
		t.Errorf("another token after revoking tok-1: %d %s", code, e)
	}

	runRevoke(t, g.ConfigPath, "-sub", "alice", "-before", now.Add(-30*time.Minute).UTC().Format(time.RFC3339), "-reason", "password reset")
	waitUntil(t, "alice's old token refused", func() bool {
		code, e := statusOf(t, g, aliceOld)
		return code == http.StatusUnauthorized && e == "token_revoked"
	})
	if code, e := statusOf(t, g, aliceNew); code != http.StatusOK {
		t.Errorf("alice's token issued after -before: %d %s", code, e)
	}

	// A message every instance must skip: counted invalid, not applied.
	publishRawRevocation(t, brokerURL, stream, `{"specversion":"1.0","type":"gatehouse.revocation","source":"x","id":"bad","time":"`+
		time.Now().UTC().Format(time.RFC3339)+`","data":{"kind":"everything","value":"tok-2","reason":"x"}}`)
	waitUntil(t, "the invalid message counted", func() bool {
		return revMetric(t, g, `gatehouse_revocation_messages_total{result="invalid"}`) == 1
	})
	if code, e := statusOf(t, g, other); code != http.StatusOK {
		t.Errorf("tok-2 after an invalid message naming it: %d %s", code, e)
	}
	if got := revMetric(t, g, `gatehouse_revocation_entries{kind="jti"}`); got != 1 {
		t.Errorf("entries{kind=jti} = %v, want 1", got)
	}
	if out := g.Stdout.String(); !strings.Contains(out, `"reason":"token_revoked"`) || !strings.Contains(out, `"detail":"revoked by jti"`) {
		t.Error("no audit event records token_revoked with its kind")
	}

	// A second gatehouse whose broker link is cut at start: not ready, and
	// once the link is back it is ready only with the backlog read.
	viaURL, fw := viaForwarder(t, brokerURL)
	fw.SetCut(true)
	g2 := startProcess(t, w.config(revocationYAML(viaURL, stream, "  ready_timeout: 1h\n"), ""))
	for range 3 {
		if code := readyz(t, g2); code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz with the backlog unread: %d", code)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fw.SetCut(false)
	waitUntil(t, "the second gatehouse ready", func() bool { return readyz(t, g2) == http.StatusOK })
	for _, tok := range []string{byJTI, aliceOld} {
		if code, e := statusOf(t, g2, tok); code != http.StatusUnauthorized || e != "token_revoked" {
			t.Errorf("a gatehouse started after the revocations: %d %s, want 401 token_revoked", code, e)
		}
	}

	// The feed cut: the second gatehouse keeps serving and keeps what it knows.
	fw.SetCut(true)
	waitUntil(t, "the feed noticed the cut", func() bool {
		return strings.Contains(g2.Stderr.String(), "revocation feed down")
	})
	if code, e := statusOf(t, g2, byJTI); code != http.StatusUnauthorized || e != "token_revoked" {
		t.Errorf("revoked token with the feed down: %d %s", code, e)
	}
	if code, e := statusOf(t, g2, other); code != http.StatusOK {
		t.Errorf("valid token with the feed down (fail-open): %d %s", code, e)
	}

	// kid last: it revokes every token of the world's key.
	runRevoke(t, g.ConfigPath, "-kid", "k1", "-issuer", issuer, "-reason", "key leaked")
	waitUntil(t, "every token of key k1 refused", func() bool {
		code, e := statusOf(t, g, other)
		return code == http.StatusUnauthorized && e == "token_revoked"
	})
	if got := revMetric(t, g, `gatehouse_revocation_messages_total{result="applied"}`); got != 3 {
		t.Errorf("applied = %v, want 3", got)
	}
}

// TestRevocationFailClosed: with fail_closed, tokens get 503
// keys_unavailable while the feed is down longer than ready_timeout, and are
// served again once it is back.
func TestRevocationFailClosed(t *testing.T) {
	brokerURL := audittest.BrokerURL(t)
	stream := revocationStream(t, brokerURL)
	viaURL, fw := viaForwarder(t, brokerURL)
	w := newWorld(t)
	g := startProcess(t, w.config(revocationYAML(viaURL, stream, "  ready_timeout: 1s\n  fail_closed: true\n"), ""))
	waitUntil(t, "/readyz 200", func() bool { return readyz(t, g) == http.StatusOK })
	tok := w.token(nil)
	waitUntil(t, "the token served with the feed up", func() bool {
		code, _ := statusOf(t, g, tok)
		return code == http.StatusOK
	})
	fw.SetCut(true)
	waitUntil(t, "503 keys_unavailable with the feed down", func() bool {
		code, e := statusOf(t, g, tok)
		return code == http.StatusServiceUnavailable && e == "keys_unavailable"
	})
	fw.SetCut(false)
	waitUntil(t, "the token served again", func() bool {
		code, _ := statusOf(t, g, tok)
		return code == http.StatusOK
	})
}

func publishRawRevocation(t *testing.T, brokerURL, stream, body string) {
	t.Helper()
	conn, err := amqp.Dial(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatal(err)
	}
	dc, err := ch.PublishWithDeferredConfirm("", stream, false, false, amqp.Publishing{ContentType: "application/cloudevents+json", Body: []byte(body)})
	if err != nil || !dc.Wait() {
		t.Fatalf("raw publish: %v", err)
	}
}

// TestRevocationSurvivesReload: a SIGHUP that changes the revocation
// section starts a new feed, but the revocations already known stay in
// force and /readyz stays ready, even when the new feed cannot reach the
// broker.
func TestRevocationSurvivesReload(t *testing.T) {
	brokerURL := audittest.BrokerURL(t)
	stream := revocationStream(t, brokerURL)
	viaURL, fw := viaForwarder(t, brokerURL)
	w := newWorld(t)
	g := startProcess(t, w.config(revocationYAML(viaURL, stream, "  ready_timeout: 1h\n"), ""))
	waitUntil(t, "/readyz 200", func() bool { return readyz(t, g) == http.StatusOK })
	tok := w.token(map[string]any{"jti": "reload-1"})
	runRevoke(t, g.ConfigPath, "-jti", "reload-1", "-reason", "test")
	waitUntil(t, "reload-1 refused", func() bool {
		code, e := statusOf(t, g, tok)
		return code == http.StatusUnauthorized && e == "token_revoked"
	})
	fw.SetCut(true)
	if err := os.WriteFile(g.ConfigPath, []byte(w.config(revocationYAML(viaURL, stream, "  ready_timeout: 2h\n"), "")), 0o600); err != nil {
		t.Fatal(err)
	}
	g.Signal(syscall.SIGHUP)
	if !g.WaitLog(`"msg":"config reloaded"`, 30*time.Second) {
		t.Fatalf("no reload:\n%s", g.Stderr.String())
	}
	if code, e := statusOf(t, g, tok); code != http.StatusUnauthorized || e != "token_revoked" {
		t.Errorf("after a reload with the feed down: %d %s, want 401 token_revoked", code, e)
	}
	if code := readyz(t, g); code != http.StatusOK {
		t.Errorf("/readyz after a reload: %d", code)
	}
	if code, _ := statusOf(t, g, w.token(nil)); code != http.StatusOK {
		t.Errorf("a valid token after the reload: %d", code)
	}
}

// TestRevocationShadowRoute: a shadow route decides as the pipeline would
// (SPEC.md 13), so a revoked token is recorded as a shadow deny with
// token_revoked even where the enforced route lets it through.
func TestRevocationShadowRoute(t *testing.T) {
	brokerURL := audittest.BrokerURL(t)
	stream := revocationStream(t, brokerURL)
	w := newWorld(t)
	g := startProcess(t, w.config(revocationYAML(brokerURL, stream, "  ready_timeout: 30s\n"), `
routes:
  - location: /api/
    roles: { any: [user] }
  - location: /open/
    auth: none
  - location: /open/new/
    shadow: true
    roles: { any: [user] }
`))
	waitUntil(t, "/readyz 200", func() bool { return readyz(t, g) == http.StatusOK })
	tok := w.token(map[string]any{"jti": "shadow-1"})
	runRevoke(t, g.ConfigPath, "-jti", "shadow-1", "-issuer", issuer, "-reason", "shadow test")
	waitUntil(t, "shadow-1 refused on the enforced route", func() bool {
		code, e := statusOf(t, g, tok)
		return code == http.StatusUnauthorized && e == "token_revoked"
	})
	if status, _, body := do(t, "GET", g.URL+"/open/new/x", bearerHeader(tok), ""); status != http.StatusOK {
		t.Fatalf("GET /open/new/x = %d %s, want 200 (auth: none enforced)", status, body)
	}
	if v := revMetric(t, g, `gatehouse_shadow_decisions_total{decision="deny",reason="token_revoked",route="/open/new/"}`); v != 1 {
		t.Errorf("shadow decision for a revoked token: token_revoked count %v, want 1", v)
	}
}
