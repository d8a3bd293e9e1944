package jwks

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// maxKeys bounds the signing keys of one set (SPEC.md 6): more is a failed refresh.
const maxKeys = 64

type keyKind string

const (
	kindRSA   keyKind = "RSA"
	kindP256  keyKind = "EC P-256"
	kindP384  keyKind = "EC P-384"
	kindP521  keyKind = "EC P-521"
	kindEd    keyKind = "Ed25519"
	kindHMAC  keyKind = "HMAC"
	kindOther keyKind = "unsupported"
)

// key is one verification key in the form jwx's verifiers take directly
// (*rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey, []byte), so that
// verification converts nothing per request.
type key struct {
	kid  string
	alg  string // the key's own alg; "" when it has none
	kind keyKind
	raw  any

	// dead is set when a refresh published a set without this key, so that
	// cached tokens verified with it die early (SPEC.md 6).
	dead atomic.Bool
}

// fits reports whether the header alg may be used with this key: the right
// key type and curve, and the key's own alg when it has one.
func (k *key) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	if k.kind == kindHMAC {
		// RFC 7518 3.2 for every HMAC key, also an oct key from a JWKS,
		// not only the configured secrets DecodeIssuers checks.
		if b, _ := k.raw.([]byte); len(b) < hmacMinLen[alg] {
			return false
		}
	}
	return algKind(alg) == k.kind
}

func algKind(alg string) keyKind {
	switch alg {
	case "RS256", "RS384", "RS512", "PS256", "PS384", "PS512":
		return kindRSA
	case "ES256":
		return kindP256
	case "ES384":
		return kindP384
	case "ES512":
		return kindP521
	case "EdDSA":
		return kindEd
	case "HS256", "HS384", "HS512":
		return kindHMAC
	}
	return kindOther
}

// id identifies the key's material and metadata: a key that survives a
// refresh unchanged keeps its *key (and the cached tokens verified with it).
func (k *key) id() string {
	var mat []byte
	switch r := k.raw.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		mat, _ = x509.MarshalPKIXPublicKey(r)
	case []byte:
		mat = r
	}
	sum := sha256.Sum256(mat)
	return k.kid + "\x00" + k.alg + "\x00" + string(k.kind) + "\x00" + hex.EncodeToString(sum[:])
}

func classify(raw any) (keyKind, error) {
	switch r := raw.(type) {
	case *rsa.PublicKey:
		return kindRSA, nil
	case *ecdsa.PublicKey:
		switch r.Curve {
		case elliptic.P256():
			return kindP256, nil
		case elliptic.P384():
			return kindP384, nil
		case elliptic.P521():
			return kindP521, nil
		}
		return kindOther, fmt.Errorf("unsupported curve %s", r.Curve.Params().Name)
	case ed25519.PublicKey:
		return kindEd, nil
	case []byte:
		return kindHMAC, nil
	}
	return kindOther, fmt.Errorf("unsupported key type %T", raw)
}

// keySet is one published set of keys.
type keySet struct {
	keys    []*key
	skipped map[string]int // reason -> count, for the metric
}

// Skip reasons (label values of gatehouse_jwks_keys_skipped_total).
const (
	skipParse       = "unparseable"
	skipEnc         = "use_enc"
	skipUnsupported = "unsupported"
)

var errNoKeys = errors.New("no usable signing key")

// parseJWKS parses a JWKS document. Keys that do not parse, carry use: enc,
// or are of an unsupported type are skipped and counted; the document fails
// when it is not a JWKS, when no usable key is left, or when it holds more
// than maxKeys signing keys. Each key goes through jwx's jwk.ParseKey: we do
// not decode JWKs ourselves.
func parseJWKS(data []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parse jwks: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New("parse jwks: no \"keys\" array")
	}
	ks := &keySet{skipped: map[string]int{}}
	for _, rk := range doc.Keys {
		jk, err := jwk.ParseKey(rk)
		if err != nil {
			ks.skipped[skipParse]++
			continue
		}
		if jk.KeyUsage() == "enc" {
			ks.skipped[skipEnc]++
			continue
		}
		pub, err := jwk.PublicRawKeyOf(jk)
		if err != nil {
			ks.skipped[skipUnsupported]++
			continue
		}
		kind, err := classify(pub)
		if err != nil {
			ks.skipped[skipUnsupported]++
			continue
		}
		k := &key{kid: jk.KeyID(), kind: kind, raw: pub}
		if a := jk.Algorithm(); a != nil && a.String() != "" {
			k.alg = a.String()
			if algKind(k.alg) != kind {
				// An alg that cannot be used with this key (e.g. RSA-OAEP, or HS256 on an RSA key).
				ks.skipped[skipUnsupported]++
				continue
			}
		}
		ks.keys = append(ks.keys, k)
	}
	if len(ks.keys) > maxKeys {
		return nil, fmt.Errorf("parse jwks: %d signing keys, at most %d allowed", len(ks.keys), maxKeys)
	}
	if len(ks.keys) == 0 {
		return ks, fmt.Errorf("parse jwks: %w (%d keys skipped)", errNoKeys, len(doc.Keys))
	}
	return ks, nil
}

// parsePEM parses one PEM public key: SPKI ("PUBLIC KEY"), PKCS#1 ("RSA
// PUBLIC KEY") or a certificate, through jwx's jwk.ParseKey(WithPEM).
func parsePEM(data []byte) (*key, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if strings.Contains(block.Type, "PRIVATE") {
		return nil, errors.New("holds a private key; give the public key only")
	}
	jk, err := jwk.ParseKey(data, jwk.WithPEM(true))
	if err != nil {
		return nil, fmt.Errorf("parse PEM: %w", err)
	}
	pub, err := jwk.PublicRawKeyOf(jk)
	if err != nil {
		return nil, fmt.Errorf("parse PEM: %w", err)
	}
	kind, err := classify(pub)
	if err != nil {
		return nil, fmt.Errorf("parse PEM: %w", err)
	}
	return &key{kind: kind, raw: pub}, nil
}
