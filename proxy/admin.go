package proxy

import (
	"encoding/json"
	"net/http"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminHandler serves /metrics, /healthz, /readyz (SPEC.md 7) and the
// upstream assertion keys at /.well-known/jwks.json (SPEC.md 11). A
// ServeMux is fine here: nothing on this listener is authorised by path.
func adminHandler(m *Metrics, current *atomic.Pointer[Handler]) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		h := current.Load()
		if h == nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "unavailable", "issuers_without_keys": []string{}})
			return
		}
		if missing := h.verifier.Missing(); len(missing) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]any{"status": "unavailable", "issuers_without_keys": missing})
			return
		}
		if h.feed != nil && !h.parts.feedReady.Load() {
			if !h.feed.Ready() {
				w.WriteHeader(http.StatusServiceUnavailable)
				_ = json.NewEncoder(w).Encode(map[string]any{"status": "unavailable", "issuers_without_keys": []string{}, "revocation": "reading the backlog"})
				return
			}
			h.parts.feedReady.Store(true)
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "ok"})
	})
	// Served only while upstream_assertion is on; a reload that turns it
	// off answers 404 from then on.
	mux.HandleFunc("GET /.well-known/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		h := current.Load()
		if h == nil || h.assert == nil {
			http.NotFound(w, r)
			return
		}
		h.assert.serveJWKS(w, r)
	})
	return mux
}
