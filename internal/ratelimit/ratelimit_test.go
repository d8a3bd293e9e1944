package ratelimit

import (
	"net/netip"
	"testing"
	"time"
)

var t0 = time.Unix(1_800_000_000, 0)

func at(d time.Duration) time.Time { return t0.Add(d) }

// TestBurstThenRefill: rate 10/s, burst 20: twenty failures fit at once,
// the twenty-first waits exactly one interval (100ms), and each interval
// gives back exactly one token.
func TestBurstThenRefill(t *testing.T) {
	tb := New(10, 20, 8)
	a := netip.MustParseAddr("192.0.2.1")
	for i := range 20 {
		if w := tb.Wait(a, t0); w != 0 {
			t.Fatalf("before failure %d: Wait = %v, want 0", i+1, w)
		}
		tb.Fail(a, t0)
	}
	tests := []struct {
		name string
		now  time.Time
		want time.Duration
	}{
		{"at once", t0, 100 * time.Millisecond},
		{"1ns before the refill", at(100*time.Millisecond - 1), 1},
		{"at the refill", at(100 * time.Millisecond), 0},
	}
	for _, tt := range tests {
		if w := tb.Wait(a, tt.now); w != tt.want {
			t.Errorf("%s: Wait = %v, want %v", tt.name, w, tt.want)
		}
	}
	// One token back after 100ms: one failure fits, then the bucket is
	// empty again until 200ms.
	tb.Fail(a, at(100*time.Millisecond))
	if w := tb.Wait(a, at(100*time.Millisecond)); w != 100*time.Millisecond {
		t.Errorf("after the refilled token is used: Wait = %v, want 100ms", w)
	}
	// After burst/rate = 2s the bucket is full: twenty failures fit again.
	full := at(2100 * time.Millisecond)
	for i := range 20 {
		if w := tb.Wait(a, full); w != 0 {
			t.Fatalf("refilled bucket, failure %d: Wait = %v, want 0", i+1, w)
		}
		tb.Fail(a, full)
	}
	if w := tb.Wait(a, full); w != 100*time.Millisecond {
		t.Errorf("after a second burst: Wait = %v, want 100ms", w)
	}
}

// TestSlowRate: rate 0.5/s is one token every 2s.
func TestSlowRate(t *testing.T) {
	tb := New(0.5, 1, 8)
	a := netip.MustParseAddr("192.0.2.1")
	tb.Fail(a, t0)
	if w := tb.Wait(a, at(500*time.Millisecond)); w != 1500*time.Millisecond {
		t.Errorf("Wait = %v, want 1.5s", w)
	}
}

// TestNeverEmptierThanEmpty: failures past an empty bucket (requests that
// raced past Wait) do not push the refill further out.
func TestNeverEmptierThanEmpty(t *testing.T) {
	tb := New(1, 2, 8)
	a := netip.MustParseAddr("192.0.2.1")
	for range 10 {
		tb.Fail(a, t0)
	}
	if w := tb.Wait(a, t0); w != time.Second {
		t.Errorf("Wait = %v, want 1s", w)
	}
}

// TestUnknownNotAdded: asking about an address never adds it; only a
// failure does.
func TestUnknownNotAdded(t *testing.T) {
	tb := New(1, 1, 8)
	a := netip.MustParseAddr("192.0.2.1")
	if w := tb.Wait(a, t0); w != 0 {
		t.Fatalf("Wait = %v, want 0", w)
	}
	if n := tb.Len(); n != 0 {
		t.Fatalf("Len = %d after a Wait, want 0", n)
	}
	tb.Fail(a, t0)
	if n := tb.Len(); n != 1 {
		t.Fatalf("Len = %d after a Fail, want 1", n)
	}
}

// TestEvictionOrder: the least recently seen address goes first, and a
// Wait counts as seeing it.
func TestEvictionOrder(t *testing.T) {
	tb := New(1, 1, 3)
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}) }
	for i := 1; i <= 3; i++ {
		tb.Fail(addr(i), t0)
	}
	tb.Wait(addr(1), t0) // 1 seen again: 2 is now the oldest
	tb.Fail(addr(4), t0) // evicts 2
	if w := tb.Wait(addr(2), t0); w != 0 {
		t.Errorf("2 should have been evicted, Wait = %v", w)
	}
	for _, i := range []int{1, 3, 4} {
		if w := tb.Wait(addr(i), t0); w != time.Second {
			t.Errorf("%d: Wait = %v, want 1s (still in the table)", i, w)
		}
	}
	// Seen order now: 1, 3, 4 (4 newest). Two newcomers evict 1, then 3.
	tb.Fail(addr(5), t0)
	tb.Fail(addr(6), t0)
	for i, want := range map[int]time.Duration{1: 0, 3: 0, 4: time.Second, 5: time.Second, 6: time.Second} {
		if w := tb.Wait(addr(i), t0); w != want {
			t.Errorf("%d: Wait = %v, want %v", i, w, want)
		}
	}
}

// TestTableBound: however many addresses fail, the table holds size.
func TestTableBound(t *testing.T) {
	tb := New(1, 1, 100)
	for i := range 10_000 {
		tb.Fail(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), t0)
		if n := tb.Len(); n > 100 {
			t.Fatalf("after %d addresses: Len = %d, want at most 100", i+1, n)
		}
	}
	if n, c := tb.Len(), cap(tb.entries); n != 100 || c > 200 {
		t.Errorf("Len = %d (want 100), entries cap = %d", n, c)
	}
}

// TestKey: IPv6 counts by /64, IPv4-mapped as IPv4, zones dropped.
func TestKey(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"},
		{"2001:db8:1:2::ffff", "2001:db8:1:2::"},
		{"fe80::1%eth0", "fe80::"},
	}
	for _, tt := range tests {
		if got := Key(netip.MustParseAddr(tt.in)); got.String() != tt.want {
			t.Errorf("Key(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
	tb := New(1, 1, 8)
	tb.Fail(netip.MustParseAddr("2001:db8::1"), t0)
	if w := tb.Wait(netip.MustParseAddr("2001:db8::dead:beef"), t0); w != time.Second {
		t.Errorf("another address of the same /64: Wait = %v, want 1s", w)
	}
	if w := tb.Wait(netip.MustParseAddr("2001:db8:0:1::1"), t0); w != 0 {
		t.Errorf("another /64: Wait = %v, want 0", w)
	}
}
