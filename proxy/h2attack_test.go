package proxy_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Hostile HTTP/2 (SPEC.md 9), written frame by frame with x/net's Framer
// (golang.org/x/net comes with google.golang.org/grpc anyway) to the
// catalogue's binary over h2c with prior knowledge. Go's HTTP/2 server
// refuses most of these itself; the rows prove it does so in front of
// gatehouse too, and that nothing reaches the upstream unauthorised.

// h2Conn is one raw HTTP/2 client connection.
type h2Conn struct {
	t    *testing.T
	conn net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	buf  bytes.Buffer
	dec  *hpack.Decoder
}

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	conn, err := dialTimeout(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	c := &h2Conn{t: t, conn: conn, fr: http2.NewFramer(conn, conn)}
	c.enc = hpack.NewEncoder(&c.buf)
	c.dec = hpack.NewDecoder(4096, nil)
	c.fr.ReadMetaHeaders = c.dec
	c.fr.MaxHeaderListSize = 1 << 20
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// block encodes header fields (pairs of name, value) as one HPACK block.
func (c *h2Conn) block(fields ...string) []byte {
	c.buf.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		c.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return append([]byte(nil), c.buf.Bytes()...)
}

// get sends a GET on stream id with the given fields after the usual
// pseudo-headers (unless fields start with a pseudo-header of their own).
func (c *h2Conn) headers(id uint32, block []byte, endStream bool) error {
	return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: endStream, EndHeaders: true})
}

// h2Result is how the server ended one stream (or the connection).
type h2Result struct {
	status int                // :status of the response, 0 when none
	rst    http2.ErrCode      // RST_STREAM code, when the stream was reset
	reset  bool               // the stream was reset
	goaway *http2.GoAwayFrame // GOAWAY, when the connection was ended
	closed bool               // the connection ended without either
	header http.Header
}

func (r h2Result) String() string {
	switch {
	case r.status != 0:
		return fmt.Sprintf("status %d", r.status)
	case r.reset:
		return "RST_STREAM " + r.rst.String()
	case r.goaway != nil:
		return "GOAWAY " + r.goaway.ErrCode.String()
	}
	return "connection closed"
}

// await reads frames until stream id gets a response or a reset, or the
// connection ends.
func (c *h2Conn) await(id uint32) h2Result {
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return h2Result{closed: true}
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.GoAwayFrame:
			return h2Result{goaway: f}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return h2Result{reset: true, rst: f.ErrCode}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				continue
			}
			r := h2Result{header: http.Header{}}
			for _, hf := range f.Fields {
				if hf.Name == ":status" {
					r.status, _ = strconv.Atoi(hf.Value)
				} else {
					r.header.Add(hf.Name, hf.Value)
				}
			}
			return r
		}
	}
}

// h2Request sends one request made of fields on a new connection and says
// how it ended.
func h2Request(t *testing.T, addr string, fields ...string) h2Result {
	c := dialH2(t, addr)
	if err := c.headers(1, c.block(fields...), true); err != nil {
		t.Fatal(err)
	}
	return c.await(1)
}

// h2Get is the pseudo-headers of a GET of path at app.test.
func h2Get(path string, more ...string) []string {
	return append([]string{":method", "GET", ":scheme", "http", ":authority", "app.test", ":path", path}, more...)
}

// noneReached fails when the upstream got a request during f.
func noneReached(t *testing.T, s *secWorld, f func()) {
	t.Helper()
	before := len(s.up.Requests())
	f()
	if got := s.up.Requests()[before:]; len(got) != 0 {
		t.Errorf("the upstream got %d requests, first %q", len(got), got[0].RequestURI)
	}
}

// refusedStream wants fields on an auth: none route, where a request that
// got through would reach the upstream, refused by Go's HTTP/2 server with
// its own plain 400 (RFC 9113 8.2.2: a malformed request).
func refusedStream(fields ...string) func(t *testing.T, s *secWorld, addr string) {
	return func(t *testing.T, s *secWorld, addr string) {
		noneReached(t, s, func() {
			r := h2Request(t, addr, h2Get("/public/x", fields...)...)
			if r.status != 400 || r.header.Get("content-type") == "application/json" {
				t.Errorf("answered %v (%s), want Go's own plain 400", r, r.header.Get("content-type"))
			}
		})
	}
}

// answeredH2 wants an answer status and error code (from the JSON body's
// absence we read only the status here) with the upstream not reached.
func answeredH2(status int, fields ...string) func(t *testing.T, s *secWorld, addr string) {
	return func(t *testing.T, s *secWorld, addr string) {
		noneReached(t, s, func() {
			if r := h2Request(t, addr, fields...); r.status != status {
				t.Errorf("answered %v, want status %d", r, status)
			}
		})
	}
}

// writeSplit sends one header block for stream 1 as HEADERS and as many
// CONTINUATION frames as the default 16 KiB frame size needs.
func writeSplit(t *testing.T, c *h2Conn, block []byte) {
	t.Helper()
	const max = 16384
	for i := 0; i < len(block); i += max {
		end := min(i+max, len(block))
		var err error
		if i == 0 {
			err = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:end], EndStream: true, EndHeaders: end == len(block)})
		} else {
			err = c.fr.WriteContinuation(1, end == len(block), block[i:end])
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func http2Cases() []attackCase {
	return []attackCase{
		{id: "H2-01", category: "http2", name: "stream reset flood (CVE-2023-44487 class): 5,000 HEADERS each reset at once, on one connection",
			note: "no request reaches the upstream, another client is answered during the flood, and the goroutine count returns to where it was (Go's server runs at most MaxConcurrentStreams handlers per connection and ends a connection that queues over 4 times that with GOAWAY ENHANCE_YOUR_CALM)",
			interact: func(t *testing.T, s *secWorld, addr string) {
				base := goroutines(t, s.g)
				noneReached(t, s, func() {
					c := dialH2(t, addr)
					block := c.block(h2Get("/api/x")...)
					for i := uint32(0); i < 5000; i++ {
						id := 2*i + 1
						// HPACK state is per connection: every block is the
						// same literal encoding only when sent in order.
						if err := c.headers(id, block, true); err != nil {
							break // the server ended the connection
						}
						if err := c.fr.WriteRSTStream(id, http2.ErrCodeCancel); err != nil {
							break
						}
					}
					// Another client is answered while the flood connection
					// is still open.
					began := time.Now()
					if status, _, _ := do(t, "GET", s.g.URL+"/api/x", nil, ""); status != 401 {
						t.Errorf("another client got %d during the flood, want 401", status)
					}
					t.Logf("FIGURE http2 reset flood: another client answered in %s during the flood", time.Since(began).Round(time.Millisecond))
				})
				if !waitFor(10*time.Second, func() bool { return goroutines(t, s.g) <= base+20 }) {
					t.Errorf("goroutines %d after the flood, were %d", goroutines(t, s.g), base)
				}
			}},
		{id: "H2-02", category: "http2", name: "CONTINUATION flood (CVE-2024-27316 class): one header block sent as endless CONTINUATION frames",
			note: "Go's server stops reading at the header list limit and ends the connection (it never buffers the flood); the upstream is not reached",
			interact: func(t *testing.T, s *secWorld, addr string) {
				noneReached(t, s, func() {
					c := dialH2(t, addr)
					first := c.block(h2Get("/public/x")...)
					if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true}); err != nil {
						t.Fatal(err)
					}
					junk := c.block("x-junk", strings.Repeat("a", 8000))
					sent := 0
					for ; sent < 2000; sent++ { // 16 MB if nothing stopped it
						if err := c.fr.WriteContinuation(1, false, junk); err != nil {
							break
						}
					}
					r := c.await(1)
					if r.status != 0 {
						t.Errorf("answered %v after %d CONTINUATION frames, want the connection ended", r, sent)
					}
					if sent == 2000 && r.goaway == nil && !r.closed {
						t.Errorf("all 2000 CONTINUATION frames accepted and the connection still open (%v)", r)
					}
				})
			}},
		{id: "H2-03", category: "http2", name: "header list over limits.max_header_bytes (40 headers of 1 KiB in HEADERS + CONTINUATION)",
			note: "431 from Go's HTTP/2 server before gatehouse sees the request (gRPC too: grpc-go reports it as UNKNOWN, SPEC.md 9); upstream not reached",
			interact: func(t *testing.T, s *secWorld, addr string) {
				noneReached(t, s, func() {
					c := dialH2(t, addr)
					var fields []string
					for i := range 40 {
						fields = append(fields, fmt.Sprintf("x-big-%d", i), strings.Repeat("b", 1<<10))
					}
					writeSplit(t, c, c.block(h2Get("/public/x", fields...)...))
					if r := c.await(1); r.status != 431 {
						t.Errorf("answered %v, want 431", r)
					}
				})
			}},
		{id: "H2-04", category: "http2", name: "connection: keep-alive in an HTTP/2 request",
			note: "400 (Go's HTTP/2 server, RFC 9113 8.2.2), upstream not reached", interact: refusedStream("connection", "keep-alive")},
		{id: "H2-05", category: "http2", name: "transfer-encoding: chunked in an HTTP/2 request",
			note: "400 (Go's HTTP/2 server), upstream not reached", interact: refusedStream("transfer-encoding", "chunked")},
		{id: "H2-06", category: "http2", name: "upgrade: h2c in an HTTP/2 request",
			note: "400 (Go's HTTP/2 server), upstream not reached", interact: refusedStream("upgrade", "h2c")},
		{id: "H2-07", category: "http2", name: "keep-alive and proxy-connection in an HTTP/2 request",
			note: "400 (Go's HTTP/2 server), upstream not reached", interact: refusedStream("keep-alive", "timeout=5", "proxy-connection", "close")},
		{id: "H2-08", category: "http2", name: "te: gzip (only te: trailers is allowed in HTTP/2)",
			note: "400 (Go's HTTP/2 server), upstream not reached", interact: refusedStream("te", "gzip")},
		{id: "H2-09", category: "http2", name: "control: te: trailers passes",
			note: "200, the upstream gets the request",
			interact: func(t *testing.T, s *secWorld, addr string) {
				before := len(s.up.Requests())
				if r := h2Request(t, addr, h2Get("/public/x", "te", "trailers")...); r.status != 200 {
					t.Errorf("answered %v, want 200", r)
				}
				if n := len(s.up.Requests()) - before; n != 1 {
					t.Errorf("the upstream got %d requests, want 1", n)
				}
			}},
		{id: "H2-10", category: "http2", name: ":path without a leading slash (public/x)",
			note: "RST_STREAM PROTOCOL_ERROR, upstream not reached", interact: func(t *testing.T, s *secWorld, addr string) {
				noneReached(t, s, func() {
					r := h2Request(t, addr, ":method", "GET", ":scheme", "http", ":authority", "app.test", ":path", "public/x")
					if !r.reset && r.status != 400 {
						t.Errorf("answered %v, want RST_STREAM or 400", r)
					}
				})
			}},
		{id: "H2-11", category: "http2", name: ":path in absolute form (http://app.test/public/x)",
			note: "RST_STREAM PROTOCOL_ERROR (Go's HTTP/2 server wants an origin-form :path), upstream not reached",
			interact: func(t *testing.T, s *secWorld, addr string) {
				noneReached(t, s, func() {
					r := h2Request(t, addr, ":method", "GET", ":scheme", "http", ":authority", "app.test", ":path", "http://app.test/public/x")
					if !r.reset || r.rst != http2.ErrCodeProtocol {
						t.Errorf("answered %v, want RST_STREAM PROTOCOL_ERROR", r)
					}
				})
			}},
		{id: "H2-12", category: "http2", name: ":path * on GET",
			note: "refused (RST_STREAM or 400), upstream not reached",
			interact: func(t *testing.T, s *secWorld, addr string) {
				noneReached(t, s, func() {
					r := h2Request(t, addr, ":method", "GET", ":scheme", "http", ":authority", "app.test", ":path", "*")
					if !r.reset && r.status != 400 {
						t.Errorf("answered %v, want RST_STREAM or 400", r)
					}
				})
			}},
		{id: "H2-13", category: "http2", name: ":path /public/../admin/x and /public/%2e%2e/admin/x",
			note: "normalised to /admin/x as over HTTP/1.1 (SPEC.md 3): 401, upstream not reached",
			interact: func(t *testing.T, s *secWorld, addr string) {
				answeredH2(401, h2Get("/public/../admin/x")...)(t, s, addr)
				answeredH2(401, h2Get("/public/%2e%2e/admin/x")...)(t, s, addr)
			}},
		{id: "H2-14", category: "http2", name: ":path with %2F inside a segment (/public%2F..%2Fadmin/x)",
			note: "400 `bad_request`, upstream not reached", interact: answeredH2(400, h2Get("/public%2F..%2Fadmin/x")...)},
		{id: "H2-15", category: "http2", name: "two :path pseudo-headers (/public/x then /admin/x)",
			note: "RST_STREAM PROTOCOL_ERROR, upstream not reached",
			interact: func(t *testing.T, s *secWorld, addr string) {
				noneReached(t, s, func() {
					r := h2Request(t, addr, append(h2Get("/public/x"), ":path", "/admin/x")...)
					if !r.reset {
						t.Errorf("answered %v, want RST_STREAM", r)
					}
				})
			}},
		{id: "H2-16", category: "http2", name: "x-auth-subject and x_auth_roles in lower case on an auth: none route",
			note: "stripped as over HTTP/1.1: the upstream gets neither",
			interact: func(t *testing.T, s *secWorld, addr string) {
				before := len(s.up.Requests())
				if r := h2Request(t, addr, h2Get("/public/x", "x-auth-subject", "admin", "x_auth_roles", "admin")...); r.status != 200 {
					t.Fatalf("answered %v, want 200", r)
				}
				got := s.up.Requests()[before:]
				if len(got) != 1 {
					t.Fatalf("the upstream got %d requests, want 1", len(got))
				}
				for k := range got[0].Header {
					if strings.HasPrefix(strings.ToLower(strings.ReplaceAll(k, "_", "-")), "x-auth-") {
						t.Errorf("the upstream got %s: %q", k, got[0].Header[k])
					}
				}
			}},
		{id: "H2-17", category: "http2", name: "a gRPC request denied: answered as gRPC, not JSON",
			note: "HTTP 200 with grpc-status 16 and no body (trailers-only), upstream not reached",
			interact: func(t *testing.T, s *secWorld, addr string) {
				noneReached(t, s, func() {
					r := h2Request(t, addr, ":method", "POST", ":scheme", "http", ":authority", "app.test", ":path", "/api/pkg.Svc/M",
						"content-type", "application/grpc", "te", "trailers")
					if r.status != 200 || r.header.Get("grpc-status") != "16" {
						t.Errorf("answered %v grpc-status %q, want 200 with grpc-status 16", r, r.header.Get("grpc-status"))
					}
				})
			}},
		{id: "H2-18", category: "http2", name: "one 40 KiB header value (over limits.max_header_bytes)",
			note: "GOAWAY COMPRESSION_ERROR: Go's HPACK decoder refuses a string longer than the header list limit; upstream not reached",
			interact: func(t *testing.T, s *secWorld, addr string) {
				noneReached(t, s, func() {
					c := dialH2(t, addr)
					writeSplit(t, c, c.block(h2Get("/public/x", "x-big", strings.Repeat("b", 40<<10))...))
					if r := c.await(1); r.goaway == nil || r.goaway.ErrCode != http2.ErrCodeCompression {
						t.Errorf("answered %v, want GOAWAY COMPRESSION_ERROR", r)
					}
				})
			}},
	}
}

// TestHTTP2IdleConnectionMemory measures what an idle h2c connection costs
// the binary (SECURITY.md figures): 500 connections that sent the preface
// and their SETTINGS, and wait.
func TestHTTP2IdleConnectionMemory(t *testing.T) {
	w := newWorld(t)
	g := startProcess(t, w.config("", ""))
	addr := strings.TrimPrefix(g.URL, "http://")
	rss := func() int64 {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", g.Process().Pid))
		if err != nil {
			t.Skipf("no /proc: %v", err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				return n
			}
		}
		t.Fatal("no VmRSS")
		return 0
	}
	const n = 500
	before := rss()
	for range n {
		c := dialH2(t, addr)
		// The server's SETTINGS: the connection is established and served.
		if f, err := c.fr.ReadFrame(); err != nil {
			t.Fatalf("no SETTINGS from the server: %v", err)
		} else if _, ok := f.(*http2.SettingsFrame); !ok {
			t.Fatalf("first frame %T, want SETTINGS", f)
		}
	}
	after := rss()
	perConn := (after - before) * 1024 / n
	t.Logf("FIGURE http2 idle connections: %d h2c connections, RSS %d KiB -> %d KiB, %d bytes each", n, before, after, perConn)
	// A bound that only ends a leak: Go's HTTP/2 server buffers about 4 KiB
	// to read and 4 KiB to write per connection, plus its goroutines.
	if perConn > 128<<10 {
		t.Errorf("an idle h2c connection costs %d bytes, want under 128 KiB", perConn)
	}
}
