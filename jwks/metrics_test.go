package jwks

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

func TestMetrics(t *testing.T) {
	longKid := strings.Repeat("k", 61) + "ééé" // 67 bytes: the cut at 64 falls inside a rune
	k := jwkstest.NewKey("ES256", longKid)
	srv := server(t, k)
	e := newEnv(t, jwksIssuer(srv.URL))
	tok := k.Sign(e.claims(issA))
	e.verify(tok)
	e.verify(tok)
	m := e.opts.Metrics
	cut := strings.Repeat("k", 61) + "é"
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"key_info with kid cut to 64 bytes", testutil.ToFloat64(m.keyInfo.WithLabelValues(issA, cut, "ES256")), 1},
		{"keys", testutil.ToFloat64(m.keys.WithLabelValues(issA)), 1},
		{"refresh success", testutil.ToFloat64(m.refreshTotal.WithLabelValues(issA, "success")), 1},
		{"last success", testutil.ToFloat64(m.lastSuccessT.WithLabelValues(issA)), float64(e.clk.now().Unix())},
		{"cache hit", testutil.ToFloat64(m.cacheHit), 1},
		{"cache miss", testutil.ToFloat64(m.cacheMiss), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
	n, err := testutil.GatherAndCount(e.reg, "gatehouse_jwks_refresh_total", "gatehouse_jwks_keys",
		"gatehouse_jwks_last_success_timestamp_seconds", "gatehouse_jwks_key_info", "gatehouse_token_cache_requests_total")
	if err != nil || n != 6 {
		t.Errorf("gathered %d series (%v), want 6", n, err)
	}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLogsOnStateChange: one line when refreshes start failing, one when
// they recover, none per failure, and never a token.
func TestLogsOnStateChange(t *testing.T) {
	k := jwkstest.NewKey("RS256", "k")
	srv := server(t, k)
	var buf syncBuf
	e := newEnv(t, jwksIssuer(srv.URL), func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&buf, nil)) })
	tok := k.Sign(e.claims(issA))
	e.verify(tok)
	e.verify(tok + "x")
	srv.SetHandler(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(502) })
	for range 3 {
		e.src(0).refresh(context.Background())
	}
	srv.SetHandler(nil)
	e.src(0).refresh(context.Background())
	e.src(0).refresh(context.Background())
	out := buf.String()
	if n := strings.Count(out, "jwks refresh failing"); n != 1 {
		t.Errorf("%d failing lines, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "jwks refresh recovered"); n != 1 {
		t.Errorf("%d recovered lines, want 1:\n%s", n, out)
	}
	_, _, sig := parts(tok)
	if strings.Contains(out, sig) {
		t.Errorf("log holds the token:\n%s", out)
	}
}
