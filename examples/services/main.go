// Command services shows two services calling each other through their
// gatehouses, on one machine, in one command:
//
//	go run ./examples/services
//
// It starts on 127.0.0.1 the demo issuer (examples/internal/demoissuer:
// logins, JWKS, discovery, and a token endpoint for client credentials and
// RFC 8693 token exchange), service A's app behind its gatehouse (main
// listener and egress listener), and service B's app behind its own
// gatehouse; both gatehouses run through proxy.Run, the code the gatehouse
// binary runs. A's app, asked GET /call/<how>, calls B through A's egress
// listener as a plain HTTP proxy; the egress route decides which token B
// gets (propagate, exchange, client_credentials). B's gatehouse verifies it
// and B's app echoes who called. Neither app holds a token, a secret or a
// line of JWT code. It prints curl commands to try; Ctrl-C stops everything.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
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

// The identities of the demo: A's client id at the issuer and the
// audiences of A's and B's APIs.
const (
	clientID  = "service-a"
	audienceA = "service-a"
	audienceB = "service-b"
	// secretEnv carries A's client secret to A's gatehouse (client_secret_env)
	// and to the demo issuer; set it to choose the secret.
	secretEnv     = "SERVICE_A_CLIENT_SECRET"
	defaultSecret = "service-a-demo-secret"
)

// ports are the demo's addresses on 127.0.0.1; 0: a free port.
type ports struct {
	issuer, aGate, aAdmin, aEgress, aApp, bGate, bAdmin, bApp int
}

var defaultPorts = ports{issuer: 8181, aGate: 8180, aAdmin: 9180, aEgress: 15001, aApp: 3180, bGate: 8280, bAdmin: 9280, bApp: 3280}

// demo is the running example: base URLs, and what stops it.
type demo struct {
	issuer, aGate, aAdmin, aEgress, aApp, bGate, bAdmin, bApp string

	issuerSrv *http.Server // closed by a test to take the identity provider down
	servers   []*http.Server
	gates     sync.WaitGroup
	errs      chan error // the gatehouses' Run results
	dir       string
}

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("services", flag.ContinueOnError)
	free := fs.Bool("free-ports", false, "bind every server on a free port instead of the defaults")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "services: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	p := defaultPorts
	if *free {
		p = ports{}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d, err := start(ctx, p, log)
	if err != nil {
		for _, e := range yamlpos.Errors(err) {
			fmt.Fprintln(os.Stderr, "services:", e)
		}
		return 1
	}
	fmt.Print(d.banner())
	err = d.wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, "services:", err)
		return 1
	}
	return 0
}

// start brings up the issuer, both apps and both gatehouses, and returns
// once every listener is bound. The gatehouses stop when ctx ends; wait
// then stops the rest.
func start(ctx context.Context, p ports, log *slog.Logger) (_ *demo, err error) {
	secret := os.Getenv(secretEnv)
	if secret == "" {
		secret = defaultSecret
		// A's gatehouse reads the secret from this variable, as it would
		// from a Kubernetes Secret in production.
		if err := os.Setenv(secretEnv, secret); err != nil {
			return nil, err
		}
	}
	d := &demo{errs: make(chan error, 2)}
	defer func() {
		if err != nil {
			d.close()
		}
	}()

	// The issuer's name is its URL: A's gatehouse finds the token endpoint
	// through its discovery document, which must name that issuer.
	issLn, err := listen(p.issuer)
	if err != nil {
		return nil, fmt.Errorf("demo issuer: %w", err)
	}
	d.issuer = "http://" + issLn.Addr().String()
	iss := demoissuer.New(d.issuer, audienceA, time.Now, demoissuer.Options{
		Clients:         map[string]string{clientID: secret},
		ClientAudiences: map[string]string{clientID: audienceA},
		Audiences:       []string{audienceB},
		BaseURL:         d.issuer,
	})
	d.issuerSrv = d.serve(issLn, iss)

	bLn, err := listen(p.bApp)
	if err != nil {
		return nil, fmt.Errorf("app B: %w", err)
	}
	d.bApp = "http://" + bLn.Addr().String()
	d.serve(bLn, appB())

	// The egress listener's address goes into A's config and A's app, so
	// a free port is found before gatehouse binds it.
	if p.aEgress == 0 {
		if p.aEgress, err = freePort(); err != nil {
			return nil, err
		}
	}
	d.aEgress = fmt.Sprintf("http://127.0.0.1:%d", p.aEgress)
	aLn, err := listen(p.aApp)
	if err != nil {
		return nil, fmt.Errorf("app A: %w", err)
	}
	d.aApp = "http://" + aLn.Addr().String()
	d.serve(aLn, appA(d.aEgress))

	if d.dir, err = os.MkdirTemp("", "gatehouse-services"); err != nil {
		return nil, err
	}
	// B first: A's egress routes name B's gatehouse.
	bGate, bAdmin, err := d.gatehouse(ctx, log, "b", configB(p, d.issuer, d.bApp))
	if err != nil {
		return nil, fmt.Errorf("gatehouse B: %w", err)
	}
	d.bGate, d.bAdmin = bGate, bAdmin
	aGate, aAdmin, err := d.gatehouse(ctx, log, "a", configA(p, d.issuer, d.aApp, d.bGate))
	if err != nil {
		return nil, fmt.Errorf("gatehouse A: %w", err)
	}
	d.aGate, d.aAdmin = aGate, aAdmin
	return d, nil
}

func listen(port int) (net.Listener, error) {
	return net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
}

func freePort() (int, error) {
	ln, err := listen(0)
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (d *demo) serve(ln net.Listener, h http.Handler) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	d.servers = append(d.servers, srv)
	go func() { _ = srv.Serve(ln) }()
	return srv
}

// gatehouse writes config to a file and runs proxy.Run on it until ctx
// ends; it returns the main and admin base URLs once both are bound.
func (d *demo) gatehouse(ctx context.Context, log *slog.Logger, name, config string) (string, string, error) {
	path := filepath.Join(d.dir, name+".yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		return "", "", err
	}
	type addrs struct{ main, admin string }
	bound := make(chan addrs, 1)
	failed := make(chan error, 1)
	d.gates.Add(1)
	go func() {
		defer d.gates.Done()
		err := proxy.Run(ctx, proxy.Options{
			ConfigPath: path,
			Version:    "services-example",
			Logger:     log.With("gatehouse", name),
			Stdout:     io.Discard,
			Listening: func(main, admin net.Addr) {
				bound <- addrs{"http://" + main.String(), "http://" + admin.String()}
			},
		})
		select {
		case failed <- err:
		default:
		}
		if err != nil {
			d.errs <- fmt.Errorf("gatehouse %s: %w", name, err)
		}
	}()
	select {
	case a := <-bound:
		return a.main, a.admin, nil
	case err := <-failed:
		if err == nil {
			err = errors.New("stopped before listening")
		}
		return "", "", err
	case <-time.After(60 * time.Second):
		return "", "", errors.New("not listening within 60s")
	}
}

// wait returns when both gatehouses have stopped (ctx ended), then stops
// the apps and the issuer.
func (d *demo) wait() error {
	d.gates.Wait()
	d.close()
	select {
	case err := <-d.errs:
		return err
	default:
		return nil
	}
}

func (d *demo) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range d.servers {
		if err := s.Shutdown(ctx); err != nil {
			_ = s.Close()
		}
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}

// issuerEntry is the issuer as both gatehouses trust it.
func issuerEntry(issuer string, audiences string) string {
	return fmt.Sprintf(`issuers:
  - issuer: %q
    audiences: %s
    jwks_url: %q
    algorithms: [RS256]
    required_claims: [sub]
`, issuer, audiences, issuer+"/.well-known/jwks.json")
}

// configA is service A's gatehouse: users' tokens for service-a on the
// main listener, and the egress listener A's app sends its calls to B
// through. Each egress host is one way of calling B.
func configA(p ports, issuer, app, bGate string) string {
	return fmt.Sprintf(`# service A's gatehouse (examples/services)
listen: "127.0.0.1:%d"
upstream: %q
admin:
  listen: "127.0.0.1:%d"
timeouts:
  shutdown: 5s
%s
forward_token: false
headers:
  X-Auth-Subject: sub
strip_headers: ["X-Auth-"]
routes:
  - location: "/call/"
    roles: { any: [user, admin] }
default: deny

egress:
  listen: "127.0.0.1:%d"
  routes:
    - host: b-propagate              # the user's own token goes on to B
      upstream: %q
      token: propagate
    - host: b-exchange               # RFC 8693: the user's token exchanged for one for B
      upstream: %q
      token: exchange
      audience: %s
    - host: b-service                # RFC 6749 4.4: A's own token, no user involved
      upstream: %q
      token: client_credentials
      audience: %s
    - host: b-nobody                 # an audience the issuer does not serve: 502 token_unavailable
      upstream: %q
      token: exchange
      audience: nobody-api
  idp:
    issuer: %q                       # its discovery document names the token endpoint
    client_id: %s
    client_secret_env: %s
`, p.aGate, app, p.aAdmin, issuerEntry(issuer, "["+audienceA+"]"), p.aEgress,
		bGate, bGate, audienceB, bGate, audienceB, bGate, issuer, clientID, secretEnv)
}

// configB is service B's gatehouse. It accepts tokens for service-b and,
// because propagate hands B the user's token for A, for service-a too; a
// deployment that wants only exchanged tokens lists service-b alone.
func configB(p ports, issuer, app string) string {
	return fmt.Sprintf(`# service B's gatehouse (examples/services)
listen: "127.0.0.1:%d"
upstream: %q
admin:
  listen: "127.0.0.1:%d"
timeouts:
  shutdown: 5s
%s
forward_token: false
headers:
  X-Auth-Subject: sub
  X-Auth-Audience: aud
  X-Auth-Actor: act.sub
  X-Auth-Client: client_id
strip_headers: ["X-Auth-"]
routes:
  - location: "/"
    auth: required
`, p.bGate, app, p.bAdmin, issuerEntry(issuer, "["+audienceB+", "+audienceA+"]"))
}

// whoami is what B's app answers: who called, as B's gatehouse verified.
type whoami struct {
	Service  string `json:"service"`
	Sub      string `json:"sub"`
	Aud      string `json:"aud"`
	Actor    string `json:"act_sub,omitempty"`
	ClientID string `json:"client_id,omitempty"`
	Token    bool   `json:"authorization_header"`
}

// appB echoes the caller gatehouse verified. No JWT code: it trusts
// X-Auth-*, which only its gatehouse can set.
func appB() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		demoissuer.WriteJSON(w, http.StatusOK, whoami{
			Service:  "B",
			Sub:      r.Header.Get("X-Auth-Subject"),
			Aud:      r.Header.Get("X-Auth-Audience"),
			Actor:    r.Header.Get("X-Auth-Actor"),
			ClientID: r.Header.Get("X-Auth-Client"),
			Token:    r.Header.Get("Authorization") != "",
		})
	})
}

// called is A's answer to GET /call/<how>: who called A, and B's answer.
type called struct {
	Service  string          `json:"service"`
	Caller   string          `json:"caller"`
	Via      string          `json:"via"`
	BStatus  int             `json:"b_status"`
	BAnswer  json.RawMessage `json:"b_answer"`
	CallFail string          `json:"error,omitempty"`
}

// appA calls B for each inbound request. Its HTTP client only knows the
// egress listener as its proxy (what HTTP_PROXY does) and passes on the
// X-Request-Id its gatehouse gave the inbound request: that is how A's
// gatehouse knows which user's token the call belongs to. The path picks
// the egress route, that is, the token strategy.
func appA(egress string) http.Handler {
	proxyURL, _ := url.Parse(egress)
	client := &http.Client{
		Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)},
		Timeout:   15 * time.Second,
	}
	hosts := map[string]string{
		"propagate":          "b-propagate",
		"exchange":           "b-exchange",
		"client_credentials": "b-service",
		"nobody":             "b-nobody",
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		via := strings.TrimPrefix(r.URL.Path, "/call/")
		host, ok := hosts[via]
		if !ok {
			demoissuer.WriteJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "GET /call/propagate, /call/exchange, /call/client_credentials or /call/nobody"})
			return
		}
		out := called{Service: "A", Caller: r.Header.Get("X-Auth-Subject"), Via: via}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://"+host+"/whoami", nil)
		if err != nil {
			out.CallFail = err.Error()
			demoissuer.WriteJSON(w, http.StatusInternalServerError, out)
			return
		}
		req.Header.Set("X-Request-Id", r.Header.Get("X-Request-Id"))
		resp, err := client.Do(req)
		if err != nil {
			out.CallFail = err.Error()
			demoissuer.WriteJSON(w, http.StatusBadGateway, out)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
		out.BStatus = resp.StatusCode
		if json.Valid(body) {
			out.BAnswer = body
		} else {
			out.BAnswer, _ = json.Marshal(string(body))
		}
		demoissuer.WriteJSON(w, resp.StatusCode, out)
	})
}

// banner is the story to try, with the real addresses. The test reads the
// addresses from its first lines.
func (d *demo) banner() string {
	login := fmt.Sprintf("curl -s -H 'Accept: text/plain' -d username=alice -d password=wonderland %s/login", d.issuer)
	call := func(how string) string {
		return fmt.Sprintf(`curl -s -H "Authorization: Bearer $TOKEN" %s/call/%s`, d.aGate, how)
	}
	return fmt.Sprintf(`
gatehouse services example is running (Ctrl-C stops it):
  issuer     %s   POST /login, POST /token, GET /.well-known/openid-configuration
  a-gate     %s   service A's gatehouse: clients call this
  a-egress   %s   A's egress listener: A's app sends its calls to B here (its HTTP proxy)
  a-admin    %s
  a-app      %s   calls B for GET /call/<how>
  b-gate     %s   service B's gatehouse: verifies the token A's gatehouse attached
  b-admin    %s
  b-app      %s   echoes who called (sub, aud, act.sub, client_id)

Try, in another terminal:

# 1. log in as alice (a token for service-a)
TOKEN=$(%s)

# 2. propagate: B receives alice's own token (sub alice, aud service-a)
%s

# 3. exchange (RFC 8693): B receives a token for service-b, sub alice, act.sub service-a
%s

# 4. client_credentials (RFC 6749 4.4): B receives A's own token (sub service-a, aud service-b)
%s

# 5. an exchange for an audience the issuer refuses: 502 token_unavailable from A's egress
%s

# 6. a call to the egress listener that belongs to no inbound request: 403 no_inbound_token
curl -s -H 'Host: b-propagate' %s/whoami

# 7. the exchange A's gatehouse does, by hand, at the token endpoint
curl -s -u %s:"$%s" -d grant_type=urn:ietf:params:oauth:grant-type:token-exchange \
  -d subject_token="$TOKEN" -d subject_token_type=urn:ietf:params:oauth:token-type:access_token \
  -d audience=%s %s/token
  (%s is %q unless you set it before starting)

# 8. what A's egress did
curl -s %s/metrics | grep -E '^gatehouse_(egress|idp)_'

`, d.issuer, d.aGate, d.aEgress, d.aAdmin, d.aApp, d.bGate, d.bAdmin, d.bApp,
		login, call("propagate"), call("exchange"), call("client_credentials"), call("nobody"),
		d.aEgress,
		clientID, secretEnv, audienceB, d.issuer, secretEnv, defaultSecret,
		d.aAdmin)
}
