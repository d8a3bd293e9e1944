package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/gatehouse/gatehouse/audit"
	"github.com/gatehouse/gatehouse/jwks"
)

// deps are the long-lived parts a Handler is built with.
type deps struct {
	metrics *Metrics
	jwks    *jwks.Pool // key and token caches that survive reloads; nil: none survive
	log     *slog.Logger
	now     func() time.Time
	source  string // audit CloudEvents source
	stdout  io.Writer
}

// build compiles cfg into a Handler. Parts whose config did not change are
// taken over from prev (nil at start): key caches of unchanged issuers, and
// the audit emitter with its broker connection.
func build(ctx context.Context, cfg *Config, prev *Handler, d deps) (*Handler, error) {
	h := &Handler{
		cfg:     cfg,
		engine:  cfg.Policy,
		strip:   newStripper(cfg),
		headers: newHeaderTable(cfg, d.log),
		metrics: d.metrics,
		log:     d.log,
		now:     d.now,
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
		h.routes = append(h.routes, routeState{route: rt, up: up, metrics: &routeMetrics{name: rt.Name, m: d.metrics}})
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
		Pool:         d.jwks,
		Logger:       d.log.With("component", "jwks"),
		Now:          d.now,
	})
	if err != nil {
		return nil, fmt.Errorf("build verifier: %w", err)
	}
	h.verifier = v

	if prev != nil && prev.cfg.Audit.Equal(cfg.Audit) {
		h.emitter, h.emitterUsers = prev.emitter, prev.emitterUsers
		h.emitterUsers.Add(1)
	} else {
		e, err := audit.New(cfg.Audit, audit.Options{
			Logger:  d.log.With("component", "audit"),
			Metrics: d.metrics.audit,
			Source:  d.source,
			Stdout:  d.stdout,
			Now:     d.now,
		})
		if err != nil {
			v.Close()
			return nil, fmt.Errorf("start audit: %w", err)
		}
		h.emitter, h.emitterUsers = e, new(atomic.Int32)
		h.emitterUsers.Add(1)
	}
	return h, nil
}

// retire releases what h holds, once no request can still be deciding on h
// (or ctx ends): its verifier, its idle upstream connections, and its audit
// emitter when no other handler uses it. Handlers of successive reloads
// share an emitter while the audit section is unchanged; the last of them
// to retire closes it, so an older handler's late request never emits into
// a closed emitter, whichever order the retires finish in.
func (h *Handler) retire(ctx context.Context) {
	for h.deciding.Load() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Millisecond):
		}
	}
	h.verifier.Close()
	for _, up := range h.ups {
		up.transport.CloseIdleConnections()
	}
	if h.emitterUsers.Add(-1) > 0 {
		return
	}
	if err := h.emitter.Close(ctx); err != nil {
		h.log.Warn("audit flush incomplete", "error", err.Error())
	}
}
