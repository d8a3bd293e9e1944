package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/internal/oauth"
	"github.com/gatehouse/gatehouse/jwks"
	"github.com/gatehouse/gatehouse/jwks/revoke"
	"github.com/gatehouse/gatehouse/policy"
)

// HandlerOptions are what New needs besides the config. Every field is
// optional.
type HandlerOptions struct {
	// Logger receives the handler's logs; nil: discarded.
	Logger *slog.Logger
	// Metrics receives the handler's series; nil: a registry of its own
	// (NewMetrics), which a caller who wants to read it passes instead.
	Metrics *Metrics
	// Stdout is where the `stdout` audit sink writes; nil: os.Stdout.
	Stdout io.Writer
	// Now is the clock of verification and audit times; nil: time.Now.
	Now func() time.Time
	// Source is the audit events' CloudEvents source; "": gatehouse/<hostname>.
	Source string
}

// New builds a Handler from cfg in-process: the pipeline that Run serves on
// its main listener, without listeners, signals or reloads. It is for
// tests and for listeners of other protocols that put the same question.
// The first key fetches of cfg's issuers run within ctx (as at start). The
// caller owns the handler: Close releases it.
func New(ctx context.Context, cfg *Config, opts HandlerOptions) (*Handler, error) {
	d := deps{metrics: opts.Metrics, log: opts.Logger, now: opts.Now, source: opts.Source, stdout: opts.Stdout}
	if d.metrics == nil {
		d.metrics = NewMetrics("")
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	if d.source == "" {
		host, _ := os.Hostname()
		d.source = "gatehouse/" + host
	}
	if d.stdout == nil {
		d.stdout = os.Stdout
	}
	if cfg.Egress != nil {
		d.inbound = newInboundTable(unixNanos(d.now))
	}
	log := d.log
	// A handler of its own has pools of its own: nothing to share with.
	p := newParts(func(msg string, err error) { log.Warn(msg, "error", err.Error()) })
	return build(ctx, cfg, d, p)
}

// Close releases what a Handler from New holds, once its in-flight
// requests have ended or ctx ends: key refreshes, idle upstream
// connections, the revocation feed, and the audit emitter, whose queue is
// flushed within ctx.
// It returns ctx.Err() when ctx ended first. A request served after Close
// is still answered; its audit event is dropped (and counted). Calling it
// again does nothing.
func (h *Handler) Close(ctx context.Context) error {
	h.retire(ctx)
	return ctx.Err()
}

// deps are the long-lived parts a Handler is built with.
type deps struct {
	metrics *Metrics
	log     *slog.Logger
	now     func() time.Time
	source  string // audit CloudEvents source
	stdout  io.Writer
	// inbound is the process's table of inbound tokens for egress
	// propagate; nil when the config has no egress (a restart-only change).
	inbound *inboundTable
}

// build compiles cfg into a Handler. Parts whose config did not change are
// taken over from the pools p: key and token caches of unchanged issuers,
// the audit emitter with its broker connection.
func build(ctx context.Context, cfg *Config, d deps, p *parts) (*Handler, error) {
	h := &Handler{
		cfg:     cfg,
		engine:  cfg.Policy,
		strip:   newStripper(cfg),
		headers: newHeaderTable(cfg, d.log),
		metrics: d.metrics,
		log:     d.log,
		now:     d.now,
		parts:   p,
	}
	h.inflight.idle = make(chan struct{})
	if def := cfg.Policy.Default(); def.Decide(nil).Reason == policy.ReasonForbidden {
		h.denyAll = def
	}
	h.authAllow = d.metrics.authDuration.WithLabelValues("allow")
	h.authDeny = d.metrics.authDuration.WithLabelValues("deny")
	// A rejected path never reaches matching; SPEC.md 7 allows only a
	// location or "default" as the route label.
	h.badPath = &routeMetrics{name: "default", m: d.metrics}
	h.cors = newCORS(cfg, d.metrics)

	byURL := map[string]*upstream{}
	for _, rt := range cfg.Policy.Routes() {
		raw, proto := upstreamOf(cfg, rt.Upstream, rt.UpstreamProtocol)
		up := byURL[protocolsKey(raw, proto)]
		if up == nil {
			var err error
			if up, err = h.newUpstream(raw, proto); err != nil {
				return nil, fmt.Errorf("upstream %s: %w", raw, err)
			}
			byURL[protocolsKey(raw, proto)] = up
			h.ups = append(h.ups, up)
		}
		h.routes = append(h.routes, routeState{route: rt, up: up, metrics: &routeMetrics{name: rt.Name, m: d.metrics}, aud: assertionAudience(raw)})
	}

	if cfg.Egress != nil {
		h.inbound = d.inbound
		var tokens tokenSource
		if idp := cfg.Egress.IdP; idp != nil {
			// The client and its token cache outlive a reload that keeps
			// the idp section (and the upstream timeout its requests use).
			key := idp.digest + " " + cfg.Timeouts.Upstream.String()
			c, _, err := p.idps.Acquire(key, func() (*oauth.Client, error) {
				return newOAuthClient(idp, cfg.Timeouts.Upstream, d)
			})
			if err != nil {
				return nil, fmt.Errorf("egress idp: %w", err)
			}
			h.idpKey, tokens = key, c
		}
		e, err := h.newEgress(tokens)
		if err != nil {
			if h.idpKey != "" {
				p.idps.Release(h.idpKey)
			}
			return nil, err
		}
		h.egress = e
	}

	// The cached results keep only the claims that headers and route rules
	// read: the whole payload of 10,000 tokens was most of the memory.
	keep := []string{}
	for _, hr := range cfg.Headers {
		keep = append(keep, hr.Claim)
	}
	for _, rt := range cfg.Policy.Routes() {
		keep = append(keep, rt.ClaimPaths()...)
	}
	if cfg.Assertion != nil {
		keep = append(keep, cfg.Assertion.Claims...)
		var err error
		if h.assert, err = newAssertionSigner(cfg.Assertion, d.metrics); err != nil {
			return nil, fmt.Errorf("upstream assertion: %w", err)
		}
	}
	cacheSize := int(cfg.Token.CacheSize)
	if cacheSize == 0 {
		cacheSize = -1 // token.cache_size: 0 turns the cache off (jwks reads 0 as its default)
	}
	v, err := jwks.New(ctx, jwks.Options{
		Issuers:      cfg.Issuers,
		MaxTokenSize: int(cfg.Token.MaxSize),
		CacheSize:    cacheSize,
		KeepClaims:   keep,
		Metrics:      d.metrics.jwks,
		Pool:         p.jwks,
		Logger:       d.log.With("component", "jwks"),
		Now:          d.now,
	})
	if err != nil {
		if h.idpKey != "" {
			p.idps.Release(h.idpKey)
		}
		return nil, fmt.Errorf("build verifier: %w", err)
	}
	h.verifier = v

	h.auditKey = keyOfAudit(cfg.Audit)
	e, _, err := p.emitters.Acquire(h.auditKey, func() (*audit.Emitter, error) {
		return audit.New(cfg.Audit, audit.Options{
			Logger:  d.log.With("component", "audit"),
			Metrics: d.metrics.audit,
			Source:  d.source,
			Stdout:  d.stdout,
			Now:     d.now,
		})
	})
	if err != nil {
		v.Close()
		if h.idpKey != "" {
			p.idps.Release(h.idpKey)
		}
		return nil, fmt.Errorf("start audit: %w", err)
	}
	h.emitter = e
	if fa := cfg.Limits.FailedAuth; fa != nil {
		// Cannot fail: the build has no error.
		h.throttleKey = keyOfFailedAuth(*fa)
		h.throttle, _, _ = p.throttles.Acquire(h.throttleKey, newThrottle(*fa))
	}
	if cfg.Revocation != nil {
		h.feedKey = keyOfFeed(cfg.Revocation)
		f, _, _ := p.feeds.Acquire(h.feedKey, func() (*revoke.Feed, error) {
			return revoke.Start(cfg.Revocation, p.revocations, revoke.Options{
				Log:     d.log.With("component", "revocation"),
				Metrics: d.metrics.revoke,
				Now:     d.now,
			}), nil
		})
		h.feed = f
	}
	return h, nil
}

// retire releases what h holds, once no request is still in flight on h (or
// ctx ends): its verifier, its idle upstream connections, and its reference
// to the audit emitter. Handlers of successive reloads share an emitter
// while the audit section is unchanged; the last of them to retire closes
// it, so an older handler's late request never emits into a closed
// emitter, whichever order the retires finish in.
//
// Only the first call releases; later ones return at once (Close may be
// called twice, and a second release would close a part another handler
// still holds).
func (h *Handler) retire(ctx context.Context) {
	if !h.retired.CompareAndSwap(false, true) {
		return
	}
	h.inflight.wait(ctx)
	h.verifier.Close()
	for _, up := range h.ups {
		up.transport.CloseIdleConnections()
	}
	h.parts.releaseEmitter(ctx, h.auditKey)
	if h.throttle != nil {
		h.parts.throttles.Release(h.throttleKey)
	}
	if h.feed != nil {
		h.parts.feeds.Release(h.feedKey)
	}
	if h.idpKey != "" {
		h.parts.idps.Release(h.idpKey)
	}
}

// newOAuthClient is the identity provider client of an egress.idp section:
// its requests are bounded by timeouts.upstream and counted in
// gatehouse_idp_requests_total.
func newOAuthClient(idp *IdPConfig, timeout time.Duration, d deps) (*oauth.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // the IdP is reached directly, whatever HTTP_PROXY says
	tr.TLSClientConfig = &tls.Config{RootCAs: idp.cas, MinVersion: tls.VersionTLS12}
	idpMetric, idpTook := d.metrics.idp, d.metrics.idpDuration
	// Hits run on the egress call's path: the two grants' counters are
	// resolved here, not per hit.
	hits := [2]prometheus.Counter{
		d.metrics.idpHits.WithLabelValues(grantLabel(oauth.ClientCredentials)),
		d.metrics.idpHits.WithLabelValues(grantLabel(oauth.TokenExchange)),
	}
	return oauth.New(oauth.Config{
		TokenEndpoint: idp.TokenEndpoint,
		Issuer:        idp.Issuer,
		ClientID:      idp.ClientID,
		ClientSecret:  idp.ClientSecret,
		PrivateKey:    idp.PrivateKey,
		KeyID:         idp.KeyID,
		HTTPClient:    &http.Client{Timeout: timeout, Transport: tr},
		Clock:         d.now,
		Observe: func(g oauth.Grant, result string, took time.Duration) {
			idpMetric.WithLabelValues(grantLabel(g), result).Inc()
			idpTook.WithLabelValues(grantLabel(g)).Observe(took.Seconds())
		},
		Hit: func(g oauth.Grant) {
			if g == oauth.TokenExchange {
				hits[1].Inc()
			} else {
				hits[0].Inc()
			}
		},
	})
}

// grantLabel is the grant label of gatehouse_idp_requests_total: short
// names, not the RFC 8693 URN.
func grantLabel(g oauth.Grant) string {
	if g == oauth.TokenExchange {
		return "token_exchange"
	}
	return string(g)
}

func unixNanos(now func() time.Time) func() int64 {
	return func() int64 { return now().UnixNano() }
}
