package jwks

import (
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

func TestTokenCache(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	srv := server(t, k)
	e := newEnv(t, jwksIssuer(srv.URL), func(o *Options) { o.CacheSize = 32 })
	tok := k.Sign(e.claims(issA))
	r1, err := e.verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := e.verify(tok)
	if err != nil || r2 != r1 {
		t.Fatalf("second Verify = %p, %v; want the cached %p", r2, err, r1)
	}
	hits := e.opts.Metrics.cacheHit
	if got := testutil.ToFloat64(hits); got != 1 {
		t.Errorf("cache hits = %v, want 1", got)
	}
	// Expiry is checked on every hit: exp 300s + leeway 30s.
	e.clk.advance(330 * time.Second)
	if _, err := e.verify(tok); err != nil {
		t.Errorf("at exp+leeway: %v", err)
	}
	e.clk.advance(time.Second)
	if _, err := e.verify(tok); err != errExpired {
		t.Errorf("cached token past exp+leeway = %v, want %v", err, errExpired)
	}
	// Bounded.
	for i := range 200 {
		c := e.claims(issA)
		c["jti"] = fmt.Sprint(i)
		if _, err := e.verify(k.Sign(c)); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.v.cache.len(); n > 32+cacheShards {
		t.Errorf("cache holds %d entries, bound 32", n)
	}
}

func TestTokenCacheOff(t *testing.T) {
	k := jwkstest.NewKey("EdDSA", "k")
	e := newEnv(t, jwksIssuer(server(t, k).URL), func(o *Options) { o.CacheSize = -1 })
	tok := k.Sign(e.claims(issA))
	r1, _ := e.verify(tok)
	r2, err := e.verify(tok)
	if err != nil || r1 == r2 || e.v.cache != nil {
		t.Errorf("cache off: results %p %p, err %v", r1, r2, err)
	}
}

// TestTokenCacheDistinct: two different tokens never share an entry, even
// when they differ only in the signature.
func TestTokenCacheDistinct(t *testing.T) {
	c := newTokenCache(100)
	a, b := sha256.Sum256([]byte("a.b.c")), sha256.Sum256([]byte("a.b.d"))
	c.put(&a, &cacheEntry{key: &key{}, until: 1}, 0)
	if _, ok := c.get(&b); ok {
		t.Error("lookup of another token hit")
	}
	if _, ok := c.get(&a); !ok {
		t.Error("lookup of the stored token missed")
	}
}
