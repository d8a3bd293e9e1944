package proxy

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/policy"
)

// TestRetireKeepsSharedEmitterForLateRequests: handlers A and B share an
// emitter (audit unchanged by the first reload), C has its own (the second
// reload changed audit). A request still deciding on A when B retires must
// still get its event out: the emitter closes when the last handler using
// it retires, not when the first one that sees a new emitter does.
func TestRetireKeepsSharedEmitterForLateRequests(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("GATEHOUSE_RETIRE_HMAC", strings.Repeat("k", 32))
	load := func(auditFile string) *Config {
		t.Helper()
		path := filepath.Join(dir, "gatehouse.yaml")
		cfg := `listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:1"
issuers:
  - audiences: any
    hmac_secret_env: GATEHOUSE_RETIRE_HMAC
routes:
  - location: "/"
    auth: none
audit:
  sink: file
  file: ` + auditFile + "\n"
		if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	d := deps{
		metrics: NewMetrics("retire-test"),
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		now:     time.Now,
		source:  "gatehouse/test",
		stdout:  io.Discard,
	}
	p := newParts(func(msg string, err error) { t.Errorf("%s: %v", msg, err) })
	ctx := context.Background()
	f1, f2 := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "c.jsonl")
	a, err := build(ctx, load(f1), d, p)
	if err != nil {
		t.Fatal(err)
	}
	b, err := build(ctx, load(f1), d, p)
	if err != nil {
		t.Fatal(err)
	}
	c, err := build(ctx, load(f2), d, p)
	if err != nil {
		t.Fatal(err)
	}
	if a.emitter != b.emitter || b.emitter == c.emitter {
		t.Fatal("setup: A and B must share an emitter, C must have its own")
	}

	a.inflight.enter() // a request still in flight on A
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	aDone := make(chan struct{})
	go func() { a.retire(rctx); close(aDone) }()
	b.retire(rctx)
	a.emitter.Emit(audit.Event{Decision: "deny", Reason: "forbidden", RequestID: "late-on-a", Status: 403})
	a.inflight.leave()
	select {
	case <-aDone:
	case <-rctx.Done():
		t.Fatal("A's retire did not end after its last request")
	}
	c.retire(rctx)
	got, err := os.ReadFile(f1)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), `"request_id":"late-on-a"`) {
		t.Errorf("the event of the request still deciding on A was lost; %s holds:\n%s", f1, got)
	}
}

// TestConfigWithoutRoutes: routes is optional (SPEC.md 2 does not require
// it); default then decides every request.
func TestConfigWithoutRoutes(t *testing.T) {
	t.Setenv("GATEHOUSE_NOROUTES_HMAC", strings.Repeat("k", 32))
	c, err := ParseConfig("noroutes.yaml", []byte(`listen: "127.0.0.1:0"
upstream: "http://127.0.0.1:3000"
issuers:
  - audiences: any
    hmac_secret_env: GATEHOUSE_NOROUTES_HMAC
default: { auth: required }
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Policy.Match("GET", "/anything")
	if r != c.Policy.Default() || r.Auth != policy.AuthRequired {
		t.Errorf("GET /anything matched %+v, want the default route with auth required", r)
	}
}
