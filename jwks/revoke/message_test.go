package revoke

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"
)

func ev(data string) []byte {
	return []byte(`{"specversion":"1.0","type":"gatehouse.revocation","source":"s","id":"i","time":"2026-12-06T10:00:00Z","data":` + data + `}`)
}

func TestParseHostile(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		body []byte
		want *Entry
	}{
		{"jti", ev(`{"kind":"jti","issuer":"iss","value":"j","reason":"r"}`), &Entry{Kind: KindJTI, Issuer: "iss", Value: "j", Until: t0.Add(time.Hour)}},
		{"sub defaults before to time", ev(`{"kind":"sub","value":"alice","reason":"r"}`), &Entry{Kind: KindSub, Value: "alice", Before: t0.Unix(), Until: t0.Add(time.Hour)}},
		{"sub before and until", ev(`{"kind":"sub","value":"alice","reason":"r","before":"2026-12-06T09:00:00Z","until":"2026-12-07T00:00:00Z"}`),
			&Entry{Kind: KindSub, Value: "alice", Before: t0.Add(-time.Hour).Unix(), Until: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)}},
		{"unknown kind", ev(`{"kind":"all","value":"x","reason":"r"}`), nil},
		{"unknown data field", ev(`{"kind":"jti","value":"x","reason":"r","scope":"*"}`), nil},
		{"before on jti", ev(`{"kind":"jti","value":"x","reason":"r","before":"2026-12-06T09:00:00Z"}`), nil},
		{"empty value", ev(`{"kind":"jti","value":"","reason":"r"}`), nil},
		{"value too long", ev(`{"kind":"jti","value":"` + strings.Repeat("x", 2000) + `","reason":"r"}`), nil},
		{"data not an object", ev(`"jti"`), nil},
		{"data array", ev(`[{"kind":"jti","value":"x"}]`), nil},
		{"bad until", ev(`{"kind":"jti","value":"x","reason":"r","until":"tomorrow"}`), nil},
		{"wrong type", []byte(`{"specversion":"1.0","type":"gatehouse.auth.allow","source":"s","id":"i","time":"2026-12-06T10:00:00Z","data":{"kind":"jti","value":"x"}}`), nil},
		{"wrong specversion", []byte(`{"specversion":"0.3","type":"gatehouse.revocation","source":"s","id":"i","time":"2026-12-06T10:00:00Z","data":{"kind":"jti","value":"x"}}`), nil},
		{"no time", []byte(`{"specversion":"1.0","type":"gatehouse.revocation","source":"s","id":"i","data":{"kind":"jti","value":"x"}}`), nil},
		{"trailing data", append(ev(`{"kind":"jti","value":"x","reason":"r"}`), []byte(` {}`)...), nil},
		{"not JSON", []byte("\x00\xff revoke everything"), nil},
		{"too large", append(ev(`{"kind":"jti","value":"x","reason":"r"}`), make([]byte, MaxMessageBytes)...), nil},
		{"invalid UTF-8", ev("{\"kind\":\"jti\",\"value\":\"x\xff\",\"reason\":\"r\"}"), nil},
	} {
		e, _, err := parse(tc.body, time.Hour)
		switch {
		case tc.want == nil && err == nil:
			t.Errorf("%s: accepted: %+v", tc.name, e)
		case tc.want != nil && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != nil && (e.Kind != tc.want.Kind || e.Issuer != tc.want.Issuer || e.Value != tc.want.Value ||
			e.Before != tc.want.Before || !e.Until.Equal(tc.want.Until)):
			t.Errorf("%s: got %+v, want %+v", tc.name, e, *tc.want)
		}
	}
}

// TestExpiryOnInjectedClock: a message past its until is counted expired
// and not applied; an entry in force is forgotten once the clock passes
// its until.
func TestExpiryOnInjectedClock(t *testing.T) {
	clock := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	m := NewMetrics(nil)
	f := &Feed{cfg: Config{MaxAge: time.Hour}, store: NewStore(), m: m, now: func() time.Time { return clock }, lastOffset: -1}
	f.log = testLogger(t)
	old := amqp.Delivery{Body: ev(`{"kind":"jti","value":"old","reason":"r"}`), Headers: amqp.Table{"x-stream-offset": int64(0)}}
	if _, ok, _ := f.handle(&old); ok {
		t.Error("a revocation past its until (time 10:00 + max_age 1h, now 12:00) was applied")
	}
	fresh := amqp.Delivery{Body: ev(`{"kind":"jti","value":"fresh","reason":"r","until":"2026-12-06T13:00:00Z"}`), Headers: amqp.Table{"x-stream-offset": int64(1)}}
	e, ok, _ := f.handle(&fresh)
	if !ok {
		t.Fatal("a revocation in force was not applied")
	}
	f.store.Apply(e)
	if got := testutil.ToFloat64(m.messages.WithLabelValues("expired")); got != 1 {
		t.Errorf("expired = %v, want 1", got)
	}
	if _, ok := f.store.Check("", "fresh", "", "", 0, clock.UnixNano()); !ok {
		t.Error("not revoked while in force")
	}
	clock = clock.Add(time.Hour)
	if _, ok := f.store.Check("", "fresh", "", "", 0, clock.UnixNano()); ok {
		t.Error("still revoked at its until")
	}
	f.sweep()
	if f.store.Len() != [3]int{} {
		t.Errorf("sweep kept %v", f.store.Len())
	}
	// The same offset again (a chunk re-delivered after a reconnect) is skipped.
	if _, ok, _ := f.handle(&fresh); ok {
		t.Error("a re-delivered offset was applied again")
	}
}
