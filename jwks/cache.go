package jwks

import (
	"crypto/sha256"
	"sync"
)

const cacheShards = 16

// tokenCache remembers verified tokens by the SHA-256 of the whole token, so
// two different tokens never share an entry and no token is kept. It is
// bounded: the capacities of the shards add up to size exactly (each holds
// size/16, the first size%16 one more; a shard of capacity 0 caches
// nothing), and a full shard evicts an expired entry if it finds one among a
// few, else an arbitrary one (Go's map iteration starts at a random place).
// Random eviction keeps a hit to a hash, one lock and one map lookup.
type tokenCache struct {
	size   int
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu    sync.Mutex
	m     map[[sha256.Size]byte]*cacheEntry
	limit int      // entries this shard may hold, fixed at creation
	_     [40]byte // keep shards on separate cache lines
}

type cacheEntry struct {
	res   *Result
	iss   *source // the issuer's key cache: a hit must be one of the verifier's
	key   *key
	until int64 // unix ns of exp + leeway: never served after this
}

func newTokenCache(size int) *tokenCache {
	c := &tokenCache{size: size}
	for i := range c.shards {
		s := &c.shards[i]
		s.limit = size / cacheShards
		if i < size%cacheShards {
			s.limit++
		}
		s.m = make(map[[sha256.Size]byte]*cacheEntry)
	}
	return c
}

func (c *tokenCache) get(h *[sha256.Size]byte) (*cacheEntry, bool) {
	s := &c.shards[h[0]%cacheShards]
	s.mu.Lock()
	e, ok := s.m[*h]
	s.mu.Unlock()
	return e, ok
}

func (c *tokenCache) put(h *[sha256.Size]byte, e *cacheEntry, now int64) {
	s := &c.shards[h[0]%cacheShards]
	if s.limit == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*h]; !ok && len(s.m) >= s.limit {
		var victim [sha256.Size]byte
		n := 0
		for k, old := range s.m {
			victim = k
			n++
			if old.until < now || old.key.dead.Load() || n == 5 {
				break
			}
		}
		delete(s.m, victim)
	}
	s.m[*h] = e
}

// len is the number of entries (for tests).
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.Lock()
		n += len(c.shards[i].m)
		c.shards[i].mu.Unlock()
	}
	return n
}
