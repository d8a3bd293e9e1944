// Package ratelimit owns the failed-auth throttle's state (SPEC.md 12,
// limits.failed_auth): a fixed-size table of token buckets keyed by client
// address, the least recently seen address evicted when it is full. It
// knows nothing of HTTP: the caller says which address failed and when, and
// asks how long an address must wait. Time is always passed in (never read
// here), so the arithmetic is a function of (state, now) that tests drive
// with any clock.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"
)

// Table is a set of token buckets, one per client address, holding at most
// size addresses. Only failures take tokens, and an address enters the
// table only by failing: a client that never fails is never in it, and
// checking it is one map lookup.
//
// Each bucket is kept as one number, its theoretical arrival time (the
// generic cell rate algorithm, RFC 2697's token bucket in another form):
// tat is when the bucket would be full again. A failure moves tat one
// interval later; the bucket is empty when tat is burst intervals ahead of
// now. Integer nanoseconds keep the refill exact.
//
// One mutex guards the table: every operation is a map lookup and a few
// pointer moves, far below the cost of a request (see
// BenchmarkFailedAuthCheck in proxy), and clients that never fail take the
// lock only for the lookup.
type Table struct {
	interval  int64 // nanoseconds per token: 1s / rate
	tolerance int64 // (burst-1) intervals: how far ahead tat may be for one more failure to fit

	mu      sync.Mutex
	index   map[netip.Addr]int32
	entries []entry // len grows to size, then slots are reused
	size    int
	head    int32 // most recently seen, -1 when empty
	tail    int32 // least recently seen, evicted first
}

type entry struct {
	addr       netip.Addr
	tat        int64 // unix nanoseconds when the bucket is full again
	prev, next int32 // towards head, towards tail; -1 at the ends
}

// New returns a table whose buckets refill rate tokens per second and hold
// burst tokens, for at most size addresses. rate must be > 0 and at most
// 1e9, burst and size at least 1 (the config decoder checks this).
func New(rate float64, burst, size int) *Table {
	interval := int64(float64(time.Second)/rate + 0.5)
	if interval < 1 {
		interval = 1
	}
	return &Table{
		interval:  interval,
		tolerance: int64(burst-1) * interval,
		index:     make(map[netip.Addr]int32),
		size:      size,
		head:      -1,
		tail:      -1,
	}
}

// Key is the address a client is counted under: IPv4 (and IPv4-mapped
// IPv6) addresses as they are, without a zone; IPv6 addresses by their /64,
// the smallest block one subscriber is usually given, so that one host
// cycling through the addresses of its own /64 is still one client and
// cannot flush everyone else out of the table.
func Key(a netip.Addr) netip.Addr {
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, err := a.Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return a
}

// Wait is how long addr must wait before a failure of it would fit in its
// bucket again: 0 when it may fail now (it is not throttled). Asking counts
// as seeing addr, for the eviction order.
func (t *Table) Wait(addr netip.Addr, now time.Time) time.Duration {
	addr = Key(addr)
	t.mu.Lock()
	i, ok := t.index[addr]
	if !ok {
		t.mu.Unlock()
		return 0
	}
	wait := t.entries[i].tat - now.UnixNano() - t.tolerance
	t.toFront(i)
	t.mu.Unlock()
	if wait <= 0 {
		return 0
	}
	return time.Duration(wait)
}

// Fail takes one token from addr's bucket, adding addr to the table (and
// evicting the least recently seen address when it is full).
func (t *Table) Fail(addr netip.Addr, now time.Time) {
	addr = Key(addr)
	n := now.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	if i, ok := t.index[addr]; ok {
		e := &t.entries[i]
		// A bucket is never emptier than empty: failures that raced past
		// Wait together do not push the refill further out.
		e.tat = min(max(e.tat, n)+t.interval, n+t.tolerance+t.interval)
		t.toFront(i)
		return
	}
	var i int32
	if len(t.entries) < t.size {
		i = int32(len(t.entries))
		t.entries = append(t.entries, entry{prev: -1, next: -1})
	} else {
		i = t.tail
		t.unlink(i)
		delete(t.index, t.entries[i].addr)
	}
	t.entries[i] = entry{addr: addr, tat: n + t.interval, prev: -1, next: -1}
	t.index[addr] = i
	t.pushFront(i)
}

// Len is the number of addresses in the table.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.index)
}

func (t *Table) toFront(i int32) {
	if t.head == i {
		return
	}
	t.unlink(i)
	t.pushFront(i)
}

func (t *Table) unlink(i int32) {
	e := &t.entries[i]
	if e.prev >= 0 {
		t.entries[e.prev].next = e.next
	} else {
		t.head = e.next
	}
	if e.next >= 0 {
		t.entries[e.next].prev = e.prev
	} else {
		t.tail = e.prev
	}
	e.prev, e.next = -1, -1
}

func (t *Table) pushFront(i int32) {
	e := &t.entries[i]
	e.prev, e.next = -1, t.head
	if t.head >= 0 {
		t.entries[t.head].prev = i
	}
	t.head = i
	if t.tail < 0 {
		t.tail = i
	}
}
