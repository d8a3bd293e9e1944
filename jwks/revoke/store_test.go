package revoke

import (
	"fmt"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks"
)

func TestStoreKinds(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	now := t0.UnixNano()
	s := NewStore()
	const iss = "https://idp.example"
	s.Apply(
		Entry{Kind: KindJTI, Issuer: iss, Value: "j1", Until: t0.Add(time.Hour)},
		Entry{Kind: KindSub, Issuer: iss, Value: "alice", Before: t0.Unix(), Until: t0.Add(time.Hour)},
		Entry{Kind: KindKid, Issuer: iss, Value: "k1", Until: t0.Add(time.Minute)},
		Entry{Kind: KindJTI, Issuer: "", Value: "anyiss", Until: t0.Add(time.Hour)},
	)
	for _, tc := range []struct {
		name               string
		iss, jti, sub, kid string
		iat                int64
		at                 int64
		want               bool
		kind               Kind
	}{
		{"jti", iss, "j1", "bob", "k9", 1, now, true, KindJTI},
		{"jti other issuer", "https://other", "j1", "bob", "k9", 1, now, false, 0},
		{"jti wildcard issuer", "https://other", "anyiss", "bob", "k9", 1, now, true, KindJTI},
		{"sub issued before", iss, "j2", "alice", "k9", t0.Unix() - 1, now, true, KindSub},
		{"sub issued at before", iss, "j2", "alice", "k9", t0.Unix(), now, false, 0},
		{"sub without iat", iss, "j2", "alice", "k9", 0, now, true, KindSub},
		{"kid", iss, "j2", "bob", "k1", 1, now, true, KindKid},
		{"kid expired", iss, "j2", "bob", "k1", 1, t0.Add(time.Minute).UnixNano(), false, 0},
		{"nothing", iss, "j2", "bob", "k2", 1, now, false, 0},
		{"empty jti", iss, "", "bob", "k2", 1, now, false, 0},
	} {
		k, got := s.Check(tc.iss, tc.jti, tc.sub, tc.kid, tc.iat, tc.at)
		if got != tc.want || (got && k != tc.kind) {
			t.Errorf("%s: Check = %v %v, want %v %v", tc.name, k, got, tc.want, tc.kind)
		}
	}
	if got := s.Len(); got != [3]int{2, 1, 1} {
		t.Errorf("Len %v", got)
	}
	if n := s.Sweep(t0.Add(30 * time.Second)); n != 0 {
		t.Errorf("early sweep dropped %d", n)
	}
	if n := s.Sweep(t0.Add(time.Minute)); n != 1 {
		t.Errorf("sweep at the kid's until dropped %d, want 1", n)
	}
	if got := s.Len(); got != [3]int{2, 1, 0} {
		t.Errorf("Len after sweep %v", got)
	}
	// A later revocation of the same subject moves before forward.
	s.Apply(Entry{Kind: KindSub, Issuer: iss, Value: "alice", Before: t0.Unix() + 60, Until: t0.Add(time.Minute)})
	if _, ok := s.Check(iss, "", "alice", "", t0.Unix()+30, now); !ok {
		t.Error("a later before did not take")
	}
	if !s.NextExpiry().Equal(t0.Add(time.Hour)) {
		t.Errorf("the longer until was not kept: next expiry %v", s.NextExpiry())
	}
}

func fill(n int) *Store {
	s := NewStore()
	t0 := time.Now().Add(time.Hour)
	es := make([]Entry, 0, n)
	for i := range n {
		es = append(es, Entry{Kind: Kind(i % 3), Issuer: "https://idp.example.com/realms/prod", Value: fmt.Sprintf("%08x-1234-4567-89ab-%012x", i, i), Until: t0, Before: time.Now().Unix()})
	}
	s.Apply(es...)
	return s
}

// BenchmarkCheck is the hit path's cost: a token that is not revoked
// against 100,000 entries of every kind (three lookups), and a revoked one.
func BenchmarkCheck(b *testing.B) {
	s := fill(100000)
	now := time.Now().UnixNano()
	iss := "https://idp.example.com/realms/prod"
	res := &jwks.Result{Issuer: iss, JTI: "3f2a9c4e-1234-4567-89ab-0123456789ab", Subject: "user-4711", Kid: "rsa-2026-01", IssuedAt: 1700000000}
	res.IDHash = [3]uint64{jwks.HashString(res.JTI), jwks.HashString(res.Subject), jwks.HashString(res.Kid)}
	b.Run("result", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := s.CheckResult(res, now); ok {
				b.Fatal("revoked")
			}
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := s.Check(iss, "3f2a9c4e-1234-4567-89ab-0123456789ab", "user-4711", "rsa-2026-01", 1700000000, now); ok {
				b.Fatal("revoked")
			}
		}
	})
	b.Run("hit", func(b *testing.B) {
		jti := fmt.Sprintf("%08x-1234-4567-89ab-%012x", 3000, 3000)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := s.Check(iss, jti, "user-4711", "rsa-2026-01", 1700000000, now); !ok {
				b.Fatal("not revoked")
			}
		}
	})
	b.Run("empty", func(b *testing.B) {
		e := NewStore()
		b.ReportAllocs()
		for b.Loop() {
			e.Check(iss, "3f2a9c4e-1234-4567-89ab-0123456789ab", "user-4711", "rsa-2026-01", 1700000000, now)
		}
	})
}
