package main

import (
	"net/http"
	"strings"

	"github.com/gatehouse/gatehouse/examples/internal/demoissuer"
)

// appHandler is the demo app: it echoes the method, the path and the
// headers gatehouse added (X-Auth-*, X-Request-Id, X-Forwarded-*), so the
// user sees what a protected app receives. It does no authentication of its
// own: it trusts gatehouse, which is why it must listen where only gatehouse
// can reach it.
func appHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen := map[string]string{}
		for name, values := range r.Header {
			if strings.HasPrefix(name, "X-Auth-") || strings.HasPrefix(name, "X-Forwarded-") || name == "X-Request-Id" {
				seen[name] = strings.Join(values, ", ")
			}
		}
		demoissuer.WriteJSON(w, http.StatusOK, map[string]any{
			"app":                  "quickstart demo app",
			"method":               r.Method,
			"path":                 r.URL.Path,
			"query":                r.URL.RawQuery,
			"headers":              seen,
			"authorization_header": r.Header.Get("Authorization") != "",
		})
	})
}
