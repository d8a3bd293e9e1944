package proxy_test

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/audit/audittest"
)

// pauser is a TCP forwarder to the broker that the test can pause: paused,
// it keeps the connections open and forwards nothing, as a broker that
// stopped answering (a blackhole, a GC pause, a full disk). resume drops
// what a paused connection held (the broker never sees it) by closing the
// connections that existed during the pause; new ones are forwarded.
type pauser struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	paused bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newPauser(t *testing.T, target string) *pauser {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pauser{ln: ln, target: target, conns: map[net.Conn]bool{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.resume() // closes every connection and wakes the copies
		p.wg.Wait()
	})
	return p
}

func (p *pauser) addr() string { return p.ln.Addr().String() }

func (p *pauser) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 3*time.Second)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = true, true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(up, c)
		go p.pipe(c, up)
	}
}

func (p *pauser) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for p.paused {
				p.cond.Wait()
			}
			live := p.conns[dst]
			p.mu.Unlock()
			if !live {
				return // dropped by resume: what was read goes nowhere
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *pauser) pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

func (p *pauser) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused || len(p.conns) > 0 {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
	p.paused = false
	p.cond.Broadcast()
}

// TestDurableKill9: the real binary with sink rabbitmq, durable: true and a
// spool_dir, behind a forwarder the test pauses (the broker stops
// answering: nothing is confirmed), takes requests, is killed with SIGKILL,
// and is started again on the same spool_dir with the broker back. The
// events of the answered requests are counted at a queue bound to the
// test's own exchange (distinct request ids).
//
//   - settled: N requests answered, then the kill once /metrics says every
//     event was spooled: none may be lost (and without durable mode the
//     events wait in memory: the spooled count never gets there).
//   - under load: the kill lands while requests flow. Every event /metrics
//     counted spooled before the kill must arrive; the events lost (answered
//     requests without an event) are logged as a FIGURE for BENCHMARKS.md.
//
// GATEHOUSE_TEST_DURABLE_BASELINE=1 adds the under-load row with durable
// mode off, the figure it is compared with.
func TestDurableKill9(t *testing.T) {
	brokerURL := audittest.BrokerURL(t)
	type row struct {
		name      string
		durable   bool
		underLoad bool
	}
	rows := []row{{"settled", true, false}, {"under load", true, true}}
	if os.Getenv("GATEHOUSE_TEST_DURABLE_BASELINE") == "1" {
		rows = append(rows, row{"under load, durable off", false, true})
	}
	for _, tt := range rows {
		t.Run(tt.name, func(t *testing.T) { durableKill9(t, brokerURL, tt.durable, tt.underLoad) })
	}
}

func durableKill9(t *testing.T, brokerURL string, durable, underLoad bool) {
	const n = 5000
	bu, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	aq := newAuditQueue(t, brokerURL)
	fwd := newPauser(t, bu.Host)
	gu := *bu
	gu.Host = fwd.addr()
	w := newFaultWorld(t)
	spool := t.TempDir()
	cfg := w.config(faultOpts{audit: fmt.Sprintf(
		"audit:\n  sink: rabbitmq\n  spool_dir: %q\n  durable: %v\n  fsync_interval: 10ms\n  rabbitmq:\n    url_env: GATEHOUSE_AMQP_URL\n    exchange: %q\n",
		spool, durable, aq.exchange)})
	env := "GATEHOUSE_AMQP_URL=" + gu.String()
	g := startProcess(t, cfg, env)
	tl, tok := newTally("dur"), w.token(w.key)
	first := tl.nextID()
	a := send(durableClient(), "GET", g.URL+"/api/x", first, tok)
	if a.status != 200 {
		t.Fatalf("first request: %d %v", a.status, a.err)
	}
	tl.record(first, a, true, "")
	if !waitFor(30*time.Second, func() bool { return aq.count(first) > 0 }) {
		t.Fatalf("the first event did not arrive:\n%s", g.Stderr.String())
	}

	fwd.pause()
	spooledMetric := `gatehouse_audit_events_total{result="spooled",sink="rabbitmq"}`
	var sent atomic.Int64
	one := func(c *http.Client) {
		if sent.Add(1)%2 == 0 {
			tl.expect(c, g.URL+"/api/x", tok, 200, "")
		} else {
			tl.expect(c, g.URL+"/api/x", "", 401, "missing_token")
		}
	}
	var spooledBefore float64
	stopLoad := func() {}
	if !underLoad {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := durableClient()
				for sent.Load() < n {
					one(c)
				}
			}()
		}
		wg.Wait()
		answered, _ := tl.counts()
		// Every answered request's event is in the spool file: the kill
		// may come (the fsync matters for a power cut, not for a kill).
		if !waitFor(30*time.Second, func() bool { return metric(t, g, spooledMetric) >= float64(answered) }) {
			t.Fatalf("spooled = %v of %d answered requests: the events wait in memory", metric(t, g, spooledMetric), answered)
		}
		spooledBefore = metric(t, g, spooledMetric)
	} else {
		stopLoad = load(g, 8, func(c *http.Client) { one(c) })
		waitFor(60*time.Second, func() bool { return sent.Load() >= n/2 })
		spooledBefore = metric(t, g, spooledMetric)
	}
	if err := g.Process().Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-g.Exited()
	stopLoad()
	answered, _ := tl.counts()
	if underLoad {
		// Requests cut by the kill have no answer; only answered ones count.
		tl.mu.Lock()
		tl.bad = nil
		tl.mu.Unlock()
	}
	tl.failIfBad(t)

	fwd.resume()
	restarted := time.Now()
	g2 := startProcess(t, cfg, env)
	var want []string
	tl.mu.Lock()
	for id, a := range tl.got {
		if a.status != 0 {
			want = append(want, id)
		}
	}
	tl.mu.Unlock()
	lost := func() int {
		m := 0
		for _, id := range want {
			if aq.count(id) == 0 {
				m++
			}
		}
		return m
	}
	arrived := waitFor(120*time.Second, func() bool { return lost() == 0 })
	replay := time.Since(restarted).Round(100 * time.Millisecond)
	if !arrived {
		// Wait for the replay to finish before counting what is missing.
		waitFor(60*time.Second, func() bool { return spoolEmpty(spool) })
	}
	missing := lost()
	if !underLoad && missing > 0 {
		t.Errorf("%d of %d answered requests' events lost to kill -9 after every one was spooled", missing, len(want))
	}
	// Every event counted spooled must arrive, the answered requests' and
	// those of requests the kill cut after their event was emitted.
	if durable && !waitFor(30*time.Second, func() bool { return float64(aq.distinct()) >= spooledBefore }) {
		t.Errorf("%d distinct events arrived, but %v were counted spooled before the kill", aq.distinct(), spooledBefore)
	}
	dups := 0
	for _, id := range want {
		dups += max(aq.count(id)-1, 0)
	}
	t.Logf("FIGURE durable=%v kill -9 (%s): %d requests answered before the kill, %v events counted spooled at the last scrape, %d lost, %d duplicates (restart to last arrival or give-up: %v)",
		durable, map[bool]string{true: "under load", false: "settled"}[underLoad], answered, spooledBefore, missing, dups, replay)
	g2.Stop()
	if code := g2.ExitCode(); code != 0 {
		t.Errorf("exit code %d", code)
	}
}

// durableClient keeps connections alive: thousands of requests in a few
// seconds.
func durableClient() *http.Client {
	return &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
}

// spoolEmpty reports whether dir holds no spool segment.
func spoolEmpty(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if len(e.Name()) > 6 && e.Name()[len(e.Name())-6:] == ".spool" {
			return false
		}
	}
	return true
}
