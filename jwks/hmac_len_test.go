package jwks

import "testing"

// TestHMACKeyLengthEverywhere: an oct key from a JWKS is held to RFC 7518
// 3.2 like a configured secret; a short one fits no HMAC algorithm.
func TestHMACKeyLengthEverywhere(t *testing.T) {
	for _, tt := range []struct {
		n    int
		alg  string
		want bool
	}{
		{16, "HS256", false}, {31, "HS256", false}, {32, "HS256", true},
		{32, "HS384", false}, {48, "HS384", true}, {48, "HS512", false}, {64, "HS512", true},
	} {
		k := &key{kind: kindHMAC, raw: make([]byte, tt.n)}
		if got := k.fits(tt.alg); got != tt.want {
			t.Errorf("%d-byte HMAC key fits(%s) = %v, want %v", tt.n, tt.alg, got, tt.want)
		}
	}
}
