package jwks

import (
	"context"
	"crypto/rsa"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// benchEnv is a verifier with one issuer per benchmarked algorithm.
func benchEnv(b *testing.B, cacheSize int, alg string) (*env, *jwkstest.Key, string) {
	b.Helper()
	k := jwkstest.NewKey(alg, "bench-"+alg)
	var cfg string
	if strings.HasPrefix(alg, "HS") {
		b.Setenv("GATEHOUSE_BENCH_HMAC", string(k.Secret()))
		cfg = "  - issuer: " + issA + "\n    audiences: [api]\n    hmac_secret_env: GATEHOUSE_BENCH_HMAC\n    algorithms: [" + alg + "]\n"
	} else {
		cfg = jwksIssuer(server(b, k).URL, "algorithms: ["+alg+"]")
	}
	// KeepClaims as the proxy sets it: the claims its headers and rules read.
	e := newEnv(b, cfg, func(o *Options) { o.CacheSize = cacheSize; o.KeepClaims = []string{"sub", "email"} })
	c := e.claims(issA)
	c["email"] = "user@example.com"
	c["jti"] = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	return e, k, k.Sign(c)
}

// benchVerify verifies one token of alg over and over with the given
// token.cache_size (negative: no cache, every call cold).
func benchVerify(b *testing.B, cacheSize int, alg string) {
	e, _, tok := benchEnv(b, cacheSize, alg)
	ctx := context.Background()
	if _, err := e.v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyCold(b *testing.B) {
	for _, alg := range []string{"RS256", "PS256", "ES256", "EdDSA", "HS256"} {
		b.Run(alg, func(b *testing.B) { benchVerify(b, -1, alg) })
	}
}

// BenchmarkJWSVerify is the baseline: jwx's jws.Verify alone on the same
// RS256 token, with the raw public key (no claim checks at all).
func BenchmarkJWSVerify(b *testing.B) {
	_, k, tok := benchEnv(b, -1, "RS256")
	pub := k.Public().(*rsa.PublicKey)
	buf := []byte(tok)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jws.Verify(buf, jws.WithKey(jwa.RS256, pub), jws.WithCompact()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJWTParse is jwx's jwt.Parse with validation on the same token.
func BenchmarkJWTParse(b *testing.B) {
	e, k, tok := benchEnv(b, -1, "RS256")
	pub := k.Public().(*rsa.PublicKey)
	buf := []byte(tok)
	clk := jwt.ClockFunc(e.clk.now)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := jwt.Parse(buf, jwt.WithKey(jwa.RS256, pub), jwt.WithClock(clk), jwt.WithAudience("api"),
			jwt.WithIssuer(issA), jwt.WithAcceptableSkew(30*time.Second)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyCacheHit(b *testing.B) { benchVerify(b, 10000, "RS256") }

func BenchmarkVerifyCacheHitParallel(b *testing.B) {
	e, _, tok := benchEnv(b, 10000, "RS256")
	ctx := context.Background()
	if _, err := e.v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := e.v.Verify(ctx, tok); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
