// Package jwks owns keys and token verification: issuer configuration
// (DecodeIssuers), the key sources (JWKS URL, OpenID discovery, JWKS file,
// PEM file or URL, HMAC secret from env or file), the key cache with its
// background refresh, the verified-token cache, the Pool that keeps both
// across config reloads, and Verifier.Verify.
//
// It uses net/http only as a client and must not import proxy, policy or
// audit (internal/* is fine). Package jwkstest next to it provides keys, a
// signer and a JWKS server for tests and demos.
//
// Where things are: config.go (the `issuers` entry), source.go (one
// issuer's key cache and refresh loop), keys.go (parsing keys), verifier.go
// (Options, Pool, New, Close, Refetch), verify.go (the verify path),
// claims.go (the claim checks), algorithms.go (which keys to try, jwx's
// verifiers), result.go and claimpath.go (Result and the claim-path rule),
// jsonscan.go (reading the token's JSON), cache.go (the token cache),
// reason.go (why a token was refused).
//
// Where new things go: revocation (SPEC.md 12) in jwks/revoke, checked on
// the same hit path as the token cache (lock-free reads; its stream
// consumer lives there too, its broker code in internal/broker); a new key
// source as a source kind in config.go and source.go; a new refusal as a
// Reason with its Detail words, mapped to proxy's reason table in proxy's
// fromJWKS alone. The OAuth client side of egress (client credentials,
// token exchange) is not verification: proxy/idp or internal/oauth.
//
// Design notes (SPEC.md 6, STYLE.md "Decided after reading the libraries'
// sources"):
//
//   - The key cache is our own loop, not jwx's jwk.Cache: ETag, max-age
//     clamped to [min_refresh_interval, refresh_interval], backoff with
//     jitter, max_stale, a 1 MiB body cap and a 64-key cap. When to refresh
//     is decided by nextDelay, a pure function; the goroutine is a thin loop.
//     A key set is published through an atomic.Pointer; requests never wait
//     for a fetch except the shared, rate-limited refetch after an unknown
//     kid (Verifier.Refetch, for SIGHUP, shares that limit).
//   - Key caches are shared by fingerprint through a Pool (internal/refpool)
//     that the server owns, not package state: a reload that keeps an
//     issuer's entry keeps its keys, schedule and cached tokens.
//   - Verification refuses anything but three canonical base64url parts
//     before any JSON or cryptography, reads the header and claims with
//     jsonscan.go (below), picks the issuer by the (not yet trusted) iss,
//     checks the header alg against the allow-list, the key's type and the
//     key's own alg, refuses any crit, ignores jku/x5u/jwk/x5c, then calls
//     jwx's signature verifier for that alg on the signing input, and checks
//     the claims itself. Claim numbers are float64 (encoding/json's default
//     for any).
//   - jsonscan.go instead of encoding/json into map[string]any: json.Valid,
//     one scan that splits the top level into raw members (refusing
//     duplicate keys at every depth), and decoding only the values a check
//     reads. Measured: BenchmarkVerifyCold, cold RS256 -31 % time and -65 %
//     allocations, HS256 -55 % (BENCHMARKS.md, "jwks: token verification"
//     and the profile before it). Its oracle is encoding/json itself:
//     FuzzObject and TestObjectAgainstJSON compare members, values, claim
//     paths, role lists, audiences and duplicate detection with what
//     encoding/json reads from the same bytes.
//   - Verified tokens are cached by the SHA-256 of the whole token; an
//     entry holds the *Result, never the token, and is refused after
//     exp+leeway, when its key left the set, when its issuer's config
//     changed, or when the issuer's keys are older than max_stale.
package jwks
