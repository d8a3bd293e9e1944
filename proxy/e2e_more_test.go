package proxy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

func TestLimits(t *testing.T) {
	w := newWorld(t)
	g := startGatehouse(t, w.config("limits:\n  max_header_bytes: 8192\n  max_body_bytes: 16\n", ""))
	addr := strings.TrimPrefix(g.URL, "http://")

	line, _ := rawRequest(t, addr, "GET /login HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 9000)+"\r\nConnection: close\r\n\r\n")
	if !strings.Contains(line, " 431 ") {
		t.Errorf("9000-byte header: %q, want 431", line)
	}
	line, _ = rawRequest(t, addr, "GET /login HTTP/1.1\r\nHost: x\r\nX-Small: "+strings.Repeat("a", 7000)+"\r\nConnection: close\r\n\r\n")
	if !strings.Contains(line, " 200 ") {
		t.Errorf("7000-byte header: %q, want 200", line)
	}

	before := len(w.up.Requests())
	status, _, body := do(t, "POST", g.URL+"/login", nil, strings.Repeat("x", 100))
	if status != 413 || !strings.Contains(body, "payload_too_large") {
		t.Errorf("100-byte body with Content-Length: %d %s", status, body)
	}
	if len(w.up.Requests()) != before {
		t.Errorf("an oversized body with Content-Length reached the upstream")
	}
	line, all := rawRequest(t, addr, "POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n64\r\n"+strings.Repeat("x", 100)+"\r\n0\r\n\r\n")
	if !strings.Contains(line, " 413 ") {
		t.Errorf("100-byte chunked body: %q\n%s", line, all)
	}
	for _, r := range w.up.Requests()[before:] {
		if len(r.Body) > 16 {
			t.Errorf("the upstream received %d body bytes past the limit", len(r.Body))
		}
	}
	status, _, _ = do(t, "POST", g.URL+"/login", nil, "small")
	if status != 200 || w.up.Last(t).Body != "small" {
		t.Errorf("small body: %d %q", status, w.up.Last(t).Body)
	}
}

// TestSlowHeaders: a client that never finishes its headers is cut after
// timeouts.read_header.
func TestSlowHeaders(t *testing.T) {
	w := newWorld(t)
	cfg := w.configWith(cfgOpts{timeouts: "  read_header: 500ms"})
	g := startGatehouse(t, cfg)
	conn, err := dialTimeout(strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "GET /login HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after %v", time.Since(start))
	}
}

func TestUnixUpstream(t *testing.T) {
	w := newWorld(t)
	dir, err := os.MkdirTemp("/tmp", "gh-sock")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(rw, "unix %s %s", r.URL.RequestURI(), r.Header.Get("X-Auth-Subject"))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	cfg := strings.Replace(w.config("", ""), fmt.Sprintf("upstream: %q", w.up.URL), fmt.Sprintf("upstream: %q", "unix://"+sock), 1)
	g := startGatehouse(t, cfg)
	status, _, body := do(t, "GET", g.URL+"/api/x?q=1", bearerHeader(w.token(nil)), "")
	if status != 200 || body != "unix /api/x?q=1 123" {
		t.Fatalf("through unix socket: %d %q", status, body)
	}
}

func TestTLSListen(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	pool := writeSelfSigned(t, certFile, keyFile)
	g := startProcess(t, w.config(fmt.Sprintf("tls:\n  cert_file: %q\n  key_file: %q\n", certFile, keyFile), ""))
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	url := strings.Replace(g.URL, "http://", "https://", 1)
	res, err := client.Get(url + "/login")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.TLS == nil {
		t.Fatalf("HTTPS: %d tls=%v", res.StatusCode, res.TLS != nil)
	}
	if got := w.up.Last(t).Header.Get("X-Forwarded-Proto"); got != "https" {
		t.Errorf("X-Forwarded-Proto = %q, want https", got)
	}

	// SPEC.md 2: the certificate files are re-read on reload. New files in
	// place, SIGHUP, and a new connection is served the new certificate.
	served := func() []byte {
		t.Helper()
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", strings.TrimPrefix(g.URL, "http://"),
			&tls.Config{InsecureSkipVerify: true}) // only reading which certificate is served
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].Raw
	}
	before := served()
	pool2 := writeSelfSigned(t, certFile, keyFile)
	g.Signal(syscall.SIGHUP)
	if !g.WaitLog(`"msg":"config reloaded"`, 10*time.Second) {
		t.Fatalf("no reload:\n%s", g.Stderr.String())
	}
	after := served()
	if bytes.Equal(before, after) {
		t.Fatal("after the reload the old certificate is still served")
	}
	client2 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool2}}}
	if res, err := client2.Get(url + "/login"); err != nil {
		t.Fatalf("HTTPS with the new certificate: %v", err)
	} else {
		res.Body.Close()
	}
}

func writeSelfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestWatchConfigSymlinkSwap does what the kubelet does to a mounted
// ConfigMap: the file is a symlink through ..data, and ..data is swapped
// atomically to a new directory.
func TestWatchConfigSymlinkSwap(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()
	write := func(version, cfg string) {
		vdir := filepath.Join(dir, version)
		os.Mkdir(vdir, 0o755)
		if err := os.WriteFile(filepath.Join(vdir, "gatehouse.yaml"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		os.Remove(tmp)
		if err := os.Symlink(version, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write("v1", w.config("watch_config: true\n", ""))
	link := filepath.Join(dir, "gatehouse.yaml")
	if err := os.Symlink(filepath.Join("..data", "gatehouse.yaml"), link); err != nil {
		t.Fatal(err)
	}
	g := proxytest.StartFile(t, link)
	if status, _, _ := do(t, "GET", g.URL+"/new", nil, ""); status != 403 {
		t.Fatalf("before the swap /new = %d, want 403", status)
	}
	write("v2", strings.Replace(w.config("watch_config: true\n", ""), "routes:\n", "routes:\n  - location: \"= /new\"\n    auth: none\n", 1))
	if !g.WaitLog(`"trigger":"watch"`, 10*time.Second) {
		t.Fatalf("no reload after the ConfigMap-style swap:\n%s", g.Stderr.String())
	}
	if status, _, _ := do(t, "GET", g.URL+"/new", nil, ""); status != 200 {
		t.Fatalf("after the swap /new = %d, want 200", status)
	}
}

// TestReloadRestartOnlyAndWatchToggle: a reload that changes a listener or
// a setting net/http reads per connection is refused with a clear error and
// keeps the running config whole; watch_config turned on by SIGHUP starts
// the file watch, and turned off by a watched reload stops it.
func TestReloadRestartOnlyAndWatchToggle(t *testing.T) {
	w := newWorld(t)
	withRoute := func(o cfgOpts, path string) string {
		return strings.Replace(w.configWith(o), "routes:\n", "routes:\n  - location: \"= "+path+"\"\n    auth: none\n", 1)
	}
	g := startProcess(t, w.config("", ""))
	reloads := 0
	apply := func(cfg string) {
		t.Helper()
		if err := os.WriteFile(g.ConfigPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	status := func(path string) int {
		t.Helper()
		st, _, _ := do(t, "GET", g.URL+path, nil, "")
		return st
	}

	refused := []struct {
		name, cfg, want string
	}{
		{"listen", strings.Replace(withRoute(cfgOpts{}, "/r1"), `listen: "127.0.0.1:0"`, `listen: "127.0.0.1:1"`, 1), `listen changed from`},
		{"read_header", withRoute(cfgOpts{timeouts: "  read_header: 7s\n"}, "/r2"), `timeouts.read_header changed from 10s to 7s: a restart is needed`},
		{"idle", withRoute(cfgOpts{timeouts: "  idle: 5s\n"}, "/r3"), `timeouts.idle changed from 1m30s to 5s: a restart is needed`},
		{"max_header_bytes", withRoute(cfgOpts{extra: "limits:\n  max_header_bytes: 8192\n"}, "/r4"), `limits.max_header_bytes changed from 32768 to 8192: a restart is needed`},
	}
	for i, tt := range refused {
		apply(tt.cfg)
		g.Signal(syscall.SIGHUP)
		if !g.WaitLogCount(`reload failed, keeping the running config`, i+1, 10*time.Second) {
			t.Fatalf("%s: reload not refused:\n%s", tt.name, g.Stderr.String())
		}
		if !strings.Contains(g.Stderr.String(), tt.want) {
			t.Errorf("%s: the log does not say %q:\n%s", tt.name, tt.want, grep(g.Stderr.String(), "reload failed"))
		}
		if st := status(fmt.Sprintf("/r%d", i+1)); st != 403 {
			t.Errorf("%s: the refused config's route answered %d, want 403 (running config kept whole)", tt.name, st)
		}
	}

	// watch_config on by SIGHUP: the next edit reloads by itself.
	apply(withRoute(cfgOpts{extra: "watch_config: true\n"}, "/w1"))
	g.Signal(syscall.SIGHUP)
	reloads++
	if !g.WaitLogCount(`"msg":"config reloaded"`, reloads, 10*time.Second) || status("/w1") != 200 {
		t.Fatalf("reload turning watch_config on failed:\n%s", g.Stderr.String())
	}
	apply(withRoute(cfgOpts{extra: "watch_config: true\n"}, "/w2"))
	reloads++
	if !g.WaitLog(`"trigger":"watch"`, 10*time.Second) || status("/w2") != 200 {
		t.Fatalf("watch_config turned on by SIGHUP: an edit was not picked up:\n%s", g.Stderr.String())
	}
	// Off by a watched edit: later edits wait for a signal.
	apply(withRoute(cfgOpts{}, "/w3"))
	reloads++
	if !g.WaitLogCount(`"msg":"config reloaded"`, reloads, 10*time.Second) || status("/w3") != 200 {
		t.Fatalf("the edit turning watch_config off was not picked up:\n%s", g.Stderr.String())
	}
	apply(withRoute(cfgOpts{}, "/w4"))
	time.Sleep(3 * time.Second) // three poll intervals
	if st := status("/w4"); st != 403 {
		t.Errorf("with watch_config off, an edit was applied without a signal: /w4 = %d", st)
	}
	g.Signal(syscall.SIGHUP)
	reloads++
	if !g.WaitLogCount(`"msg":"config reloaded"`, reloads, 10*time.Second) || status("/w4") != 200 {
		t.Fatalf("SIGHUP after turning watch_config off did not reload:\n%s", g.Stderr.String())
	}
}
