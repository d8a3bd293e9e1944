// Package refpool owns the one mechanism by which long-lived parts survive a
// config reload: a reference-counted pool keyed by what the part was built
// from. A reload acquires every part its new config needs (taking over the
// ones whose key did not change, building the rest), swaps, then releases
// the old handler's references; a part is closed when its last user
// releases it. Caddy's UsagePool (usagepool.go) is the model.
//
// The pool is owned by whoever owns the reloads (proxy's server); it holds
// no package-level state, so two servers in one process (tests, the
// quickstart) never share parts.
package refpool

import (
	"fmt"
	"sync"
)

// Pool holds values of type V under keys of type K, each with a count of
// its users. The zero value is not usable; call New.
type Pool[K comparable, V any] struct {
	mu    sync.Mutex
	items map[K]*item[V]
	close func(V)
}

type item[V any] struct {
	v    V
	refs int
}

// New returns an empty pool; close is called (outside the pool's lock) on a
// value when its last reference is released.
func New[K comparable, V any](close func(V)) *Pool[K, V] {
	return &Pool[K, V]{items: map[K]*item[V]{}, close: close}
}

// Acquire returns the value under k, adding one reference, and whether it
// already existed. When k is absent, build makes the value; build runs under
// the pool's lock, so concurrent Acquires of one key build once. A build
// error leaves the pool unchanged.
func (p *Pool[K, V]) Acquire(k K, build func() (V, error)) (V, bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if it, ok := p.items[k]; ok {
		it.refs++
		return it.v, true, nil
	}
	v, err := build()
	if err != nil {
		var zero V
		return zero, false, err
	}
	p.items[k] = &item[V]{v: v, refs: 1}
	return v, false, nil
}

// Release drops one reference to k and closes the value when it was the
// last. Releasing a key that holds no reference is a programming error and
// panics: a double release would close a part another handler still uses.
func (p *Pool[K, V]) Release(k K) {
	p.mu.Lock()
	it, ok := p.items[k]
	if !ok {
		p.mu.Unlock()
		panic(fmt.Sprintf("refpool: release of %v, which holds no reference", k))
	}
	it.refs--
	if it.refs > 0 {
		p.mu.Unlock()
		return
	}
	delete(p.items, k)
	p.mu.Unlock()
	if p.close != nil {
		p.close(it.v)
	}
}

// Len is the number of live keys.
func (p *Pool[K, V]) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.items)
}
