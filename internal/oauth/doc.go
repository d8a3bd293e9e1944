// Package oauth owns the OAuth client side of egress (SPEC.md section 11):
// getting a token from the identity provider's token endpoint by RFC 8693
// token exchange or RFC 6749 4.4 client credentials, authenticating the
// client with client_secret_basic or private_key_jwt (RFC 7523), and caching
// the results.
//
// What it guarantees:
//   - Results are cached per (grant, SHA-256 of the subject token, audience,
//     sorted scopes) until exp minus 10 % of the lifetime, in an LRU bounded
//     by Config.MaxEntries. The subject token itself is never kept: the key
//     holds only its digest.
//   - One request to the identity provider per cache key at a time: callers
//     asking for the same key while it is being fetched wait for that fetch.
//   - Between exp − 10 % and exp the cached token is still returned at once
//     while one background fetch replaces it; a failed background fetch is
//     retried with backoff (1 s doubling to 30 s, equal jitter), so a token
//     still valid keeps being used while the identity provider is down.
//   - Every failure to get a token wraps ErrUnavailable. Its text says what
//     the identity provider did (status, registered OAuth error code) and
//     never carries the client secret, the client assertion, the subject
//     token or an issued token.
//   - Responses are hostile input: 64 KiB cap, one JSON object, token_type
//     Bearer, expires_in an integer in [1 s, 366 days], access_token made of
//     visible ASCII only (header-safe), and, for a JWT-shaped access token
//     carrying aud, the requested audience among its audiences.
//
// The lifetime comes from expires_in. When expires_in is absent and the
// access token is a JWT, its exp (and iat when present) are read without
// verification, only to know how long to cache it: the token is the
// identity provider's to vouch for, gatehouse only forwards it. A token with
// neither is returned to the caller once and not cached (Token.Expiry is
// zero).
//
// Metrics are the caller's: Config.Observe is called once per attempt to get
// a token from the identity provider.
//
// Leaf package: stdlib and jwx/v2 (for signing the client assertion) only;
// it must not import proxy, policy, jwks, audit, yaml or prometheus
// (layout_test.go).
package oauth
