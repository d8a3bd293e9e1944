package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/proxy"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// counter is the value of the series name{labels}, 0 when absent.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// inProcess is a Handler in front of a recording upstream, its audit on
// stdout into a buffer.
type inProcess struct {
	h       *proxy.Handler
	up      *proxytest.Upstream
	metrics *proxy.Metrics
	audit   *proxytest.SyncBuffer
}

func newInProcess(t *testing.T, extra string, now func() time.Time) *inProcess {
	t.Helper()
	iss := proxytest.NewIssuer(t, "ES256")
	p := &inProcess{up: proxytest.NewUpstream(t), metrics: proxy.NewMetrics("test"), audit: &proxytest.SyncBuffer{}}
	cfg := proxytest.Config(t, `listen: "127.0.0.1:0"
upstream: "`+p.up.URL+`"
issuers:
`+iss.YAML("api")+`
routes:
  - location: "/open/"
    auth: none
  - location: "/api/"
audit:
  sink: stdout
`+extra)
	p.h = proxytest.NewHandler(t, cfg, proxy.HandlerOptions{Metrics: p.metrics, Stdout: p.audit, Now: now})
	return p
}

type auditLine struct {
	Data struct {
		Decision, Reason string
		Status           int
	}
}

// events closes the handler (flushing the audit queue) and returns its events.
func (p *inProcess) events(t *testing.T) []auditLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.h.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
	var out []auditLine
	for _, l := range strings.Split(strings.TrimSpace(p.audit.String()), "\n") {
		var ev auditLine
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, ev)
	}
	return out
}

// TestPayloadTooLargeIsDeny: a body declared over limits.max_body_bytes is
// answered 413 without reaching the upstream, and metrics and audit record
// it once, as a deny with reason payload_too_large (SPEC.md, part two).
func TestPayloadTooLargeIsDeny(t *testing.T) {
	p := newInProcess(t, "limits:\n  max_body_bytes: 10\n", nil)
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, httptest.NewRequest("POST", "/open/x", strings.NewReader(strings.Repeat("x", 100))))
	if rec.Code != 413 || !strings.Contains(rec.Body.String(), `"error":"payload_too_large"`) {
		t.Fatalf("answer %d %s, want 413 payload_too_large", rec.Code, rec.Body)
	}
	if n := len(p.up.Requests()); n != 0 {
		t.Errorf("upstream got %d requests, want none", n)
	}
	reg := p.metrics.Registry
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"route": "/open/", "decision": "deny", "reason": "payload_too_large"}); got != 1 {
		t.Errorf("requests_total deny/payload_too_large = %v, want 1", got)
	}
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"decision": "allow"}); got != 0 {
		t.Errorf("requests_total allow = %v, want 0", got)
	}
	evs := p.events(t)
	if len(evs) != 1 || evs[0].Data.Decision != "deny" || evs[0].Data.Reason != "payload_too_large" || evs[0].Data.Status != 413 {
		t.Errorf("audit events %+v, want one deny payload_too_large 413", evs)
	}
}

// TestPayloadTooLargeMidStream: a body of unknown length (chunked) can
// only be found too large while it is forwarded; the request is recorded
// when forwarding ends, so the 413 is still a deny, recorded once, and a
// chunked body that fits is recorded as the allow it is.
func TestPayloadTooLargeMidStream(t *testing.T) {
	p := newInProcess(t, "limits:\n  max_body_bytes: 10\n", nil)
	for _, tt := range []struct {
		name, body string
		status     int
	}{
		{"over the limit", strings.Repeat("x", 100), 413},
		{"within the limit", "12345", 200},
	} {
		req := httptest.NewRequest("POST", "/open/x", strings.NewReader(tt.body))
		req.ContentLength = -1 // as a chunked request arrives
		rec := httptest.NewRecorder()
		p.h.ServeHTTP(rec, req)
		if rec.Code != tt.status {
			t.Fatalf("%s: answer %d %s, want %d", tt.name, rec.Code, rec.Body, tt.status)
		}
	}
	reg := p.metrics.Registry
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"route": "/open/", "decision": "deny", "reason": "payload_too_large"}); got != 1 {
		t.Errorf("requests_total deny/payload_too_large = %v, want 1", got)
	}
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"route": "/open/", "decision": "allow"}); got != 1 {
		t.Errorf("requests_total allow = %v, want 1 (the body that fits)", got)
	}
	evs := p.events(t)
	if len(evs) != 2 || evs[0].Data.Reason != "payload_too_large" || evs[0].Data.Status != 413 || evs[0].Data.Decision != "deny" ||
		evs[1].Data.Decision != "allow" {
		t.Errorf("audit events %+v, want a deny payload_too_large 413, then an allow", evs)
	}
}

// TestPanicBeforeDecision: a clock that panics once makes the request path
// panic before anything is recorded. The client gets the JSON 500, the
// panic is counted, the request is recorded once as internal_error, and
// the handler's retirement (what a reload does to the replaced handler)
// ends as soon as the request has, not when its budget runs out.
func TestPanicBeforeDecision(t *testing.T) {
	var armed atomic.Bool
	now := func() time.Time {
		if armed.CompareAndSwap(true, false) {
			panic("test clock")
		}
		return time.Now()
	}
	p := newInProcess(t, "", now)
	armed.Store(true)
	rec := httptest.NewRecorder()
	p.h.ServeHTTP(rec, httptest.NewRequest("GET", "/open/x", nil))
	var body struct{ Error, RequestID string }
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || rec.Code != 500 || body.Error != "internal_error" {
		t.Fatalf("answer %d %s, want 500 internal_error", rec.Code, rec.Body)
	}
	reg := p.metrics.Registry
	if got := counter(t, reg, "gatehouse_panics_total", nil); got != 1 {
		t.Errorf("panics_total = %v, want 1", got)
	}
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"decision": "deny", "reason": "internal_error"}); got != 1 {
		t.Errorf("requests_total deny/internal_error = %v, want 1", got)
	}
	// Close is retire: it waits for the handler's requests in flight. A
	// count leaked by the panic would hold it until ctx's end.
	evs := p.events(t)
	if len(evs) != 1 || evs[0].Data.Reason != "internal_error" || evs[0].Data.Status != 500 {
		t.Errorf("audit events %+v, want one internal_error 500", evs)
	}
}

// panickyWriter panics on its first Header call, as a broken middleware's
// ResponseWriter might; then it records like httptest's.
type panickyWriter struct {
	*httptest.ResponseRecorder
	calls int
}

func (w *panickyWriter) Header() http.Header {
	if w.calls++; w.calls == 1 {
		panic("writer")
	}
	return w.ResponseRecorder.Header()
}

// TestPanicAfterDecision: a panic while answering a denial that was
// already recorded counts the panic, answers 500, and leaves the record
// as it was (one deny, missing_token): never two records.
func TestPanicAfterDecision(t *testing.T) {
	p := newInProcess(t, "", nil)
	w := &panickyWriter{ResponseRecorder: httptest.NewRecorder()}
	p.h.ServeHTTP(w, httptest.NewRequest("GET", "/api/x", nil))
	if w.Code != 500 || !bytes.Contains(w.Body.Bytes(), []byte(`"error":"internal_error"`)) {
		t.Fatalf("answer %d %s, want 500 internal_error", w.Code, w.Body)
	}
	reg := p.metrics.Registry
	if got := counter(t, reg, "gatehouse_panics_total", nil); got != 1 {
		t.Errorf("panics_total = %v, want 1", got)
	}
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"reason": "missing_token"}); got != 1 {
		t.Errorf("requests_total missing_token = %v, want 1", got)
	}
	if got := counter(t, reg, "gatehouse_requests_total", map[string]string{"reason": "internal_error"}); got != 0 {
		t.Errorf("requests_total internal_error = %v, want 0 (already recorded)", got)
	}
	if evs := p.events(t); len(evs) != 1 {
		t.Errorf("audit events %+v, want one", evs)
	}
}
