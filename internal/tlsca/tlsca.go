// Package tlsca owns reading a CA bundle file (the issuers' ca_file and
// upstream_ca_file) into a certificate pool: one loader, so both keys accept
// and refuse the same files.
package tlsca

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ErrNoCertificate is returned when a file reads but holds no PEM certificate.
var ErrNoCertificate = errors.New("holds no PEM certificate")

// Bundle is a CA bundle read from a file.
type Bundle struct {
	Pool *x509.CertPool
	// Sum is the SHA-256 of the file's bytes, so that a reload can tell a
	// re-issued bundle from an unchanged one.
	Sum [sha256.Size]byte
}

// Load reads file and parses every PEM certificate in it. A read error is
// returned as is (an *os.PathError); a file without any certificate gives
// an error wrapping ErrNoCertificate.
func Load(file string) (*Bundle, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s %w", file, ErrNoCertificate)
	}
	return &Bundle{Pool: pool, Sum: sha256.Sum256(data)}, nil
}
