package proxytest

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// Request is one request as the upstream saw it.
type Request struct {
	Method     string
	RequestURI string
	Header     http.Header
	Host       string
	Body       string
}

// Upstream is an httptest upstream that records what it got (each request,
// and every byte read on its connections) and answers {"ok":true}, or
// with the handler set by SetHandler.
type Upstream struct {
	*httptest.Server
	mu      sync.Mutex
	got     []Request
	handler http.HandlerFunc
	wire    []byte // every byte the upstream read, in arrival order
}

// NewUpstream starts a recording upstream that stops when the test ends.
func NewUpstream(t testing.TB) *Upstream {
	u := &Upstream{}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.got = append(u.got, Request{r.Method, r.RequestURI, r.Header.Clone(), r.Host, string(body)})
		h := u.handler
		u.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true}`)
	}))
	u.Server.Listener = teeListener{Listener: u.Server.Listener, u: u}
	u.Server.Start()
	t.Cleanup(u.Close)
	return u
}

// SetHandler makes h answer the requests from now on (they are still
// recorded, their body already read).
func (u *Upstream) SetHandler(h http.HandlerFunc) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.handler = h
}

// Requests returns a copy of what the upstream received so far.
func (u *Upstream) Requests() []Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Request(nil), u.got...)
}

// Last returns the latest request; the test fails when there is none.
func (u *Upstream) Last(t testing.TB) Request {
	t.Helper()
	got := u.Requests()
	if len(got) == 0 {
		t.Fatal("upstream received no request")
	}
	return got[len(got)-1]
}

// WireLen and WireSince mark and read the raw bytes the upstream read, so
// that tests can check the framing gatehouse put on the wire, not Go's
// reading of it.
func (u *Upstream) WireLen() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.wire)
}

// WireSince returns the raw bytes read since WireLen returned n.
func (u *Upstream) WireSince(n int) string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return string(u.wire[n:])
}

type teeListener struct {
	net.Listener
	u *Upstream
}

func (l teeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return teeConn{Conn: c, u: l.u}, nil
}

type teeConn struct {
	net.Conn
	u *Upstream
}

func (c teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.u.mu.Lock()
	c.u.wire = append(c.u.wire, p[:n]...)
	c.u.mu.Unlock()
	return n, err
}
