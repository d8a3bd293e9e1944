package proxy

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// Protocol names of `listen_protocols` and `upstream_protocol` (SPEC.md 9).
const (
	protoHTTP1 = "http1"
	protoH2    = "h2"  // HTTP/2 over TLS, chosen by ALPN
	protoH2C   = "h2c" // HTTP/2 over plain TCP, prior knowledge only
)

// decodeProtocols reads `listen_protocols` and `upstream_protocol`, and
// checks every route's protocol against the upstream it goes to: h2 is
// only spoken over TLS, so it needs an https:// upstream.
func decodeProtocols(d *yamlpos.Decoder, m yamlpos.Map, c *Config) {
	if n := m.Get("listen_protocols"); !yamlpos.IsNull(n) {
		var list []string
		if d.Strings(n, &list) {
			if len(list) == 0 {
				d.Errorf(n, "listen_protocols must name at least one of http1, h2, h2c")
			}
			for i, p := range list {
				e := d.Seq(n)[i]
				switch {
				case p != protoHTTP1 && p != protoH2 && p != protoH2C:
					d.Errorf(e, "listen_protocols: unknown protocol %q: want http1, h2 or h2c", p)
				case slices.Index(list, p) != i:
					d.Errorf(e, "listen_protocols: %q given twice", p)
				}
			}
			c.ListenProtocols = list
			// The default list names h2 and h2c whatever tls says, and
			// each is served where it can be (h2 with tls, h2c without);
			// a list that leaves the listener nothing to speak is an error.
			if p := serverProtocols(c); len(list) > 0 && !p.HTTP1() && !p.HTTP2() && !p.UnencryptedHTTP2() {
				if c.TLS == nil {
					d.Errorf(n, "listen_protocols: without tls only http1 and h2c can be served (h2 is chosen by ALPN over TLS)")
				} else {
					d.Errorf(n, "listen_protocols: with tls only http1 and h2 can be served (h2c is plain-text HTTP/2)")
				}
			}
		}
	}
	n := m.Get("upstream_protocol")
	if !yamlpos.IsNull(n) && d.String(n, &c.UpstreamProtocol) {
		switch c.UpstreamProtocol {
		case protoHTTP1, protoH2, protoH2C:
			if msg := protocolFits(c.UpstreamProtocol, c.Upstream); msg != "" {
				d.Errorf(n, "upstream_protocol: %s", msg)
			}
		default:
			d.Errorf(n, "unknown upstream_protocol %q: want http1, h2c or h2", c.UpstreamProtocol)
		}
	}
}

// checkRouteProtocols runs once the routes are compiled: a route's protocol
// may meet the global upstream, or its own upstream the global protocol.
// at is the `routes` node (or the file's top mapping), where an error is
// reported: a compiled route keeps no node of its own.
func checkRouteProtocols(d *yamlpos.Decoder, at *yaml.Node, c *Config) {
	if c.Policy == nil {
		return
	}
	for _, rt := range c.Policy.Routes() {
		if rt.Upstream == "" && rt.UpstreamProtocol == "" {
			continue // the global pair, checked with upstream_protocol
		}
		up, proto := upstreamOf(c, rt.Upstream, rt.UpstreamProtocol)
		if msg := protocolFits(proto, up); msg != "" {
			d.Errorf(at, "route %q: upstream_protocol: %s", rt.Name, msg)
		}
	}
}

// upstreamOf is the URL and protocol a route forwards to: its own, else the
// global ones, else http1.
func upstreamOf(c *Config, routeUpstream, routeProto string) (string, string) {
	up, proto := routeUpstream, routeProto
	if up == "" {
		up = c.Upstream
	}
	if proto == "" {
		proto = c.UpstreamProtocol
	}
	if proto == "" {
		proto = protoHTTP1
	}
	return up, proto
}

// protocolFits says why proto cannot be spoken to upstream, or "".
func protocolFits(proto, upstream string) string {
	u, err := url.Parse(upstream)
	if err != nil {
		return "" // the upstream's own error is reported
	}
	switch {
	case proto == protoH2 && u.Scheme != "https":
		return "h2 needs an https:// upstream (HTTP/2 over TLS); for plain-text HTTP/2 use h2c"
	case proto == protoH2C && u.Scheme == "https":
		return "h2c is plain-text HTTP/2 and cannot be spoken to an https:// upstream; use h2"
	}
	return ""
}

// serverProtocols is what the main listener speaks. The default is every
// protocol the listener can carry: HTTP/1.1, plus h2 by ALPN with tls or h2c
// with prior knowledge without. Go's server never honours the HTTP/1.1
// `Upgrade: h2c` dance (only prior knowledge), and the stripper removes its
// headers so the upstream cannot honour it either (SPEC.md 9).
func serverProtocols(c *Config) *http.Protocols {
	p := new(http.Protocols)
	list := c.ListenProtocols
	if list == nil {
		list = []string{protoHTTP1, protoH2, protoH2C}
	}
	for _, name := range list {
		switch name {
		case protoHTTP1:
			p.SetHTTP1(true)
		case protoH2:
			p.SetHTTP2(c.TLS != nil)
		case protoH2C:
			p.SetUnencryptedHTTP2(c.TLS == nil)
		}
	}
	return p
}

// setUpstreamProtocol makes t speak proto and nothing else: a gRPC app
// listening h2c on localhost does not answer HTTP/1.1 at all, and an
// HTTP/1.1 app must not be offered HTTP/2 it did not ask for.
// ResponseHeaderTimeout (timeouts.upstream) applies to HTTP/2 streams too
// (net/http's HTTP/2 transport reads it from t): it bounds the wait for the
// response headers, never a stream's life.
func setUpstreamProtocol(t *http.Transport, proto string) {
	p := new(http.Protocols)
	switch proto {
	case protoH2C:
		p.SetUnencryptedHTTP2(true)
	case protoH2:
		p.SetHTTP2(true)
	default:
		return // http1: an https:// upstream keeps the ALPN choice it always had
	}
	t.Protocols = p
}

// Streams need no FlushInterval of ours: ReverseProxy flushes every write
// at once when the response has no Content-Length, which is every gRPC
// response with a body. A FlushInterval of -1 would be wrong: it also
// flushes the headers of a response with Content-Length 0, and a gRPC
// trailers-only answer (one HEADERS frame that ends the stream) would reach
// the client as HEADERS, then an empty DATA frame ending the stream, which
// grpc-go reads as "server closed the stream without sending trailers".

// protocolsKey tells the upstreams of one URL apart by protocol.
func protocolsKey(raw, proto string) string {
	return proto + " " + strings.TrimSpace(raw)
}
