package examples_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/gatehouse/gatehouse/proxy"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// quickstartBin is the quickstart program, built once in TestMain.
var quickstartBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gatehouse-examples")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	quickstartBin = filepath.Join(dir, "quickstart")
	build := exec.Command("go", "build", "-o", quickstartBin, "./quickstart")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build quickstart:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// quickstart is one running quickstart program.
type quickstart struct {
	t                        *testing.T
	cmd                      *exec.Cmd
	stdout, stderr           *proxytest.SyncBuffer
	exited                   chan struct{}
	exitErr                  error
	gate, admin, issuer, app string // base URLs read from the banner
}

var bannerLine = regexp.MustCompile(`(?m)^  (gatehouse|admin|issuer|app) +(http://127\.0\.0\.1:[0-9]+) `)

// startQuickstart runs the quickstart on free ports and reads the addresses
// from the banner it prints.
func startQuickstart(t *testing.T) *quickstart {
	t.Helper()
	q := &quickstart{t: t, stdout: &proxytest.SyncBuffer{}, stderr: &proxytest.SyncBuffer{}, exited: make(chan struct{})}
	q.cmd = exec.Command(quickstartBin, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0", "-issuer-port", "0", "-app-port", "0")
	q.cmd.Stderr = q.stderr
	pr, pw := io.Pipe()
	q.cmd.Stdout = io.MultiWriter(q.stdout, pw)
	if err := q.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		q.exitErr = q.cmd.Wait()
		pw.Close()
		close(q.exited)
	}()
	t.Cleanup(q.stop)

	found := make(chan map[string]string, 1)
	go func() {
		urls := map[string]string{}
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			if m := bannerLine.FindStringSubmatch(sc.Text()); m != nil {
				urls[m[1]] = m[2]
				if len(urls) == 4 {
					found <- urls
					break
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case urls := <-found:
		q.gate, q.admin, q.issuer, q.app = urls["gatehouse"], urls["admin"], urls["issuer"], urls["app"]
	case <-q.exited:
		t.Fatalf("quickstart exited before printing its banner: %v\nstderr:\n%s", q.exitErr, q.stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("quickstart printed no banner within 30s\nstdout:\n%s\nstderr:\n%s", q.stdout.String(), q.stderr.String())
	}
	return q
}

// stop interrupts the program (bounded); a program that does not stop is
// killed and the test fails.
func (q *quickstart) stop() {
	select {
	case <-q.exited:
		return
	default:
	}
	_ = q.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-q.exited:
	case <-time.After(30 * time.Second):
		_ = q.cmd.Process.Kill()
		<-q.exited
		q.t.Errorf("quickstart did not stop within 30s of SIGINT")
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, u string, header http.Header, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// login posts the form the banner's curl command posts and returns the
// bare token.
func (q *quickstart) login(t *testing.T, user, password string) string {
	t.Helper()
	r := do(t, "POST", q.issuer+"/login", http.Header{
		"Accept":       {"text/plain"},
		"Content-Type": {"application/x-www-form-urlencoded"},
	}, url.Values{"username": {user}, "password": {password}}.Encode())
	if r.status != 200 {
		t.Fatalf("login %s: status %d: %s", user, r.status, r.body)
	}
	return strings.TrimSpace(string(r.body))
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// kidOf returns the kid of a compact JWS's protected header.
func kidOf(t *testing.T, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var h struct{ Kid, Alg string }
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("token header: %v", err)
	}
	if h.Alg != "RS256" {
		t.Errorf("token alg = %q, want RS256", h.Alg)
	}
	return h.Kid
}

// echoed is the demo app's answer.
type echoed struct {
	Method, Path string
	Headers      map[string]string
}

func decodeEcho(t *testing.T, r response) echoed {
	t.Helper()
	var e echoed
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("app answer %q: %v", r.body, err)
	}
	return e
}

func errorCode(t *testing.T, r response) string {
	t.Helper()
	var e struct{ Error string }
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return e.Error
}

// waitReady polls /readyz until 200 (bounded).
func (q *quickstart) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get(q.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 within 20s (last error %v)\nstderr:\n%s", err, q.stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestQuickstartStory runs the quickstart as a user would and walks the
// story its banner prints: log in, call, 401, 403, admin, public, rotate,
// metrics, readiness; then Ctrl-C and the audit lines on stdout.
func TestQuickstartStory(t *testing.T) {
	q := startQuickstart(t)
	q.waitReady(t)

	t.Run("banner prints the commands with the real addresses", func(t *testing.T) {
		banner := q.stdout.String()
		for _, want := range []string{
			"TOKEN=$(curl -s -H 'Accept: text/plain' -d username=alice -d password=wonderland " + q.issuer + "/login)",
			`curl -s -H "Authorization: Bearer $TOKEN" ` + q.gate + "/api/orders",
			"curl -si " + q.gate + "/api/orders",
			`curl -si -H "Authorization: Bearer $TOKEN" ` + q.gate + "/admin/users",
			"ADMIN_TOKEN=$(curl -s -H 'Accept: text/plain' -d username=bob -d password=builder " + q.issuer + "/login)",
			"curl -s -X POST " + q.issuer + "/rotate",
			"curl -s " + q.admin + "/metrics",
			"curl -s " + q.admin + "/readyz",
		} {
			if !strings.Contains(banner, want) {
				t.Errorf("banner lacks %q:\n%s", want, banner)
			}
		}
	})

	alice := q.login(t, "alice", "wonderland")
	firstKid := kidOf(t, alice)

	t.Run("alice calls a user route and the app sees who she is", func(t *testing.T) {
		r := do(t, "GET", q.gate+"/api/orders", bearer(alice), "")
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		e := decodeEcho(t, r)
		want := map[string]string{"X-Auth-Subject": "alice", "X-Auth-Roles": "user", "X-Forwarded-For": "127.0.0.1"}
		for k, v := range want {
			if e.Headers[k] != v {
				t.Errorf("app saw %s = %q, want %q (all: %v)", k, e.Headers[k], v, e.Headers)
			}
		}
		if e.Headers["X-Request-Id"] == "" || e.Headers["X-Request-Id"] != r.header.Get("X-Request-Id") {
			t.Errorf("app saw X-Request-Id %q, client got %q", e.Headers["X-Request-Id"], r.header.Get("X-Request-Id"))
		}
		if e.Method != "GET" || e.Path != "/api/orders" {
			t.Errorf("app saw %s %s, want GET /api/orders", e.Method, e.Path)
		}
	})

	tests := []struct {
		name       string
		method     string
		path       string
		header     http.Header
		wantStatus int
		wantError  string
	}{
		{"no token is 401 missing_token", "GET", "/api/orders", nil, 401, "missing_token"},
		{"a forged token is 401 invalid_token", "GET", "/api/orders", bearer(alice[:len(alice)-4] + "AAAA"), 401, "invalid_token"},
		{"alice on an admin route is 403", "GET", "/admin/users", bearer(alice), 403, "insufficient_scope"},
		{"an unlisted path is 403 by default", "GET", "/elsewhere", bearer(alice), 403, "forbidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := do(t, tt.method, q.gate+tt.path, tt.header, "")
			if r.status != tt.wantStatus {
				t.Fatalf("%s %s: status %d, want %d: %s", tt.method, tt.path, r.status, tt.wantStatus, r.body)
			}
			if got := errorCode(t, r); got != tt.wantError {
				t.Errorf("%s %s: error %q, want %q", tt.method, tt.path, got, tt.wantError)
			}
		})
	}

	t.Run("bob is an admin", func(t *testing.T) {
		r := do(t, "GET", q.gate+"/admin/users", bearer(q.login(t, "bob", "builder")), "")
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if e := decodeEcho(t, r); e.Headers["X-Auth-Subject"] != "bob" || e.Headers["X-Auth-Roles"] != "admin" {
			t.Errorf("app saw %v, want bob/admin", e.Headers)
		}
	})

	t.Run("public route strips a forged X-Auth-Subject", func(t *testing.T) {
		r := do(t, "GET", q.gate+"/public/hello", http.Header{"X-Auth-Subject": {"root"}}, "")
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		if e := decodeEcho(t, r); e.Headers["X-Auth-Subject"] != "" {
			t.Errorf("app saw forged X-Auth-Subject %q", e.Headers["X-Auth-Subject"])
		}
	})

	t.Run("wrong password is refused by the issuer", func(t *testing.T) {
		r := do(t, "POST", q.issuer+"/login", http.Header{"Content-Type": {"application/json"}}, `{"username":"alice","password":"nope"}`)
		if r.status != 401 {
			t.Errorf("status %d, want 401: %s", r.status, r.body)
		}
	})

	t.Run("key rotation: a token from the new key is accepted", func(t *testing.T) {
		r := do(t, "POST", q.issuer+"/rotate", nil, "")
		var rot struct {
			Kid       string
			Published []string
		}
		if err := json.Unmarshal(r.body, &rot); err != nil || r.status != 200 {
			t.Fatalf("rotate: status %d, body %q, err %v", r.status, r.body, err)
		}
		if rot.Kid == firstKid || len(rot.Published) != 2 || rot.Published[0] != firstKid || rot.Published[1] != rot.Kid {
			t.Fatalf("rotate = %+v, want a new kid published after %q", rot, firstKid)
		}
		// JSON login this time, as the seeds' clients do.
		lr := do(t, "POST", q.issuer+"/login", http.Header{"Content-Type": {"application/json"}}, `{"username":"alice","password":"wonderland"}`)
		var login struct {
			AccessToken string `json:"access_token"`
			Kid         string
		}
		if err := json.Unmarshal(lr.body, &login); err != nil || lr.status != 200 {
			t.Fatalf("login: status %d, body %q, err %v", lr.status, lr.body, err)
		}
		if got := kidOf(t, login.AccessToken); got != rot.Kid || login.Kid != rot.Kid {
			t.Fatalf("new token kid = %q (answer says %q), want %q", got, login.Kid, rot.Kid)
		}
		call := do(t, "GET", q.gate+"/api/orders", bearer(login.AccessToken), "")
		if call.status != 200 {
			t.Fatalf("call with the new key: status %d: %s", call.status, call.body)
		}
		if e := decodeEcho(t, call); e.Headers["X-Auth-Subject"] != "alice" {
			t.Errorf("app saw %v", e.Headers)
		}
		// The old key stays published: alice's first token still works.
		if old := do(t, "GET", q.gate+"/api/orders", bearer(alice), ""); old.status != 200 {
			t.Errorf("call with the old key's token: status %d: %s", old.status, old.body)
		}
		// gatehouse loaded the new kid (it fetched the JWKS on the unknown kid).
		m := do(t, "GET", q.admin+"/metrics", nil, "")
		if !bytes.Contains(m.body, []byte(`kid="`+rot.Kid+`"`)) {
			t.Errorf("/metrics has no gatehouse_jwks_key_info for kid %q", rot.Kid)
		}
	})

	t.Run("readyz and metrics", func(t *testing.T) {
		if r := do(t, "GET", q.admin+"/readyz", nil, ""); r.status != 200 {
			t.Errorf("/readyz = %d: %s", r.status, r.body)
		}
		m := do(t, "GET", q.admin+"/metrics", nil, "")
		for _, want := range []string{
			`gatehouse_requests_total{decision="allow",reason="ok",route="/api/"}`,
			`gatehouse_requests_total{decision="deny",reason="missing_token",route="/api/"}`,
			`gatehouse_requests_total{decision="deny",reason="insufficient_scope",route="~ ^/admin(/|$)"}`,
			`gatehouse_audit_events_total{result="published",sink="stdout"}`,
		} {
			if !bytes.Contains(m.body, []byte(want)) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	t.Run("every metric the Grafana dashboard queries is in a live scrape", func(t *testing.T) {
		scrape := string(do(t, "GET", q.admin+"/metrics", nil, "").body)
		have := map[string]bool{}
		for _, line := range strings.Split(scrape, "\n") {
			if name := metricName.FindString(line); name != "" && !strings.HasPrefix(line, "#") {
				have[name] = true
			}
		}
		names := dashboardMetrics(t)
		if len(names) < 10 {
			t.Fatalf("dashboard queries only %d gatehouse metrics: %v", len(names), names)
		}
		for _, name := range names {
			if !have[name] && !have[name+"_bucket"] && !have[name+"_count"] {
				t.Errorf("dashboard queries %s, which /metrics does not have", name)
			}
		}
	})

	t.Run("Ctrl-C stops cleanly and the audit lines are on stdout", func(t *testing.T) {
		if err := q.cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		select {
		case <-q.exited:
		case <-time.After(30 * time.Second):
			t.Fatal("quickstart did not exit within 30s of SIGINT")
		}
		if q.exitErr != nil {
			t.Fatalf("exit: %v\nstderr:\n%s", q.exitErr, q.stderr.String())
		}
		type event struct {
			Type string
			Data struct {
				Decision, Reason, Route, Subject, Path string
			}
		}
		var events []event
		for _, line := range strings.Split(q.stdout.String(), "\n") {
			if !strings.HasPrefix(line, "{") {
				continue
			}
			var e event
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				t.Fatalf("audit line %q: %v", line, err)
			}
			events = append(events, e)
		}
		want := []struct{ typ, reason, subject string }{
			{"gatehouse.auth.allow", "ok", "alice"},
			{"gatehouse.auth.deny", "missing_token", ""},
			{"gatehouse.auth.deny", "insufficient_scope", "alice"},
			{"gatehouse.auth.allow", "ok", "bob"},
			{"gatehouse.auth.allow", "public", ""},
		}
		for _, w := range want {
			found := false
			for _, e := range events {
				found = found || (e.Type == w.typ && e.Data.Reason == w.reason && e.Data.Subject == w.subject)
			}
			if !found {
				t.Errorf("no audit event %s reason=%s subject=%q among %d events:\n%s", w.typ, w.reason, w.subject, len(events), q.stdout.String())
			}
		}
		if strings.Contains(q.stdout.String(), alice) {
			t.Errorf("a raw token appears on stdout")
		}
	})
}

var metricName = regexp.MustCompile(`^gatehouse_[a-z_]+`)

// dashboardMetrics returns the gatehouse metric names the dashboard's
// queries use, histogram suffixes stripped.
func dashboardMetrics(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("grafana/dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana/dashboard.json: %v", err)
	}
	seen := map[string]bool{}
	var names []string
	re := regexp.MustCompile(`gatehouse_[a-z_]+`)
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, n := range re.FindAllString(tg.Expr, -1) {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					n = strings.TrimSuffix(n, suffix)
				}
				if !seen[n] {
					seen[n] = true
					names = append(names, n)
				}
			}
		}
	}
	return names
}

// decodeAll parses every document of a YAML file.
func decodeAll(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var docs []map[string]any
	dec := yaml.NewDecoder(f)
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(docs)+1, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// TestManifestsParse parses every Compose and Kubernetes YAML file and the
// Grafana dashboard, and checks the lines the sidecar's safety rests on.
func TestManifestsParse(t *testing.T) {
	files, _ := filepath.Glob("kubernetes/*.yaml")
	more, _ := filepath.Glob("compose/*.yaml")
	yml, _ := filepath.Glob("compose/*.yml")
	files = append(append(files, more...), yml...)
	if len(files) < 7 {
		t.Fatalf("found only %d manifests: %v", len(files), files)
	}
	kinds := map[string]map[string]any{}
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			docs := decodeAll(t, path)
			if len(docs) == 0 {
				t.Fatalf("%s holds no YAML document", path)
			}
			for _, d := range docs {
				if k, ok := d["kind"].(string); ok {
					kinds[k] = d
				}
			}
		})
	}
	t.Run("grafana/dashboard.json", func(t *testing.T) {
		var v map[string]any
		b, err := os.ReadFile("grafana/dashboard.json")
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
	})
	for _, k := range []string{"Deployment", "Service", "ConfigMap", "Secret", "NetworkPolicy"} {
		if kinds[k] == nil {
			t.Errorf("no %s among the Kubernetes manifests", k)
		}
	}

	t.Run("the Service targets gatehouse's port", func(t *testing.T) {
		svc := text(t, "kubernetes/service.yaml")
		if !strings.Contains(svc, "targetPort: http") {
			t.Errorf("service.yaml does not target the named port http:\n%s", svc)
		}
		dep := text(t, "kubernetes/deployment.yaml")
		if !strings.Contains(dep, "{ name: http, containerPort: 8080 }") {
			t.Errorf("the port named http is not gatehouse's 8080")
		}
	})
	t.Run("deployment hardening and probes", func(t *testing.T) {
		dep := text(t, "kubernetes/deployment.yaml")
		for _, want := range []string{
			"runAsNonRoot: true", "readOnlyRootFilesystem: true", "allowPrivilegeEscalation: false",
			"capabilities: { drop: [ALL] }", "httpGet: { path: /healthz, port: admin }",
			"httpGet: { path: /readyz, port: admin }", `prometheus.io/scrape: "true"`, `prometheus.io/port: "9090"`,
			`{ name: HOST, value: "127.0.0.1" }`,
		} {
			if !strings.Contains(dep, want) {
				t.Errorf("deployment.yaml lacks %q", want)
			}
		}
		if n := strings.Count(dep, "readOnlyRootFilesystem: true"); n != 2 {
			t.Errorf("readOnlyRootFilesystem set on %d containers, want 2", n)
		}
	})
	t.Run("Dockerfile", func(t *testing.T) {
		df := text(t, "../Dockerfile")
		for _, want := range []string{
			"FROM golang:1.27.3 AS build", "ARG VERSION",
			`CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}"`,
			"FROM gcr.io/distroless/static-debian12:nonroot", "USER nonroot", "EXPOSE 8080 9090",
			`ENTRYPOINT ["/gatehouse"]`, `ENV GATEHOUSE_CONFIG=/etc/gatehouse/gatehouse.yaml`,
		} {
			if !strings.Contains(df, want) {
				t.Errorf("Dockerfile lacks %q", want)
			}
		}
	})
}

func text(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestExampleConfigs runs what `gatehouse -t` runs on every example config,
// including the one embedded in the Kubernetes ConfigMap, with the secrets
// they read from the environment set to test values.
func TestExampleConfigs(t *testing.T) {
	t.Setenv("GATEHOUSE_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	t.Setenv("GATEHOUSE_HMAC_SECRET", strings.Repeat("s", 48))
	paths, _ := filepath.Glob("*/gatehouse.yaml")
	if len(paths) < 2 {
		t.Fatalf("found only %v", paths)
	}
	var cm struct {
		Data map[string]string
	}
	for _, d := range decodeAll(t, "kubernetes/configmap.yaml") {
		b, _ := yaml.Marshal(d)
		if err := yaml.Unmarshal(b, &cm); err != nil {
			t.Fatal(err)
		}
	}
	embedded := cm.Data["gatehouse.yaml"]
	if embedded == "" {
		t.Fatal("kubernetes/configmap.yaml has no data.gatehouse.yaml")
	}
	if !strings.Contains(embedded, "watch_config: true") {
		t.Error("the ConfigMap's config does not set watch_config: true")
	}
	k8s := filepath.Join(t.TempDir(), "configmap-gatehouse.yaml")
	if err := os.WriteFile(k8s, []byte(embedded), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range append(paths, k8s) {
		t.Run(filepath.Base(filepath.Dir(path))+"/"+filepath.Base(path), func(t *testing.T) {
			if _, err := proxy.LoadConfig(path); err != nil {
				t.Errorf("LoadConfig(%s): %v", path, err)
			}
		})
	}
	t.Run("the Secret's placeholder HMAC secret is refused", func(t *testing.T) {
		t.Setenv("GATEHOUSE_HMAC_SECRET", "REPLACE-ME")
		if _, err := proxy.LoadConfig(k8s); err == nil {
			t.Error("gatehouse accepted the 10-byte placeholder secret")
		}
	})
}

// TestQuickstartRefusesBarePort: -listen and -admin take HOST:PORT; a bare
// port is refused at once, before anything starts, with a message that
// says so.
func TestQuickstartRefusesBarePort(t *testing.T) {
	for _, args := range [][]string{{"-listen", "8090"}, {"-admin", "0"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, quickstartBin, args...).CombinedOutput()
		cancel()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("quickstart %q: err %v, want exit status 2\n%s", args, err, out)
		}
		if !strings.Contains(string(out), "takes HOST:PORT") {
			t.Errorf("quickstart %q said %q, want it to ask for HOST:PORT", args, out)
		}
	}
}

// TestQuickstartTokenEndpoint: the quickstart's issuer answers client
// credentials and token exchange for its demo client, and gatehouse treats
// what it issues like any token of that issuer: the exchanged token is
// alice's (roles included, the client as actor), the client's own token has
// no role and gets 403 on a user route; a wrong secret gets invalid_client.
func TestQuickstartTokenEndpoint(t *testing.T) {
	q := startQuickstart(t)
	q.waitReady(t)
	secret := os.Getenv("DEMO_CLIENT_SECRET")
	if secret == "" {
		secret = "demo-secret"
	}
	token := func(form url.Values, secret string) response {
		t.Helper()
		auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("demo-client:"+url.QueryEscape(secret)))
		return do(t, "POST", q.issuer+"/token", http.Header{
			"Content-Type":  {"application/x-www-form-urlencoded"},
			"Authorization": {auth},
		}, form.Encode())
	}
	accessToken := func(r response) string {
		t.Helper()
		var v struct {
			AccessToken string `json:"access_token"`
		}
		if err := json.Unmarshal(r.body, &v); err != nil || r.status != 200 || v.AccessToken == "" {
			t.Fatalf("token endpoint: %d %s", r.status, r.body)
		}
		return v.AccessToken
	}

	alice := q.login(t, "alice", "wonderland")
	exchanged := accessToken(token(url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {alice},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
	}, secret))
	if r := do(t, "GET", q.gate+"/api/orders", bearer(exchanged), ""); r.status != 200 || decodeEcho(t, r).Headers["X-Auth-Subject"] != "alice" {
		t.Errorf("exchanged token at gatehouse: %d %s", r.status, r.body)
	}
	own := accessToken(token(url.Values{"grant_type": {"client_credentials"}}, secret))
	if r := do(t, "GET", q.gate+"/api/orders", bearer(own), ""); r.status != 403 || errorCode(t, r) != "insufficient_scope" {
		t.Errorf("client credentials token on a user route: %d %s", r.status, r.body)
	}
	if r := token(url.Values{"grant_type": {"client_credentials"}}, secret+"x"); r.status != 401 || errorCode(t, r) != "invalid_client" {
		t.Errorf("wrong secret: %d %s", r.status, r.body)
	}
	r := do(t, "GET", q.issuer+"/.well-known/openid-configuration", nil, "")
	var d struct {
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.Unmarshal(r.body, &d); err != nil || d.TokenEndpoint != q.issuer+"/token" {
		t.Errorf("discovery: %s", r.body)
	}
}
