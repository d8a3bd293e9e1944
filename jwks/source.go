package jwks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	maxBody       = 1 << 20 // 1 MiB cap on JWKS, discovery and PEM bodies (SPEC.md 6)
	backoffBase   = time.Second
	refetchWait   = 5 * time.Second // longest a request waits for an unknown-kid refetch
	maxKidlessTry = 4               // keys tried for a token without kid
)

// source is the key cache of one issuer: the published key set, and for
// remote sources the refresh loop that keeps it current.
type source struct {
	is      *Issuer
	label   string
	client  *http.Client
	ownTr   *http.Transport // closed on stop when we made it
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time
	timeout time.Duration // per fetch
	timer   func(time.Duration) (<-chan time.Time, func() bool)

	set         atomic.Pointer[keySet]
	lastSuccess atomic.Int64 // unix nanoseconds of the last good fetch (or 304); 0 = never

	mu       sync.Mutex
	etag     string
	jwksURI  string // from discovery
	failures int    // consecutive failed refreshes
	stale    bool   // logged that the keys passed max_stale
	lastKick time.Time
	inflight chan struct{} // closed when the refresh a kick asked for is done

	kick     chan struct{}
	first    chan struct{} // closed after the first refresh attempt
	cancel   context.CancelFunc
	done     chan struct{}
	stopOnce sync.Once
}

func newSource(is *Issuer, opts *Options, log *slog.Logger) *source {
	s := &source{is: is, label: is.label(), metrics: opts.Metrics, log: log.With("issuer", is.label()),
		now: opts.Now, timeout: opts.FetchTimeout, timer: opts.timer}
	if s.timer == nil {
		s.timer = func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		}
	}
	if !is.remote() {
		ks := &keySet{keys: is.static}
		s.set.Store(ks)
		s.lastSuccess.Store(1) // static keys never go stale
		s.metrics.published(s.label, ks)
		s.metrics.lastSuccess(s.label, s.now())
		return s
	}
	var roots *x509.CertPool
	if is.ca != nil {
		roots = is.ca.Pool
	}
	if opts.HTTPClient != nil && roots == nil {
		// A copy, so the redirect policy applies without changing the
		// caller's client; a policy of the caller's own is kept.
		c := *opts.HTTPClient
		if c.CheckRedirect == nil {
			c.CheckRedirect = checkRedirect
		}
		s.client = &c
	} else {
		s.ownTr = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: s.timeout,
			MaxIdleConnsPerHost:   1,
			IdleConnTimeout:       90 * time.Second,
		}
		s.client = &http.Client{Transport: s.ownTr, Timeout: s.timeout, CheckRedirect: checkRedirect}
	}
	s.kick = make(chan struct{}, 1)
	s.first = make(chan struct{})
	s.done = make(chan struct{})
	return s
}

// start runs the refresh loop until stop.
func (s *source) start() {
	if s.done == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go s.run(ctx)
}

func (s *source) stop() {
	if s.done == nil {
		return
	}
	s.stopOnce.Do(func() {
		if s.cancel != nil {
			s.cancel()
			<-s.done
		}
		if s.ownTr != nil {
			s.ownTr.CloseIdleConnections()
		}
	})
}

// run is the thin loop around refresh and nextDelay.
func (s *source) run(ctx context.Context) {
	defer close(s.done)
	var delay time.Duration
	firstDone := false
	for {
		if delay > 0 {
			fire, stop := s.timer(delay)
			select {
			case <-ctx.Done():
				stop()
				return
			case <-fire:
			case <-s.kick:
				stop()
			}
		}
		res := s.refresh(ctx)
		if !firstDone {
			close(s.first)
			firstDone = true
		}
		if ctx.Err() != nil {
			return
		}
		s.mu.Lock()
		failures := s.failures
		s.mu.Unlock()
		delay = nextDelay(s.is, res, failures, rand.Float64())
	}
}

// fetchResult is what one refresh learned, the input of nextDelay.
type fetchResult struct {
	err       error
	maxAge    time.Duration
	hasMaxAge bool
}

// nextDelay decides when to refresh next, as a pure function of the last
// result, the number of consecutive failures and a jitter in [0, 1):
// after a success, refresh_interval, or the answer's max-age clamped to
// [min_refresh_interval, refresh_interval]; after a failure, exponential
// backoff from 1s capped at refresh_interval, with "equal jitter" (half
// fixed, half random) so that many gatehouse pods do not retry in step.
func nextDelay(is *Issuer, r fetchResult, failures int, jitter float64) time.Duration {
	if r.err == nil {
		d := is.RefreshInterval
		if r.hasMaxAge {
			d = min(max(r.maxAge, is.MinRefreshInterval), is.RefreshInterval)
		}
		return d
	}
	d := is.RefreshInterval
	if failures >= 1 && failures < 40 {
		d = min(backoffBase<<(failures-1), is.RefreshInterval)
	}
	return d/2 + time.Duration(jitter*float64(d/2))
}

// keys returns the current key set, or nil when the issuer has none: never
// fetched, or the last good fetch is older than max_stale (SPEC.md 6).
func (s *source) keys(now time.Time) *keySet {
	ks := s.set.Load()
	if ks == nil || s.done == nil {
		return ks
	}
	if now.UnixNano()-s.lastSuccess.Load() > int64(s.is.MaxStale) {
		return nil
	}
	return ks
}

// hadKeys reports whether the source ever had keys (for /readyz).
func (s *source) hadKeys() bool { return s.set.Load() != nil }

// refetch asks for an out-of-schedule refresh after an unknown kid and
// waits for it (bounded by ctx and refetchWait). It reports whether looking
// the kid up again may help: false only for static sources. (When
// rate-limited it still says yes: a refresh may have been published since
// the caller looked.)
func (s *source) refetch(ctx context.Context) bool {
	if s.done == nil {
		return false
	}
	ch, started := s.request()
	if ch == nil {
		return true
	}
	if started {
		s.metrics.refetchTotal.WithLabelValues(s.label).Inc()
	}
	t := time.NewTimer(refetchWait)
	defer t.Stop()
	select {
	case <-ch:
	case <-ctx.Done():
	case <-t.C:
	case <-s.done: // stopped: no refresh will come
	}
	return true
}

// request asks the loop for an out-of-schedule refresh, at most once per
// min_refresh_interval (unknown kids and Verifier.Refetch share the limit),
// and returns a channel closed when that refresh is done; concurrent
// callers share one refresh (started is true for the caller that asked for
// it). It returns nil for a static source and when rate-limited.
func (s *source) request() (done <-chan struct{}, started bool) {
	if s.done == nil {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inflight != nil {
		return s.inflight, false
	}
	now := s.now()
	if !s.lastKick.IsZero() && now.Sub(s.lastKick) < s.is.MinRefreshInterval {
		return nil, false
	}
	s.lastKick = now
	s.inflight = make(chan struct{})
	select {
	case s.kick <- struct{}{}:
	default:
	}
	return s.inflight, true
}

// refresh fetches once, publishes a good answer, and records the outcome.
// Only the loop calls it (tests call it directly, with no loop running).
func (s *source) refresh(ctx context.Context) fetchResult {
	// Requests that asked for this refresh, and any that join while it runs,
	// wait on waiters; one asking after it started gets the next refresh.
	s.mu.Lock()
	waiters := s.inflight
	etag := s.etag
	s.mu.Unlock()
	if waiters != nil {
		defer func() {
			s.mu.Lock()
			s.inflight = nil
			s.mu.Unlock()
			close(waiters)
		}()
	}

	fctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ks, newETag, res := s.fetch(fctx, etag)

	s.mu.Lock()
	defer s.mu.Unlock()
	if res.err != nil {
		s.failures++
		s.metrics.refresh(s.label, false)
		if s.failures == 1 {
			s.log.Warn("jwks refresh failing, keeping the last good keys", "error", res.err,
				"had_keys", s.set.Load() != nil)
		}
		// Seen at the first failed refresh after the crossing: the metric
		// gatehouse_jwks_last_success_timestamp_seconds shows it to the second.
		if last := s.lastSuccess.Load(); !s.stale && s.set.Load() != nil && s.now().UnixNano()-last > int64(s.is.MaxStale) {
			s.stale = true
			s.log.Error("jwks keys older than max_stale: this issuer's tokens are refused (keys_unavailable) until a refresh succeeds",
				"max_stale", s.is.MaxStale.String(), "last_success", time.Unix(0, last).UTC(), "error", res.err)
		}
		return res
	}
	if s.failures > 0 {
		s.log.Info("jwks refresh recovered", "failed_attempts", s.failures, "keys_were_stale", s.stale)
	}
	s.stale = false
	s.failures = 0
	s.etag = newETag
	s.lastSuccess.Store(s.now().UnixNano())
	s.metrics.refresh(s.label, true)
	s.metrics.lastSuccess(s.label, s.now())
	if ks != nil {
		s.publish(ks)
	}
	return res
}

// publish swaps in a new set. Keys that are unchanged keep their *key (and so
// their cached tokens); keys that left the set are marked dead. A change is
// logged with the kids added and removed (SPEC.md 15).
func (s *source) publish(ks *keySet) {
	prev := map[string]*key{}
	if old := s.set.Load(); old != nil {
		for _, k := range old.keys {
			prev[k.id()] = k
		}
	}
	var added, removed []string
	for i, k := range ks.keys {
		if o, ok := prev[k.id()]; ok {
			ks.keys[i] = o
			delete(prev, k.id())
		} else {
			added = append(added, logKid(k.kid))
		}
	}
	for _, k := range prev {
		k.dead.Store(true)
		removed = append(removed, logKid(k.kid))
	}
	s.set.Store(ks)
	s.metrics.published(s.label, ks)
	if len(added) > 0 || len(removed) > 0 {
		slices.Sort(added)
		slices.Sort(removed)
		s.log.Info("jwks keys changed", "added", added, "removed", removed)
	}
}

// logKid is a kid as logs and metric labels show it: cut to 64 bytes (the
// key set is the IdP's, but its size is not ours to trust).
func logKid(kid string) string {
	if len(kid) > 64 {
		return strings.ToValidUTF8(kid[:64], "")
	}
	return kid
}

// fetch gets the key set. A nil set with a nil error means 304 Not Modified.
func (s *source) fetch(ctx context.Context, etag string) (*keySet, string, fetchResult) {
	u := s.is.JWKSURL
	if s.is.PublicKeyURL != "" {
		u = s.is.PublicKeyURL
	}
	if s.is.DiscoveryURL != "" {
		s.mu.Lock()
		u = s.jwksURI
		s.mu.Unlock()
		if u == "" {
			var err error
			if u, err = s.discover(ctx); err != nil {
				return nil, "", fetchResult{err: err}
			}
			etag = ""
		}
	}
	body, hdr, status, err := s.get(ctx, u, etag)
	if err == nil && status == http.StatusNotModified && etag != "" {
		ma, ok := maxAge(hdr)
		return nil, etag, fetchResult{maxAge: ma, hasMaxAge: ok}
	}
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("fetch keys %s: status %d", u, status)
	}
	if err != nil {
		s.forgetDiscovery()
		return nil, "", fetchResult{err: err}
	}
	var ks *keySet
	if s.is.PublicKeyURL != "" {
		var k *key
		if k, err = parsePEM(body); err == nil {
			ks = &keySet{keys: []*key{k}}
		}
	} else {
		ks, err = parseJWKS(body)
		if ks != nil {
			s.metrics.skipped(s.label, ks.skipped)
		}
	}
	if err != nil {
		s.forgetDiscovery()
		return nil, "", fetchResult{err: fmt.Errorf("fetch keys %s: %w", u, err)}
	}
	ma, ok := maxAge(hdr)
	return ks, hdr.Get("ETag"), fetchResult{maxAge: ma, hasMaxAge: ok}
}

// forgetDiscovery makes the next refresh read the discovery document again,
// in case jwks_uri moved.
func (s *source) forgetDiscovery() {
	if s.is.DiscoveryURL != "" {
		s.mu.Lock()
		s.jwksURI = ""
		s.mu.Unlock()
	}
}

// discover reads the OpenID discovery document and returns its jwks_uri,
// after checking that its issuer is the configured one (OpenID Connect
// Discovery 4.3).
func (s *source) discover(ctx context.Context) (string, error) {
	body, _, status, err := s.get(ctx, s.is.DiscoveryURL, "")
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("status %d", status)
	}
	if err != nil {
		return "", fmt.Errorf("fetch discovery %s: %w", s.is.DiscoveryURL, err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("parse discovery %s: %w", s.is.DiscoveryURL, err)
	}
	if doc.Issuer != s.is.Name {
		return "", fmt.Errorf("discovery %s: issuer %q does not match the configured issuer %q", s.is.DiscoveryURL, doc.Issuer, s.is.Name)
	}
	ju, err := url.Parse(doc.JWKSURI)
	if err != nil || (ju.Scheme != "https" && ju.Scheme != "http") || ju.Host == "" {
		return "", fmt.Errorf("discovery %s: jwks_uri %q is not an absolute http(s) URL", s.is.DiscoveryURL, doc.JWKSURI)
	}
	if strings.HasPrefix(s.is.DiscoveryURL, "https:") && ju.Scheme != "https" {
		return "", fmt.Errorf("discovery %s: jwks_uri %q would fetch the keys of an https issuer without TLS", s.is.DiscoveryURL, doc.JWKSURI)
	}
	s.mu.Lock()
	s.jwksURI = doc.JWKSURI
	s.mu.Unlock()
	return doc.JWKSURI, nil
}

var errTooLarge = errors.New("body over 1 MiB")

// maxRedirects bounds the redirects one key fetch follows.
const maxRedirects = 5

// checkRedirect is the key fetcher's redirect policy: at most maxRedirects,
// and never from https to plain http. Whoever answers a key URL configured
// with TLS must not be able to send the fetch where anyone on the path can
// answer it with their own keys.
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refused redirect from https to %s://%s", req.URL.Scheme, req.URL.Host)
	}
	return nil
}

func (s *source) get(ctx context.Context, u, etag string) ([]byte, http.Header, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("fetch %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "gatehouse")
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, nil, 0, fmt.Errorf("fetch %s: %w", u, err)
	}
	if len(body) > maxBody {
		return nil, nil, 0, fmt.Errorf("fetch %s: %w", u, errTooLarge)
	}
	return body, resp.Header, resp.StatusCode, nil
}

// maxAge reads Cache-Control max-age (no-store and no-cache count as 0,
// which nextDelay raises to min_refresh_interval).
func maxAge(h http.Header) (time.Duration, bool) {
	for _, v := range h.Values("Cache-Control") {
		for _, d := range strings.Split(v, ",") {
			d = strings.TrimSpace(strings.ToLower(d))
			if d == "no-store" || d == "no-cache" {
				return 0, true
			}
			if n, ok := strings.CutPrefix(d, "max-age="); ok {
				secs, err := strconv.ParseInt(strings.Trim(n, `"`), 10, 64)
				if err != nil || secs < 0 {
					continue
				}
				secs = min(secs, int64(365*24*time.Hour/time.Second))
				return time.Duration(secs) * time.Second, true
			}
		}
	}
	return 0, false
}
