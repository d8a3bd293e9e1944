package jwks

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

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
		// Hashing the string's bytes in place: sha256 only reads them. A
		// []byte(raw) copy is the one allocation a hit would make (a
		// token's size, about 700 B, 0 -> 1 allocs/op in
		// BenchmarkVerifyCacheHit; TestVerifyCacheHitNoAlloc holds it).
		digest = sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
		if e, ok := v.cache.get(&digest); ok {
			if res, err, ok := v.checkCached(e, now); ok {
				v.metrics.cacheHit.Inc()
				return res, err
			}
		}
		v.metrics.cacheMiss.Inc()
	}
	res, e, k, src := v.verifyCold(ctx, raw, now)
	if e == nil && v.cache != nil {
		v.cache.put(&digest, &cacheEntry{res: res, iss: src, key: k, until: res.NotAfter.UnixNano()}, now.UnixNano())
	}
	return res, e
}

// checkCached validates a cache entry for this verifier at now. ok is false
// when the entry is not usable (key gone, issuer not ours): verify cold then.
func (v *Verifier) checkCached(e *cacheEntry, now time.Time) (*Result, *Error, bool) {
	if e.key.dead.Load() || !slices.Contains(v.issuers, e.iss) {
		return nil, nil, false
	}
	if now.UnixNano() > e.until {
		return nil, errExpired, true
	}
	if e.iss.keys(now) == nil {
		return nil, errKeysUnavailable, true
	}
	return e.res, nil, true
}

// token is a compact JWS split into its decoded parts.
type token struct {
	input   string // header.payload: the signing input
	header  []byte // JSON
	payload []byte // JSON
	sig     []byte
}

// jwsHeader is what verification reads from the JOSE header. (The members
// stay apart: in one struct with kid, which the result keeps, escape
// analysis would move their stack buffer to the heap.)
type jwsHeader struct {
	alg    string
	kid    string
	kidSet bool
}

// verifyCold is the full check: shape, header, issuer, key, signature,
// claims. It returns the key that verified and the issuer's key cache, for
// the token cache.
func (v *Verifier) verifyCold(ctx context.Context, raw string, now time.Time) (*Result, *Error, *key, *source) {
	tok, e := splitCompact(raw)
	if e != nil {
		return nil, e, nil, nil
	}
	var hbuf [8]member
	hdrObj, hdr, e := parseHeader(tok.header, hbuf[:0])
	if e != nil {
		return nil, e, nil, nil
	}
	// Claims are split now to find iss, which picks the issuer and so the
	// keys. Nothing in them is trusted before the signature verifies.
	var cbuf [24]member
	claims, e := parseJSONObject(tok.payload, cbuf[:0], errBadPayload)
	if e != nil {
		return nil, e, nil, nil
	}
	src, hasIss, e := v.pickIssuer(claims)
	if e != nil {
		return nil, e, nil, nil
	}
	cfg := src.is
	if e := checkHeader(cfg, hdrObj, hdr.alg); e != nil {
		return nil, e, nil, nil
	}
	used, e := v.checkSignature(ctx, src, hdr, tok, now)
	if e != nil {
		return nil, e, nil, nil
	}
	res, e := checkClaims(cfg, claims, now)
	if e != nil {
		return nil, e, nil, nil
	}
	// The config's and the key's strings rather than a copy per cached
	// token: src was found by this token's iss, so it is cfg.Name.
	if hasIss {
		res.Issuer = cfg.Name
	}
	// The key that verified names the token's kid, also when the header
	// has none (a key tried by algorithm): a revocation by kid covers
	// every token that key signed (SPEC.md 12).
	res.Kid = hdr.kid
	if hdr.kid == "" || hdr.kid == used.kid {
		res.Kid = used.kid
	}
	res.IDHash = [3]uint64{HashString(res.JTI), HashString(res.Subject), HashString(res.Kid)}
	if e := v.keep(res, claims, tok.payload); e != nil {
		return nil, e, nil, nil
	}
	return res, nil, used, src
}

// splitCompact accepts exactly the compact form: three non-empty canonical
// base64url parts. Anything else (JSON serialisations, padding, +/, stray
// bits, a stripped signature) is refused before any JSON or cryptography.
func splitCompact(raw string) (token, *Error) {
	if strings.HasPrefix(strings.TrimSpace(raw), "{") {
		return token{}, errNotCompact
	}
	hSeg, rest, ok1 := strings.Cut(raw, ".")
	pSeg, sSeg, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.IndexByte(sSeg, '.') >= 0 || hSeg == "" || pSeg == "" || sSeg == "" {
		return token{}, errMalformed
	}
	hdrJSON, ok1 := decodeSegment(hSeg)
	payload, ok2 := decodeSegment(pSeg)
	sig, ok3 := decodeSegment(sSeg)
	if !ok1 || !ok2 || !ok3 {
		return token{}, errBadBase64
	}
	return token{input: raw[:len(hSeg)+1+len(pSeg)], header: hdrJSON, payload: payload, sig: sig}, nil
}

// parseJSONObject splits a header or payload into its members: valid UTF-8
// and JSON, an object, no duplicate key at any depth. bad is the refusal
// for anything but a duplicate.
func parseJSONObject(data []byte, buf []member, bad *Error) (object, *Error) {
	if !utf8.Valid(data) || !json.Valid(data) {
		return nil, bad
	}
	o, isObj, dup := parseObject(data, buf)
	if !isObj {
		return nil, bad
	}
	if dup {
		return nil, errDuplicateKey
	}
	return o, nil
}

// parseHeader reads the JOSE header with exact key names (encoding/json
// struct decoding would match "ALG" to alg). jku, x5u, jwk and x5c are
// never looked at: keys come only from config.
func parseHeader(data []byte, buf []member) (object, jwsHeader, *Error) {
	o, e := parseJSONObject(data, buf, errBadHeader)
	if e != nil {
		return nil, jwsHeader{}, e
	}
	var h jwsHeader
	rawAlg, _ := o.get("alg")
	var ok bool
	if h.alg, ok = rawString(rawAlg); !ok {
		return nil, jwsHeader{}, errBadHeader
	}
	if _, ok := o.get("crit"); ok {
		// gatehouse implements no JWS extension (RFC 7515 4.1.11); an empty
		// crit list is not allowed by the RFC either.
		return nil, jwsHeader{}, errCrit
	}
	if b, ok := o.get("b64"); ok && string(b) != "true" {
		return nil, jwsHeader{}, errB64
	}
	var rawKid []byte
	if rawKid, h.kidSet = o.get("kid"); h.kidSet {
		if h.kid, ok = rawString(rawKid); !ok {
			return nil, jwsHeader{}, errBadHeader
		}
	}
	return o, h, nil
}

// pickIssuer finds the issuer entry by the token's iss (the entry without
// issuer when it has none).
func (v *Verifier) pickIssuer(claims object) (*source, bool, *Error) {
	rawIss, hasIss := claims.get("iss")
	var src *source
	if !hasIss {
		src = v.noIss
	} else {
		body, plain, ok := stringBody(rawIss)
		if !ok {
			return nil, false, errBadPayload
		}
		if plain {
			src = v.byName[string(body)]
		} else {
			iss, _ := rawString(rawIss)
			src = v.byName[iss]
		}
	}
	if src == nil {
		return nil, false, errUnknownIssuer
	}
	return src, hasIss, nil
}

// checkHeader checks the header's alg and typ against the issuer's entry.
func checkHeader(cfg *Issuer, hdr object, alg string) *Error {
	if !slices.Contains(cfg.Algorithms, alg) {
		return errAlgNotAllowed
	}
	if len(cfg.Types) > 0 {
		rawTyp, _ := hdr.get("typ")
		t, ok := rawString(rawTyp)
		if !ok || !typeAllowed(cfg.Types, t) {
			return errType
		}
	}
	return nil
}

// checkSignature finds the candidate keys (refetching once, shared and
// rate-limited, after an unknown kid) and returns the one that verifies.
func (v *Verifier) checkSignature(ctx context.Context, src *source, hdr jwsHeader, tok token, now time.Time) (*key, *Error) {
	ks := src.keys(now)
	if ks == nil {
		return nil, errKeysUnavailable
	}
	cands, e := candidates(ks, hdr.kid, hdr.kidSet, hdr.alg)
	if e == errUnknownKid && src.refetch(ctx) {
		if ks = src.keys(v.now()); ks == nil {
			return nil, errKeysUnavailable
		}
		cands, e = candidates(ks, hdr.kid, hdr.kidSet, hdr.alg)
	}
	if e != nil {
		return nil, e
	}
	ver := verifiers[hdr.alg]
	input := []byte(tok.input)
	for _, k := range cands {
		if ver.Verify(input, tok.sig, k.raw) == nil {
			return k, nil
		}
	}
	return nil, errSignature
}

// keep stores the claims the verifier keeps in res: every claim for callers
// that did not say which they read, else only those (Options.KeepClaims).
func (v *Verifier) keep(res *Result, claims object, payload []byte) *Error {
	if v.keepClaims == nil {
		if json.Unmarshal(payload, &res.claims) != nil {
			return errBadPayload
		}
		return nil
	}
	var ok bool
	if res.kept, ok = keepClaims(claims, v.keepClaims); !ok {
		return errBadPayload
	}
	return nil
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
