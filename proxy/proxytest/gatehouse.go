package proxytest

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/proxy"
)

// Version is the version the harness's gatehouse reports (in-process and
// the built binary alike).
const Version = "e2e-test"

// Gatehouse is one running gatehouse: in-process (Start) or the real binary
// (StartProcess). Either way it serves the config's listeners on 127.0.0.1,
// its JSON logs go to Stderr and its stdout audit sink to Stdout, and it is
// stopped when the test ends (the test fails if it does not stop cleanly).
type Gatehouse struct {
	URL        string // http://127.0.0.1:PORT
	AdminURL   string // "" without an admin listener
	EgressURL  string // http://127.0.0.1:PORT of egress.listen; "" without one
	ConfigPath string
	Stderr     *SyncBuffer
	Stdout     *SyncBuffer

	t       testing.TB
	exited  chan struct{}
	exitErr error
	cmd     *exec.Cmd          // StartProcess
	cancel  context.CancelFunc // Start
}

// Start writes config to a file and serves it in-process with proxy.Run,
// the code the binary runs after parsing its flags. env entries (KEY=value)
// are set with t.Setenv. Use it unless a process is the point: signals,
// reload by SIGHUP, exit codes, -t.
func Start(t testing.TB, config string, env ...string) *Gatehouse {
	t.Helper()
	return StartFile(t, writeConfig(t, config), env...)
}

// StartFile is Start for a config file already written.
func StartFile(t testing.TB, path string, env ...string) *Gatehouse {
	t.Helper()
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	g := newGatehouse(t, path)
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	found := make(chan [2]net.Addr, 1)
	go func() {
		defer close(g.exited)
		g.exitErr = proxy.Run(ctx, proxy.Options{
			ConfigPath:    path,
			Version:       Version,
			Stderr:        g.Stderr,
			Stdout:        g.Stdout,
			WatchInterval: 100 * time.Millisecond,
			Listening:     func(main, admin net.Addr) { found <- [2]net.Addr{main, admin} },
		})
	}()
	t.Cleanup(g.Stop)
	select {
	case a := <-found:
		g.URL = "http://" + a[0].String()
		if a[1] != nil {
			g.AdminURL = "http://" + a[1].String()
		}
		// The "listening" line is logged before Listening is called.
		for _, l := range strings.Split(g.Stderr.String(), "\n") {
			var line struct {
				Msg    string `json:"msg"`
				Egress string `json:"egress"`
			}
			if json.Unmarshal([]byte(l), &line) == nil && line.Msg == "listening" && line.Egress != "" {
				g.EgressURL = "http://" + line.Egress
			}
		}
	case <-g.exited:
		t.Fatalf("gatehouse stopped before listening: %v\nlogs:\n%s", g.exitErr, g.Stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("gatehouse did not listen within 20s\nlogs:\n%s", g.Stderr.String())
	}
	return g
}

// StartProcess writes config to a file and runs the gatehouse binary
// (Binary) on it; env entries are added to the process's environment.
func StartProcess(t testing.TB, config string, env ...string) *Gatehouse {
	t.Helper()
	return StartProcessFile(t, writeConfig(t, config), env...)
}

// StartProcessFile is StartProcess for a config file already written.
func StartProcessFile(t testing.TB, path string, env ...string) *Gatehouse {
	t.Helper()
	g := newGatehouse(t, path)
	g.cmd = exec.Command(Binary(t), "-config", path)
	g.cmd.Env = append(os.Environ(), env...)
	g.cmd.Stdout = g.Stdout
	pr, pw := io.Pipe()
	g.cmd.Stderr = io.MultiWriter(g.Stderr, pw)
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		g.exitErr = g.cmd.Wait()
		pw.Close()
		close(g.exited)
	}()
	t.Cleanup(g.Stop)

	type listening struct{ addr, admin, egress string }
	found := make(chan listening, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			var line struct {
				Msg    string `json:"msg"`
				Addr   string `json:"addr"`
				Admin  string `json:"admin"`
				Egress string `json:"egress"`
			}
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				found <- listening{line.Addr, line.Admin, line.Egress}
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case l := <-found:
		g.URL = "http://" + l.addr
		if l.admin != "" {
			g.AdminURL = "http://" + l.admin
		}
		if l.egress != "" {
			g.EgressURL = "http://" + l.egress
		}
	case <-g.exited:
		t.Fatalf("gatehouse exited before listening: %v\nstderr:\n%s", g.exitErr, g.Stderr.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("gatehouse did not log \"listening\" within 20s\nstderr:\n%s", g.Stderr.String())
	}
	return g
}

func newGatehouse(t testing.TB, path string) *Gatehouse {
	return &Gatehouse{t: t, ConfigPath: path, Stderr: &SyncBuffer{}, Stdout: &SyncBuffer{}, exited: make(chan struct{})}
}

func writeConfig(t testing.TB, config string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Stop stops gracefully (SIGTERM for a process, the context for
// in-process) and waits, bounded; a gatehouse that does not stop, or stops
// with an error, fails the test.
func (g *Gatehouse) Stop() {
	select {
	case <-g.exited:
		return
	default:
	}
	if g.cmd != nil {
		_ = g.cmd.Process.Signal(syscall.SIGTERM)
	} else {
		g.cancel()
	}
	select {
	case <-g.exited:
		if g.cmd == nil && g.exitErr != nil {
			g.t.Errorf("gatehouse stopped with %v", g.exitErr)
		}
	case <-time.After(30 * time.Second):
		if g.cmd != nil {
			_ = g.cmd.Process.Kill()
			<-g.exited
		}
		g.t.Errorf("gatehouse did not stop within 30s")
	}
}

// Exited is closed when the gatehouse has stopped; ExitErr is then its
// end: the process's wait error, or Run's error.
func (g *Gatehouse) Exited() <-chan struct{} { return g.exited }

// ExitErr is valid once Exited is closed.
func (g *Gatehouse) ExitErr() error { return g.exitErr }

// Process is the running binary; nil in-process.
func (g *Gatehouse) Process() *os.Process {
	if g.cmd == nil {
		return nil
	}
	return g.cmd.Process
}

// Signal sends sig to the process. An in-process gatehouse takes no
// signals (they would go to the test binary): the test fails.
func (g *Gatehouse) Signal(sig os.Signal) {
	g.t.Helper()
	if g.cmd == nil {
		g.t.Fatal("Signal on an in-process gatehouse: use StartProcess")
	}
	if err := g.cmd.Process.Signal(sig); err != nil {
		g.t.Fatal(err)
	}
}

// WaitLog waits (bounded) until the logs contain s.
func (g *Gatehouse) WaitLog(s string, within time.Duration) bool {
	return g.WaitLogCount(s, 1, within)
}

// WaitLogCount waits (bounded) until the logs contain s at least n times.
func (g *Gatehouse) WaitLogCount(s string, n int, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if strings.Count(g.Stderr.String(), s) >= n {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// The gatehouse binary, built once per test binary on first use: a fuzz
// worker or a `-run '^$'` benchmark run never needs it.
var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

// Binary builds the gatehouse command (version Version) once and returns
// its path. Call Cleanup from TestMain to remove it.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "gatehouse-e2e"); buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "gatehouse")
		out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+Version, "-o", buildPath, "github.com/gatehouse/gatehouse").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("build gatehouse: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// Cleanup removes what Binary built.
func Cleanup() {
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
}

// ExitCode is the process's exit code once Exited is closed; in-process,
// 0 when Run returned nil and 1 otherwise (what main would exit with).
func (g *Gatehouse) ExitCode() int {
	if g.cmd != nil {
		return g.cmd.ProcessState.ExitCode()
	}
	if g.exitErr != nil {
		return 1
	}
	return 0
}
