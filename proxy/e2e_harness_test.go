package proxy_test

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	proxytest.Cleanup()
	os.Exit(code)
}

// gatehouse is one running gatehouse (proxytest.Gatehouse).
type gatehouse = proxytest.Gatehouse

// startGatehouse serves config in-process (proxy.Run): most tests need a
// listener, not a process.
func startGatehouse(t *testing.T, config string, env ...string) *gatehouse {
	t.Helper()
	return proxytest.Start(t, config, env...)
}

// startProcess runs the binary: for tests of signals, SIGHUP reloads, exit
// codes and what only the process shows (its goroutines, its memory).
func startProcess(t *testing.T, config string, env ...string) *gatehouse {
	t.Helper()
	return proxytest.StartProcess(t, config, env...)
}

// recorder is the recording upstream (proxytest.Upstream).
type recorder = proxytest.Upstream

func newRecorder(t *testing.T) *recorder { return proxytest.NewUpstream(t) }

// do sends a request and returns status, headers and body.
func do(t *testing.T, method, url string, header http.Header, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	c := &http.Client{Timeout: 15 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

// rawRequest writes text to addr (host:port) and returns the status line and
// the whole answer: for paths and headers a Go client would clean or refuse.
func rawRequest(t *testing.T, addr, text string) (string, string) {
	t.Helper()
	conn, err := dialTimeout(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, text); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(conn)
	s := string(b)
	line, _, _ := strings.Cut(s, "\r\n")
	return line, s
}
