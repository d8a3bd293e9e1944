package oauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// assertionTTL is the client assertion's lifetime: long enough for one
// request, short enough that a captured one is soon useless.
const assertionTTL = 60 * time.Second

// assertion returns a private_key_jwt client assertion for one request to
// endpoint (RFC 7523 3, OpenID Connect Core 9): iss = sub = client_id, aud =
// the token endpoint, a random jti, iat, exp = iat + 60 s.
func (c *Client) assertion(endpoint string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	payload, err := json.Marshal(struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Aud string `json:"aud"`
		Jti string `json:"jti"`
		Iat int64  `json:"iat"`
		Exp int64  `json:"exp"`
	}{c.cfg.ClientID, c.cfg.ClientID, endpoint, base64.RawURLEncoding.EncodeToString(jti[:]), now.Unix(), now.Add(assertionTTL).Unix()})
	if err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	h := jws.NewHeaders()
	if err := h.Set(jws.TypeKey, "JWT"); err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	if err := h.Set(jws.KeyIDKey, c.cfg.KeyID); err != nil {
		return "", fmt.Errorf("client assertion: %w", err)
	}
	signed, err := jws.Sign(payload, jws.WithKey(jwa.SignatureAlgorithm(c.alg), c.cfg.PrivateKey, jws.WithProtectedHeaders(h)))
	if err != nil {
		// jws errors name the algorithm and key type, not the key.
		return "", fmt.Errorf("client assertion: sign: %w", err)
	}
	return string(signed), nil
}

// signingAlg is the JWS algorithm for a public key gatehouse accepts for
// private_key_jwt.
func signingAlg(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", errors.New("EC keys must be on P-256 (ES256)")
		}
		return jwa.ES256.String(), nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("RSA key of %d bits; at least 2048 needed", k.N.BitLen())
		}
		return jwa.RS256.String(), nil
	case ed25519.PublicKey:
		return jwa.EdDSA.String(), nil
	default:
		return "", fmt.Errorf("unsupported key type %T (EC P-256, RSA or Ed25519)", pub)
	}
}

// thumbprint is the RFC 7638 SHA-256 thumbprint of pub, base64url.
func thumbprint(pub crypto.PublicKey) (string, error) {
	k, err := jwk.FromRaw(pub)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// LoadPrivateKey reads a PEM private key for private_key_jwt: PKCS #8
// ("PRIVATE KEY"), SEC 1 ("EC PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY");
// EC P-256 (ES256), RSA ≥ 2048 bits (RS256) or Ed25519 (EdDSA). It returns
// the key and its kid, the RFC 7638 thumbprint. Encrypted keys are refused:
// the file is the secret (mounted from a Kubernetes Secret).
func LoadPrivateKey(path string) (crypto.Signer, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("private key: %w", err)
	}
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, "", fmt.Errorf("private key %s: no PEM private key block", path)
		}
		var key any
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, "", fmt.Errorf("private key %s: encrypted keys are not supported", path)
		default:
			continue // e.g. "EC PARAMETERS" before the key, as openssl writes it
		}
		if err != nil {
			// x509's parse errors describe the structure, never key bytes.
			return nil, "", fmt.Errorf("private key %s: %w", path, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, "", fmt.Errorf("private key %s: unsupported key type %T", path, key)
		}
		if _, err := signingAlg(signer.Public()); err != nil {
			return nil, "", fmt.Errorf("private key %s: %w", path, err)
		}
		kid, err := thumbprint(signer.Public())
		if err != nil {
			return nil, "", fmt.Errorf("private key %s: %w", path, err)
		}
		return signer, kid, nil
	}
}

func b64std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
