package proxy

import (
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
)

// foldName is a header name as gatehouse compares it: lower case, with `_`
// and `-` the same character, because WSGI, CGI and FastCGI upstreams read
// X_Auth_Subject and X-Auth-Subject as one header (SPEC.md 5).
func foldName(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = foldByte(c)
	}
	return string(b)
}

func foldByte(c byte) byte {
	switch {
	case c == '_':
		return '-'
	case 'A' <= c && c <= 'Z':
		return c + 'a' - 'A'
	}
	return c
}

// foldHasPrefix reports whether name starts with folded (already folded)
// under the folding of foldName, without allocating.
func foldHasPrefix(name, folded string) bool {
	if len(name) < len(folded) {
		return false
	}
	for i := 0; i < len(folded); i++ {
		if foldByte(name[i]) != folded[i] {
			return false
		}
	}
	return true
}

func foldEqual(name, folded string) bool {
	return len(name) == len(folded) && foldHasPrefix(name, folded)
}

func canonicalHeader(s string) string { return textproto.CanonicalMIMEHeaderKey(s) }

func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte("\"(),/:;<=>?@[\\]{}", c) >= 0 {
			return false
		}
	}
	return true
}

var hopByHop = []string{
	"connection", "proxy-connection", "keep-alive", "proxy-authenticate",
	"proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
}

// reservedHeader reports whether name is a header gatehouse owns on the
// way to the upstream: hop-by-hop, the credentials, Host, the request id,
// the forwarding headers it sets and those it always strips. Neither a
// claim header (headers) nor the upstream assertion may be written there:
// the value would be replaced, appended to, or stripped.
func reservedHeader(name string) bool {
	if isHopByHop(name) {
		return true
	}
	for _, h := range [...]string{"authorization", "host", "cookie", "x-request-id",
		"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"} {
		if foldEqual(name, h) {
			return true
		}
	}
	f := foldName(name)
	for _, h := range alwaysStripped {
		if f == foldName(h) {
			return true
		}
	}
	return false
}

func isHopByHop(name string) bool {
	for _, h := range hopByHop {
		if foldEqual(name, h) {
			return true
		}
	}
	return false
}

// stripper removes the headers a client must never set (SPEC.md 5). It is
// built once per config.
type stripper struct {
	prefixes []string // folded strip_headers prefixes
	names    []string // folded: every injected header name and the always-stripped list
}

func newStripper(c *Config) *stripper {
	s := &stripper{}
	for _, p := range c.StripHeaders {
		s.prefixes = append(s.prefixes, foldName(p))
	}
	for _, h := range c.Headers {
		s.names = append(s.names, foldName(h.Name))
	}
	for _, h := range alwaysStripped {
		s.names = append(s.names, foldName(h))
	}
	if c.Assertion != nil {
		// Only gatehouse vouches: a client's assertion goes on every route,
		// auth: none included, before anything else reads the request.
		s.names = append(s.names, foldName(c.Assertion.Header))
	}
	return s
}

func (s *stripper) match(name string) bool {
	for _, p := range s.prefixes {
		if foldHasPrefix(name, p) {
			return true
		}
	}
	for _, n := range s.names {
		if foldEqual(name, n) {
			return true
		}
	}
	return false
}

// strip removes every header the client may not set, and resolves the
// Connection header now: a client naming a header in Connection would
// otherwise have httputil.ReverseProxy delete it after gatehouse set it (an
// injected X-Auth-* or X-Request-Id). Only a WebSocket upgrade survives: any
// other protocol switch (h2c above all) would hand the client a raw tunnel
// to the upstream in which later requests pass no check.
func (s *stripper) strip(h http.Header) {
	for k := range h {
		if s.match(k) {
			delete(h, k)
		}
	}
	websocket := isWebSocket(h)
	if !websocket {
		delete(h, "Upgrade")
		delete(h, "Http2-Settings")
	}
	conn, ok := h["Connection"]
	if !ok {
		return
	}
	upgrade := false
	for _, v := range conn {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			tok = textproto.TrimString(tok)
			if strings.EqualFold(tok, "upgrade") {
				upgrade = true
				continue
			}
			// X-Request-Id is gatehouse's own by now (set before stripping).
			if tok != "" && !strings.EqualFold(tok, "X-Request-Id") {
				h.Del(tok)
			}
		}
	}
	if upgrade && websocket {
		h["Connection"] = connectionUpgrade
	} else {
		delete(h, "Connection")
	}
}

// isWebSocket reports whether the request asks for exactly a WebSocket
// upgrade (RFC 6455 4.1), the one protocol switch SPEC.md 5 passes.
func isWebSocket(h http.Header) bool {
	v := h["Upgrade"]
	return len(v) == 1 && strings.EqualFold(textproto.TrimString(v[0]), "websocket")
}

var connectionUpgrade = []string{"Upgrade"}

// clientIP is the rightmost address of X-Forwarded-For plus the peer that is
// not a trusted proxy (SPEC.md 5); the leftmost one when all are trusted.
func clientIP(remoteAddr string, xff []string, trusted []netip.Prefix) string {
	peer := peerHost(remoteAddr)
	if len(trusted) == 0 {
		return peer
	}
	if a, err := netip.ParseAddr(peer); err != nil || !isTrusted(a, trusted) {
		return peer
	}
	last := peer
	for i := len(xff) - 1; i >= 0; i-- {
		v := xff[i]
		for v != "" {
			var hop string
			if j := strings.LastIndexByte(v, ','); j >= 0 {
				hop, v = v[j+1:], v[:j]
			} else {
				hop, v = v, ""
			}
			hop = textproto.TrimString(hop)
			if hop == "" {
				continue
			}
			a, err := netip.ParseAddr(hop)
			if err != nil {
				// Not an address: nothing to the left of it can be believed.
				return last
			}
			if !isTrusted(a, trusted) {
				return hop
			}
			last = hop
		}
	}
	return last
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	a = a.Unmap()
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// peerHost is the host part of a RemoteAddr ("1.2.3.4:5678", "[::1]:80").
func peerHost(remoteAddr string) string {
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		if ap.Addr().Is4() {
			// netip accepts only the canonical dotted form: the text as
			// received is Addr.String() without its allocation.
			return remoteAddr[:strings.LastIndexByte(remoteAddr, ':')]
		}
		return ap.Addr().Unmap().String()
	}
	if i := strings.LastIndexByte(remoteAddr, ':'); i >= 0 {
		return strings.Trim(remoteAddr[:i], "[]")
	}
	return remoteAddr
}

func peerTrusted(remoteAddr string, trusted []netip.Prefix) bool {
	if len(trusted) == 0 {
		return false
	}
	ap, err := netip.ParseAddrPort(remoteAddr)
	return err == nil && isTrusted(ap.Addr(), trusted)
}
