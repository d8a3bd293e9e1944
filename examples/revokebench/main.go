// Command revokebench measures revocation across a fleet (SPEC.md 12, issue
// 15): it starts -n gatehouse processes following one RabbitMQ stream,
// revokes a token that every one of them has cached, and records how long
// after the broker's confirmation each instance refuses it; then it fills
// the stream with -entries revocations and measures a new instance's
// start-up replay (time to /readyz 200) and its resident memory.
//
//	go run ./examples/revokebench -n 20 -rounds 5 -entries 100000
//
// It needs the broker of GATEHOUSE_TEST_AMQP_URL (default
// amqp://guest:guest@127.0.0.1:5672/) and declares a stream of its own,
// deleted at the end.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/gatehouse/gatehouse/internal/broker"
	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/jwks/revoke"
)

const issuer = "https://issuer.revokebench"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "revokebench:", err)
		os.Exit(1)
	}
}

type instance struct {
	cmd        *exec.Cmd
	url, admin string
	started    time.Time
	stderr     *strings.Builder
	stderrMu   sync.Mutex
}

func run() error {
	n := flag.Int("n", 20, "gatehouse processes")
	rounds := flag.Int("rounds", 5, "revocations timed across the fleet")
	entries := flag.Int("entries", 100000, "revocations in force for the replay measurement (0: skip)")
	flag.Parse()
	amqpURL := os.Getenv("GATEHOUSE_TEST_AMQP_URL")
	if amqpURL == "" {
		amqpURL = "amqp://guest:guest@127.0.0.1:5672/"
	}
	dir, err := os.MkdirTemp("", "revokebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin, err := build(dir)
	if err != nil {
		return err
	}
	stream := fmt.Sprintf("gatehouse.revokebench.%x", rand.Uint64())
	defer deleteStream(amqpURL, stream)

	key := jwkstest.NewKey("ES256", "bench-1")
	js := jwkstest.NewServer(key)
	defer js.Close()
	up := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })}
	uln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = up.Serve(uln) }()
	defer up.Close()

	cfgPath := filepath.Join(dir, "gatehouse.yaml")
	cfgText := fmt.Sprintf(`listen: "127.0.0.1:0"
upstream: "http://%s"
admin:
  listen: "127.0.0.1:0"
issuers:
  - issuer: %q
    audiences: [api]
    jwks_url: %q
routes:
  - location: "/"
    auth: required
audit:
  sink: none
log:
  level: info
revocation:
  rabbitmq:
    url: %q
    stream: %q
    max_age: 1h
  ready_timeout: 60s
`, uln.Addr(), issuer, js.URL, amqpURL, stream)
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		return err
	}
	rcfg := &revoke.Config{URLs: broker.URLs{List: []string{amqpURL}}, Stream: stream, MaxAge: time.Hour, ReadyTimeout: time.Minute}

	fmt.Printf("starting %d gatehouse processes\n", *n)
	fleet := make([]*instance, *n)
	for i := range fleet {
		if fleet[i], err = start(bin, cfgPath); err != nil {
			return err
		}
		defer fleet[i].stop()
	}
	for _, g := range fleet {
		if _, err := g.waitReady(2 * time.Minute); err != nil {
			return err
		}
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	var lat []time.Duration
	for r := range *rounds {
		jti := fmt.Sprintf("bench-%d-%x", r, rand.Uint64())
		tok := key.Sign(map[string]any{"iss": issuer, "aud": "api", "sub": "u", "jti": jti,
			"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()})
		for _, g := range fleet {
			if code := get(client, g.url, tok); code != 200 {
				return fmt.Errorf("token refused before revocation: %d", code)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := revoke.Publish(ctx, rcfg, revoke.Revocation{Kind: revoke.KindJTI, Issuer: issuer, Value: jti, Reason: "bench"}, time.Now())
		cancel()
		if err != nil {
			return err
		}
		confirmed := time.Now()
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, g := range fleet {
			wg.Go(func() {
				for time.Since(confirmed) < 30*time.Second {
					if get(client, g.url, tok) == 401 {
						mu.Lock()
						lat = append(lat, time.Since(confirmed))
						mu.Unlock()
						return
					}
					time.Sleep(2 * time.Millisecond)
				}
			})
		}
		wg.Wait()
	}
	slices.Sort(lat)
	fmt.Printf("revocation to refusal, %d instances x %d rounds = %d samples (%d expected): p50 %v p99 %v max %v\n",
		*n, *rounds, len(lat), *n**rounds, pct(lat, 50), pct(lat, 99), lat[len(lat)-1])
	for _, g := range fleet {
		g.stop()
	}

	if *entries == 0 {
		return nil
	}
	fmt.Printf("publishing %d revocations\n", *entries)
	if err := fill(amqpURL, stream, *entries); err != nil {
		return err
	}
	g, err := start(bin, cfgPath)
	if err != nil {
		return err
	}
	defer g.stop()
	ready, err := g.waitReady(2 * time.Minute)
	if err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	fmt.Printf("start-up with %d revocations in force: /readyz 200 after %v (process start to ready), VmRSS %s, VmHWM %s, Go heap in use %s\n",
		*entries, ready.Round(time.Millisecond), procStatus(g.cmd.Process.Pid, "VmRSS"), procStatus(g.cmd.Process.Pid, "VmHWM"), heapInUse(g.admin))
	base, err := start(bin, writeBase(dir, cfgText))
	if err != nil {
		return err
	}
	defer base.stop()
	if _, err := base.waitReady(time.Minute); err != nil {
		return err
	}
	time.Sleep(500 * time.Millisecond)
	fmt.Printf("the same config without revocation: VmRSS %s, Go heap in use %s\n", procStatus(base.cmd.Process.Pid, "VmRSS"), heapInUse(base.admin))
	return nil
}

func writeBase(dir, cfg string) string {
	p := filepath.Join(dir, "base.yaml")
	i := strings.Index(cfg, "revocation:")
	_ = os.WriteFile(p, []byte(cfg[:i]), 0o600)
	return p
}

func pct(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := (len(d)*p + 99) / 100
	return d[min(max(i-1, 0), len(d)-1)].Round(100 * time.Microsecond)
}

func get(c *http.Client, url, tok string) int {
	req, _ := http.NewRequest("GET", url+"/x", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := c.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func build(dir string) (string, error) {
	out := filepath.Join(dir, "gatehouse")
	modDir, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", err
	}
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = strings.TrimSpace(string(modDir))
	cmd.Stderr = os.Stderr
	return out, cmd.Run()
}

func start(bin, cfg string) (*instance, error) {
	g := &instance{cmd: exec.Command(bin, "-config", cfg), stderr: &strings.Builder{}}
	pr, err := g.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	g.started = time.Now()
	if err := g.cmd.Start(); err != nil {
		return nil, err
	}
	found := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			var line struct{ Msg, Addr, Admin string }
			if !sent && json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				found <- [2]string{line.Addr, line.Admin}
				sent = true
			}
			g.stderrMu.Lock()
			if g.stderr.Len() < 1<<16 {
				g.stderr.WriteString(sc.Text() + "\n")
			}
			g.stderrMu.Unlock()
		}
	}()
	select {
	case a := <-found:
		g.url, g.admin = "http://"+a[0], "http://"+a[1]
		return g, nil
	case <-time.After(time.Minute):
		g.stop()
		return nil, fmt.Errorf("gatehouse did not start:\n%s", g.stderr.String())
	}
}

func (g *instance) waitReady(within time.Duration) (time.Duration, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	for time.Since(g.started) < within {
		if res, err := c.Get(g.admin + "/readyz"); err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return time.Since(g.started), nil
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, fmt.Errorf("not ready within %v", within)
}

func (g *instance) stop() {
	if g.cmd.ProcessState == nil && g.cmd.Process != nil {
		_ = g.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = g.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = g.cmd.Process.Kill()
			<-done
		}
	}
}

// heapInUse reads go_memstats_heap_inuse_bytes from the admin listener.
func heapInUse(admin string) string {
	res, err := http.Get(admin + "/metrics")
	if err != nil {
		return "?"
	}
	defer res.Body.Close()
	sc := bufio.NewScanner(res.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return fmt.Sprintf("%.1f MiB", f/(1<<20))
		}
	}
	return "?"
}

func procStatus(pid int, field string) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			return strings.Join(strings.Fields(l)[1:], " ")
		}
	}
	return "?"
}

// fill publishes n jti revocations with confirms, 512 in flight.
func fill(url, stream string, n int) error {
	conn, err := amqp.Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	if err := ch.Confirm(false); err != nil {
		return err
	}
	now := time.Now().UTC().Format(time.RFC3339)
	var pending []*amqp.DeferredConfirmation
	for i := range n {
		body := fmt.Sprintf(`{"specversion":"1.0","type":"gatehouse.revocation","source":"revokebench","id":"f%d","time":%q,"datacontenttype":"application/json","data":{"kind":"jti","issuer":%q,"value":"%08x-1234-4567-89ab-%012x","reason":"bench"}}`, i, now, issuer, i, i)
		dc, err := ch.PublishWithDeferredConfirm("", stream, false, false, amqp.Publishing{ContentType: revoke.ContentType, Body: []byte(body)})
		if err != nil {
			return err
		}
		pending = append(pending, dc)
		if len(pending) == 512 {
			for _, d := range pending {
				if !d.Wait() {
					return fmt.Errorf("nack")
				}
			}
			pending = pending[:0]
		}
	}
	for _, d := range pending {
		if !d.Wait() {
			return fmt.Errorf("nack")
		}
	}
	return nil
}

func deleteStream(url, stream string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return
	}
	defer conn.Close()
	if ch, err := conn.Channel(); err == nil {
		_, _ = ch.QueueDelete(stream, false, false, false)
	}
}
