package proxy_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// secEgress is the egress section of the catalogue's gatehouse: "down"
// propagates the inbound token under /down/ only, "open" takes no token;
// both go to the catalogue's recording upstream.
func secEgress(upstream string) string {
	return fmt.Sprintf(`egress:
  listen: "127.0.0.1:0"
  inbound_grace: 1s
  routes:
    - host: down
      path_prefix: /down/
      upstream: %q
      token: propagate
    - host: open
      upstream: %q
      token: none
`, upstream, upstream)
}

// egressRow sends text (raw bytes) to the egress listener and checks the
// answer, whether the upstream was reached, and what it got.
func egressRow(text string, status int, code string, reach bool, check func(t *testing.T, up proxytest.Request)) func(t *testing.T, s *secWorld, addr string) {
	return func(t *testing.T, s *secWorld, _ string) {
		before := len(s.up.Requests())
		_, answer := rawRequest(t, strings.TrimPrefix(s.g.EgressURL, "http://"), strings.ReplaceAll(text, "{user}", s.user))
		if st, c := parseAnswer(answer); st != status || c != code {
			t.Errorf("answer %d %q, want %d %q\n%.600s", st, c, status, code, answer)
		}
		// A forwarded call has reached the upstream before its answer came back.
		up := s.up.Requests()[before:]
		switch {
		case reach && len(up) != 1:
			t.Fatalf("the upstream got %d requests, want 1", len(up))
		case !reach && len(up) != 0:
			t.Fatalf("the upstream got %d requests, want none: %q", len(up), up[0].RequestURI)
		}
		if check != nil {
			check(t, up[0])
		}
	}
}

func egressCases() []attackCase {
	noHeader := func(names ...string) func(t *testing.T, up proxytest.Request) {
		return func(t *testing.T, up proxytest.Request) {
			for _, n := range names {
				if v, ok := up.Header[n]; ok {
					t.Errorf("the upstream got %s: %q", n, v)
				}
			}
		}
	}
	return []attackCase{
		{id: "EGR-1", category: "egress", name: "destination no route lists (Host)",
			note:     "403 `forbidden`, counted under route `default`, upstream not reached",
			interact: egressRow("GET /x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n", 403, "forbidden", false, nil)},
		{id: "EGR-2", category: "egress", name: "CONNECT tunnel to a listed host",
			note:     "400 `bad_request`, upstream not reached",
			interact: egressRow("CONNECT down:443 HTTP/1.1\r\nHost: down:443\r\nConnection: close\r\n\r\n", 400, "bad_request", false, nil)},
		{id: "EGR-3", category: "egress", name: "absolute-form URL with userinfo",
			note:     "400 `bad_request`, upstream not reached",
			interact: egressRow("GET http://u:p@open/x HTTP/1.1\r\nHost: open\r\nConnection: close\r\n\r\n", 400, "bad_request", false, nil)},
		{id: "EGR-4", category: "egress", name: "absolute-form URL to an unlisted host, listed Host header",
			note:     "403 `forbidden` (the URL's host is the destination), upstream not reached",
			interact: egressRow("GET http://evil.example/x HTTP/1.1\r\nHost: open\r\nConnection: close\r\n\r\n", 403, "forbidden", false, nil)},
		{id: "EGR-5", category: "egress", name: "https absolute-form URL (TLS is gatehouse's to originate)",
			note:     "400 `bad_request`, upstream not reached",
			interact: egressRow("GET https://open/x HTTP/1.1\r\nHost: open\r\nConnection: close\r\n\r\n", 400, "bad_request", false, nil)},
		{id: "EGR-6", category: "egress", name: "Host with userinfo (`u@open`)",
			note:     "400 (Go's HTTP server: malformed Host header), upstream not reached",
			interact: egressRow("GET /x HTTP/1.1\r\nHost: u@open\r\nConnection: close\r\n\r\n", 400, "", false, nil)},
		{id: "EGR-7", category: "egress", name: "`..` out of the route's path_prefix",
			note:     "403 `forbidden` (matched on the normalised path), upstream not reached",
			interact: egressRow("GET /down/../admin HTTP/1.1\r\nHost: down\r\nConnection: close\r\n\r\n", 403, "forbidden", false, nil)},
		{id: "EGR-8", category: "egress", name: "encoded slash in the path",
			note:     "400 `bad_request`, upstream not reached",
			interact: egressRow("GET /x%2F..%2Fy HTTP/1.1\r\nHost: open\r\nConnection: close\r\n\r\n", 400, "bad_request", false, nil)},
		{id: "EGR-9", category: "egress", name: "propagate naming a request id gatehouse never verified a token for",
			note:     "403 `no_inbound_token`, upstream not reached",
			interact: egressRow("GET /down/x HTTP/1.1\r\nHost: down\r\nX-Request-Id: guessed-1\r\nConnection: close\r\n\r\n", 403, "no_inbound_token", false, nil)},
		{id: "EGR-10", category: "egress", name: "propagate with the app's own bearer token and no correlation",
			note:     "403 `no_inbound_token`: the app's token is never a substitute, upstream not reached",
			interact: egressRow("GET /down/x HTTP/1.1\r\nHost: down\r\nAuthorization: Bearer {user}\r\nConnection: close\r\n\r\n", 403, "no_inbound_token", false, nil)},
		{id: "EGR-11", category: "egress", name: "propagate with a traceparent of a trace no inbound request carried",
			note:     "403 `no_inbound_token`, upstream not reached",
			interact: egressRow("GET /down/x HTTP/1.1\r\nHost: down\r\nTraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\nConnection: close\r\n\r\n", 403, "no_inbound_token", false, nil)},
		{id: "EGR-12", category: "egress", name: "the app's Authorization and Proxy-Authorization on a `token: none` route",
			note:     "200, upstream reached once without either header",
			interact: egressRow("GET /x HTTP/1.1\r\nHost: open\r\nAuthorization: Bearer {user}\r\nProxy-Authorization: Basic dTpw\r\nConnection: close\r\n\r\n", 200, "", true, noHeader("Authorization", "Proxy-Authorization"))},
		{id: "EGR-13", category: "egress", name: "path and method override headers, Forwarded, X-Forwarded-For, X-Auth-* from the app",
			note: "200, upstream reached once without any of them",
			interact: egressRow("GET /x HTTP/1.1\r\nHost: open\r\nX-Original-URL: /admin\r\nX-HTTP-Method-Override: DELETE\r\nForwarded: for=1.2.3.4\r\nX-Forwarded-For: 1.2.3.4\r\nX-Auth-Subject: admin\r\nConnection: close\r\n\r\n", 200, "", true,
				noHeader("X-Original-Url", "X-Http-Method-Override", "Forwarded", "X-Forwarded-For", "X-Auth-Subject"))},
		{id: "EGR-14", category: "egress", name: "`Upgrade: h2c` through the egress listener",
			note:     "200, upstream reached once without Upgrade or HTTP2-Settings",
			interact: egressRow("GET /x HTTP/1.1\r\nHost: open\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings, close\r\n\r\n", 200, "", true, noHeader("Upgrade", "Http2-Settings"))},
		{id: "EGR-15", category: "egress", name: "inbound request whose X-Request-Id copies another request's in flight",
			note: "neither request's token is propagated for that id (the id is ambiguous): 403 `no_inbound_token`",
			interact: func(t *testing.T, s *secWorld, addr string) {
				// The victim's request is held in flight by the upstream
				// while the attacker's, with the same id, passes.
				release := make(chan struct{})
				s.up.SetHandler(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/api/hold" {
						<-release
					}
				})
				defer s.up.SetHandler(nil)
				victim := make(chan int, 1)
				go func() {
					st, _, _ := do(t, "GET", s.g.URL+"/api/hold", http.Header{"Authorization": {"Bearer " + s.user}, "X-Request-Id": {"shared-id-1"}}, "")
					victim <- st
				}()
				if !waitFor(10*time.Second, func() bool {
					for _, r := range s.up.Requests() {
						if r.RequestURI == "/api/hold" {
							return true
						}
					}
					return false
				}) {
					t.Fatal("the victim's request never reached the upstream")
				}
				if st, _, _ := do(t, "GET", s.g.URL+"/api/x", http.Header{"Authorization": {"Bearer " + s.user}, "X-Request-Id": {"shared-id-1"}}, ""); st != 200 {
					t.Fatalf("attacker's inbound = %d", st)
				}
				egressRow("GET /down/x HTTP/1.1\r\nHost: down\r\nX-Request-Id: shared-id-1\r\nConnection: close\r\n\r\n", 403, "no_inbound_token", false, nil)(t, s, addr)
				close(release)
				<-victim
			}},
	}
}
