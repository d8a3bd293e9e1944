// Package pathdiff_test puts the real gatehouse binary, with the README's
// migration configs, in front of a real Express app and a real Flask app and
// sends paths built to confuse the two about which route a request is for.
// gatehouse matches the path it forwards; what counts is which handler the
// app then runs, so each app answers with the name of its handler and the
// test fails when a request without a token, or with a token that lacks the
// role, reached a handler that needs it.
package pathdiff_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/proxy/proxytest"
)

// requireFrameworks turns a missing node, express or flask into a failure
// (CI sets it; .ci/run installs them).
var requireFrameworks = os.Getenv("GATEHOUSE_REQUIRE_FRAMEWORKS") == "1"

func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if requireFrameworks {
		t.Fatalf("%s (GATEHOUSE_REQUIRE_FRAMEWORKS=1)", msg)
	}
	t.Skipf("%s; skipping (set GATEHOUSE_REQUIRE_FRAMEWORKS=1 to fail instead)", msg)
}

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// gatehouseBinary builds the binary once, on first use.
func gatehouseBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "gatehouse-pathdiff"); buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "gatehouse")
		out, err := exec.Command("go", "build", "-o", buildPath, "../..").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build gatehouse: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// start runs cmd until the test ends and returns the first stdout or
// stderr line that is a JSON object holding key (bounded wait). The process
// is killed by its PID at cleanup.
func start(t *testing.T, cmd *exec.Cmd, key string) (json.RawMessage, *proxytest.SyncBuffer) {
	t.Helper()
	out := &proxytest.SyncBuffer{}
	pr, pw := io.Pipe()
	cmd.Stdout = io.MultiWriter(out, pw)
	cmd.Stderr = io.MultiWriter(out, pw)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		pw.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s (pid %d) did not exit within 10s of SIGKILL", cmd.Path, cmd.Process.Pid)
		}
	})
	found := make(chan json.RawMessage, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			var line map[string]json.RawMessage
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line[key] != nil {
				found <- line[key]
				sent = true
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case v := <-found:
		return v, out
	case <-exited:
		t.Fatalf("%s exited before it was ready:\n%s", cmd.Path, out.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("%s was not ready within 30s:\n%s", cmd.Path, out.String())
	}
	return nil, nil
}

// startApp runs an app that prints {"listening": PORT} and returns its base URL.
func startApp(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	v, _ := start(t, cmd, "listening")
	var port int
	if err := json.Unmarshal(v, &port); err != nil || port == 0 {
		t.Fatalf("app announced port %s", v)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// startGatehouse runs the binary with config and returns its host:port.
func startGatehouse(t *testing.T, config string, env ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gatehouseBinary(t), "-config", path)
	cmd.Env = append(os.Environ(), env...)
	// gatehouse logs {"msg":"listening","addr":...}; the audit sink shares the stream.
	v, out := start(t, cmd, "addr")
	var addr string
	if json.Unmarshal(v, &addr) != nil || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("gatehouse announced %s, want a 127.0.0.1 address\n%s", v, out.String())
	}
	return addr
}

// checkClean runs `gatehouse -t` on config: a README migration config
// must load and draw no warning (a warning names a location that a
// differently-cased or slashed path could bypass).
func checkClean(t *testing.T, config string, env ...string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gatehouseBinary(t), "-t", "-config", path)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "warning") {
		t.Errorf("gatehouse -t on the README config: %v\n%s", err, out)
	}
}

// issuer stands in for the seeds' auth services: it serves the JWKS, and
// answers every other path (the login route the configs send to it) as the
// handler "issuer".
func issuer(t *testing.T, keys ...*jwkstest.Key) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/.well-known/jwks.json" {
			w.Write(jwkstest.JWKS(keys...))
			return
		}
		io.WriteString(w, `{"handler":"issuer"}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// migrationConfig returns the complete config (a yaml block starting with
// listen:) in README's "Moving an app" section that contains marker.
func migrationConfig(t *testing.T, marker string) string {
	t.Helper()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Moving an app from in-code JWT checks\n")
	if !ok {
		t.Fatal(`README.md has no "## Moving an app from in-code JWT checks" section`)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var found []string
	for _, m := range regexp.MustCompile("(?s)```yaml\n(listen: .*?)```").FindAllStringSubmatch(section, -1) {
		if strings.Contains(m[1], marker) {
			found = append(found, m[1])
		}
	}
	if len(found) != 1 {
		t.Fatalf("README's migration section has %d complete configs containing %q, want 1", len(found), marker)
	}
	return found[0]
}

// localise points a README config at the test's processes, replacing
// old, new pairs. Every old string must occur, so a README edit that drops
// one fails here rather than testing something else; all are checked
// before any is replaced, so a new value cannot be taken for an old one.
func localise(t *testing.T, config string, pairs ...string) string {
	t.Helper()
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(config, pairs[i]) {
			t.Fatalf("the README config no longer contains %q:\n%s", pairs[i], config)
		}
	}
	return strings.NewReplacer(pairs...).Replace(config)
}

var pathsLine = regexp.MustCompile(`(?m)^paths:.*\n`)

// withoutPaths is the config with its top-level paths: line removed: the
// upstream's path semantics undeclared, as before issue 11.
func withoutPaths(t *testing.T, config, preset string) string {
	t.Helper()
	lines := pathsLine.FindAllString(config, -1)
	if len(lines) != 1 || !strings.Contains(lines[0], "preset: "+preset) {
		t.Fatalf("the README config should have one top-level `paths:` line with preset: %s, has %q", preset, lines)
	}
	return pathsLine.ReplaceAllString(config, "")
}

// probePaths are request targets written raw on the wire: a Go client
// would clean or refuse many of them, and the point is what the app gets.
// Targets that a server must refuse (a space, a bare LF) are left out:
// they would test the HTTP parser, not routing.
var probePaths = []string{
	// case
	"/ADMIN/users", "/Admin/x", "/aDmIn", "/aDmIn/users", "/ADMIN", "/ADMIN/", "/Admin",
	"/admin/USERS", "/ADMIN/USERS", "/AdMiN/users/", "/ORDERS", "/Orders", "/oRdErS",
	"/ORDERS/", "/Orders/", "/PROTECTED", "/Protected/",
	// slashes
	"/admin", "/admin/", "/admin/users", "/admin/users/", "/orders", "/orders/", "/orders//",
	"/admin//users", "//admin/users", "///admin", "//ADMIN//users", "//orders", "/ADMIN//",
	// dot segments
	"/./admin/users", "/x/../admin/users", "/admin/./users", "/admin/users/.", "/admin/users/..",
	"/x/..//admin", "/orders/.", "/orders/x/..", "/./ORDERS", "/x/../ADMIN/x", "/admin/..", "/ADMIN/.",
	// percent-encoding
	"/%41DMIN/x", "/%61dmin/users", "/adm%69n/users", "/%61%64%6d%69%6e", "/%41%44%4D%49%4E/users",
	"/admin%2Fusers", "/admin%2fusers", "/%2e%2e/admin", "/x/%2e%2e/admin/users", "/x/%2E%2E/ADMIN",
	"/%2e/admin", "/admin%252Fusers", "/%2561dmin/users", "/%252e%252e/admin", "/orders%2F",
	"/ord%65rs", "/%4FRDERS", "/%6Frders/", "/admin%20", "/admin%09", "/admin%5Cusers",
	"/adm%in", "/admin%", "/%ZZadmin", "/admin%3Bx/users", "/admin%23/users", "/admin%3F/users",
	// ; parameters
	"/admin;x/users", "/admin/;/users", "/admin;/users", "/ADMIN;x", "/orders;x", "/orders;",
	"/admin/..;/admin/users", "/x/..;/admin/users", "/..;/admin", "/x/.;/admin",
	"/admin;jsessionid=1/users", "/ORDERS;a=b", "/admin/users;.css",
	// Unicode lookalikes, raw and encoded
	"/\uFF41dmin", "/\uFF21\uFF24\uFF2D\uFF29\uFF2E/users", "/adm\u0131n", "/ADM\u0130N", "/adm\u0131n/users",
	"/adm%C4%B1n", "/ADM%C4%B0N/users", "/%EF%BD%81dmin", "/admin\u200b/users", "/ad\u00admin",
	"/admi\u0301n", "/order\u017f", "/ORDER\u017f/", "/\u212Aadmin", "/\u0430dmin",
	// backslashes
	"/admin\\users", "\\admin", "/x\\..\\admin", "/ADMIN\\",
	// NUL and control characters
	"/admin%00/users", "/admin\x00", "/admin%0d%0a", "/admin%7f", "/admin\x7f",
	// overlong and invalid UTF-8
	"/%C1%81dmin", "/%c0%afadmin", "/admin%c0%af", "/%e0%80%afadmin", "/\xC1\x81dmin", "/admin\xff",
	"/%C0%AE%C0%AE/admin",
	// query and fragment
	"/ADMIN?x=1", "/x?/admin", "/orders?x=1", "/ORDERS?", "/admin#x", "/ADMIN#/admin",
	// other spellings of the same thing
	"/admin.json", "/admin-x", "/administrator", "/Admin.", "/ADMIN/users/.json",
	"http://127.0.0.1/ADMIN/users", "http://127.0.0.1/orders/",
}

// caller is one identity a probe is sent as.
type caller struct {
	name  string
	token string // "" for no token
	// forbidden are the handlers this caller must never reach.
	forbidden []string
}

type result struct {
	status  int
	handler string // "" when the answer named no handler (gatehouse's own)
}

// send writes one raw request to gatehouse and reads the answer.
func send(t *testing.T, addr, method, target, token string) result {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n", method, target)
	if token != "" {
		fmt.Fprintf(&b, "Authorization: Bearer %s\r\n", token)
	}
	if method == "POST" {
		b.WriteString("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	} else {
		b.WriteString("\r\n")
	}
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatalf("%s %q: %v", method, target, err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %q: no HTTP answer: %v", method, target, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	var v struct {
		Handler string `json:"handler"`
	}
	_ = json.Unmarshal(body, &v)
	return result{res.StatusCode, v.Handler}
}

// probe sends every path with every method as every caller and returns
// the requests that reached a handler forbidden to their caller.
func probe(t *testing.T, addr string, callers []caller) (bypasses []string) {
	t.Helper()
	outcomes := map[string]int{}
	for _, c := range callers {
		for _, method := range []string{"GET", "POST"} {
			for _, p := range probePaths {
				r := send(t, addr, method, p, c.token)
				h := r.handler
				if h == "" {
					h = "gatehouse"
				}
				outcomes[fmt.Sprintf("%d %s", r.status, h)]++
				for _, f := range c.forbidden {
					if r.handler == f {
						bypasses = append(bypasses, fmt.Sprintf("%s %q as %s reached %s (%d)", method, p, c.name, f, r.status))
					}
				}
			}
		}
	}
	keys := make([]string, 0, len(outcomes))
	for k := range outcomes {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var s strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&s, " [%s]×%d", k, outcomes[k])
	}
	t.Logf("%d paths × 2 methods × %d callers; answers:%s", len(probePaths), len(callers), s.String())
	return bypasses
}

// expect checks one request whose answer the configs fix, so that a probe
// that finds nothing is known to be able to see a handler at all.
func expect(t *testing.T, addr, method, target, token, want string) {
	t.Helper()
	if r := send(t, addr, method, target, token); r.handler != want {
		t.Errorf("control: %s %s answered %d by %q, want handler %q", method, target, r.status, r.handler, want)
	}
}

// TestProbePathsAreMany keeps the probe at the size issue 11 asks for,
// without duplicates that would inflate it.
func TestProbePathsAreMany(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range probePaths {
		if seen[p] {
			t.Errorf("probe path %q listed twice", p)
		}
		seen[p] = true
	}
	if len(probePaths) < 90 {
		t.Errorf("%d probe paths, want at least 90", len(probePaths))
	}
}

// TestExpress: the README's Express migration config in front of Express
// with its default routing. With `paths: { preset: express }` no probe may
// reach the admin or order-create handler without the role; without it the
// probe must find the bypasses issue 11 found (/ADMIN/users), which shows
// that the probe can fail.
func TestExpress(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node is not on the PATH (Debian: apt-get install nodejs npm)")
	}
	if _, err := os.Stat("express/node_modules/express/package.json"); err != nil {
		missing(t, "express is not installed in examples/pathdiff/express (run `npm ci` there)")
	}
	key := jwkstest.NewKey("RS256", "key1")
	iss := issuer(t, key)
	sign := func(role string, permissions ...string) string {
		now := time.Now()
		return key.Sign(map[string]any{
			"iss": "auth-service", "aud": "microservices", "userId": "u-" + role, "role": role,
			"permissions": permissions, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		})
	}
	app := exec.Command(node, "app.js", "0")
	app.Dir = "express"
	appURL := startApp(t, app)

	readme := migrationConfig(t, "jwks_url")
	config := localise(t, readme,
		`listen: ":8080"`, `listen: "127.0.0.1:0"`,
		"http://127.0.0.1:3000", appURL,
		"http://auth-service:4000", iss)
	callers := []caller{
		{"no token", "", []string{"admin", "order-create", "orders-list"}},
		{"user", sign("user", "order:read"), []string{"admin", "order-create"}},
	}
	controls := func(t *testing.T, addr string) {
		expect(t, addr, "GET", "/admin/users", sign("admin"), "admin")
		expect(t, addr, "POST", "/orders", sign("user", "order:create"), "order-create")
		expect(t, addr, "GET", "/orders", sign("user"), "orders-list")
		expect(t, addr, "POST", "/auth/login", "", "issuer")
	}

	t.Run("preset express", func(t *testing.T) {
		checkClean(t, config)
		addr := startGatehouse(t, config)
		controls(t, addr)
		bypasses := probe(t, addr, callers)
		for _, b := range bypasses {
			t.Errorf("bypass: %s", b)
		}
		t.Logf("preset express: %d bypasses", len(bypasses))
	})
	t.Run("no paths declared", func(t *testing.T) {
		addr := startGatehouse(t, withoutPaths(t, config, "express"))
		controls(t, addr)
		bypasses := probe(t, addr, callers)
		t.Logf("no paths declared: %d bypasses, e.g. %q", len(bypasses), bypasses[:min(5, len(bypasses))])
		for _, want := range []string{`GET "/ADMIN/users" as user reached admin`, `POST "/ORDERS" as user reached order-create`} {
			if !containsPrefix(bypasses, want) {
				t.Errorf("without paths the probe did not find %s: it has no teeth", want)
			}
		}
	})
}

// TestFlask: the README's Flask migration config in front of Flask with
// its default routing. With `paths: { preset: flask }` no probe may reach
// the admin handler without the role, nor the protected one without a token.
func TestFlask(t *testing.T) {
	python := flaskPython(t)
	key := jwkstest.NewKey("HS256", "")
	iss := issuer(t)
	sign := func(user string, roles ...string) string {
		return key.Sign(map[string]any{"user": user, "roles": roles, "exp": time.Now().Add(time.Hour).Unix()})
	}
	app := exec.Command(python, "app.py", "0")
	app.Dir = "flask"
	appURL := startApp(t, app)

	readme := migrationConfig(t, "hmac_secret_env: JWT_SECRET")
	config := localise(t, readme,
		`listen: ":8080"`, `listen: "127.0.0.1:0"`,
		"http://127.0.0.1:5000", appURL,
		"http://user-service:5001", iss)
	env := "JWT_SECRET=" + string(key.Secret())
	callers := []caller{
		{"no token", "", []string{"admin", "protected"}},
		{"user", sign("roger", "user"), []string{"admin"}},
	}
	controls := func(t *testing.T, addr string) {
		expect(t, addr, "GET", "/admin/users", sign("boss", "admin"), "admin")
		expect(t, addr, "GET", "/protected", sign("roger", "user"), "protected")
		expect(t, addr, "GET", "/", "", "public")
		expect(t, addr, "POST", "/login", "", "issuer")
	}

	t.Run("preset flask", func(t *testing.T) {
		checkClean(t, config, env)
		addr := startGatehouse(t, config, env)
		controls(t, addr)
		bypasses := probe(t, addr, callers)
		for _, b := range bypasses {
			t.Errorf("bypass: %s", b)
		}
		t.Logf("preset flask: %d bypasses", len(bypasses))
	})
	t.Run("no paths declared", func(t *testing.T) {
		// Flask reads paths as gatehouse does by default (case-sensitive,
		// strict slashes): the count is reported, not asserted.
		addr := startGatehouse(t, withoutPaths(t, config, "flask"), env)
		controls(t, addr)
		bypasses := probe(t, addr, callers)
		t.Logf("no paths declared: %d bypasses %q", len(bypasses), bypasses)
	})
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

// flaskPython finds a python3 that imports flask: Debian's first (CI
// installs python3-flask), then the PATH's.
func flaskPython(t *testing.T) string {
	t.Helper()
	candidates := []string{"/usr/bin/python3"}
	if p, err := exec.LookPath("python3"); err == nil {
		candidates = append(candidates, p)
	}
	for _, p := range candidates {
		if exec.Command(p, "-c", "import flask").Run() == nil {
			return p
		}
	}
	missing(t, "no python3 with flask found in %q (Debian: apt-get install python3-flask)", candidates)
	return ""
}
