package audittest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Node is a RabbitMQ node of the test's own: independent of the shared
// broker (its own node name, ports, data, logs and Erlang cookie), started
// from the same installed package, stopped when the test ends. Tests stop
// it on purpose to see what a broker failure does; the shared node on 5672
// is never touched.
type Node struct {
	URL  string // amqp://guest:guest@127.0.0.1:PORT/
	Name string // gh-test-<random>@localhost
	Dir  string // data, logs, config and HOME (cookie)

	t      testing.TB
	server string
	ctl    string
	env    []string
	cmd    *exec.Cmd
	exited chan struct{}
	out    *lockedBuffer
	once   sync.Once
}

// nodeStart bounds a node's boot: about 10-30 s on a loaded machine.
const nodeStart = 120 * time.Second

// StartNode starts a RabbitMQ node and waits until it takes AMQP
// connections. Without the rabbitmq-server program the test is skipped,
// or fails when GATEHOUSE_REQUIRE_RABBITMQ=1.
func StartNode(t testing.TB) *Node {
	t.Helper()
	server, ctl := findProgram("rabbitmq-server"), findProgram("rabbitmqctl")
	if server == "" || ctl == "" {
		if os.Getenv("GATEHOUSE_REQUIRE_RABBITMQ") == "1" {
			t.Fatal("RabbitMQ required but rabbitmq-server or rabbitmqctl is not installed")
		}
		t.Skip("rabbitmq-server not installed: a second RabbitMQ node cannot be started (GATEHOUSE_REQUIRE_RABBITMQ=1 to fail)")
	}
	var rnd [4]byte
	rand.Read(rnd[:])
	n := &Node{t: t, ctl: ctl, Name: "gh-test-" + hex.EncodeToString(rnd[:]) + "@localhost", Dir: t.TempDir(),
		out: &lockedBuffer{}}
	port, dist := freePort(t), freePort(t)
	n.URL = fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port)
	conf := fmt.Sprintf("listeners.tcp.local = 127.0.0.1:%d\n", port)
	for name, text := range map[string]string{
		"rabbitmq.conf":   conf,
		"enabled_plugins": "[].\n", // no management plugin, no extra listener
		"env.conf":        "",      // instead of /etc/rabbitmq/rabbitmq-env.conf and its NODENAME
	} {
		if err := os.WriteFile(filepath.Join(n.Dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n.env = append(os.Environ(),
		"HOME="+n.Dir, // the Erlang cookie goes here, for the node and rabbitmqctl alike
		"RABBITMQ_NODENAME="+n.Name,
		"RABBITMQ_NODE_IP_ADDRESS=127.0.0.1",
		"RABBITMQ_NODE_PORT="+strconv.Itoa(port),
		"RABBITMQ_DIST_PORT="+strconv.Itoa(dist),
		"RABBITMQ_MNESIA_BASE="+filepath.Join(n.Dir, "mnesia"),
		"RABBITMQ_LOG_BASE="+filepath.Join(n.Dir, "log"),
		"RABBITMQ_CONFIG_FILE="+filepath.Join(n.Dir, "rabbitmq.conf"),
		"RABBITMQ_ENABLED_PLUGINS_FILE="+filepath.Join(n.Dir, "enabled_plugins"),
		"RABBITMQ_CONF_ENV_FILE="+filepath.Join(n.Dir, "env.conf"),
		"RABBITMQ_PID_FILE="+filepath.Join(n.Dir, "pid"),
		"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}",
		"ERL_EPMD_ADDRESS=127.0.0.1",
	)
	n.server = server
	t.Cleanup(n.Stop)
	n.start()
	return n
}

// Restart starts the node again after Stop, on the same data: durable
// queues and their persistent messages are back.
func (n *Node) Restart() {
	n.t.Helper()
	n.Stop()
	n.once = sync.Once{}
	n.start()
}

func (n *Node) start() {
	t := n.t
	t.Helper()
	n.exited = make(chan struct{})
	n.cmd = exec.Command(n.server)
	n.cmd.Dir, n.cmd.Env = n.Dir, n.env
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	// Its own process group: the script starts beam.smp as a child, and a
	// failed test must not leave it running.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start rabbitmq-server: %v", err)
	}
	exited := n.exited
	go func() {
		n.cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(nodeStart)
	for {
		conn, err := amqp.DialConfig(n.URL, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
		if err == nil {
			conn.Close()
			return
		}
		select {
		case <-n.exited:
			t.Fatalf("rabbitmq node %s exited while starting:\n%s", n.Name, n.out.tail())
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("rabbitmq node %s not accepting connections after %v:\n%s", n.Name, nodeStart, n.out.tail())
		}
	}
}

// PID is the node's Erlang VM (beam.smp) process id, for reading its CPU
// time in /proc; 0 when unknown.
func (n *Node) PID() int {
	b, err := os.ReadFile(filepath.Join(n.Dir, "pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Stop stops the node (rabbitmqctl stop, then SIGKILL to its process group
// if it is still there after 30 s) and waits for it to exit. Safe to call
// twice.
func (n *Node) Stop() {
	n.once.Do(func() {
		if n.cmd == nil || n.cmd.Process == nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ctl := exec.CommandContext(ctx, n.ctl, "-n", n.Name, "stop")
		ctl.Dir, ctl.Env = n.Dir, n.env
		out, err := ctl.CombinedOutput()
		if err != nil {
			n.t.Logf("rabbitmqctl -n %s stop: %v: %s", n.Name, err, out)
		}
		select {
		case <-n.exited:
		case <-time.After(30 * time.Second):
		}
		// The group is ours (Setpgid); after a clean stop it is empty.
		if err := syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			n.t.Logf("kill rabbitmq node %s: %v", n.Name, err)
		}
		<-n.exited
	})
}

func findProgram(name string) string {
	// The Debian package's /usr/sbin entries are wrappers that switch to
	// the rabbitmq user when run as root; the scripts behind them take the
	// RABBITMQ_* environment as given.
	if p := filepath.Join("/usr/lib/rabbitmq/bin", name); isExec(p) {
		return p
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return ""
	}
	return p
}

func isExec(p string) bool {
	info, err := os.Stat(p)
	return err == nil && !info.IsDir() && info.Mode()&0o111 != 0
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// tail is the last few KiB of the node's output, for a failure message.
func (l *lockedBuffer) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	return s[max(0, len(s)-4096):]
}
