package jwks

import (
	"context"
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
	if n := e.v.cache.len(); n > 32 {
		t.Errorf("cache holds %d entries, bound 32", n)
	}
}

// TestTokenCacheBound: the cache never holds more than token.cache_size
// entries in all, also for sizes that are not a multiple of the shard
// count, and it fills up to the bound when every shard gets enough tokens.
func TestTokenCacheBound(t *testing.T) {
	for _, size := range []int{1, 2, 10, 15, 16, 17, 100, 1000, 10000} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := newTokenCache(size)
			// Digests spread evenly over the shards, several times the
			// bound, so that every shard is offered more than it holds.
			n := 3*size + 4*cacheShards
			for i := range n {
				h := sha256.Sum256([]byte(fmt.Sprint(i)))
				h[0] = byte(i % 256)
				c.put(&h, &cacheEntry{key: &key{}, until: 1 << 62}, 0)
				if i%97 == 0 || i == n-1 {
					if got := c.len(); got > size {
						t.Fatalf("after %d puts the cache holds %d entries, bound %d", i+1, got, size)
					}
				}
			}
			if got := c.len(); got != size {
				t.Errorf("cache holds %d entries after %d puts, want exactly %d", got, n, size)
			}
		})
	}
}

// TestTokenCacheHitNoAlloc: a hit is one lock and one map lookup, no
// allocation.
func TestTokenCacheHitNoAlloc(t *testing.T) {
	c := newTokenCache(10)
	h := sha256.Sum256([]byte("a.b.c"))
	h[0] = 0 // shard 0 holds one of the 10
	c.put(&h, &cacheEntry{key: &key{}, until: 1}, 0)
	if a := testing.AllocsPerRun(100, func() {
		if _, ok := c.get(&h); !ok {
			t.Fatal("miss")
		}
	}); a != 0 {
		t.Errorf("cache hit: %v allocs, want 0", a)
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

// TestVerifyCacheHitNoAlloc: a repeated token is answered from the cache
// without an allocation (the reason verify hashes the token in place).
func TestVerifyCacheHitNoAlloc(t *testing.T) {
	k := jwkstest.NewKey("ES256", "k")
	e := newEnv(t, jwksIssuer(server(t, k).URL))
	tok := k.Sign(e.claims(issA))
	if _, err := e.verify(tok); err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(100, func() {
		if _, err := e.v.Verify(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("Verify of a cached token: %v allocs, want 0", a)
	}
}
