// Package policy owns route matching and decisions: path normalisation (the
// one canonical path that is both matched and forwarded), nginx-style location
// matching compiled once per config, and the allow/deny decision of a route
// for a verified subject, with the detail of a denial, `when` conditions
// (compiled by policy/expr), shadow routes, and the matching trace of
// `gatehouse explain`. It must not import net/http, jwx, prometheus or any
// other gatehouse package but internal/yamlpos and its own policy/expr. It
// reads claims only through Claims (jwks implements it by the one rule of
// internal/claimpath).
//
// Per request the proxy calls, in this order:
//
//	path, ok := policy.Normalize(rawPath) // !ok: 400 bad_request, never forwarded
//	route := engine.Match(method, path)   // never nil; the default route when nothing matches
//	d := route.DecideRequest(subject, &req) // subject nil when no token was presented
//	sh := engine.Shadow(method, path)       // nil, or a shadow route to decide and record only
//
// None of them allocates for a canonical path and a route without `when`.
//
// Shadow routes: Match never returns one; Shadow returns the one that would
// have won. With two shadow routes in line only the first is recorded. The
// whole default is shadowed with `default: {..., shadow: deny}` (or a body):
// the inner default is decided for unmatched requests and recorded, the
// outer one enforced.
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
//   - `paths` (SPEC.md 15): a route's `paths` is applied over the global
//     one key by key: its `case` or `trailing_slash` alone overrides just
//     that key; its `preset` replaces both (and its own keys beside it win
//     again). `default` reads paths as the global `paths` says. A preset
//     that redirects the other spelling (Flask, Django, FastAPI, Gin) is
//     strict: the redirect comes back through gatehouse and is checked;
//     the table with sources is at presets (paths.go).
//   - `case: insensitive` folds ASCII letters only. The canonical path is
//     ASCII (everything else is %XX with upper-case hex), so É (%C3%89) and
//     é (%C3%A9) stay apart, and matching needs no lower-cased copy of the
//     path: the insensitive prefixes live in their own radix tree, keyed
//     in lower case, walked with a byte-wise fold.
//   - `trailing_slash: ignore` is symmetric for exact locations (= /p/
//     matches /p too); a prefix /p/ matches /p with the length of /p/ for
//     the longest-prefix rule; a regex is also tried on the path without
//     its trailing slash (not with one added, which would cost an
//     allocation; -t warns where that leaves a gap it can see).
//   - A route `name` must be non-empty, printable, not "default", and
//     unique among labels: no other route's name, and not the location of
//     an unnamed route (whose label that is). Unnamed routes on one
//     location keep sharing it as their label.
//   - The -t warnings probe sample paths of each location that requires a
//     token (the path of = /p; a prefix and a path under it; the literal
//     start of a regex) spelled in other case and slash, through Match. A
//     spelling that reaches a weaker route of the same upstream is a
//     bypass when that route's `paths` reads it as the original (or
//     `paths` is undeclared). Nothing is printed when nothing is exposed,
//     the "paths is not declared" warning included, so a warning is always
//     worth reading.
//
// # Where new things go
//
// Everything that decides from a request's method, path and claims stays
// here, free of net/http, jwx and prometheus, so that explain, gatehouse
// test and every listener decide alike: CEL conditions in policy/expr (the
// Route holds the compiled program); the nginx-order trace for explain in
// trace.go (one implementation of the order, two outputs); new requirement
// kinds as fields of Route checked by Decide, with their detail words built
// at load. Token reading, keys and revocation are jwks's; rendering and
// protocols are proxy's.
package policy
