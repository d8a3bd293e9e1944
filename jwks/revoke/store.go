package revoke

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/jwks"
)

// Kind is what a revocation names.
type Kind uint8

// The kinds of SPEC.md 12.
const (
	KindJTI Kind = iota // one token
	KindSub             // a subject's tokens issued before a time
	KindKid             // every token signed with a key
	numKinds
)

var kindNames = [numKinds]string{"jti", "sub", "kid"}

func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return "unknown"
}

func parseKind(s string) (Kind, bool) {
	for i, n := range kindNames {
		if n == s {
			return Kind(i), true
		}
	}
	return 0, false
}

// Entry is one revocation in force.
type Entry struct {
	Kind   Kind
	Issuer string // "" revokes for every issuer
	Value  string // the jti, subject or kid
	// Before applies to KindSub: tokens whose iat (Unix seconds) is before
	// it are revoked; a token without iat is revoked too, since nothing
	// says it was issued after.
	Before int64
	Until  time.Time // forgotten after this
}

type key struct{ iss, val string }

type rec struct {
	before int64 // KindSub only
	until  int64 // Unix nanoseconds
}

// snapshot is immutable once published.
type snapshot struct {
	// filter is a two-probe Bloom filter over (kind, value), at least 16
	// bits per entry: a token that is not revoked (nearly every one) costs
	// three short hashes and a few cache lines that stay warm, rather than
	// three lookups in maps of 100,000 entries, which miss the cache.
	filter []uint64
	mask   uint64
	m      [numKinds]map[key]rec
	wild   [numKinds]int // entries with Issuer "" per kind
	next   int64         // earliest until, Unix nanoseconds; 0 when empty
}

// Store holds the revocations in force. The zero value is not usable; use
// NewStore.
type Store struct {
	cur atomic.Pointer[snapshot]

	mu      sync.Mutex
	issuers map[string]string // interned issuer strings
}

// NewStore returns an empty store.
func NewStore() *Store {
	s := &Store{}
	s.cur.Store(&snapshot{})
	return s
}

// CheckResult reports whether a verified token is revoked at now (Unix
// nanoseconds), and by which kind. It takes no lock and does not allocate.
func (s *Store) CheckResult(r *jwks.Result, now int64) (Kind, bool) {
	return s.check(r.Issuer, r.JTI, r.Subject, r.Kid, r.IssuedAt, &r.IDHash, now)
}

// Check is CheckResult on loose fields.
func (s *Store) Check(iss, jti, sub, kid string, iat, now int64) (Kind, bool) {
	var h [3]uint64
	return s.check(iss, jti, sub, kid, iat, &h, now)
}

func (s *Store) check(iss, jti, sub, kid string, iat int64, h *[3]uint64, now int64) (Kind, bool) {
	sn := s.cur.Load()
	if m := sn.m[KindJTI]; len(m) > 0 && jti != "" && sn.maybe(KindJTI, jti, h[0]) {
		if hit(m, sn.wild[KindJTI] > 0, iss, jti, now) {
			return KindJTI, true
		}
	}
	if m := sn.m[KindKid]; len(m) > 0 && kid != "" && sn.maybe(KindKid, kid, h[2]) {
		if hit(m, sn.wild[KindKid] > 0, iss, kid, now) {
			return KindKid, true
		}
	}
	if m := sn.m[KindSub]; len(m) > 0 && sub != "" && sn.maybe(KindSub, sub, h[1]) {
		if r, ok := m[key{iss, sub}]; ok && r.until > now && (iat == 0 || iat < r.before) {
			return KindSub, true
		}
		if sn.wild[KindSub] > 0 {
			if r, ok := m[key{"", sub}]; ok && r.until > now && (iat == 0 || iat < r.before) {
				return KindSub, true
			}
		}
	}
	return 0, false
}

// probe picks one word of the filter and two bits in it: one cache line
// per kind checked.
// h is jwks.HashString(v), or 0 when the caller has not computed it.
func probe(k Kind, v string, h, mask uint64) (uint64, uint64) {
	if h == 0 {
		h = jwks.HashString(v)
	}
	h ^= (uint64(k) + 1) * 0x9e3779b97f4a7c15
	return h & mask, 1<<(h>>58) | 1<<((h>>52)&63)
}

func (sn *snapshot) maybe(k Kind, v string, h uint64) bool {
	w, m := probe(k, v, h, sn.mask)
	return sn.filter[w]&m == m
}

func (sn *snapshot) set(k Kind, v string) {
	w, m := probe(k, v, 0, sn.mask)
	sn.filter[w] |= m
}

func hit(m map[key]rec, wild bool, iss, val string, now int64) bool {
	if r, ok := m[key{iss, val}]; ok && r.until > now {
		return true
	}
	if wild {
		if r, ok := m[key{"", val}]; ok && r.until > now {
			return true
		}
	}
	return false
}

// Apply adds entries, already known to be valid, in one new snapshot. A
// second revocation of the same thing keeps the later until and, for a
// subject, the later before (it revokes more). The maps of the kinds
// touched are cloned (a copy, not a rebuild); the others are shared with
// the previous snapshot.
func (s *Store) Apply(entries ...Entry) {
	if len(entries) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	sn := &snapshot{m: old.m, wild: old.wild, next: old.next}
	var cloned [numKinds]bool
	for _, e := range entries {
		k := e.Kind
		if !cloned[k] {
			sn.m[k] = make(map[key]rec, len(old.m[k])+len(entries))
			maps.Copy(sn.m[k], old.m[k])
			cloned[k] = true
		}
		kk := key{s.intern(e.Issuer), e.Value}
		r := rec{before: e.Before, until: e.Until.UnixNano()}
		if o, ok := sn.m[k][kk]; ok {
			r.until = max(r.until, o.until)
			r.before = max(r.before, o.before)
		} else if kk.iss == "" {
			sn.wild[k]++
		}
		sn.m[k][kk] = r
		if sn.next == 0 || r.until < sn.next {
			sn.next = r.until
		}
	}
	s.finish(sn, old, entries)
}

// intern shares one copy of each issuer string among the entries: 100,000
// revocations name a handful of issuers. Called with mu held; bounded
// because a message's issuer is at most 1 KiB and issuers are few, and
// forgotten when no entry uses them (finish).
func (s *Store) intern(iss string) string {
	if v, ok := s.issuers[iss]; ok {
		return v
	}
	if s.issuers == nil {
		s.issuers = map[string]string{}
	}
	s.issuers[iss] = iss
	return iss
}

// finish sizes the filter, fills it and publishes sn. Adding to a filter
// of the same size copies the old one and sets the new bits; otherwise (a
// sweep, a growth) it is rebuilt from the maps.
func (s *Store) finish(sn, old *snapshot, added []Entry) {
	n := 0
	for _, m := range sn.m {
		n += len(m)
	}
	nbits := uint64(4096)
	for nbits < 16*uint64(n) {
		nbits <<= 1
	}
	sn.mask = nbits/64 - 1
	if added != nil && old.filter != nil && old.mask == sn.mask {
		sn.filter = slices.Clone(old.filter)
		for _, e := range added {
			sn.set(e.Kind, e.Value)
		}
	} else {
		sn.filter = make([]uint64, nbits/64)
		for k, m := range sn.m {
			for kk := range m {
				sn.set(Kind(k), kk.val)
			}
		}
	}
	s.cur.Store(sn)
}

// Sweep forgets the entries whose until is at or before now and reports
// how many it dropped. Check already ignores them; this frees the memory.
func (s *Store) Sweep(now time.Time) int {
	if next := s.cur.Load().next; next == 0 || next > now.UnixNano() {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.cur.Load()
	sn := &snapshot{}
	t := now.UnixNano()
	n := 0
	used := map[string]bool{}
	for k, m := range old.m {
		if len(m) == 0 {
			continue
		}
		nm := make(map[key]rec, len(m))
		for kk, r := range m {
			if r.until <= t {
				n++
				continue
			}
			nm[kk] = r
			used[kk.iss] = true
			if kk.iss == "" {
				sn.wild[k]++
			}
			if sn.next == 0 || r.until < sn.next {
				sn.next = r.until
			}
		}
		sn.m[k] = nm
	}
	for iss := range s.issuers {
		if !used[iss] {
			delete(s.issuers, iss)
		}
	}
	s.finish(sn, old, nil)
	return n
}

// NextExpiry is the earliest until in force (zero when empty), so the
// owner can sweep then.
func (s *Store) NextExpiry() time.Time {
	if n := s.cur.Load().next; n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// Len returns the number of entries of each kind.
func (s *Store) Len() [3]int {
	sn := s.cur.Load()
	return [3]int{len(sn.m[KindJTI]), len(sn.m[KindSub]), len(sn.m[KindKid])}
}
