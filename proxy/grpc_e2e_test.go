package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// grpcApp is the app behind gatehouse: grpc-go's interop TestService, which
// remembers the metadata of every call it got.
type grpcApp struct {
	testpb.UnimplementedTestServiceServer
	addr string
	mu   sync.Mutex
	got  []metadata.MD // incoming metadata, one per call, with ":path" added
}

func (a *grpcApp) record(ctx context.Context, method string) metadata.MD {
	md, _ := metadata.FromIncomingContext(ctx)
	md = md.Copy()
	md.Set(":method-name", method)
	a.mu.Lock()
	a.got = append(a.got, md)
	a.mu.Unlock()
	return md
}

func (a *grpcApp) calls() []metadata.MD {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]metadata.MD(nil), a.got...)
}

func payload(n int) *testpb.Payload { return &testpb.Payload{Body: bytes.Repeat([]byte{'x'}, n)} }

func (a *grpcApp) EmptyCall(ctx context.Context, _ *testpb.Empty) (*testpb.Empty, error) {
	a.record(ctx, "EmptyCall")
	return &testpb.Empty{}, nil
}

// UnaryCall answers with the caller's x-auth-subject as Username, a header
// and a trailer of its own, and the status the request asks for.
func (a *grpcApp) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	md := a.record(ctx, "UnaryCall")
	if s := req.GetResponseStatus(); s != nil && s.Code != 0 {
		return nil, status.Error(codes.Code(s.Code), s.Message)
	}
	grpc.SetHeader(ctx, metadata.Pairs("x-app-header", "hello"))
	grpc.SetTrailer(ctx, metadata.Pairs("x-app-trailer", "bye"))
	res := &testpb.SimpleResponse{Payload: payload(int(req.ResponseSize))}
	if v := md.Get("x-auth-subject"); len(v) == 1 {
		res.Username = v[0]
	}
	return res, nil
}

func (a *grpcApp) StreamingOutputCall(req *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	a.record(stream.Context(), "StreamingOutputCall")
	for _, p := range req.ResponseParameters {
		if d := time.Duration(p.IntervalUs) * time.Microsecond; d > 0 {
			select {
			case <-time.After(d):
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: payload(int(p.Size))}); err != nil {
			return err
		}
	}
	stream.SetTrailer(metadata.Pairs("x-app-trailer", "streamed"))
	return nil
}

func (a *grpcApp) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	a.record(stream.Context(), "StreamingInputCall")
	total := 0
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(total)})
		}
		if err != nil {
			return err
		}
		total += len(req.GetPayload().GetBody())
	}
}

// FullDuplexCall echoes each request as it comes: the client sees answer n
// before it sends request n+1, so nothing in between may buffer.
func (a *grpcApp) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	a.record(stream.Context(), "FullDuplexCall")
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		size := 0
		for _, p := range req.ResponseParameters {
			size += int(p.Size)
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: payload(size)}); err != nil {
			return err
		}
	}
}

const maxMsg = 8 << 20

func startGRPCApp(t *testing.T) *grpcApp {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &grpcApp{addr: ln.Addr().String()}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg))
	testpb.RegisterTestServiceServer(srv, app)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return app
}

// grpcWorld is a grpc-go app behind the real binary, reached h2c both ways.
type grpcWorld struct {
	*world
	app  *grpcApp
	g    *gatehouse
	conn *grpc.ClientConn
}

func grpcRoutes(dead string) string {
	return fmt.Sprintf(`
routes:
  - location: "^~ /grpc.health.v1.Health/"
    auth: none
  - location: "= /grpc.testing.TestService/EmptyCall"
    roles: { any: [admin] }
  - location: "= /grpc.testing.TestService/CacheableUnaryCall"
    upstream: %q
  - location: "^~ /grpc.testing.TestService/"
    roles: { any: [user] }
`, dead)
}

func newGRPCWorld(t *testing.T) *grpcWorld {
	w := newWorld(t)
	app := startGRPCApp(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	cfg := w.configWith(cfgOpts{
		extra:  "upstream_protocol: h2c\nlimits:\n  max_body_bytes: 6291456\n",
		routes: grpcRoutes(deadURL),
		// 6s, not less: a 4 MiB unary call under -race on a loaded 2-core
		// machine has taken longer than 1s to its response headers.
		timeouts: "  upstream: 6s\n",
	})
	cfg = strings.Replace(cfg, fmt.Sprintf("upstream: %q", w.up.URL), fmt.Sprintf("upstream: %q", "http://"+app.addr), 1)
	g := startProcess(t, cfg)
	conn, err := grpc.NewClient(strings.TrimPrefix(g.URL, "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &grpcWorld{world: w, app: app, g: g, conn: conn}
}

func (gw *grpcWorld) ctx(t *testing.T, tok string, kv ...string) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if tok != "" {
		kv = append(kv, "authorization", "Bearer "+tok)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// TestGRPCThrough runs every kind of call through the binary to a grpc-go app.
func TestGRPCThrough(t *testing.T) {
	gw := newGRPCWorld(t)
	client := testpb.NewTestServiceClient(gw.conn)
	user := gw.token(map[string]any{"sub": "alice"})

	t.Run("unary with metadata in and out, claims as metadata", func(t *testing.T) {
		var header, trailer metadata.MD
		res, err := client.UnaryCall(gw.ctx(t, user, "x-custom", "v1", "x-auth-subject", "mallory"),
			&testpb.SimpleRequest{ResponseSize: 10}, grpc.Header(&header), grpc.Trailer(&trailer))
		if err != nil {
			t.Fatalf("UnaryCall: %v", err)
		}
		if res.Username != "alice" {
			t.Errorf("the app saw x-auth-subject %q, want alice (the token's sub, never the client's)", res.Username)
		}
		if len(res.GetPayload().GetBody()) != 10 {
			t.Errorf("payload %d bytes, want 10", len(res.GetPayload().GetBody()))
		}
		if got := header.Get("x-app-header"); len(got) != 1 || got[0] != "hello" {
			t.Errorf("header x-app-header = %q, want [hello]", got)
		}
		if got := trailer.Get("x-app-trailer"); len(got) != 1 || got[0] != "bye" {
			t.Errorf("trailer x-app-trailer = %q, want [bye]", got)
		}
		if len(header.Get("x-request-id")) != 1 {
			t.Errorf("no x-request-id in the response header: %v", header)
		}
		calls := gw.app.calls()
		md := calls[len(calls)-1]
		if got := md.Get("x-custom"); len(got) != 1 || got[0] != "v1" {
			t.Errorf("app got x-custom %q, want [v1]", got)
		}
		if got := md.Get("x-auth-subject"); len(got) != 1 || got[0] != "alice" {
			t.Errorf("app got x-auth-subject %q, want [alice]", got)
		}
		if got := md.Get("x-auth-roles"); len(got) != 1 || got[0] != "user" {
			t.Errorf("app got x-auth-roles %q, want [user]", got)
		}
	})

	t.Run("an upstream status passes through", func(t *testing.T) {
		// A trailers-only answer must stay one HEADERS frame (it failed
		// about one run in three with ReverseProxy.FlushInterval -1).
		_, err := client.UnaryCall(gw.ctx(t, user), &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such order ü"}})
		if s := status.Convert(err); s.Code() != codes.NotFound || s.Message() != "no such order ü" {
			t.Errorf("status = %v %q, want NotFound %q", s.Code(), s.Message(), "no such order ü")
		}
	})

	t.Run("4 MiB messages both ways", func(t *testing.T) {
		const size = 4 << 20
		res, err := client.UnaryCall(gw.ctx(t, user), &testpb.SimpleRequest{ResponseSize: size, Payload: payload(size)})
		if err != nil {
			t.Fatalf("UnaryCall 4 MiB: %v", err)
		}
		if n := len(res.GetPayload().GetBody()); n != size {
			t.Errorf("response payload %d bytes, want %d", n, size)
		}
	})

	t.Run("server streaming outlives timeouts.upstream", func(t *testing.T) {
		// timeouts.upstream is 6s: it bounds the wait for the headers only.
		params := []*testpb.ResponseParameters{{Size: 5}, {Size: 6, IntervalUs: 3_500_000}, {Size: 7, IntervalUs: 3_500_000}}
		stream, err := client.StreamingOutputCall(gw.ctx(t, user), &testpb.StreamingOutputCallRequest{ResponseParameters: params})
		if err != nil {
			t.Fatal(err)
		}
		var sizes []int
		for {
			res, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("after %v: %v", sizes, err)
			}
			sizes = append(sizes, len(res.GetPayload().GetBody()))
		}
		if fmt.Sprint(sizes) != "[5 6 7]" {
			t.Errorf("got messages of %v bytes, want [5 6 7]", sizes)
		}
		if got := stream.Trailer().Get("x-app-trailer"); len(got) != 1 || got[0] != "streamed" {
			t.Errorf("stream trailer x-app-trailer = %q, want [streamed]", got)
		}
	})

	t.Run("client streaming", func(t *testing.T) {
		stream, err := client.StreamingInputCall(gw.ctx(t, user))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []int{100, 1 << 20, 3} {
			if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: payload(n)}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := stream.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		if res.AggregatedPayloadSize != 100+1<<20+3 {
			t.Errorf("aggregated %d, want %d", res.AggregatedPayloadSize, 100+1<<20+3)
		}
	})

	t.Run("bidi streaming answers each message before the next is sent", func(t *testing.T) {
		stream, err := client.FullDuplexCall(gw.ctx(t, user))
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 20; i++ {
			if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i)}}}); err != nil {
				t.Fatal(err)
			}
			res, err := stream.Recv()
			if err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
			if len(res.GetPayload().GetBody()) != i {
				t.Fatalf("message %d: %d bytes back", i, len(res.GetPayload().GetBody()))
			}
		}
		stream.CloseSend()
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("after CloseSend: %v, want EOF", err)
		}
	})

	t.Run("health check is auth: none", func(t *testing.T) {
		res, err := healthpb.NewHealthClient(gw.conn).Check(gw.ctx(t, ""), &healthpb.HealthCheckRequest{})
		if err != nil || res.Status != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check = %v, %v; want SERVING", res, err)
		}
	})
}

// TestGRPCDenials: every answer gatehouse makes is the status grpc-go reports.
func TestGRPCDenials(t *testing.T) {
	gw := newGRPCWorld(t)
	client := testpb.NewTestServiceClient(gw.conn)
	user := gw.token(nil)
	expired := gw.token(map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()})
	slow := []*testpb.ResponseParameters{{Size: 1, IntervalUs: 9_000_000}}

	for _, tt := range []struct {
		name    string
		call    func(ctx context.Context) error
		tok     string
		code    codes.Code
		message string
		reached bool // the app gets the call
	}{
		{name: "no token", tok: "", code: codes.Unauthenticated, message: "a bearer token is required",
			call: func(ctx context.Context) error { _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); return err }},
		{name: "garbage token", tok: "a.b.c", code: codes.Unauthenticated, message: "the token is not valid",
			call: func(ctx context.Context) error { _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); return err }},
		{name: "expired token", tok: expired, code: codes.Unauthenticated, message: "the token has expired or is not yet valid",
			call: func(ctx context.Context) error { _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); return err }},
		{name: "role missing", tok: user, code: codes.PermissionDenied, message: "the token does not grant access to this resource",
			call: func(ctx context.Context) error { _, err := client.EmptyCall(ctx, &testpb.Empty{}); return err }},
		{name: "no route (default deny)", tok: user, code: codes.PermissionDenied, message: "no route allows this request",
			call: func(ctx context.Context) error {
				return gw.conn.Invoke(ctx, "/orders.v1.Orders/Create", &testpb.Empty{}, &testpb.Empty{})
			}},
		{name: "bad path", tok: user, code: codes.InvalidArgument, message: "the request path or body is malformed",
			call: func(ctx context.Context) error {
				return gw.conn.Invoke(ctx, "/grpc.testing.TestService/%2F..%2FEmptyCall", &testpb.Empty{}, &testpb.Empty{})
			}},
		{name: "upstream down", tok: user, code: codes.Unavailable, message: "the upstream could not be reached",
			call: func(ctx context.Context) error {
				_, err := client.CacheableUnaryCall(ctx, &testpb.SimpleRequest{})
				return err
			}},
		{name: "response headers later than timeouts.upstream", tok: user, code: codes.DeadlineExceeded, message: "the upstream did not answer in time", reached: true,
			call: func(ctx context.Context) error {
				s, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: slow})
				if err != nil {
					return err
				}
				_, err = s.Recv()
				return err
			}},
		{name: "message over max_body_bytes", tok: user, code: codes.ResourceExhausted, message: "the request body is too large",
			call: func(ctx context.Context) error {
				_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: payload(7 << 20)})
				return err
			}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(gw.app.calls())
			err := tt.call(gw.ctx(t, tt.tok))
			s := status.Convert(err)
			if s.Code() != tt.code || s.Message() != tt.message {
				t.Errorf("status %v %q, want %v %q", s.Code(), s.Message(), tt.code, tt.message)
			}
			if n := len(gw.app.calls()) - before; (n > 0) != tt.reached {
				t.Errorf("the app got %d calls, reached want %v", n, tt.reached)
			}
		})
	}

	// The trailers-only answer carries x-request-id and www-authenticate
	// as metadata (grpc-go hands trailers-only metadata out as the trailer).
	var trailer metadata.MD
	_, err := client.UnaryCall(gw.ctx(t, "", "x-request-id", "grpc-deny-1"), &testpb.SimpleRequest{}, grpc.Trailer(&trailer))
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token: %v", err)
	}
	if got := trailer.Get("x-request-id"); len(got) != 1 || got[0] != "grpc-deny-1" {
		t.Errorf("x-request-id = %q, want [grpc-deny-1]", got)
	}
	if got := trailer.Get("www-authenticate"); len(got) != 1 || got[0] != `Bearer realm="gatehouse"` {
		t.Errorf("www-authenticate = %q", got)
	}
	// The audit event keeps the HTTP status and adds the gRPC one.
	if !waitFor(5*time.Second, func() bool {
		return strings.Contains(gw.g.Stdout.String(), `"request_id":"grpc-deny-1"`)
	}) {
		t.Fatalf("no audit event for grpc-deny-1:\n%s", gw.g.Stdout.String())
	}
	for _, line := range strings.Split(gw.g.Stdout.String(), "\n") {
		if strings.Contains(line, `"request_id":"grpc-deny-1"`) &&
			(!strings.Contains(line, `"status":401`) || !strings.Contains(line, `"grpc_status":16`) || !strings.Contains(line, `"reason":"missing_token"`)) {
			t.Errorf("audit event lacks status 401, grpc_status 16 or reason missing_token: %s", line)
		}
	}
}

// TestGRPCTimeoutIsADeadline sends a gRPC call with grpc-timeout but no
// deadline of the client's own (Go's HTTP/2 client, not grpc-go), to an
// h2c app that ignores grpc-timeout and answers only after 5 s (a grpc-go
// app would end the call on its own deadline, racing gatehouse's): the
// DEADLINE_EXCEEDED that comes back can only be gatehouse's, long before
// timeouts.upstream (30 s).
func TestGRPCTimeoutIsADeadline(t *testing.T) {
	w := newWorld(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan struct{}, 1)
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	slow := &http.Server{Protocols: p, Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			ended <- struct{}{}
		case <-time.After(5 * time.Second):
		}
		rw.Header().Set("Content-Type", "application/grpc")
		rw.Header().Set("Grpc-Status", "0")
	})}
	go slow.Serve(ln)
	t.Cleanup(func() { slow.Close() })
	cfg := strings.Replace(w.config("upstream_protocol: h2c\n", ""), fmt.Sprintf("upstream: %q", w.up.URL), fmt.Sprintf("upstream: %q", "http://"+ln.Addr().String()), 1)
	g := startProcess(t, cfg)

	req, _ := http.NewRequest("POST", g.URL+"/api/pkg.Svc/Slow", bytes.NewReader([]byte{0, 0, 0, 0, 0}))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("Grpc-Timeout", "200m")
	req.Header.Set("Authorization", "Bearer "+w.token(nil))
	res, err := h2cClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Grpc-Status") != "4" || res.Header.Get("Grpc-Message") != "the upstream did not answer in time" {
		t.Errorf("answer %d grpc-status %q grpc-message %q, want 200, 4 and gatehouse's message",
			res.StatusCode, res.Header.Get("Grpc-Status"), res.Header.Get("Grpc-Message"))
	}
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Error("the app's request was not cancelled at the deadline")
	}
}

func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Protocols: p}}
}

// TestHTTP2Plain: HTTP/2 without gRPC, h2c with prior knowledge and h2 by
// ALPN, to an HTTP/1.1 upstream; the same pipeline as HTTP/1.1.
func TestHTTP2Plain(t *testing.T) {
	w := newWorld(t)
	check := func(t *testing.T, client *http.Client, base string) {
		t.Helper()
		req, _ := http.NewRequest("GET", base+"/api//x/../y?q=%2F", nil)
		req.Header.Set("Authorization", "Bearer "+w.token(nil))
		req.Header.Set("x_auth_subject", "mallory")
		res, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || res.ProtoMajor != 2 {
			t.Fatalf("answer %d over HTTP/%d, want 200 over HTTP/2", res.StatusCode, res.ProtoMajor)
		}
		got := w.up.Last(t)
		// :authority is the host (SPEC.md 9).
		if host := strings.TrimPrefix(strings.TrimPrefix(base, "http://"), "https://"); got.Host != host {
			t.Errorf("upstream got Host %q, want the :authority %q", got.Host, host)
		}
		if got.RequestURI != "/api/y?q=%2F" || got.Header.Get("X-Auth-Subject") != "123" || len(got.Header["X_auth_subject"]) != 0 {
			t.Errorf("upstream got %q X-Auth-Subject %q, headers %v", got.RequestURI, got.Header.Get("X-Auth-Subject"), got.Header)
		}
		res, err = client.Get(base + "/api/x")
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 401 || res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("no token over HTTP/2: %d %s, want a 401 JSON answer", res.StatusCode, res.Header.Get("Content-Type"))
		}
	}
	t.Run("h2c prior knowledge", func(t *testing.T) {
		g := startProcess(t, w.config("", ""))
		check(t, h2cClient(), g.URL)
	})
	t.Run("trailers both ways, HTTP/2 client to an HTTP/1.1 upstream", func(t *testing.T) {
		g := startProcess(t, w.config("", ""))
		var gotTrailer http.Header
		w.up.SetHandler(func(rw http.ResponseWriter, r *http.Request) {
			gotTrailer = r.Trailer.Clone() // the recorder read the body: trailers are in
			rw.Header().Set("Trailer", "X-Result")
			io.WriteString(rw, "body")
			rw.Header().Set("X-Result", "done")
		})
		t.Cleanup(func() { w.up.SetHandler(nil) })
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", g.URL+"/api/x", pr)
		req.Header.Set("Authorization", "Bearer "+w.token(nil))
		req.Trailer = http.Header{"X-Checksum": nil}
		go func() {
			io.WriteString(pw, "payload")
			req.Trailer.Set("X-Checksum", "abc")
			pw.Close()
		}()
		res, err := h2cClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if string(body) != "body" || res.Trailer.Get("X-Result") != "done" {
			t.Errorf("client got body %q trailer X-Result %q, want body and done", body, res.Trailer.Get("X-Result"))
		}
		if gotTrailer.Get("X-Checksum") != "abc" {
			t.Errorf("upstream got request trailers %v, want X-Checksum: abc", gotTrailer)
		}
	})
	t.Run("h2 over tls", func(t *testing.T) {
		dir := t.TempDir()
		certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
		pool := writeSelfSigned(t, certFile, keyFile)
		g := startProcess(t, w.config(fmt.Sprintf("tls:\n  cert_file: %q\n  key_file: %q\n", certFile, keyFile), ""))
		client := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
		check(t, client, strings.Replace(g.URL, "http://", "https://", 1))
	})
	t.Run("listen_protocols without h2c refuses prior knowledge", func(t *testing.T) {
		g := startProcess(t, w.config("listen_protocols: [http1]\n", ""))
		before := len(w.up.Requests())
		res, err := h2cClient().Get(g.URL + "/login")
		if err == nil {
			res.Body.Close()
			t.Fatalf("h2c prior knowledge answered %d over HTTP/%d with listen_protocols: [http1]", res.StatusCode, res.ProtoMajor)
		}
		if n := len(w.up.Requests()) - before; n != 0 {
			t.Errorf("upstream got %d requests", n)
		}
	})
}

// TestGRPCUpstreams: the app on a unix socket with h2c, and behind TLS with
// h2 (per route, with the global upstream left at http1).
func TestGRPCUpstreams(t *testing.T) {
	w := newWorld(t)
	dir := t.TempDir()

	sock := filepath.Join(dir, "app.sock")
	unixLn, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	unixApp := &grpcApp{}
	unixSrv := grpc.NewServer()
	testpb.RegisterTestServiceServer(unixSrv, unixApp)
	go unixSrv.Serve(unixLn)
	t.Cleanup(unixSrv.Stop)

	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeSelfSigned(t, certFile, keyFile)
	creds, err := credentials.NewServerTLSFromFile(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	tlsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tlsApp := &grpcApp{}
	tlsSrv := grpc.NewServer(grpc.Creds(creds))
	testpb.RegisterTestServiceServer(tlsSrv, tlsApp)
	go tlsSrv.Serve(tlsLn)
	t.Cleanup(tlsSrv.Stop)

	routes := fmt.Sprintf(`
routes:
  - location: "= /grpc.testing.TestService/EmptyCall"
    upstream: %q
    upstream_protocol: h2c
  - location: "= /grpc.testing.TestService/UnaryCall"
    upstream: %q
    upstream_protocol: h2
`, "unix://"+sock, "https://"+tlsLn.Addr().String())
	g := startProcess(t, w.configWith(cfgOpts{extra: fmt.Sprintf("upstream_ca_file: %q\n", certFile), routes: routes}))
	conn, err := grpc.NewClient(strings.TrimPrefix(g.URL, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := testpb.NewTestServiceClient(conn)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+w.token(map[string]any{"sub": "carol"}))
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()

	if _, err := client.EmptyCall(ctx, &testpb.Empty{}); err != nil {
		t.Errorf("EmptyCall to the unix socket over h2c: %v", err)
	}
	if n := len(unixApp.calls()); n != 1 {
		t.Errorf("the unix-socket app got %d calls, want 1", n)
	}
	res, err := client.UnaryCall(ctx, &testpb.SimpleRequest{})
	if err != nil {
		t.Fatalf("UnaryCall to the TLS app over h2: %v", err)
	}
	if res.Username != "carol" || len(tlsApp.calls()) != 1 {
		t.Errorf("the TLS app saw x-auth-subject %q in %d calls, want carol in 1", res.Username, len(tlsApp.calls()))
	}
}
