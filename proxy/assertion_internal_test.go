package proxy

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks"
)

// assertionKeyFile writes a new PEM key ("ec" or "ed25519") into dir.
func assertionKeyFile(b testing.TB, dir, kind string) string {
	var raw any
	if kind == "ec" {
		raw, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		_, raw, _ = ed25519.GenerateKey(rand.Reader)
	}
	der, err := x509.MarshalPKCS8PrivateKey(raw)
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(dir, kind+".pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		b.Fatal(err)
	}
	return file
}

func benchSigner(b *testing.B, kind string) *assertionSigner {
	k, err := loadAssertionKey(assertionKeyFile(b, b.TempDir(), kind))
	if err != nil {
		b.Fatal(err)
	}
	s, err := newAssertionSigner(&AssertionConfig{Header: defaultAssertionHeader, Issuer: "bench", TTL: time.Minute, key: k}, NewMetrics(""))
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkAssertionSign is one assertion signed (claims JSON, jwx JWS):
// what a request would pay without the per-token memo.
func BenchmarkAssertionSign(b *testing.B) {
	for _, kind := range []string{"ec", "ed25519"} {
		b.Run(kind, func(b *testing.B) {
			s := benchSigner(b, kind)
			res := &jwks.Result{Subject: "user-1"}
			now := time.Now()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.sign(res, "127.0.0.1", "0123456789abcdef-1", now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// What a request pays when its token's assertion is in the memo.
	b.Run("memo-hit", func(b *testing.B) {
		s := benchSigner(b, "ed25519")
		res := &jwks.Result{Subject: "user-1"}
		h := http.Header{}
		now := time.Now()
		if err := s.set(h, res, "127.0.0.1", "id", now); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			_ = s.set(h, res, "127.0.0.1", "id", now)
		}
	})
}
