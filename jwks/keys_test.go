package jwks

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

func certPEM(t *testing.T, k *jwkstest.Key) []byte {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "issuer"},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(1<<33, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k.Private.(crypto.Signer))
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestParsePEM(t *testing.T) {
	rs := jwkstest.NewKey("RS256", "")
	p384 := jwkstest.NewKey("ES384", "")
	p521 := jwkstest.NewKey("ES512", "")
	ed := jwkstest.NewKey("EdDSA", "")
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(rs.Public().(*rsa.PublicKey))})
	privDER, _ := x509.MarshalPKCS8PrivateKey(rs.Private)
	tests := []struct {
		name string
		in   []byte
		want keyKind
		ok   bool
	}{
		{"RSA SPKI", rs.PublicPEM(), kindRSA, true},
		{"RSA PKCS#1", pkcs1, kindRSA, true},
		{"RSA certificate", certPEM(t, rs), kindRSA, true},
		{"P-384 SPKI", p384.PublicPEM(), kindP384, true},
		{"P-521 certificate", certPEM(t, p521), kindP521, true},
		{"Ed25519 SPKI", ed.PublicPEM(), kindEd, true},
		{"Ed25519 certificate", certPEM(t, ed), kindEd, true},
		{"private key refused", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER}), "", false},
		{"not PEM", []byte("hello"), "", false},
		{"garbage in a PEM block", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("junk")}), "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := parsePEM(tt.in)
			if (err == nil) != tt.ok || (err == nil && k.kind != tt.want) {
				t.Errorf("parsePEM = %+v, %v; want kind %q ok %v", k, err, tt.want, tt.ok)
			}
		})
	}
}
