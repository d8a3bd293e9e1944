package jwks

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Reason says why a token was refused; it maps to the error codes of SPEC.md 4.
type Reason uint8

const (
	ReasonInvalid         Reason = iota + 1 // invalid_token (401)
	ReasonExpired                           // token_expired (401): exp passed, or nbf ahead, beyond leeway
	ReasonKeysUnavailable                   // keys_unavailable (503): keys never obtained, or older than max_stale
)

// Code is the `error` body code of SPEC.md 4.
func (r Reason) Code() string {
	switch r {
	case ReasonInvalid:
		return "invalid_token"
	case ReasonExpired:
		return "token_expired"
	case ReasonKeysUnavailable:
		return "keys_unavailable"
	}
	return "invalid_token"
}

func (r Reason) String() string { return r.Code() }

// Error is a refused token. Msg is short fixed text for the client's
// error_description; it never contains the token or bytes chosen by the
// caller. Errors are shared values: do not modify them.
type Error struct {
	Reason Reason
	Msg    string
}

func (e *Error) Error() string { return e.Reason.Code() + ": " + e.Msg }

func invalid(msg string) *Error { return &Error{Reason: ReasonInvalid, Msg: msg} }

// The refusals, allocated once.
var (
	errTokenTooLarge   = invalid("token too large")
	errMalformed       = invalid("malformed token")
	errNotCompact      = invalid("token is not a compact JWS")
	errBadBase64       = invalid("token is not canonical base64url")
	errBadHeader       = invalid("malformed token header")
	errBadPayload      = invalid("malformed token claims")
	errDuplicateKey    = invalid("duplicate key in token JSON")
	errAlgNotAllowed   = invalid("algorithm not allowed")
	errCrit            = invalid("unsupported critical header")
	errB64             = invalid("unencoded payload not supported")
	errType            = invalid("token type not allowed")
	errUnknownIssuer   = invalid("issuer not allowed")
	errUnknownKid      = invalid("unknown key id")
	errAlgKey          = invalid("algorithm does not match key")
	errSignature       = invalid("signature verification failed")
	errNoExp           = invalid("exp claim missing or not a number")
	errBadNbf          = invalid("nbf claim is not a number")
	errBadIat          = invalid("iat claim is not a number")
	errIatFuture       = invalid("token issued in the future")
	errNoIat           = invalid("iat claim required")
	errLifetime        = invalid("token lifetime too long")
	errAudience        = invalid("audience not allowed")
	errRequiredClaim   = invalid("required claim missing")
	errClaimType       = invalid("claim has the wrong type")
	errExpired         = &Error{Reason: ReasonExpired, Msg: "token expired"}
	errNotYetValid     = &Error{Reason: ReasonExpired, Msg: "token not yet valid"}
	errKeysUnavailable = &Error{Reason: ReasonKeysUnavailable, Msg: "signing keys unavailable"}
)

// Result is a verified token. It is shared between requests (the token
// cache holds it): treat it as read-only, except Memo.
type Result struct {
	Issuer, Subject, JTI, Kid string
	Expiry                    time.Time // exp
	NotAfter                  time.Time // exp + leeway: an upgraded connection closes then
	Roles, Scopes             []string  // from roles_claim / scopes_claim

	// Memo belongs to the caller (the proxy keeps the headers it rendered
	// for this result here); jwks never reads or writes it.
	Memo atomic.Value

	claims map[string]any // every claim; nil when the verifier keeps only some
	kept   []keptClaim    // the kept top-level claims (Options.KeepClaims)
}

// keptClaim is one top-level claim a verifier keeps. A few of them in a
// slice cost a fraction of a map's memory, times 10,000 cached tokens.
type keptClaim struct {
	name string
	v    any
}

// Claim looks a claim path up in the verified claims: an exact top-level
// name wins (https://example.com/roles), else dots descend
// (realm_access.roles). Values are as encoding/json decodes them: string,
// float64, bool, nil, []any, map[string]any. It does not allocate.
func (r *Result) Claim(path string) (any, bool) {
	if r.claims != nil {
		return lookupClaim(r.claims, path)
	}
	for _, c := range r.kept {
		if c.name == path {
			return c.v, true
		}
	}
	first, rest, more := strings.Cut(path, ".")
	if !more {
		return nil, false
	}
	for _, c := range r.kept {
		if c.name == first {
			m, ok := c.v.(map[string]any)
			if !ok {
				return nil, false
			}
			return descend(m, rest)
		}
	}
	return nil, false
}

func lookupClaim(m map[string]any, path string) (any, bool) {
	if v, ok := m[path]; ok {
		return v, true
	}
	return descend(m, path)
}

// descend follows a dot path through nested objects.
func descend(m map[string]any, path string) (any, bool) {
	cur := m
	rest := path
	for {
		name, tail, more := strings.Cut(rest, ".")
		v, ok := cur[name]
		if !ok {
			return nil, false
		}
		if !more {
			return v, true
		}
		if cur, ok = v.(map[string]any); !ok {
			return nil, false
		}
		rest = tail
	}
}

// Options configure New.
type Options struct {
	Issuers           []Issuer
	MaxTokenSize      int              // bytes, from token.max_size; 0 = 8192
	CacheSize         int              // verified tokens remembered, token.cache_size; 0 = 10000; negative = off
	Metrics           *Metrics         // from NewMetrics, made once per process; nil = unexported metrics
	Logger            *slog.Logger     // nil = discard
	Now               func() time.Time // nil = time.Now
	FirstFetchTimeout time.Duration    // wait for new issuers' first fetch in New; 0 = 10s
	FetchTimeout      time.Duration    // each HTTP fetch (discovery, JWKS, PEM); 0 = 10s
	HTTPClient        *http.Client     // nil = our own client with timeouts; ignored for issuers with ca_file
	// KeepClaims are the claim paths the caller will ask Result.Claim for
	// (claim headers, route claim rules). A cached Result then holds only
	// those claims, not the whole decoded payload: at 10,000 cached tokens
	// the full maps were most of the process's memory. nil keeps every claim.
	KeepClaims []string
}

// issuerRT is an issuer with its key cache, shared by the verifiers whose
// config holds an identical entry.
type issuerRT struct {
	cfg  *Issuer
	src  *source
	refs int // guarded by refsMu
}

var (
	refsMu sync.Mutex
	// liveLabels counts the running key caches per issuer label, so that
	// the per-issuer metric series go only when the last one stops (a
	// changed entry gets a new cache under the same label).
	liveLabels = map[liveKey]int{}
)

type liveKey struct {
	m     *Metrics
	label string
}

// Verifier verifies tokens against the configured issuers. Build it with New.
type Verifier struct {
	issuers []*issuerRT
	byName  map[string]*issuerRT
	noIss   *issuerRT
	maxSize int
	keep    []string // Options.KeepClaims, sorted; nil keeps all
	cache   *tokenCache
	metrics *Metrics
	now     func() time.Time
	log     *slog.Logger

	closeOnce sync.Once
}

// New builds a verifier. Issuers whose config is identical to one in prev
// (which may be nil) share prev's key cache, with no refetch, and their
// cached tokens stay valid; new issuers get their first fetch before New
// returns, bounded by FirstFetchTimeout and ctx (after that they answer
// keys_unavailable until keys arrive). An unreachable key URL is not an
// error. Background refresh runs until Close.
func New(ctx context.Context, opts Options, prev *Verifier) (*Verifier, error) {
	if len(opts.Issuers) == 0 {
		return nil, errors.New("jwks: no issuers")
	}
	if opts.MaxTokenSize <= 0 {
		opts.MaxTokenSize = 8192
	}
	if opts.CacheSize == 0 {
		opts.CacheSize = 10000
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.FirstFetchTimeout <= 0 {
		opts.FirstFetchTimeout = 10 * time.Second
	}
	if opts.FetchTimeout <= 0 {
		opts.FetchTimeout = 10 * time.Second
	}
	log := opts.Logger.With("component", "jwks")
	v := &Verifier{byName: map[string]*issuerRT{}, maxSize: opts.MaxTokenSize, metrics: opts.Metrics,
		now: opts.Now, log: log}

	var fresh []*issuerRT
	refsMu.Lock()
	for i := range opts.Issuers {
		is := &opts.Issuers[i]
		if is.fp == ([sha256.Size]byte{}) {
			is.fp = is.fingerprint()
		}
		var rt *issuerRT
		if prev != nil {
			for _, p := range prev.issuers {
				if p.cfg.fp == is.fp && p.refs > 0 {
					rt = p
					break
				}
			}
		}
		if rt == nil {
			cfg := *is
			rt = &issuerRT{cfg: &cfg}
			rt.src = newSource(rt.cfg, &opts, log)
			fresh = append(fresh, rt)
			liveLabels[liveKey{opts.Metrics, rt.src.label}]++
		}
		rt.refs++
		v.issuers = append(v.issuers, rt)
		if is.Name == "" {
			v.noIss = rt
		} else {
			v.byName[is.Name] = rt
		}
	}
	refsMu.Unlock()

	if opts.KeepClaims != nil {
		v.keep = slices.Clone(opts.KeepClaims)
		slices.Sort(v.keep)
		v.keep = slices.Compact(v.keep)
	}
	if opts.CacheSize > 0 {
		// Cached results hold the claims prev kept: shared only when the
		// caller keeps the same ones.
		if prev != nil && prev.cache != nil && prev.cache.size == opts.CacheSize && slices.Equal(prev.keep, v.keep) && (prev.keep == nil) == (v.keep == nil) {
			v.cache = prev.cache // entries of issuers v does not hold fail the membership check on a hit
		} else {
			v.cache = newTokenCache(opts.CacheSize)
		}
	}

	for _, rt := range fresh {
		rt.src.start()
	}
	wctx, cancel := context.WithTimeout(ctx, opts.FirstFetchTimeout)
	defer cancel()
	for _, rt := range fresh {
		if rt.src.first == nil {
			continue
		}
		select {
		case <-rt.src.first:
		case <-wctx.Done():
		}
	}
	return v, nil
}

// Close stops the background work of the key caches no other live verifier
// shares. It is idempotent; no goroutine of this package outlives the Close
// of the last verifier using it.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		var stop []*issuerRT
		refsMu.Lock()
		for _, rt := range v.issuers {
			rt.refs--
			if rt.refs == 0 {
				stop = append(stop, rt)
			}
		}
		refsMu.Unlock()
		for _, rt := range stop {
			rt.src.stop()
			refsMu.Lock()
			lk := liveKey{rt.src.metrics, rt.src.label}
			if liveLabels[lk]--; liveLabels[lk] == 0 {
				delete(liveLabels, lk)
				rt.src.metrics.forget(rt.src.label)
			}
			refsMu.Unlock()
		}
	})
}

// Missing lists the issuers that never had keys, by name ("(no iss)" for the
// entry without issuer), in config order.
func (v *Verifier) Missing() []string {
	var out []string
	for _, rt := range v.issuers {
		if !rt.src.hadKeys() {
			out = append(out, rt.cfg.label())
		}
	}
	return out
}

// Verify checks raw, the token alone (no "Bearer "). It returns the verified
// result, or a nil result and an *Error. Requests never fetch keys, except
// the shared, rate-limited refetch after an unknown kid (SPEC.md 6).
func (v *Verifier) Verify(ctx context.Context, raw string) (*Result, error) {
	res, e := v.verify(ctx, raw)
	if e != nil {
		return nil, e
	}
	return res, nil
}

func (v *Verifier) verify(ctx context.Context, raw string) (*Result, *Error) {
	if len(raw) > v.maxSize {
		return nil, errTokenTooLarge
	}
	now := v.now()
	var digest [sha256.Size]byte
	if v.cache != nil {
		// Hashing the string's bytes in place: sha256 only reads them, and a
		// []byte(raw) copy would be the one allocation of a cache hit.
		digest = sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
		if e, ok := v.cache.get(&digest); ok {
			if res, err, ok := v.checkCached(e, now); ok {
				v.metrics.cacheHit.Inc()
				return res, err
			}
		}
		v.metrics.cacheMiss.Inc()
	}
	res, e, k, rt := v.verifyCold(ctx, raw, now)
	if e == nil && v.cache != nil {
		v.cache.put(&digest, &cacheEntry{res: res, iss: rt, key: k, until: res.NotAfter.UnixNano()}, now.UnixNano())
	}
	return res, e
}

// checkCached validates a cache entry for this verifier at now. ok is false
// when the entry is not usable (key gone, issuer not ours): verify cold then.
func (v *Verifier) checkCached(e *cacheEntry, now time.Time) (*Result, *Error, bool) {
	if e.key.dead.Load() {
		return nil, nil, false
	}
	mine := false
	for _, rt := range v.issuers {
		if rt == e.iss {
			mine = true
			break
		}
	}
	if !mine {
		return nil, nil, false
	}
	if now.UnixNano() > e.until {
		return nil, errExpired, true
	}
	if e.iss.src.keys(now) == nil {
		return nil, errKeysUnavailable, true
	}
	return e.res, nil, true
}

// verifyCold is the full check: shape, header, issuer, key, signature, claims.
func (v *Verifier) verifyCold(ctx context.Context, raw string, now time.Time) (*Result, *Error, *key, *issuerRT) {
	// Exactly the compact form: three non-empty canonical base64url parts.
	// Anything else (JSON serialisations, padding, +/, stray bits, a stripped
	// signature) is refused before any JSON or cryptography.
	if strings.HasPrefix(strings.TrimSpace(raw), "{") {
		return nil, errNotCompact, nil, nil
	}
	d1 := strings.IndexByte(raw, '.')
	if d1 < 0 {
		return nil, errMalformed, nil, nil
	}
	d2 := d1 + 1 + strings.IndexByte(raw[d1+1:], '.')
	if d2 == d1 || strings.IndexByte(raw[d2+1:], '.') >= 0 {
		return nil, errMalformed, nil, nil
	}
	hSeg, pSeg, sSeg := raw[:d1], raw[d1+1:d2], raw[d2+1:]
	if hSeg == "" || pSeg == "" || sSeg == "" {
		return nil, errMalformed, nil, nil
	}
	hdrJSON, ok1 := decodeSegment(hSeg)
	payload, ok2 := decodeSegment(pSeg)
	sig, ok3 := decodeSegment(sSeg)
	if !ok1 || !ok2 || !ok3 {
		return nil, errBadBase64, nil, nil
	}

	// Header: exact key names (encoding/json struct decoding would match
	// "ALG" to alg), no duplicate keys.
	var hbuf [8]member
	if !utf8.Valid(hdrJSON) || !json.Valid(hdrJSON) {
		return nil, errBadHeader, nil, nil
	}
	hdr, isObj, dup := parseObject(hdrJSON, hbuf[:0])
	if !isObj {
		return nil, errBadHeader, nil, nil
	}
	if dup {
		return nil, errDuplicateKey, nil, nil
	}
	rawAlg, _ := hdr.get("alg")
	alg, ok := rawString(rawAlg)
	if !ok {
		return nil, errBadHeader, nil, nil
	}
	if _, ok := hdr.get("crit"); ok {
		// gatehouse implements no JWS extension (RFC 7515 4.1.11); an empty
		// crit list is not allowed by the RFC either.
		return nil, errCrit, nil, nil
	}
	if b, ok := hdr.get("b64"); ok && string(b) != "true" {
		return nil, errB64, nil, nil
	}
	var kid string
	rawKid, kidSet := hdr.get("kid")
	if kidSet {
		if kid, ok = rawString(rawKid); !ok {
			return nil, errBadHeader, nil, nil
		}
	}
	// jku, x5u, jwk and x5c are never looked at: keys come only from config.

	// Claims are split now to find iss, which picks the issuer and so the
	// keys. Nothing in them is trusted before the signature verifies.
	var cbuf [24]member
	if !utf8.Valid(payload) || !json.Valid(payload) {
		return nil, errBadPayload, nil, nil
	}
	claims, isObj, dup := parseObject(payload, cbuf[:0])
	if !isObj {
		return nil, errBadPayload, nil, nil
	}
	if dup {
		return nil, errDuplicateKey, nil, nil
	}
	var rt *issuerRT
	rawIss, hasIss := claims.get("iss")
	if !hasIss {
		rt = v.noIss
	} else {
		body, plain, ok := stringBody(rawIss)
		if !ok {
			return nil, errBadPayload, nil, nil
		}
		if plain {
			rt = v.byName[string(body)]
		} else {
			iss, _ := rawString(rawIss)
			rt = v.byName[iss]
		}
	}
	if rt == nil {
		return nil, errUnknownIssuer, nil, nil
	}
	cfg := rt.cfg
	if !containsString(cfg.Algorithms, alg) {
		return nil, errAlgNotAllowed, nil, nil
	}
	if len(cfg.Types) > 0 {
		rawTyp, _ := hdr.get("typ")
		t, ok := rawString(rawTyp)
		if !ok || !typeAllowed(cfg.Types, t) {
			return nil, errType, nil, nil
		}
	}

	ks := rt.src.keys(now)
	if ks == nil {
		return nil, errKeysUnavailable, nil, nil
	}
	cands, e := candidates(ks, kid, kidSet, alg)
	if e == errUnknownKid && rt.src.refetch(ctx) {
		if ks = rt.src.keys(v.now()); ks == nil {
			return nil, errKeysUnavailable, nil, nil
		}
		cands, e = candidates(ks, kid, kidSet, alg)
	}
	if e != nil {
		return nil, e, nil, nil
	}
	ver := verifiers[alg]
	// The verifiers only read the signing input: no need to copy it.
	input := unsafe.Slice(unsafe.StringData(raw), d2)
	var used *key
	for _, k := range cands {
		if ver.Verify(input, sig, k.raw) == nil {
			used = k
			break
		}
	}
	if used == nil {
		return nil, errSignature, nil, nil
	}

	res, e := checkClaims(cfg, claims, now)
	if e != nil {
		return nil, e, nil, nil
	}
	// The config's and the key's strings rather than a copy per cached
	// token: rt was found by this token's iss, so it is cfg.Name.
	if hasIss {
		res.Issuer = cfg.Name
	}
	res.Kid = kid
	if kid == used.kid {
		res.Kid = used.kid
	}
	if v.keep == nil {
		// Every claim, for callers that did not say which they read.
		if json.Unmarshal(payload, &res.claims) != nil {
			return nil, errBadPayload, nil, nil
		}
	} else if res.kept, ok = keepClaims(claims, v.keep); !ok {
		return nil, errBadPayload, nil, nil
	}
	return res, nil, used, rt
}

// keepClaims decodes the top-level claims that paths can reach: the exact
// name when the payload has it, else the first dot segment, so that
// Result.Claim answers every one of paths as it would on the full claims.
// ok is false when one of them does not decode (a number beyond float64).
func keepClaims(claims object, paths []string) ([]keptClaim, bool) {
	out := make([]keptClaim, 0, len(paths))
	ok := true
	add := func(name string) {
		raw, present := claims.get(name)
		if !present {
			return
		}
		for _, c := range out {
			if c.name == name {
				return
			}
		}
		v, good := rawValue(raw)
		ok = ok && good
		out = append(out, keptClaim{name, v})
	}
	for _, p := range paths {
		if _, present := claims.get(p); present {
			add(p)
			continue
		}
		first, _, _ := strings.Cut(p, ".")
		add(first)
	}
	return out, ok
}

// candidates picks the keys to try: those with the token's kid (or, when no
// key has it, the keys without a kid, as PEM and HMAC sources have), each of
// which must fit alg; without a kid, up to maxKidlessTry keys that fit.
func candidates(ks *keySet, kid string, kidSet bool, alg string) ([]*key, *Error) {
	var out []*key
	if kidSet {
		matched := false
		for _, k := range ks.keys {
			if k.kid == kid {
				matched = true
				if k.fits(alg) {
					out = append(out, k)
				}
			}
		}
		if !matched {
			for _, k := range ks.keys {
				if k.kid == "" && k.fits(alg) {
					out = append(out, k)
				}
			}
			if len(out) == 0 {
				return nil, errUnknownKid
			}
		}
		if len(out) == 0 {
			return nil, errAlgKey
		}
		return out, nil
	}
	for _, k := range ks.keys {
		if k.fits(alg) {
			out = append(out, k)
			if len(out) == maxKidlessTry {
				break
			}
		}
	}
	if len(out) == 0 {
		return nil, errAlgKey
	}
	return out, nil
}

// verifiers are jwx's signature verifiers, made once. We call them directly
// on the signing input we already split and checked, instead of jws.Verify,
// which would parse the token a second time (see BENCHMARKS.md).
var verifiers = func() map[string]jws.Verifier {
	m := map[string]jws.Verifier{}
	for _, a := range knownAlgs {
		ver, err := jws.NewVerifier(jwa.SignatureAlgorithm(a))
		if err != nil {
			panic("jwks: no jwx verifier for " + a)
		}
		m[a] = ver
	}
	return m
}()

// checkClaims checks the verified claims (exp, nbf, iat, aud, max_lifetime,
// required claims) and builds the result. Numbers are float64, as
// encoding/json decodes them into any: JSON numbers beyond 2^53 lose
// precision, which cannot matter for seconds since 1970.
func checkClaims(cfg *Issuer, claims object, now time.Time) (*Result, *Error) {
	nowS := float64(now.UnixNano()) / 1e9
	leeway := cfg.Leeway.Seconds()
	rawExp, _ := claims.get("exp")
	exp, ok := rawNumber(rawExp)
	if !ok || !saneTime(exp) {
		return nil, errNoExp
	}
	if nowS > exp+leeway {
		return nil, errExpired
	}
	if raw, present := claims.get("nbf"); present {
		nbf, ok := rawNumber(raw)
		if !ok || !saneTime(nbf) {
			return nil, errBadNbf
		}
		if nbf > nowS+leeway {
			return nil, errNotYetValid
		}
	}
	iat, hasIat := 0.0, false
	if raw, present := claims.get("iat"); present {
		if iat, hasIat = rawNumber(raw); !hasIat || !saneTime(iat) {
			return nil, errBadIat
		}
		if iat > nowS+leeway {
			return nil, errIatFuture
		}
	}
	if cfg.MaxLifetime > 0 {
		if !hasIat {
			return nil, errNoIat
		}
		if exp-iat > cfg.MaxLifetime.Seconds() {
			return nil, errLifetime
		}
	}
	if !cfg.AnyAudience {
		aud, _ := claims.get("aud")
		if !audienceOK(aud, cfg.Audiences) {
			return nil, errAudience
		}
	}
	for _, c := range cfg.RequiredClaims {
		if raw, ok := claims.lookup(c); !ok || string(raw) == "null" {
			return nil, errRequiredClaim
		}
	}
	// iss, a string or absent, picked the issuer: the caller sets it.
	res := &Result{}
	var ok1, ok2 bool
	res.Subject, ok1 = optString(claims, "sub")
	res.JTI, ok2 = optString(claims, "jti")
	if !ok1 || !ok2 {
		return nil, errClaimType
	}
	sec, frac := math.Modf(exp)
	res.Expiry = time.Unix(int64(sec), int64(frac*1e9))
	res.NotAfter = res.Expiry.Add(cfg.Leeway)
	if raw, ok := claims.lookup(cfg.RolesClaim); ok {
		res.Roles = stringList(raw)
	}
	if raw, ok := claims.lookup(cfg.ScopesClaim); ok {
		res.Scopes = stringList(raw)
	}
	return res, nil
}

// saneTime bounds NumericDate values to [0, year 5000) so conversions stay exact.
func saneTime(t float64) bool { return t >= 0 && t < 95617584000 }

// optString reads an optional string claim: absent is "", present and not
// a string is not ok.
func optString(o object, k string) (string, bool) {
	raw, ok := o.get(k)
	if !ok {
		return "", true
	}
	return rawString(raw)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// typeAllowed compares typ with the allowed types case-insensitively,
// treating "application/at+jwt" and "at+jwt" as the same (RFC 7515 4.1.9).
func typeAllowed(types []string, typ string) bool {
	norm := func(s string) string {
		s = strings.ToLower(s)
		return strings.TrimPrefix(s, "application/")
	}
	t := norm(typ)
	for _, a := range types {
		if norm(a) == t {
			return true
		}
	}
	return false
}

// b64ok marks the base64url alphabet (RFC 4648 5) without padding.
var b64ok = func() (t [256]bool) {
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		t[c] = true
	}
	return t
}()

var strictB64 = base64.RawURLEncoding.Strict()

// decodeSegment decodes one canonical unpadded base64url part: only the
// URL-safe alphabet (encoding/base64 would skip \r and \n), a valid length,
// and zero unused trailing bits (Strict), so that each token has exactly one
// spelling.
func decodeSegment(s string) ([]byte, bool) {
	if len(s)%4 == 1 {
		return nil, false
	}
	for i := 0; i < len(s); i++ {
		if !b64ok[s[i]] {
			return nil, false
		}
	}
	b, err := strictB64.DecodeString(s)
	return b, err == nil
}
