// Command grpc shows gatehouse in front of a gRPC service, in one command:
//
//	go run ./examples/grpc
//
// It starts, on 127.0.0.1, a key server with one RS256 key, a grpc-go app
// (grpc-go's own interop TestService and the standard health service, so no
// generated code lives here) listening h2c, and gatehouse through proxy.Run,
// the code the gatehouse binary runs, configured by gatehouse.yaml in this
// directory. Then a grpc-go client makes the calls of the story below
// through gatehouse, prints what each got, and everything stops. It exits 1
// when a call did not get what the story says.
package main

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/proxy"
)

//go:embed gatehouse.yaml
var config string

// The addresses in gatehouse.yaml, replaced by the real ones at start.
const (
	defaultApp  = "http://127.0.0.1:50051"
	defaultJWKS = "http://127.0.0.1:8082/.well-known/jwks.json"
)

func main() { os.Exit(run()) }

func run() int {
	key := jwkstest.NewKey("RS256", "demo-1")
	keys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwkstest.JWKS(key))
	}))
	defer keys.Close()

	appLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc demo:", err)
		return 1
	}
	app := grpc.NewServer()
	testpb.RegisterTestServiceServer(app, &orders{})
	healthpb.RegisterHealthServer(app, health.NewServer())
	go func() { _ = app.Serve(appLn) }()
	defer app.Stop()

	path, cleanup, err := writeConfig("http://"+appLn.Addr().String(), keys.URL+"/.well-known/jwks.json")
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc demo:", err)
		return 1
	}
	defer cleanup()

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	listening := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- proxy.Run(ctx, proxy.Options{
			ConfigPath: path,
			Version:    "grpc-demo",
			Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			Stdout:     io.Discard,
			Listening:  func(main, _ net.Addr) { listening <- main },
		})
	}()
	var gate net.Addr
	select {
	case gate = <-listening:
	case err := <-done:
		for _, e := range yamlpos.Errors(err) {
			fmt.Fprintln(os.Stderr, e)
		}
		return 1
	}

	failed := story(gate.String(), key)
	stop()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "gatehouse:", err)
		return 1
	}
	if failed > 0 {
		fmt.Printf("\n%d step(s) did not go as the story says\n", failed)
		return 1
	}
	fmt.Println("\nevery step went as the story says")
	return 0
}

// story calls through gatehouse at addr and prints each outcome; it returns
// how many steps got something else than expected.
func story(addr string, key *jwkstest.Key) int {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpc demo:", err)
		return 1
	}
	defer conn.Close()
	svc := testpb.NewTestServiceClient(conn)
	token := func(sub string, roles ...string) string {
		return key.Sign(map[string]any{
			"iss": "grpc-demo-issuer", "aud": "orders-api", "sub": sub, "roles": roles,
			"exp": time.Now().Add(15 * time.Minute).Unix(), "iat": time.Now().Unix(),
		})
	}
	alice, bob := token("alice", "user"), token("bob", "admin")
	call := func(tok string) context.Context {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = cancel // released when the deadline passes; the demo is short
		if tok == "" {
			return ctx
		}
		return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}

	fmt.Printf("gatehouse on %s, the gRPC app behind it speaks h2c\n\n", addr)
	failed := 0
	step := func(what string, want codes.Code, err error, detail string) {
		got := status.Code(err)
		mark := "ok  "
		if got != want {
			mark, failed = "FAIL", failed+1
		}
		line := fmt.Sprintf("%s %-58s %s", mark, what, got)
		if err != nil {
			line += fmt.Sprintf(" (%s)", status.Convert(err).Message())
		}
		if detail != "" {
			line += "  " + detail
		}
		fmt.Println(line)
	}

	res, err := healthpb.NewHealthClient(conn).Check(call(""), &healthpb.HealthCheckRequest{})
	step("1. health check, no token (auth: none)", codes.OK, err, fmt.Sprint(res.GetStatus()))

	_, err = svc.UnaryCall(call(""), &testpb.SimpleRequest{})
	step("2. UnaryCall without a token", codes.Unauthenticated, err, "")

	_, err = svc.UnaryCall(call("not.a.token"), &testpb.SimpleRequest{})
	step("3. UnaryCall with a garbage token", codes.Unauthenticated, err, "")

	ctx := metadata.AppendToOutgoingContext(call(alice), "x-auth-subject", "root")
	ur, err := svc.UnaryCall(ctx, &testpb.SimpleRequest{FillUsername: true})
	step("4. UnaryCall as alice (a forged x-auth-subject: root is sent)", codes.OK, err,
		"the app saw x-auth-subject="+strconv.Quote(ur.GetUsername()))
	if err == nil && ur.GetUsername() != "alice" {
		failed++
	}

	_, err = svc.EmptyCall(call(alice), &testpb.Empty{})
	step("5. EmptyCall (admins only) as alice", codes.PermissionDenied, err, "")

	_, err = svc.EmptyCall(call(bob), &testpb.Empty{})
	step("6. EmptyCall as bob (admin)", codes.OK, err, "")

	_, err = svc.CacheableUnaryCall(call(bob), &testpb.SimpleRequest{})
	step("7. CacheableUnaryCall: no route (default: deny)", codes.PermissionDenied, err, "")

	n, err := duplex(svc, call(alice))
	step("8. FullDuplexCall as alice: 5 messages each way", codes.OK, err, fmt.Sprintf("%d echoed", n))
	if err == nil && n != 5 {
		failed++
	}
	return failed
}

// duplex sends five messages on a bidirectional stream, each answered before
// the next is sent, and returns how many came back.
func duplex(svc testpb.TestServiceClient, ctx context.Context) (int, error) {
	stream, err := svc.FullDuplexCall(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for i := 1; i <= 5; i++ {
		if err := stream.Send(&testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: int32(i)}}}); err != nil {
			return n, err
		}
		if _, err := stream.Recv(); err != nil {
			return n, err
		}
		n++
	}
	if err := stream.CloseSend(); err != nil {
		return n, err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return n, err
	}
	return n, nil
}

// orders is the demo app: it answers with the caller gatehouse vouched for.
type orders struct {
	testpb.UnimplementedTestServiceServer
}

func (orders) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

func (orders) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	res := &testpb.SimpleResponse{}
	if md, ok := metadata.FromIncomingContext(ctx); ok && req.FillUsername {
		res.Username = strings.Join(md.Get("x-auth-subject"), ",")
	}
	return res, nil
}

func (orders) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
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
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: &testpb.Payload{Body: make([]byte, size)}}); err != nil {
			return err
		}
	}
}

// writeConfig writes gatehouse.yaml with the real addresses into a
// temporary directory; each default address must be found exactly once.
func writeConfig(appURL, jwksURL string) (string, func(), error) {
	text := config
	for _, r := range []struct{ from, to string }{
		{strconv.Quote(defaultApp), strconv.Quote(appURL)},
		{strconv.Quote(defaultJWKS), strconv.Quote(jwksURL)},
	} {
		if n := strings.Count(text, r.from); n != 1 {
			return "", nil, fmt.Errorf("gatehouse.yaml: %s appears %d times, want once", r.from, n)
		}
		text = strings.Replace(text, r.from, r.to, 1)
	}
	dir, err := os.MkdirTemp("", "gatehouse-grpc-demo")
	if err != nil {
		return "", nil, fmt.Errorf("write config: %w", err)
	}
	path := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("write config: %w", err)
	}
	return path, func() { os.RemoveAll(dir) }, nil
}
