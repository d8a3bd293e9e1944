package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"
)

// upstream is one forwarding target with its own transport.
type upstream struct {
	target    *url.URL
	transport *http.Transport
	rp        *httputil.ReverseProxy
}

// bufferPool lends ReverseProxy its copy buffers; without it every proxied
// response allocates 32 KiB. The pool holds *[]byte (a []byte in an
// interface would allocate on every Put), and the emptied pointers go to a
// second pool so that a Put in steady state allocates nothing either (the
// allocation profile of BenchmarkServeHTTP showed one per request).
type bufferPool struct{ bufs, boxes sync.Pool }

func (b *bufferPool) Get() []byte {
	if v, ok := b.bufs.Get().(*[]byte); ok {
		buf := *v
		*v = nil
		b.boxes.Put(v)
		return buf
	}
	return make([]byte, 32*1024)
}

func (b *bufferPool) Put(buf []byte) {
	v, ok := b.boxes.Get().(*[]byte)
	if !ok {
		v = new([]byte)
	}
	*v = buf
	b.bufs.Put(v)
}

var copyBuffers = &bufferPool{}

// newTransport is tuned for a sidecar: one upstream, many keep-alive
// connections to it, dial and response headers bounded by timeouts.upstream.
func newTransport(c *Config, target *url.URL) *http.Transport {
	dialer := &net.Dialer{Timeout: c.Timeouts.Upstream, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		DialContext:           dialer.DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       c.Timeouts.Idle,
		ResponseHeaderTimeout: c.Timeouts.Upstream,
		TLSHandshakeTimeout:   c.Timeouts.Upstream,
		ExpectContinueTimeout: time.Second,
		// The upstream gets exactly what the client sent; no gzip negotiation
		// of the transport's own.
		DisableCompression: true,
	}
	switch target.Scheme {
	case "https":
		t.TLSClientConfig = &tls.Config{RootCAs: c.upstreamCAs, MinVersion: tls.VersionTLS12}
		t.ForceAttemptHTTP2 = true
	case "unix":
		sock := target.Path
		t.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", sock)
		}
	}
	return t
}

// newUpstream builds the reverse proxy for target (already validated).
func (h *Handler) newUpstream(raw, proto string) (*upstream, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	up := &upstream{transport: newTransport(h.cfg, u)}
	setUpstreamProtocol(up.transport, proto)
	target := *u
	if u.Scheme == "unix" {
		// The socket path is the dial address; requests go to http://localhost.
		target = url.URL{Scheme: "http", Host: "localhost"}
	}
	up.target = &target
	trusted := h.cfg.TrustedProxies
	up.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// Rewrite drops the inbound X-Forwarded-* first; nginx's
			// $proxy_add_x_forwarded_for keeps the client's list and appends.
			if xff, ok := pr.In.Header["X-Forwarded-For"]; ok {
				pr.Out.Header["X-Forwarded-For"] = xff
			}
			// Request.Clone gave Out a copy of the trailer map, taken before
			// the body was read: trailers that arrive at the body's end
			// would land only in In's (SPEC.md 9: trailers pass both ways).
			// The transport reads the map after the body, so share it.
			pr.Out.Trailer = pr.In.Trailer
			pr.SetURL(up.target)
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
			if peerTrusted(pr.In.RemoteAddr, trusted) {
				for _, k := range []string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
					if v, ok := pr.In.Header[k]; ok {
						pr.Out.Header[k] = v
					}
				}
			}
		},
		Transport:      up.transport,
		BufferPool:     copyBuffers,
		ErrorLog:       slog.NewLogLogger(h.log.Handler(), slog.LevelDebug),
		ErrorHandler:   h.upstreamError,
		ModifyResponse: keepRequestID,
	}
	return up, nil
}

// keepRequestID is the ReverseProxy's ModifyResponse of both listeners: the
// upstream may set its own X-Request-Id; the client gets gatehouse's.
func keepRequestID(res *http.Response) error {
	if id, ok := res.Request.Header["X-Request-Id"]; ok {
		res.Header["X-Request-Id"] = id
	}
	return nil
}

// upstreamError answers a failed forward: 504 when timeouts.upstream ran out,
// 413 when the body passed limits.max_body_bytes, 400 when the client's body
// was badly framed, else 502. The 502, 504 and 400 come after an allow that
// finish has already recorded: the decision was allow, and the request went
// on its way; gatehouse_requests_total and the audit event keep that allow,
// and the failure is a log line (and, for the upstream's failures, the
// upstream metric's code="error"). A 413 is always a deny: a declared
// length over the limit is refused by checkBody before anything is
// recorded, and a request whose body has no declared length is recorded
// only after forwarding (ServeHTTP), once tooLarge says how it ended.
func (h *Handler) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if sw, ok := w.(*statusWriter); ok {
		sw.failed = true
	}
	id := r.Header.Get("X-Request-Id")
	rs := reasonUpstreamUnavailable
	var mbe *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &mbe):
		rs = reasonPayloadTooLarge
		if sw, ok := w.(*statusWriter); ok {
			sw.tooLarge = true
		}
	case clientBodyError(r) != nil:
		// Before the cancel case: a client that half-closes after a short
		// body also cancels the request's context, and still reads a 400.
		h.log.Info("client request body malformed", "request_id", id, "error", clientBodyError(r).Error())
		if r.ProtoMajor == 1 {
			// HTTP/2 ends only the stream; Connection: close there would
			// be a GOAWAY for every stream sharing the connection.
			w.Header()["Connection"] = []string{"close"}
		}
		writeError(w, r, reasonBadRequest, id, "")
		return
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads an answer.
		h.log.Debug("client canceled", "request_id", id)
		w.WriteHeader(499)
		return
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		rs = reasonUpstreamTimeout
	}
	h.log.Warn("upstream failed", "request_id", id, "reason", rs.String(), "error", err.Error())
	writeError(w, r, rs, id, "")
}
