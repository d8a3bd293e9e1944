package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// gRPC (issue 13): gatehouse with upstream_protocol h2c against a bare Go
// h2c reverse proxy (httputil.ReverseProxy, an h2c transport, an h2c
// listener), both separate processes in front of one grpc-go app in this
// process. Two loads: unary calls with one token repeated, and messages on
// bidirectional streams (each message answered before the next is sent).
//
//	go run ./examples/loadtest -mode grpc [-rounds 5 -duration 5s -conns 32]

// serveGRPCBaseline is the bare h2c reverse proxy a Go developer would
// write for a gRPC app.
func serveGRPCBaseline(o *options, stdout io.Writer) error {
	target, err := url.Parse(o.upstream)
	if err != nil || target.Host == "" {
		return fmt.Errorf("grpc baseline: bad -upstream %q", o.upstream)
	}
	up := new(http.Protocols)
	up.SetUnencryptedHTTP2(true)
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport: &http.Transport{Protocols: up, DisableCompression: true},
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return fmt.Errorf("grpc baseline: listen: %w", err)
	}
	fmt.Fprintf(stdout, "listening %s\n", ln.Addr())
	in := new(http.Protocols)
	in.SetHTTP1(true)
	in.SetUnencryptedHTTP2(true)
	return serveUntilSignal(&http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second, Protocols: in}, ln)
}

// grpcApp answers UnaryCall with a small payload and echoes FullDuplexCall.
type grpcApp struct {
	testpb.UnimplementedTestServiceServer
}

var grpcPayload = &testpb.Payload{Body: upstreamBody}

func (grpcApp) UnaryCall(context.Context, *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: grpcPayload}, nil
}

func (grpcApp) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	res := &testpb.StreamingOutputCallResponse{Payload: grpcPayload}
	for {
		if _, err := stream.Recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := stream.Send(res); err != nil {
			return err
		}
	}
}

// grpcResult is one measured window: calls (or messages) per second and CPU
// time of the proxy process per call.
type grpcResult struct {
	perSec    float64
	cpuPerOp  time.Duration
	errors    int64
	opsInTime int64
}

func driveGRPC(o *options, stdout, stderr io.Writer) error {
	dir, err := os.MkdirTemp("", "gatehouse-loadtest-grpc")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	gate := o.gatehouse
	if gate == "" {
		if gate, err = buildGatehouse(dir); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	app := grpc.NewServer()
	testpb.RegisterTestServiceServer(app, grpcApp{})
	go func() { _ = app.Serve(ln) }()
	defer app.Stop()
	upstream := "http://" + ln.Addr().String()

	key := jwkstest.NewKey("RS256", "rs-1")
	keys := jwkstest.NewServer(key)
	defer keys.Close()
	token := key.Sign(claims(0, time.Now()))
	cfgPath := filepath.Join(dir, "gatehouse-grpc.yaml")
	cfg := fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: %q
upstream_protocol: h2c
admin:
  listen: ""
timeouts:
  shutdown: 5s
issuers:
  - issuer: %q
    audiences: [%q]
    jwks_url: %q
    algorithms: [RS256]
headers:
  X-Auth-Subject: sub
  X-Auth-Roles: roles
routes:
  - location: "^~ /grpc.testing.TestService/"
    roles: { any: [user] }
audit:
  sink: none
log:
  level: info                      # the "listening" line is info; requests log at debug
`, upstream, issuer, audience, keys.URL)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}

	startProxy := func(gatehouse bool) (*proc, error) {
		if !gatehouse {
			return start(exec.Command(exe, "-mode", "grpc-baseline", "-upstream", upstream), false, func(line []byte) (string, string, bool) {
				a, ok := strings.CutPrefix(string(line), "listening ")
				return a, "", ok
			})
		}
		cmd := exec.Command(gate, "-config", cfgPath)
		cmd.Env = append(os.Environ(), o.env...)
		return start(cmd, true, func(line []byte) (string, string, bool) {
			var l struct{ Msg, Addr string }
			if json.Unmarshal(line, &l) != nil || l.Msg != "listening" {
				return "", "", false
			}
			return l.Addr, "", true
		})
	}

	loads := []struct {
		name string
		run  func(ctx context.Context, c testpb.TestServiceClient, ops *atomic.Int64, errs *atomic.Int64)
	}{
		{"unary", func(ctx context.Context, c testpb.TestServiceClient, ops, errs *atomic.Int64) {
			req := &testpb.SimpleRequest{}
			for ctx.Err() == nil {
				if _, err := c.UnaryCall(ctx, req); err != nil {
					// grpc-go ends a call whose deadline is due by the clock,
					// a moment before the context says so.
					if ctx.Err() == nil && status.Code(err) != codes.DeadlineExceeded && errs.Add(1) == 1 {
						fmt.Fprintln(os.Stderr, "loadtest: grpc unary:", err)
					}
					continue
				}
				ops.Add(1)
			}
		}},
		{"bidi", func(ctx context.Context, c testpb.TestServiceClient, ops, errs *atomic.Int64) {
			s, err := c.FullDuplexCall(ctx)
			if err != nil {
				errs.Add(1)
				return
			}
			req := &testpb.StreamingOutputCallRequest{Payload: grpcPayload}
			for ctx.Err() == nil {
				if err := s.Send(req); err != nil {
					break
				}
				if _, err := s.Recv(); err != nil {
					break
				}
				ops.Add(1)
			}
		}},
	}

	measure := func(load int, gatehouse bool) (grpcResult, error) {
		p, err := startProxy(gatehouse)
		if err != nil {
			return grpcResult{}, err
		}
		defer p.stop()
		// A few connections, many streams each: how gRPC clients use HTTP/2.
		nconn := min(4, o.conns)
		clients := make([]testpb.TestServiceClient, nconn)
		for i := range clients {
			cc, err := grpc.NewClient(p.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				return grpcResult{}, err
			}
			defer cc.Close()
			clients[i] = testpb.NewTestServiceClient(cc)
		}
		run := func(d time.Duration) (int64, int64) {
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
			var ops, errs atomic.Int64
			var wg sync.WaitGroup
			for i := 0; i < o.conns; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					loads[load].run(ctx, clients[i%nconn], &ops, &errs)
				}()
			}
			wg.Wait()
			return ops.Load(), errs.Load()
		}
		run(o.warmup)
		cpu0, err := readCPU(p.pid())
		if err != nil {
			return grpcResult{}, err
		}
		t0 := time.Now()
		ops, errs := run(o.duration)
		elapsed := time.Since(t0)
		cpu1, err := readCPU(p.pid())
		if err != nil {
			return grpcResult{}, err
		}
		r := grpcResult{perSec: float64(ops) / elapsed.Seconds(), errors: errs, opsInTime: ops}
		if ops > 0 {
			r.cpuPerOp = (cpu1 - cpu0) / time.Duration(ops)
		}
		return r, nil
	}

	results := make([][2][]grpcResult, len(loads)) // load -> [baseline, gatehouse] per round
	for round := 0; round < o.rounds; round++ {
		for li := range loads {
			order := []int{0, 1}
			if round%2 == 1 {
				order = []int{1, 0}
			}
			for _, which := range order {
				r, err := measure(li, which == 1)
				if err != nil {
					return fmt.Errorf("round %d grpc-%s %s: %w", round+1, loads[li].name, proxyName(which), err)
				}
				if r.errors > 0 {
					return fmt.Errorf("round %d grpc-%s %s: %d calls failed", round+1, loads[li].name, proxyName(which), r.errors)
				}
				results[li][which] = append(results[li][which], r)
				if o.verbose {
					fmt.Fprintf(stderr, "round %d grpc-%-6s %-9s %9.0f /s cpu/op %s\n", round+1, loads[li].name, proxyName(which), r.perSec, fmtDur(r.cpuPerOp))
				}
			}
		}
		fmt.Fprintf(stderr, "loadtest: grpc round %d/%d done\n", round+1, o.rounds)
	}

	fmt.Fprintf(stdout, "gRPC through an h2c proxy: medians over %d round(s) of %s, %d concurrent callers on %d connections, %d CPUs\n\n",
		o.rounds, o.duration, o.conns, min(4, o.conns), numCPU())
	fmt.Fprintf(stdout, "%-11s %14s %14s %8s %14s %14s %8s\n", "load", "baseline /s", "gatehouse /s", "ratio", "base cpu/op", "gate cpu/op", "ratio")
	for li, l := range loads {
		b, g := results[li][0], results[li][1]
		per := func(rs []grpcResult) []float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = r.perSec
			}
			return v
		}
		cpuOf := func(rs []grpcResult) []float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = float64(r.cpuPerOp)
			}
			return v
		}
		ratio := func(f func([]grpcResult) []float64) float64 {
			bv, gv := f(b), f(g)
			v := make([]float64, len(bv))
			for i := range bv {
				if bv[i] > 0 {
					v[i] = gv[i] / bv[i]
				}
			}
			return median(v)
		}
		fmt.Fprintf(stdout, "%-11s %14.0f %14.0f %8.2f %14s %14s %8.2f\n", "grpc-"+l.name,
			median(per(b)), median(per(g)), ratio(per),
			fmtDur(time.Duration(median(cpuOf(b)))), fmtDur(time.Duration(median(cpuOf(g)))), ratio(cpuOf))
	}
	return nil
}
