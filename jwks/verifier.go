package jwks

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/refpool"
)

// Options configure New.
type Options struct {
	Issuers           []Issuer
	MaxTokenSize      int              // bytes, from token.max_size; 0 = 8192
	CacheSize         int              // verified tokens remembered, token.cache_size; 0 = 10000; negative = off
	Metrics           *Metrics         // from NewMetrics, made once per server; nil = unexported metrics
	Pool              *Pool            // from NewPool, made once per server; nil = a pool of this verifier's own
	Logger            *slog.Logger     // nil = discard
	Now               func() time.Time // nil = time.Now
	FirstFetchTimeout time.Duration    // wait for new issuers' first fetch in New; 0 = 10s
	FetchTimeout      time.Duration    // each HTTP fetch (discovery, JWKS, PEM); 0 = 10s
	HTTPClient        *http.Client     // nil = our own client with timeouts; ignored for issuers with ca_file
	// KeepClaims are the claim paths the caller will ask Result.Claim for
	// (claim headers, route claim rules). A cached Result then holds only
	// those claims, not the whole decoded payload: at 10,000 cached tokens
	// the full maps were most of the process's memory. nil keeps every claim.
	KeepClaims []string

	// timer makes the refresh loops' timers; nil = time.NewTimer. Tests
	// in this package drive the loops through it instead of the wall clock.
	timer func(time.Duration) (<-chan time.Time, func() bool)
}

func (o *Options) defaults() {
	if o.MaxTokenSize <= 0 {
		o.MaxTokenSize = 8192
	}
	if o.CacheSize == 0 {
		o.CacheSize = 10000
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Pool == nil {
		o.Pool = NewPool()
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.FirstFetchTimeout <= 0 {
		o.FirstFetchTimeout = 10 * time.Second
	}
	if o.FetchTimeout <= 0 {
		o.FetchTimeout = 10 * time.Second
	}
}

// Pool holds what outlives one Verifier across config reloads (SPEC.md 2
// "Reload", 6): each issuer's key cache with its refresh loop, keyed by the
// issuer entry's fingerprint, so an unchanged entry keeps its keys and
// schedule; and the token cache, kept while its size and the kept claims
// stay the same (its entries of changed issuers are refused on a hit). The
// server that owns the reloads makes one with NewPool and passes it in
// every Options, with the same Metrics each time; each Verifier's Close
// releases its references, and the last release of a key cache stops its
// loop and, when no other key cache serves that issuer name, drops the
// issuer's metric series. A key cache keeps the Options it was built with
// (HTTP client, clock, fetch timeout, logger) for its whole life.
type Pool struct {
	sources *refpool.Pool[[sha256.Size]byte, *source]
	caches  *refpool.Pool[cacheKey, *tokenCache]

	mu sync.Mutex
	// labels counts the live key caches per issuer label, so the
	// per-issuer series go only when the last one stops (a changed entry
	// gets a new key cache under the same label before the old one stops).
	labels map[labelKey]int
}

type labelKey struct {
	m     *Metrics
	label string
}

// cacheKey is what a token cache's entries depend on besides the issuers:
// its bound and the claims its results hold.
type cacheKey struct {
	size    int
	keepAll bool
	keep    string // the kept claim paths, sorted, joined by NUL
}

// NewPool returns an empty pool.
func NewPool() *Pool {
	p := &Pool{labels: map[labelKey]int{}}
	p.sources = refpool.New[[sha256.Size]byte](p.stopSource)
	p.caches = refpool.New[cacheKey, *tokenCache](nil)
	return p
}

func (p *Pool) stopSource(s *source) {
	s.stop()
	lk := labelKey{s.metrics, s.label}
	p.mu.Lock()
	p.labels[lk]--
	last := p.labels[lk] == 0
	if last {
		delete(p.labels, lk)
	}
	p.mu.Unlock()
	if last {
		s.metrics.forget(s.label)
	}
}

func (p *Pool) addLabel(m *Metrics, label string) {
	p.mu.Lock()
	p.labels[labelKey{m, label}]++
	p.mu.Unlock()
}

// Verifier verifies tokens against the configured issuers. Build it with New.
type Verifier struct {
	issuers    []*source // config order
	byName     map[string]*source
	noIss      *source
	fps        [][sha256.Size]byte // the pool keys of issuers
	maxSize    int
	keepClaims []string // Options.KeepClaims, sorted; nil keeps all
	cache      *tokenCache
	cacheKey   cacheKey
	pool       *Pool
	metrics    *Metrics
	now        func() time.Time
	log        *slog.Logger

	closeOnce sync.Once
}

// New builds a verifier. Issuers whose entry is identical to one a live
// verifier of the same Options.Pool holds share that key cache, with no
// refetch, and their cached tokens stay valid; new issuers get their first
// fetch before New returns, bounded by FirstFetchTimeout and ctx (after
// that they answer keys_unavailable until keys arrive). An unreachable key
// URL is not an error. Background refresh runs until the last verifier
// holding the issuer is closed.
func New(ctx context.Context, opts Options) (*Verifier, error) {
	if len(opts.Issuers) == 0 {
		return nil, errors.New("jwks: no issuers")
	}
	opts.defaults()
	log := opts.Logger.With("component", "jwks")
	v := &Verifier{byName: map[string]*source{}, maxSize: opts.MaxTokenSize, pool: opts.Pool,
		metrics: opts.Metrics, now: opts.Now, log: log}
	fresh := v.acquireSources(&opts, log)
	v.acquireCache(&opts)
	for _, s := range fresh {
		s.start()
	}
	waitFirstFetch(ctx, fresh, opts.FirstFetchTimeout)
	return v, nil
}

// acquireSources takes a reference to each issuer's key cache, building
// the ones the pool lacks; it returns those, not yet started.
func (v *Verifier) acquireSources(opts *Options, log *slog.Logger) []*source {
	var fresh []*source
	for i := range opts.Issuers {
		is := &opts.Issuers[i]
		fp := is.fp
		if fp == ([sha256.Size]byte{}) {
			fp = is.fingerprint()
		}
		s, existed, _ := v.pool.sources.Acquire(fp, func() (*source, error) {
			cfg := *is
			cfg.fp = fp
			cfg.compile()
			s := newSource(&cfg, opts, log)
			v.pool.addLabel(opts.Metrics, s.label)
			return s, nil
		})
		if !existed {
			fresh = append(fresh, s)
		}
		v.fps = append(v.fps, fp)
		v.issuers = append(v.issuers, s)
		if is.Name == "" {
			v.noIss = s
		} else {
			v.byName[is.Name] = s
		}
	}
	return fresh
}

// acquireCache takes a reference to the token cache for these options.
func (v *Verifier) acquireCache(opts *Options) {
	if opts.KeepClaims != nil {
		v.keepClaims = slices.Compact(slices.Sorted(slices.Values(opts.KeepClaims)))
		if v.keepClaims == nil {
			v.keepClaims = []string{}
		}
	}
	if opts.CacheSize <= 0 {
		return
	}
	// Cached results hold the claims their verifier kept: shared only by
	// verifiers that keep the same ones.
	v.cacheKey = cacheKey{size: opts.CacheSize, keepAll: v.keepClaims == nil, keep: strings.Join(v.keepClaims, "\x00")}
	v.cache, _, _ = v.pool.caches.Acquire(v.cacheKey, func() (*tokenCache, error) {
		return newTokenCache(opts.CacheSize), nil
	})
}

// waitFirstFetch waits for the first fetch of each source, bounded by
// limit and ctx.
func waitFirstFetch(ctx context.Context, sources []*source, limit time.Duration) {
	wctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for _, s := range sources {
		if s.first == nil {
			continue
		}
		select {
		case <-s.first:
		case <-wctx.Done():
			return
		}
	}
}

// Close releases the verifier's key caches and token cache; a key cache no
// other live verifier of the pool holds stops. It is idempotent; no
// goroutine of this package outlives the Close of the last verifier of a
// pool.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		for _, fp := range v.fps {
			v.pool.sources.Release(fp)
		}
		if v.cache != nil {
			v.pool.caches.Release(v.cacheKey)
		}
	})
}

// Missing lists the issuers that never had keys, by name ("(no iss)" for the
// entry without issuer), in config order.
func (v *Verifier) Missing() []string {
	var out []string
	for _, s := range v.issuers {
		if !s.hadKeys() {
			out = append(out, s.label)
		}
	}
	return out
}

// Refetch asks every remote issuer to fetch its key set now (SIGHUP,
// SPEC.md 15), at most once per min_refresh_interval per issuer: the limit
// is the one the unknown-kid refetch uses, so neither can make an issuer
// fetch more often. The fetches run on the issuers' own refresh loops and
// publish as a scheduled refresh does; Refetch waits for them until they
// are done or ctx ends, whichever is first (pass a short-lived ctx, or call
// it in a goroutine, not to wait on the network). Issuers inside the limit,
// and static ones, are left alone.
func (v *Verifier) Refetch(ctx context.Context) {
	type pending struct {
		done <-chan struct{}
		s    *source
	}
	var wait []pending
	for _, s := range v.issuers {
		if ch, _ := s.request(); ch != nil {
			wait = append(wait, pending{ch, s})
		}
	}
	for _, p := range wait {
		select {
		case <-p.done:
		case <-p.s.done: // stopped: no refresh will come
		case <-ctx.Done():
			return
		}
	}
}
