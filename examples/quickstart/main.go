// Command quickstart shows gatehouse protecting an app, on one machine, in
// one command:
//
//	go run ./examples/quickstart
//
// It starts three things on 127.0.0.1: a demo issuer (users, RS256 tokens
// with a kid, a JWKS endpoint and key rotation), a demo app that echoes the
// headers it received, and gatehouse itself through proxy.Run, the code the
// gatehouse binary runs, configured by gatehouse.yaml in this directory. It
// then prints curl commands to try. Ctrl-C stops everything.
//
// With -only issuer or -only app it runs just that demo server (the Compose
// example uses it that way, with -host 0.0.0.0 inside its containers).
package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gatehouse/gatehouse/examples/internal/demoissuer"
	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/proxy"
)

// config is gatehouse.yaml as committed. Its addresses are the flags'
// defaults; other flag values are written into a temporary copy.
//
//go:embed gatehouse.yaml
var config string

// The addresses in gatehouse.yaml, replaced when the flags differ.
const (
	defaultListen    = "127.0.0.1:8080"
	defaultAdmin     = "127.0.0.1:9090"
	defaultIssuerURL = "http://127.0.0.1:8081"
	defaultAppURL    = "http://127.0.0.1:3000"
)

// Identity of the demo issuer's tokens; gatehouse.yaml names the same.
const (
	issuerName = "quickstart-issuer"
	audience   = "quickstart-api"
)

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("quickstart", flag.ContinueOnError)
	listen := fs.String("listen", defaultListen, "gatehouse address (port 0: a free port)")
	admin := fs.String("admin", defaultAdmin, "gatehouse admin address: /metrics /healthz /readyz (port 0: a free port)")
	issuerPort := fs.Int("issuer-port", 8081, "demo issuer port (0: a free port)")
	appPort := fs.Int("app-port", 3000, "demo app port (0: a free port)")
	host := fs.String("host", "127.0.0.1", "interface of the demo issuer and app (keep 127.0.0.1 outside a container)")
	clientID := fs.String("client-id", "demo-client", "OAuth client the demo issuer's POST /token accepts (its secret: $DEMO_CLIENT_SECRET, default demo-secret)")
	only := fs.String("only", "", `run only the demo "issuer" or "app" (for Compose); default: all three`)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "quickstart: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *only != "" && *only != "issuer" && *only != "app" {
		fmt.Fprintf(os.Stderr, "quickstart: -only must be issuer or app, not %q\n", *only)
		return 2
	}
	// Checked here, before anything starts: a bare port would otherwise
	// surface as a config error in a temporary file that is gone by then.
	for _, f := range []struct{ name, addr string }{{"listen", *listen}, {"admin", *admin}} {
		if _, _, err := net.SplitHostPort(f.addr); err != nil {
			fmt.Fprintf(os.Stderr, "quickstart: -%s takes HOST:PORT (e.g. 127.0.0.1:8080), not %q\n", f.name, f.addr)
			return 2
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	out := &lockedWriter{w: os.Stdout}

	var servers []*http.Server
	var issuerURL, appURL string
	if *only == "" || *only == "issuer" {
		srv, url, err := serve(*host, *issuerPort, demoissuer.New(issuerName, audience, time.Now, demoissuer.Options{
			Clients: map[string]string{*clientID: clientSecret()},
		}))
		if err != nil {
			fmt.Fprintln(os.Stderr, "quickstart: demo issuer:", err)
			return 1
		}
		servers, issuerURL = append(servers, srv), url
	}
	if *only == "" || *only == "app" {
		srv, url, err := serve(*host, *appPort, appHandler())
		if err != nil {
			fmt.Fprintln(os.Stderr, "quickstart: demo app:", err)
			return 1
		}
		servers, appURL = append(servers, srv), url
	}
	defer shutdown(servers)

	if *only != "" {
		fmt.Fprintf(out, "demo %s listening on %s (Ctrl-C stops it)\n", *only, issuerURL+appURL)
		<-ctx.Done()
		return 0
	}

	path, cleanup, err := writeConfig(*listen, *admin, issuerURL, appURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		return 1
	}
	defer cleanup()
	err = proxy.Run(ctx, proxy.Options{
		ConfigPath: path,
		Version:    "quickstart",
		Logger:     log,
		Stdout:     out,
		Listening: func(main, admin net.Addr) {
			fmt.Fprint(out, banner("http://"+main.String(), "http://"+addrString(admin), issuerURL, appURL))
		},
	})
	if err != nil {
		for _, e := range yamlpos.Errors(err) {
			fmt.Fprintln(os.Stderr, e)
		}
		return 1
	}
	return 0
}

// clientSecret is the demo client's secret: from the environment so that
// it stays out of the process list.
func clientSecret() string {
	if s := os.Getenv("DEMO_CLIENT_SECRET"); s != "" {
		return s
	}
	return "demo-secret"
}

// serve binds host:port and serves h until shutdown; it returns the base URL.
func serve(host string, port int, h http.Handler) (*http.Server, string, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return srv, "http://" + ln.Addr().String(), nil
}

func shutdown(servers []*http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		if err := s.Shutdown(ctx); err != nil {
			_ = s.Close()
		}
	}
}

// writeConfig writes gatehouse.yaml with the actual addresses into a
// temporary directory. Every default address must be found exactly once:
// a quickstart that silently ran with the wrong ports would be worse than
// one that refuses to start.
func writeConfig(listen, admin, issuerURL, appURL string) (string, func(), error) {
	text := config
	for _, r := range []struct{ from, to string }{
		{`"` + defaultListen + `"`, strconv.Quote(listen)},
		{`"` + defaultAdmin + `"`, strconv.Quote(admin)},
		{`"` + defaultIssuerURL + `/`, `"` + issuerURL + `/`},
		{`"` + defaultAppURL + `"`, strconv.Quote(appURL)},
	} {
		if n := strings.Count(text, r.from); n != 1 {
			return "", nil, fmt.Errorf("gatehouse.yaml: %s appears %d times, want once", r.from, n)
		}
		text = strings.Replace(text, r.from, r.to, 1)
	}
	dir, err := os.MkdirTemp("", "gatehouse-quickstart")
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

func addrString(a net.Addr) string {
	if a == nil {
		return "(admin disabled)"
	}
	return a.String()
}

// banner is the story to try, with the real addresses. The test in
// examples/ reads the addresses from its first lines and checks the
// commands.
func banner(gate, admin, issuer, app string) string {
	login := func(user, password string) string {
		return fmt.Sprintf("curl -s -H 'Accept: text/plain' -d username=%s -d password=%s %s/login", user, password, issuer)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `
gatehouse quickstart is running (Ctrl-C stops it):
  gatehouse  %s   clients call this
  admin      %s   /metrics /healthz /readyz
  issuer     %s   POST /login, POST /token, GET /.well-known/jwks.json, POST /rotate
  app        %s   echoes what it received; on 127.0.0.1 so only gatehouse calls it

Users: alice / wonderland (role user), bob / builder (role admin).
Try, in another terminal:

# 1. log in as alice: the issuer signs an RS256 token with its current kid
TOKEN=$(%s)

# 2. a user route through gatehouse: the app echoes X-Auth-Subject and X-Auth-Roles
curl -s -H "Authorization: Bearer $TOKEN" %s/api/orders

# 3. no token: 401 missing_token, the app never sees the request
curl -si %s/api/orders

# 4. alice on an admin route: 403 insufficient_scope
curl -si -H "Authorization: Bearer $TOKEN" %s/admin/users

# 5. bob is an admin
ADMIN_TOKEN=$(%s)
curl -s -H "Authorization: Bearer $ADMIN_TOKEN" %s/admin/users

# 6. a public route needs no token; a forged X-Auth-Subject is stripped
curl -s -H "X-Auth-Subject: root" %s/public/hello

# 7. rotate the signing key, log in again, call: gatehouse fetches the new kid
curl -s -X POST %s/rotate
TOKEN=$(%s)
curl -s -H "Authorization: Bearer $TOKEN" %s/api/orders

# 8. metrics and readiness
curl -s %s/metrics | grep '^gatehouse_'
curl -s %s/readyz

Audit events (one CloudEvents JSON line per decision) follow on stdout.

`, gate, admin, issuer, app,
		login("alice", "wonderland"), gate, gate, gate,
		login("bob", "builder"), gate, gate,
		issuer, login("alice", "wonderland"), gate,
		admin, admin)
	return b.String()
}

// lockedWriter keeps the banner and the audit lines from interleaving
// mid-line on stdout.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
