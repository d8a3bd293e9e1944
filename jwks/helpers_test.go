package jwks

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// clock is an injected, manually advanced time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Unix(1_800_000_000, 0)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// issuers decodes an `issuers` YAML list and fails the test on any error.
func issuers(t testing.TB, src string) []Issuer {
	t.Helper()
	d := yamlpos.NewDecoder("test.yaml")
	root := d.Parse([]byte("issuers:\n" + src))
	iss := DecodeIssuers(d, d.Map(root, "issuers").Get("issuers"))
	if err := d.Err(); err != nil {
		t.Fatalf("config: %v", err)
	}
	return iss
}

type env struct {
	v    *Verifier
	clk  *clock
	reg  *prometheus.Registry
	iss  []Issuer
	opts Options
}

// newEnv builds a verifier over the YAML issuers with an injected clock and
// its own registry; it is closed when the test ends.
func newEnv(t testing.TB, src string, mod ...func(*Options)) *env {
	t.Helper()
	e := &env{clk: newClock(), reg: prometheus.NewRegistry()}
	e.iss = issuers(t, src)
	e.opts = Options{Issuers: e.iss, Metrics: NewMetrics(e.reg), Pool: NewPool(), Now: e.clk.now}
	for _, m := range mod {
		m(&e.opts)
	}
	v, err := New(context.Background(), e.opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.v = v
	t.Cleanup(v.Close)
	return e
}

// claims returns valid claims for issuer iss at the clock's time.
func (e *env) claims(iss string) map[string]any {
	now := e.clk.now().Unix()
	c := map[string]any{"sub": "user-1", "aud": "api", "exp": now + 300, "iat": now, "roles": []string{"user", "admin"}, "scope": "read write"}
	if iss != "" {
		c["iss"] = iss
	}
	return c
}

func (e *env) verify(tok string) (*Result, *Error) {
	res, err := e.v.Verify(context.Background(), tok)
	if err != nil {
		return nil, err.(*Error)
	}
	return res, nil
}

func (e *env) src(i int) *source { return e.v.issuers[i] }

// sameError reports whether got is the refusal want: the same reason,
// message and detail (refusals with a claim path are made per issuer, so
// they are compared by value).
func sameError(got, want *Error) bool {
	if got == nil || want == nil {
		return got == want
	}
	return *got == *want
}

const issA = "https://a.example.com"

// jwksIssuer is the YAML of one issuer fed by a JWKS URL.
func jwksIssuer(url string, extra ...string) string {
	return "  - issuer: " + issA + "\n    audiences: [api]\n    jwks_url: " + url + "\n" + indent(extra)
}

func indent(lines []string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func server(t testing.TB, keys ...*jwkstest.Key) *jwkstest.Server {
	s := jwkstest.NewServer(keys...)
	t.Cleanup(s.Close)
	return s
}
