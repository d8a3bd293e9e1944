package main

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func numCPU() int { return runtime.NumCPU() }

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func signalNotify(c chan os.Signal) { signal.Notify(c, syscall.SIGTERM, os.Interrupt) }

// redactURL hides a password in a broker URL for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// routes are 20 locations of every kind (routes.yaml, shared with proxy's
// BenchmarkServeHTTP).
//
//go:embed routes.yaml
var routes string

func (e *env) gatehouseConfig(c config, dir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `listen: "127.0.0.1:0"
upstream: %q
admin:
  listen: "127.0.0.1:0"
timeouts:
  shutdown: 5s
issuers:
  - issuer: %q
    audiences: [%q]
    jwks_url: %q
    algorithms: [RS256, ES256]
    required_claims: [sub]
token:
  cache_size: %d
headers:
  X-Auth-Subject: sub
  X-Auth-Roles: roles
  X-Auth-Email: email
`, e.upstream, issuer, audience, e.jwks.URL, e.o.pool)
	b.WriteString(routes)
	if c.assertion {
		fmt.Fprintf(&b, "upstream_assertion:\n  issuer: loadtest\n  key_file: %q\n  claims: [roles]\n", assertionKey(dir))
	}
	if c.egress {
		fmt.Fprintf(&b, `egress:
  listen: "127.0.0.1:0"
  routes:
    - host: orders
      upstream: %q
      token: propagate
`, e.upstream)
	}
	switch c.sink {
	case "rabbitmq", "rabbitmq-batch":
		fmt.Fprintf(&b, `audit:
  sink: rabbitmq
  events: [allow, deny]
  rabbitmq:
    url_env: GATEHOUSE_AMQP_URL
    exchange: %s
`, rabbitExchange)
		if c.sink == "rabbitmq-batch" {
			b.WriteString("    batch: {max_events: 100, max_delay: 50ms}\n")
		}
		if c.durable {
			fmt.Fprintf(&b, "  spool_dir: %q\n  durable: true\n", filepath.Join(dir, "spool"))
		}
	case "stdout":
		b.WriteString("audit:\n  sink: stdout\n  events: [allow, deny]\n")
	default:
		fmt.Fprintf(&b, `audit:
  sink: file
  events: [allow, deny]
  file: %q
`, filepath.Join(dir, "audit.jsonl"))
	}
	return b.String()
}

// proc is one proxy process.
type proc struct {
	cmd    *exec.Cmd
	addr   string // host:port of the proxy
	admin  string // gatehouse's admin host:port
	tail   *tailBuffer
	exited chan struct{}
}

// tailBuffer keeps the last 8 KiB a process wrote, for error messages.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 8192 {
		t.b = append(t.b[:0], t.b[len(t.b)-8192:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

// start runs cmd and waits for parse to find the listening line in the
// stream it reads (stdout for the baseline, stderr for gatehouse).
func start(cmd *exec.Cmd, fromStderr bool, parse func(line []byte) (addr, admin string, ok bool)) (*proc, error) {
	p := &proc{cmd: cmd, tail: &tailBuffer{}, exited: make(chan struct{})}
	pr, pw := io.Pipe()
	if fromStderr {
		cmd.Stderr = io.MultiWriter(p.tail, pw)
		cmd.Stdout = p.tail
	} else {
		cmd.Stdout = io.MultiWriter(p.tail, pw)
		cmd.Stderr = p.tail
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		_ = cmd.Wait()
		pw.Close()
		close(p.exited)
	}()
	type found struct{ addr, admin string }
	ch := make(chan found, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			if sent {
				continue
			}
			if a, ad, ok := parse(sc.Bytes()); ok {
				ch <- found{a, ad}
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case f := <-ch:
		p.addr, p.admin = f.addr, f.admin
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("%s exited before listening: %s", filepath.Base(cmd.Path), p.tail.String())
	case <-time.After(30 * time.Second):
		p.stop()
		return nil, fmt.Errorf("%s did not start within 30s: %s", filepath.Base(cmd.Path), p.tail.String())
	}
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop ends the process by its pid: SIGTERM, then SIGKILL after 10 s.
func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func (e *env) startBaseline() (*proc, error) {
	cmd := exec.Command(e.exe, "-mode", "baseline", "-upstream", e.upstream)
	return start(cmd, false, func(line []byte) (string, string, bool) {
		a, ok := strings.CutPrefix(string(line), "listening ")
		return a, "", ok
	})
}

func (e *env) startGatehouse(c config) (*proc, error) {
	dir, err := os.MkdirTemp(e.dir, "run")
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "gatehouse.yaml")
	if err := os.WriteFile(path, []byte(e.gatehouseConfig(c, dir)), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(e.gatehouse, "-config", path)
	cmd.Env = append(os.Environ(), "GATEHOUSE_AMQP_URL="+e.o.amqpURL)
	cmd.Env = append(cmd.Env, e.o.env...)
	return start(cmd, true, func(line []byte) (string, string, bool) {
		var l struct{ Msg, Addr, Admin string }
		if json.Unmarshal(line, &l) != nil || l.Msg != "listening" {
			return "", "", false
		}
		return l.Addr, l.Admin, true
	})
}

// measure starts one proxy for configuration c, warms it up, measures
// o.duration of load and stops it.
func (e *env) measure(c config, gate bool) (measurement, error) {
	var p *proc
	var err error
	if gate {
		p, err = e.startGatehouse(c)
	} else {
		p, err = e.startBaseline()
	}
	if err != nil {
		return measurement{}, err
	}
	defer func() {
		p.stop()
		if gate {
			// The audit file of a run is not needed after it.
			_ = os.RemoveAll(filepath.Dir(p.cmd.Args[2]))
		}
	}()

	expect := http.StatusOK
	if gate {
		expect = c.status
	}
	toks := e.tokens[c.name]
	sup := &supply{toks: toks, random: c.tokens == tokensPool, unique: gate && (c.tokens == tokensUnique || c.tokens == tokensBadSig)}
	base := "http://" + p.addr
	client := newClient(e.o.conns)
	defer client.CloseIdleConnections()

	// Warm-up: connections, and for the pool every token once, in order.
	if c.tokens == tokensPool {
		walk := &supply{toks: toks, unique: true}
		if _, err := runLoad(client, base, walk, e.o.conns, time.Hour, expect); err != nil {
			return measurement{}, err
		}
	}
	// The warm-up must not spend the tokens the measurement needs: with a
	// never-repeat supply it cycles over a tenth of them set apart (on a quiet
	// machine a warm-up could otherwise use them all and leave the measured
	// window with nothing to send).
	warm := sup
	if sup.unique {
		k := max(1, len(toks)/10)
		warm = &supply{toks: toks[:k]}
		sup = &supply{toks: toks[k:], unique: true}
	}
	if _, err := runLoad(client, base, warm, e.o.conns, e.o.warmup, expect); err != nil {
		return measurement{}, err
	}

	cpu0, err := readCPU(p.pid())
	if err != nil {
		return measurement{}, err
	}
	fetch0 := e.jwks.Fetches()
	hit0, miss0 := cacheCounts(gate, p.admin)
	r, err := runLoad(client, base, sup, e.o.conns, e.o.duration, expect)
	if err != nil {
		return measurement{}, err
	}
	cpu1, err := readCPU(p.pid())
	if err != nil {
		return measurement{}, err
	}
	hit1, miss1 := cacheCounts(gate, p.admin)
	m := r
	m.cpuPerReq = time.Duration(0)
	if m.requests > 0 {
		m.cpuPerReq = (cpu1 - cpu0) / time.Duration(m.requests)
	}
	m.hitRatio = -1
	if gate {
		m.fetches = e.jwks.Fetches() - fetch0
		if hit0 >= 0 && hit1 >= 0 && (hit1-hit0)+(miss1-miss0) > 0 {
			m.hitRatio = float64(hit1-hit0) / float64((hit1-hit0)+(miss1-miss0))
		}
	}
	if m.rssKiB, err = readHWM(p.pid()); err != nil {
		return measurement{}, err
	}
	if m.unexpected > 0 && e.o.verbose {
		fmt.Fprintf(e.stderr, "loadtest: %s %s: %d unexpected answers; process log tail:\n%s\n", c.name, proxyName(b2i(gate)), m.unexpected, p.tail.String())
	}
	return m, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// supply hands out tokens: in order, or at random, and for unique supplies
// never one twice (ok false when they ran out).
type supply struct {
	toks   []string
	next   atomic.Int64
	random bool
	unique bool
}

func (s *supply) get(rng *rand.Rand) (string, bool) {
	if s.random {
		return s.toks[rng.IntN(len(s.toks))], true
	}
	i := s.next.Add(1) - 1
	if s.unique && i >= int64(len(s.toks)) {
		return "", false
	}
	return s.toks[i%int64(len(s.toks))], true
}

func newClient(conns int) *http.Transport {
	return &http.Transport{
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

// runLoad keeps conns requests in flight for d (or until a unique supply
// runs out) and returns the count, rate and latency percentiles.
func runLoad(tr *http.Transport, base string, sup *supply, conns int, d time.Duration, expect int) (measurement, error) {
	urls := make([]*url.URL, len(requestPaths))
	for i, p := range requestPaths {
		u, err := url.Parse(base + p)
		if err != nil {
			return measurement{}, err
		}
		urls[i] = u
	}
	var unexpected, exhausted atomic.Int64
	lat := make([][]time.Duration, conns)
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), uint64(start.UnixNano())))
			own := make([]time.Duration, 0, 4096)
			for i := w; ; i++ {
				t0 := time.Now()
				if t0.After(deadline) {
					break
				}
				tok, ok := sup.get(rng)
				if !ok {
					exhausted.Store(1)
					break
				}
				req := &http.Request{
					Method:     http.MethodGet,
					URL:        urls[i%len(urls)],
					Host:       urls[0].Host,
					Header:     http.Header{"Authorization": {tok}},
					Proto:      "HTTP/1.1",
					ProtoMajor: 1,
					ProtoMinor: 1,
				}
				res, err := tr.RoundTrip(req)
				if err != nil {
					unexpected.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
				own = append(own, time.Since(t0))
				if res.StatusCode != expect {
					unexpected.Add(1)
				}
			}
			lat[w] = own
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	slices.Sort(all)
	m := measurement{requests: int64(len(all)), unexpected: unexpected.Load(), elapsed: elapsed, exhausted: exhausted.Load() == 1}
	if len(all) == 0 {
		if err, ok := firstErr.Load().(error); ok {
			return m, fmt.Errorf("no request succeeded: %w", err)
		}
		if m.exhausted {
			return m, nil
		}
		return m, errors.New("no request succeeded")
	}
	m.rps = float64(len(all)) / elapsed.Seconds()
	m.p50 = all[len(all)*50/100]
	m.p99 = all[min(len(all)-1, len(all)*99/100)]
	return m, nil
}

// clockTick is USER_HZ: /proc/PID/stat counts CPU time in 1/100 s on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// readCPU is the process's utime+stime.
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time: %w", err)
	}
	// The command name (field 2) may hold spaces: fields count from its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("read cpu time: malformed /proc stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, errors.New("read cpu time: short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errors.New("read cpu time: malformed /proc stat")
	}
	return time.Duration(ut+st) * clockTick, nil
}

// readHWM is the process's peak resident set (VmHWM) in KiB.
func readHWM(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read peak rss: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("read peak rss: no VmHWM")
}

// cacheCounts scrapes gatehouse_token_cache_requests_total; -1 when unknown.
func cacheCounts(gate bool, admin string) (hit, miss int64) {
	if !gate || admin == "" {
		return -1, -1
	}
	c := http.Client{Timeout: 5 * time.Second}
	res, err := c.Get("http://" + admin + "/metrics")
	if err != nil {
		return -1, -1
	}
	defer res.Body.Close()
	hit, miss = -1, -1
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "gatehouse_token_cache_requests_total{") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		switch {
		case strings.Contains(line, `result="hit"`):
			hit = int64(v)
		case strings.Contains(line, `result="miss"`):
			miss = int64(v)
		}
	}
	if hit >= 0 && miss < 0 {
		miss = 0
	}
	if miss >= 0 && hit < 0 {
		hit = 0
	}
	return hit, miss
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
	}
}

// assertionKey writes a new Ed25519 key for upstream_assertion into dir.
func assertionKey(dir string) string {
	_, k, err := ed25519.GenerateKey(crand.Reader)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	file := filepath.Join(dir, "assertion-key.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		panic(err)
	}
	return file
}
