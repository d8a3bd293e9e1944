// Package jwks owns keys and token verification: issuer configuration
// (DecodeIssuers), the key sources (JWKS URL, OpenID discovery, JWKS file,
// PEM file or URL, HMAC secret from env or file), the key cache with its
// background refresh, the verified-token cache, and Verifier.Verify.
//
// It uses net/http only as a client and must not import proxy, policy or
// audit. Package jwkstest next to it provides keys, a signer and a JWKS
// server for tests and demos.
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
//     kid.
//   - Verification refuses anything but three canonical base64url parts
//     before any JSON or cryptography, reads the header and claims with
//     encoding/json into maps (exact key names; duplicate keys refused),
//     picks the issuer by the (not yet trusted) iss, checks the header alg
//     against the allow-list, the key's type and the key's own alg, refuses
//     any crit, ignores jku/x5u/jwk/x5c, then calls jwx's signature verifier
//     for that alg on the signing input, and checks the claims itself.
//     Claim numbers are float64 (encoding/json's default for any).
//   - Verified tokens are cached by the SHA-256 of the whole token; an
//     entry holds the *Result, never the token, and is refused after
//     exp+leeway, when its key left the set, when its issuer's config
//     changed, or when the issuer's keys are older than max_stale.
package jwks
