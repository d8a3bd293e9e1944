package proxy

import (
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/gatehouse/gatehouse/jwks"
)

type fakeClock struct{ t int64 }

func (c *fakeClock) now() int64              { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t += int64(d) }

func liveResult(c *fakeClock) *jwks.Result {
	return &jwks.Result{Subject: "alice", Expiry: time.Unix(0, c.t).Add(time.Hour)}
}

const tp1 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func TestInboundGrace(t *testing.T) {
	c := &fakeClock{t: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC).UnixNano()}
	tab := newInboundTable(c.now)
	res := liveResult(c)
	slot := tab.begin("req-1", []string{tp1}, "tok-1", res)
	tr, _ := parseTraceparent([]string{tp1})

	if tok, _, ok := tab.lookup("req-1", traceID{}, false); !ok || tok != "tok-1" {
		t.Fatalf("in flight, by id: lookup = %q %v, want tok-1", tok, ok)
	}
	if tok, _, ok := tab.lookup("", tr, true); !ok || tok != "tok-1" {
		t.Fatalf("in flight, by trace: lookup = %q %v, want tok-1", tok, ok)
	}
	c.advance(time.Hour / 2) // a long request is still in flight
	if _, _, ok := tab.lookup("req-1", traceID{}, false); !ok {
		t.Fatal("a request in flight lost its token")
	}
	tab.end(slot, int64(5*time.Second))
	c.advance(5*time.Second - 1)
	if _, _, ok := tab.lookup("req-1", traceID{}, false); !ok {
		t.Fatal("token gone before inbound_grace ended")
	}
	c.advance(1)
	if _, _, ok := tab.lookup("req-1", traceID{}, false); ok {
		t.Fatal("token still there when inbound_grace ended")
	}
	if _, _, ok := tab.lookup("", tr, true); ok {
		t.Fatal("token still there by trace when inbound_grace ended")
	}
	// The next registration sweeps it out.
	tab.end(tab.begin("req-2", nil, "tok-2", liveResult(c)), 0)
	if n := tab.len(); n != 0 {
		t.Errorf("len = %d after both ended and grace passed, want 0", n)
	}
}

// TestInboundExpiry: a token is never propagated past its exp, even while
// its request is in flight.
func TestInboundExpiry(t *testing.T) {
	c := &fakeClock{t: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC).UnixNano()}
	tab := newInboundTable(c.now)
	res := &jwks.Result{Expiry: time.Unix(0, c.t).Add(time.Minute)}
	tab.begin("req-1", nil, "tok", res)
	c.advance(time.Minute)
	if _, _, ok := tab.lookup("req-1", traceID{}, false); ok {
		t.Fatal("an expired token was found")
	}
}

// TestInboundAmbiguous: an id or trace carried by two requests at once
// (a client reusing another request's id) finds neither, until both ended.
func TestInboundAmbiguous(t *testing.T) {
	c := &fakeClock{t: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC).UnixNano()}
	tab := newInboundTable(c.now)
	tr, _ := parseTraceparent([]string{tp1})
	a := tab.begin("same", []string{tp1}, "victim", liveResult(c))
	b := tab.begin("same", []string{tp1}, "attacker", liveResult(c))
	if tok, _, ok := tab.lookup("same", traceID{}, false); ok {
		t.Fatalf("ambiguous id found %q", tok)
	}
	if tok, _, ok := tab.lookup("", tr, true); ok {
		t.Fatalf("ambiguous trace found %q", tok)
	}
	tab.end(b, 0)
	c.advance(1)
	tab.end(tab.begin("x", nil, "x", liveResult(c)), 0) // sweeps b
	if tok, _, ok := tab.lookup("same", traceID{}, false); ok {
		t.Fatalf("after one of two carriers ended, the id found %q: which one is left is not known", tok)
	}
	tab.end(a, 0)
	c.advance(1)
	tab.end(tab.begin("y", nil, "y", liveResult(c)), 0)
	tab.begin("same", nil, "fresh", liveResult(c))
	if tok, _, ok := tab.lookup("same", traceID{}, false); !ok || tok != "fresh" {
		t.Fatalf("after both ended, a new carrier: lookup = %q %v, want fresh", tok, ok)
	}
}

// TestInboundBound: the table never holds more than maxInbound entries; a
// full table drops the oldest ended entry first, and registers nothing when
// every entry is in flight.
func TestInboundBound(t *testing.T) {
	c := &fakeClock{t: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC).UnixNano()}
	tab := newInboundTable(c.now)
	res := liveResult(c)
	ids := make([]string, maxInbound+1)
	for i := range ids {
		ids[i] = "r" + strconv.Itoa(i)
	}
	// One token per result, as the verifier guarantees.
	first := tab.begin(ids[0], nil, "t0", liveResult(c))
	tab.end(first, int64(time.Hour)) // ended, in its grace
	for i := 1; i < maxInbound; i++ {
		if tab.begin(ids[i], nil, "t", res) < 0 {
			t.Fatalf("begin %d refused below the bound", i)
		}
	}
	if n := tab.len(); n != maxInbound {
		t.Fatalf("len = %d, want %d", n, maxInbound)
	}
	if s := tab.begin(ids[maxInbound], nil, "new", liveResult(c)); s < 0 {
		t.Fatal("a full table with an ended entry refused a new one")
	}
	if _, _, ok := tab.lookup(ids[0], traceID{}, false); ok {
		t.Error("the oldest ended entry was not the one dropped")
	}
	if tok, _, ok := tab.lookup(ids[maxInbound], traceID{}, false); !ok || tok != "new" {
		t.Errorf("new entry: %q %v", tok, ok)
	}
	if s := tab.begin("one-more", nil, "x", liveResult(c)); s != -1 {
		t.Errorf("a table full of requests in flight registered one more (slot %d)", s)
	}
	if n := tab.len(); n != maxInbound {
		t.Errorf("len = %d, want the bound %d", n, maxInbound)
	}
	tab.end(-1, 0) // an unregistered request ends without effect
}

func TestParseTraceparent(t *testing.T) {
	for _, tt := range []struct {
		name string
		v    []string
		ok   bool
	}{
		{"version 00", []string{tp1}, true},
		{"later version with more fields", []string{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz"}, true},
		{"version 00 with more fields", []string{tp1 + "-xyz"}, false},
		{"version ff", []string{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, false},
		{"upper case", []string{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"}, false},
		{"all-zero trace id", []string{"00-00000000000000000000000000000000-00f067aa0ba902b7-01"}, false},
		{"short", []string{"00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01"}, false},
		{"bad span", []string{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01"}, false},
		{"twice", []string{tp1, tp1}, false},
		{"absent", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tr, ok := parseTraceparent(tt.v)
			if ok != tt.ok {
				t.Fatalf("parseTraceparent(%q) ok = %v, want %v", tt.v, ok, tt.ok)
			}
			if ok && tr[0] != 0x4b {
				t.Errorf("trace id = %x", tr)
			}
		})
	}
}

func BenchmarkInboundLookup(b *testing.B) {
	c := &fakeClock{t: time.Now().UnixNano()}
	tab := newInboundTable(c.now)
	tab.begin("req-1", []string{tp1}, "tok", liveResult(c))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := tab.lookup("req-1", traceID{}, false); !ok {
			b.Fatal("not found")
		}
	}
}

// BenchmarkInboundBeginEnd is what the main listener adds per allowed
// request when egress is on: register, then end with a grace of 0.
func BenchmarkInboundBeginEnd(b *testing.B) {
	c := &fakeClock{t: time.Now().UnixNano()}
	tab := newInboundTable(c.now)
	res := liveResult(c)
	tp := []string{tp1}
	b.ReportAllocs()
	for b.Loop() {
		tab.end(tab.begin("req-1", tp, "tok", res), 0)
		c.t++
	}
}

// TestInboundSharesToken: entries of the same verified result share one
// copy of the token, and the share is forgotten with its last entry.
func TestInboundSharesToken(t *testing.T) {
	c := &fakeClock{t: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC).UnixNano()}
	tab := newInboundTable(c.now)
	res := liveResult(c)
	first := strings.Clone("the-token")
	second := strings.Clone("the-token")
	a := tab.begin("a", nil, first, res)
	b := tab.begin("b", nil, second, res)
	if tab.entries[b].token != first || unsafe.StringData(tab.entries[b].token) != unsafe.StringData(first) {
		t.Error("the second entry of the same result keeps its own copy of the token")
	}
	tab.end(a, 0)
	tab.end(b, 0)
	if len(tab.tokens) != 0 {
		t.Errorf("tokens = %d after every entry ended, want 0", len(tab.tokens))
	}
	other := &jwks.Result{Expiry: res.Expiry}
	tab.begin("c", nil, "other-token", other)
	if tok, _, ok := tab.lookup("c", traceID{}, false); !ok || tok != "other-token" {
		t.Errorf("another result: %q %v", tok, ok)
	}
}
