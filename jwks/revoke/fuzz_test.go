package revoke

import (
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParse: a revocation message comes off the broker, written by anyone
// who can publish to the stream. Whatever the bytes, parse never panics,
// and what it accepts is an entry the store can hold: a known kind, a
// non-empty value, bounded valid UTF-8 strings, and a time to forget it.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"kind":"jti","issuer":"iss","value":"j","reason":"r"}`,
		`{"kind":"sub","value":"alice","reason":"r","before":"2026-12-06T09:00:00Z","until":"2026-12-07T00:00:00Z"}`,
		`{"kind":"kid","issuer":"https://i","value":"k1","reason":"leak"}`,
		`{"kind":"all","value":"x"}`,
		`[]`,
	} {
		f.Add(ev(s))
	}
	f.Add([]byte(`{"specversion":"1.0","type":"gatehouse.revocation.sync","source":"s","id":"i","time":"2026-12-06T10:00:00Z"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		e, _, err := parse(body, time.Hour)
		if err != nil {
			return
		}
		if e.Kind >= numKinds {
			t.Fatalf("accepted kind %d", e.Kind)
		}
		if e.Value == "" || !utf8.ValidString(e.Value) || !utf8.ValidString(e.Issuer) {
			t.Fatalf("accepted value %q issuer %q", e.Value, e.Issuer)
		}
		if len(e.Value) > MaxMessageBytes || len(e.Issuer) > MaxMessageBytes {
			t.Fatalf("accepted a value of %d bytes", len(e.Value))
		}
		if e.Until.IsZero() {
			t.Fatal("accepted an entry with no time to forget it")
		}
	})
}
