package tlsca

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestLoad(t *testing.T) {
	srv := httptest.NewTLSServer(nil)
	defer srv.Close()
	dir := t.TempDir()
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	good := filepath.Join(dir, "ca.pem")
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(good, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	b, err := Load(good)
	if err != nil {
		t.Fatalf("Load(%q) = %v", good, err)
	}
	if b.Sum != sha256.Sum256(certPEM) {
		t.Error("Sum is not the SHA-256 of the file")
	}
	if _, err := srv.Certificate().Verify(x509VerifyOpts(b)); err != nil {
		t.Errorf("the server certificate does not verify against the loaded pool: %v", err)
	}

	if _, err := Load(empty); !errors.Is(err, ErrNoCertificate) || err.Error() != empty+" holds no PEM certificate" {
		t.Errorf("Load(no certificate) = %v, want %q", err, empty+" holds no PEM certificate")
	}
	var pe *fs.PathError
	if _, err := Load(filepath.Join(dir, "missing.pem")); !errors.As(err, &pe) {
		t.Errorf("Load(missing) = %v, want an *fs.PathError", err)
	}
}

func x509VerifyOpts(b *Bundle) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: b.Pool, DNSName: "example.com"}
}
