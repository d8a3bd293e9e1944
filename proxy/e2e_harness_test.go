package proxy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The gatehouse binary, built once on first use: a fuzz worker or a
// `-run '^$'` benchmark run never needs it, and the build costs seconds.
var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

func gatehouseBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "gatehouse-e2e"); buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "gatehouse")
		out, err := exec.Command("go", "build", "-ldflags", "-X main.version=e2e-test", "-o", buildPath, "..").CombinedOutput()
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

// syncBuffer is a bytes.Buffer safe for the process's writer and the test's reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// gatehouse is one running binary.
type gatehouse struct {
	t          *testing.T
	cmd        *exec.Cmd
	configPath string
	URL        string // http://127.0.0.1:PORT
	AdminURL   string
	stderr     *syncBuffer
	stdout     *syncBuffer
	exited     chan struct{}
	exitErr    error
}

// startGatehouse writes config (with listen and admin.listen on 127.0.0.1:0
// unless the text sets them) and runs the binary until the test ends.
func startGatehouse(t *testing.T, config string, env ...string) *gatehouse {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return startGatehouseFile(t, path, env...)
}

func startGatehouseFile(t *testing.T, path string, env ...string) *gatehouse {
	t.Helper()
	g := &gatehouse{t: t, configPath: path, stderr: &syncBuffer{}, stdout: &syncBuffer{}, exited: make(chan struct{})}
	g.cmd = exec.Command(gatehouseBinary(t), "-config", path)
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stdout = g.stdout
	pr, pw := io.Pipe()
	g.cmd.Stderr = io.MultiWriter(g.stderr, pw)
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		g.exitErr = g.cmd.Wait()
		pw.Close()
		close(g.exited)
	}()
	t.Cleanup(func() { g.stop() })

	type listening struct{ addr, admin string }
	found := make(chan listening, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			var line struct {
				Msg   string `json:"msg"`
				Addr  string `json:"addr"`
				Admin string `json:"admin"`
			}
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				found <- listening{line.Addr, line.Admin}
				sent = true
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case l := <-found:
		g.URL = "http://" + l.addr
		if l.admin != "" {
			g.AdminURL = "http://" + l.admin
		}
	case <-g.exited:
		t.Fatalf("gatehouse exited before listening: %v\nstderr:\n%s", g.exitErr, g.stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("gatehouse did not log \"listening\" within 20s\nstderr:\n%s", g.stderr.String())
	}
	return g
}

// stop sends SIGTERM and waits (bounded); a process that does not stop is
// killed and the test fails.
func (g *gatehouse) stop() {
	select {
	case <-g.exited:
		return
	default:
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(30 * time.Second):
		_ = g.cmd.Process.Kill()
		<-g.exited
		g.t.Errorf("gatehouse did not stop within 30s of SIGTERM")
	}
}

func (g *gatehouse) signal(sig os.Signal) {
	g.t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		g.t.Fatal(err)
	}
}

// waitLog waits (bounded) until stderr contains s.
func (g *gatehouse) waitLog(s string, within time.Duration) bool {
	return g.waitLogCount(s, 1, within)
}

// waitLogCount waits (bounded) until stderr contains s at least n times.
func (g *gatehouse) waitLogCount(s string, n int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.Count(g.stderr.String(), s) >= n {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// recorded is one request as the upstream saw it.
type recorded struct {
	Method     string
	RequestURI string
	Header     http.Header
	Host       string
	Body       string
}

// recorder is an httptest upstream that remembers what it got and answers
// with a small JSON body, or with handler when set.
type recorder struct {
	*httptest.Server
	mu      sync.Mutex
	got     []recorded
	handler http.HandlerFunc
	wire    []byte // every byte the upstream read, in arrival order
}

// teeListener records the bytes read on its connections, so that tests can
// check the framing gatehouse put on the wire, not Go's reading of it.
type teeListener struct {
	net.Listener
	rec *recorder
}

func (l teeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return teeConn{Conn: c, rec: l.rec}, nil
}

type teeConn struct {
	net.Conn
	rec *recorder
}

func (c teeConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rec.mu.Lock()
	c.rec.wire = append(c.rec.wire, p[:n]...)
	c.rec.mu.Unlock()
	return n, err
}

// wireLen and wireSince mark and read the raw upstream bytes.
func (r *recorder) wireLen() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.wire)
}

func (r *recorder) wireSince(n int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return string(r.wire[n:])
}

func newRecorder(t *testing.T) *recorder {
	rec := &recorder{}
	rec.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.got = append(rec.got, recorded{r.Method, r.RequestURI, r.Header.Clone(), r.Host, string(body)})
		h := rec.handler
		rec.mu.Unlock()
		if h != nil {
			h(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	}))
	rec.Server.Listener = teeListener{Listener: rec.Server.Listener, rec: rec}
	rec.Server.Start()
	t.Cleanup(rec.Close)
	return rec
}

func (r *recorder) requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.got...)
}

func (r *recorder) last(t *testing.T) recorded {
	t.Helper()
	got := r.requests()
	if len(got) == 0 {
		t.Fatal("upstream received no request")
	}
	return got[len(got)-1]
}

// do sends a request and returns status, headers and body.
func do(t *testing.T, method, url string, header http.Header, body string) (int, http.Header, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	c := &http.Client{Timeout: 15 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b)
}

// rawRequest writes text to addr (host:port) and returns the status line and
// the whole answer: for paths and headers a Go client would clean or refuse.
func rawRequest(t *testing.T, addr, text string) (string, string) {
	t.Helper()
	conn, err := dialTimeout(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, text); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(conn)
	s := string(b)
	line, _, _ := strings.Cut(s, "\r\n")
	return line, s
}
