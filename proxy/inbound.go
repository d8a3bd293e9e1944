package proxy

import (
	"sync"

	"github.com/gatehouse/gatehouse/jwks"
)

// maxInbound bounds the inbound table: requests in flight plus those in
// their inbound_grace. When it is full the oldest ended entry goes first
// (its grace is cut short); when every entry is still in flight, a new
// request is not registered and its egress calls get no_inbound_token.
const maxInbound = 65536

// traceID is the trace id of a W3C traceparent (16 bytes).
type traceID [16]byte

// inboundTable holds the tokens verified for inbound requests while they
// are in flight and for inbound_grace after (SPEC.md 11, propagate). It is
// keyed by the request's X-Request-Id and by the trace id of its
// traceparent: both come from the client, so a key carried by two entries
// at once is ambiguous and finds nothing (a client that reuses another
// request's id must not get that request's token, nor give it its own).
//
// It is the process's, not a handler's: an egress call may reach the
// handler of a reload while its inbound request is still on the previous.
type inboundTable struct {
	now func() int64 // unix nanoseconds

	mu      sync.RWMutex
	entries []inboundEntry
	free    []int32 // slots not in use
	byID    map[string]keySlot
	byTrace map[traceID]keySlot
	// tokens shares one copy of a token among the entries of the same
	// verified result (the verifier's cache gives one *jwks.Result per
	// token; two tokens never share one): each entry would otherwise keep
	// its own request's Authorization value alive for the grace, ~1 KB per
	// request of a popular token.
	tokens map[*jwks.Result]sharedToken
	// ended is a FIFO of ended entries, in the order they ended: with one
	// grace for all, also the order in which they expire.
	ended       []int32
	head, count int
}

type inboundEntry struct {
	id       string
	trace    traceID
	hasTrace bool
	token    string
	res      *jwks.Result
	endAt    int64 // 0: in flight; else when the grace ends (unix ns)
}

type sharedToken struct {
	token string
	n     int32 // entries holding it
}

// keySlot is what a key maps to: the entry, while exactly one carries it.
type keySlot struct {
	slot int32
	n    int32 // entries carrying the key; >1: ambiguous
}

func newInboundTable(now func() int64) *inboundTable {
	return &inboundTable{
		now:     now,
		byID:    make(map[string]keySlot, 1024),
		byTrace: make(map[traceID]keySlot, 1024),
		tokens:  make(map[*jwks.Result]sharedToken, 1024),
		ended:   make([]int32, maxInbound),
	}
}

// begin registers the verified token of an inbound request before it is
// forwarded, and returns the slot to end, or -1 when nothing was
// registered (the table is full of requests in flight).
func (t *inboundTable) begin(id string, traceparent []string, token string, res *jwks.Result) int32 {
	tr, hasTrace := parseTraceparent(traceparent)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	var slot int32
	switch {
	case len(t.free) > 0:
		slot = t.free[len(t.free)-1]
		t.free = t.free[:len(t.free)-1]
	case len(t.entries) < maxInbound:
		t.entries = append(t.entries, inboundEntry{})
		slot = int32(len(t.entries) - 1)
	case t.count > 0:
		slot = t.ended[t.head]
		t.pop()
		t.remove(slot)
	default:
		return -1
	}
	if st, ok := t.tokens[res]; ok {
		token = st.token
		t.tokens[res] = sharedToken{token: st.token, n: st.n + 1}
	} else {
		t.tokens[res] = sharedToken{token: token, n: 1}
	}
	t.entries[slot] = inboundEntry{id: id, trace: tr, hasTrace: hasTrace, token: token, res: res}
	addKey(t.byID, id, slot)
	if hasTrace {
		addKey(t.byTrace, tr, slot)
	}
	return slot
}

// end marks the request of slot ended: its token stays available for grace.
func (t *inboundTable) end(slot int32, grace int64) {
	if slot < 0 {
		return
	}
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.entries[slot].endAt = now + grace
	if grace <= 0 {
		t.entries[slot].endAt = now
	}
	t.ended[(t.head+t.count)%maxInbound] = slot
	t.count++
	t.sweep(now)
}

// lookup finds the token of the inbound request that carried request id
// id, or else (id unknown) a traceparent of trace tr. ok is false when
// neither names exactly one request in flight or in its grace, or when
// its token has expired.
func (t *inboundTable) lookup(id string, tr traceID, hasTrace bool) (token string, res *jwks.Result, ok bool) {
	now := t.now()
	t.mu.RLock()
	defer t.mu.RUnlock()
	ks, found := t.byID[id]
	if !found && hasTrace {
		ks, found = t.byTrace[tr]
	}
	if !found || ks.n != 1 || ks.slot < 0 {
		return "", nil, false
	}
	e := &t.entries[ks.slot]
	if e.endAt != 0 && now >= e.endAt || now >= e.res.Expiry.UnixNano() {
		return "", nil, false
	}
	return e.token, e.res, true
}

// sweep frees the entries whose grace is over.
func (t *inboundTable) sweep(now int64) {
	for t.count > 0 {
		slot := t.ended[t.head]
		if t.entries[slot].endAt > now {
			return
		}
		t.pop()
		t.remove(slot)
		t.free = append(t.free, slot)
	}
}

func (t *inboundTable) pop() {
	t.head = (t.head + 1) % maxInbound
	t.count--
}

// remove takes slot's keys out of the maps and forgets its token.
func (t *inboundTable) remove(slot int32) {
	e := &t.entries[slot]
	dropKey(t.byID, e.id)
	if e.hasTrace {
		dropKey(t.byTrace, e.trace)
	}
	if st := t.tokens[e.res]; st.n <= 1 {
		delete(t.tokens, e.res)
	} else {
		t.tokens[e.res] = sharedToken{token: st.token, n: st.n - 1}
	}
	*e = inboundEntry{}
}

func addKey[K comparable](m map[K]keySlot, k K, slot int32) {
	ks, found := m[k]
	if found {
		m[k] = keySlot{slot: -1, n: ks.n + 1}
		return
	}
	m[k] = keySlot{slot: slot, n: 1}
}

// dropKey forgets one carrier of k. A key that was ambiguous stays so
// until its last carrier is gone: which one is left is not known, and
// failing closed is the safe answer.
func dropKey[K comparable](m map[K]keySlot, k K) {
	ks := m[k]
	if ks.n <= 1 {
		delete(m, k)
		return
	}
	m[k] = keySlot{slot: -1, n: ks.n - 1}
}

// len is the number of registered entries (tests).
func (t *inboundTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.entries) - len(t.free)
}

// parseTraceparent reads the trace id of a W3C traceparent (Trace Context
// Level 1, section 3.2): version 00 exactly as specified, a later version
// by its first four fields. Anything else, an all-zero trace id, or the
// header given twice, is no trace.
func parseTraceparent(v []string) (traceID, bool) {
	var tr traceID
	if len(v) != 1 {
		return tr, false
	}
	s := v[0]
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' {
		return tr, false
	}
	ver, ok := hexByte(s[0], s[1])
	if !ok || ver == 0xff || ver == 0 && len(s) != 55 || ver != 0 && len(s) > 55 && s[55] != '-' {
		return tr, false
	}
	nonzero := false
	for i := range tr {
		b, ok := hexByte(s[3+2*i], s[4+2*i])
		if !ok {
			return tr, false
		}
		tr[i] = b
		nonzero = nonzero || b != 0
	}
	for i := 36; i < 52; i++ {
		if _, ok := hexByte(s[i], '0'); !ok {
			return tr, false
		}
	}
	if _, ok := hexByte(s[53], s[54]); !ok || !nonzero {
		return tr, false
	}
	return tr, true
}

// hexByte decodes two lower-case hex digits (W3C trace context allows no
// upper case).
func hexByte(a, b byte) (byte, bool) {
	x, ok1 := hexNibble(a)
	y, ok2 := hexNibble(b)
	return x<<4 | y, ok1 && ok2
}

func hexNibble(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
