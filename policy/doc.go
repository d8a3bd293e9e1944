// Package policy owns route matching and decisions: path normalisation (the
// one canonical path that is both matched and forwarded), nginx-style location
// matching compiled once per config, and the allow/deny decision of a route
// for a verified subject. It must not import net/http, jwx, prometheus or any
// other gatehouse package but internal/yamlpos.
//
// Per request the proxy calls, in this order:
//
//	path, ok := policy.Normalize(rawPath) // !ok: 400 bad_request, never forwarded
//	route := engine.Match(method, path)   // never nil; the default route when nothing matches
//	d := route.Decide(subject)            // subject nil when no token was presented
//
// None of the three allocates for a canonical path.
//
// rawPath must be the path exactly as the client sent it. With net/http,
// take it from r.RequestURI (up to the first '?'), not from
// r.URL.EscapedPath(): when the raw path holds a byte that net/url would
// escape (a '"', '{', a non-ASCII byte), EscapedPath re-encodes the decoded
// r.URL.Path and so turns "%2F" into "/" before Normalize could refuse it.
//
// Decisions the SPEC leaves open, settled here:
//   - Regexes are matched against the canonical escaped path, the one
//     forwarded: a space is %20 and non-ASCII is %XX there (nginx matches the
//     decoded URI; for paths of unreserved characters the two agree, which
//     the differential test against nginx checks).
//   - `methods` are matched literally: `methods: [GET]` does not admit
//     HEAD (SPEC.md 3: only routes whose methods include the request method
//     take part), so a [GET] route and a [HEAD] route on one location do not
//     overlap. nginx's limit_except GET would allow HEAD too.
//   - `auth: optional` with roles, scopes or claims is a config error: the
//     requirements cannot hold without a token, and optional never denies for
//     its absence (SPEC.md 2).
//   - "/x" and "^~ /x" are the same location for the duplicate check, as
//     nginx refuses that pair too.
//   - A segment starting with ".;" or "..;" is bad with anything after the
//     ';' as well ("..;jsessionid=1"): Tomcat strips the parameters first.
//   - Raw bytes that have no place in a path (space, '"', '{', bytes >= 0x80
//     after a UTF-8 check) are percent-encoded in the canonical form.
package policy
