package proxy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/internal/oauth"
	"github.com/gatehouse/gatehouse/internal/ratelimit"
	"github.com/gatehouse/gatehouse/internal/refpool"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/jwks/revoke"
)

// parts are the pools of what survives a reload, owned by the server (or,
// for a Handler made by New, by that handler alone). Each handler acquires
// what its config needs when it is built and releases it when it retires;
// the last release closes the part.
type parts struct {
	// jwks holds the key caches per issuer and the token caches: an issuer
	// whose entry is unchanged keeps its keys (SPEC.md 2, 6).
	jwks *jwks.Pool
	// emitters are keyed by the audit section: a reload that keeps the
	// section keeps the emitter and its broker connection (SPEC.md 2).
	emitters *refpool.Pool[auditKey, *audit.Emitter]
	// throttles are keyed by limits.failed_auth: a reload that keeps the
	// section keeps every client's bucket.
	throttles *refpool.Pool[throttleKey, *ratelimit.Table]
	// revocations outlive every feed and reload: a reload, even one that
	// changes the revocation section, never forgets a revocation. feeds are
	// keyed by the section like emitters; a new feed replays the stream
	// into the same store (applying an entry twice changes nothing).
	revocations *revoke.Store
	feeds       *refpool.Pool[feedKey, *revoke.Feed]
	// feedReady is set once any feed of this server has read its backlog:
	// a reload that starts a new feed does not make /readyz fail again.
	feedReady atomic.Bool
	// idps are the egress OAuth clients, keyed by the idp section's
	// digest: a reload that keeps it keeps the token cache.
	idps *refpool.Pool[string, *oauth.Client]

	// closeMu serialises releases so that closeCtx is the releasing
	// retire's own budget: refpool's close function has no context, and it
	// runs synchronously inside Release.
	closeMu  sync.Mutex
	closeCtx context.Context
	log      func(msg string, err error)
}

func newParts(logFlush func(msg string, err error)) *parts {
	p := &parts{jwks: jwks.NewPool(), log: logFlush, revocations: revoke.NewStore()}
	p.throttles = refpool.New[throttleKey](func(*ratelimit.Table) {}) // memory only: nothing to close
	p.feeds = refpool.New[feedKey](func(f *revoke.Feed) { f.Close() })
	p.idps = refpool.New[string](func(c *oauth.Client) { c.Close() })
	p.emitters = refpool.New[auditKey](func(e *audit.Emitter) {
		if err := e.Close(p.closeCtx); err != nil {
			p.log("audit flush incomplete", err)
		}
	})
	return p
}

// releaseEmitter drops one reference to k; the last one closes the emitter,
// flushing its queue within ctx.
func (p *parts) releaseEmitter(ctx context.Context, k auditKey) {
	p.closeMu.Lock()
	defer p.closeMu.Unlock()
	p.closeCtx = ctx
	p.emitters.Release(k)
	p.closeCtx = nil
}

// auditKey identifies an audit section: two sections with the same key
// share an emitter. It is a digest of every field (the resolved broker URL
// included, so a rotated password in url_file is a change), never the
// fields themselves: the URL holds a secret.
type auditKey [sha256.Size]byte

func keyOfAudit(c audit.Config) auditKey {
	return sha256.Sum256(fmt.Appendf(nil, "%#v", c))
}

// feedKey identifies a revocation section, as a digest for the same reason
// as auditKey.
type feedKey [sha256.Size]byte

func keyOfFeed(c *revoke.Config) feedKey {
	return sha256.Sum256(fmt.Appendf(nil, "%#v", *c))
}

// inflight counts a handler's requests from arrival to their end. retire
// waits on it without polling: once retirement began, the request that
// brings the count to zero closes idle.
type inflight struct {
	n        atomic.Int64
	retiring atomic.Bool
	once     sync.Once
	idle     chan struct{}
}

func (f *inflight) enter() { f.n.Add(1) }

func (f *inflight) leave() {
	if f.n.Add(-1) == 0 && f.retiring.Load() {
		f.once.Do(func() { close(f.idle) })
	}
}

// wait marks the handler retiring and returns when no request is in flight
// or ctx ends, whichever is first.
func (f *inflight) wait(ctx context.Context) {
	f.retiring.Store(true)
	if f.n.Load() == 0 {
		f.once.Do(func() { close(f.idle) })
	}
	select {
	case <-f.idle:
	case <-ctx.Done():
	}
}
