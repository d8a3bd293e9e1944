package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readRequestIDs(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var ce cloudEvent
		if err := json.Unmarshal(sc.Bytes(), &ce); err != nil {
			t.Fatalf("%s: bad line %q: %v", path, sc.Text(), err)
		}
		ids = append(ids, ce.Data["request_id"].(string))
	}
	return ids
}

func TestFileSinkReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.jsonl")
	cfg := DefaultConfig()
	cfg.Sink, cfg.File = SinkFile, path
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	e, err := New(cfg, Options{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	e.Emit(Event{Decision: "allow", RequestID: "before"})
	published := m.events.WithLabelValues("file", "published")
	waitFor(t, 5*time.Second, "first event written", func() bool { return testutil.ToFloat64(published) == 1 })
	// logrotate: move the file away, then SIGHUP -> Reopen.
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := e.Reopen(); err != nil {
		t.Fatal(err)
	}
	e.Emit(Event{Decision: "deny", RequestID: "after"})
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := readRequestIDs(t, rotated); strings.Join(got, ",") != "before" {
		t.Errorf("rotated file holds %q, want [before]", got)
	}
	if got := readRequestIDs(t, path); strings.Join(got, ",") != "after" {
		t.Errorf("new file holds %q, want [after]", got)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm&^0o640 != 0 {
		t.Errorf("file mode %v, want at most 0640", perm)
	}
	if got := testutil.ToFloat64(published); got != 2 {
		t.Errorf("published = %v, want 2", got)
	}
}

func TestFileSinkOpenError(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sink, cfg.File = SinkFile, filepath.Join(t.TempDir(), "missing", "audit.jsonl")
	if _, err := New(cfg, Options{}); err == nil {
		t.Fatal("New with an unopenable file succeeded")
	}
}

// blockingWriter blocks every Write until released, like a stuck stdout
// pipe, and says when the first Write started.
type blockingWriter struct {
	entered chan struct{}
	once    sync.Once
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestEmitNeverBlocks: with the sink stuck, Emit of twice the queue returns
// and counts exactly the events it could not queue as dropped.
func TestEmitNeverBlocks(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.QueueSize = 1000
	m := NewMetrics(prometheus.NewRegistry())
	e, err := New(cfg, Options{Stdout: w, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	e.Emit(Event{Decision: "deny", RequestID: "first"})
	<-w.entered // the worker is now stuck in Write
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 2 * cfg.QueueSize {
			e.Emit(Event{Decision: "deny", RequestID: fmt.Sprint(i)})
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Emit blocked with a stuck sink")
	}
	dropped := testutil.ToFloat64(m.events.WithLabelValues("stdout", "dropped"))
	if dropped != float64(cfg.QueueSize) {
		t.Errorf("dropped = %v, want %d", dropped, cfg.QueueSize)
	}
	if ql := m.queueLength(); ql != float64(cfg.QueueSize) {
		t.Errorf("queue length gauge = %v, want %d", ql, cfg.QueueSize)
	}
	close(w.release)
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	published := testutil.ToFloat64(m.events.WithLabelValues("stdout", "published"))
	if published != float64(cfg.QueueSize+1) {
		t.Errorf("published = %v, want %d", published, cfg.QueueSize+1)
	}
	if lines := strings.Count(w.buf.String(), "\n"); float64(lines) != published {
		t.Errorf("%d lines written, %v counted published", lines, published)
	}
	if ql := m.queueLength(); ql != 0 {
		t.Errorf("queue length after Close = %v", ql)
	}
}

func TestEmitFilterAndClose(t *testing.T) {
	var out bytes.Buffer
	cfg := DefaultConfig()
	cfg.Events = []string{"deny"}
	m := NewMetrics(nil)
	e, err := New(cfg, Options{Stdout: &out, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	if e.Wants("allow") || !e.Wants("deny") || e.Wants("other") {
		t.Errorf("Wants(allow, deny, other) = %v %v %v, want false true false", e.Wants("allow"), e.Wants("deny"), e.Wants("other"))
	}
	e.Emit(Event{Decision: "allow"})
	e.Emit(Event{Decision: "deny", RequestID: "d"})
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(t.Context()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	e.Emit(Event{Decision: "deny"}) // after Close: dropped, no panic
	if n := strings.Count(out.String(), "\n"); n != 1 || !strings.Contains(out.String(), `"request_id":"d"`) {
		t.Errorf("output = %q, want the deny event only", out.String())
	}
	if got := testutil.ToFloat64(m.events.WithLabelValues("stdout", "dropped")); got != 1 {
		t.Errorf("dropped after Close = %v, want 1", got)
	}
}

func TestSinkNone(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Sink = SinkNone
	e, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e.Wants("allow") || e.Wants("deny") {
		t.Error("sink none wants events")
	}
	e.Emit(Event{Decision: "deny"})
	if err := e.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestNextIDUnique(t *testing.T) {
	e, err := New(DefaultConfig(), Options{Stdout: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close(t.Context())
	f, err := New(DefaultConfig(), Options{Stdout: &bytes.Buffer{}})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(t.Context())
	seen := map[string]bool{}
	for range 1000 {
		for _, id := range []string{e.nextID(), f.nextID()} {
			if len(id) != 32 || seen[id] {
				t.Fatalf("id %q repeated or not 32 chars", id)
			}
			seen[id] = true
		}
	}
}

// TestCloseStuckWriter: Close returns ctx's error when stdout is stuck.
func TestCloseStuckWriter(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	defer close(w.release)
	e, err := New(DefaultConfig(), Options{Stdout: w})
	if err != nil {
		t.Fatal(err)
	}
	e.Emit(Event{Decision: "deny"})
	<-w.entered
	e.Emit(Event{Decision: "deny"})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.Close(ctx); err != context.DeadlineExceeded {
		t.Errorf("Close = %v, want deadline exceeded", err)
	}
}

// TestDropReport: drops are logged as one line with the count since the
// last report (the worker calls report every 10 s), and nothing when none.
func TestDropReport(t *testing.T) {
	logs := &logRecorder{}
	e := &Emitter{log: slog.New(logs)}
	var r dropReporter
	r.report(e)
	e.drops.Add(5)
	r.report(e)
	r.report(e)
	e.drops.Add(2)
	r.report(e)
	want := "audit events dropped count=5 total=5\naudit events dropped count=2 total=7"
	if got := logs.all(); got != want {
		t.Errorf("logs =\n%s\nwant\n%s", got, want)
	}
}

// TestEmitCapsLongFields: an event with a 30 KiB path and host, queued
// behind a stalled sink, is written with both cut to maxField bytes at a
// UTF-8 boundary and marked; a normal event is written untouched.
func TestEmitCapsLongFields(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	e, err := New(DefaultConfig(), Options{Stdout: w})
	if err != nil {
		t.Fatal(err)
	}
	e.Emit(Event{Decision: "deny", RequestID: "first"})
	<-w.entered                                                              // stalled: what follows waits in the queue
	longPath := "/" + strings.Repeat("a", 2030) + strings.Repeat("é", 15000) // the cut falls inside an é
	longHost := strings.Repeat("h", 30<<10)
	normal := fullEvent()
	e.Emit(Event{Decision: "deny", RequestID: "long", Path: longPath, Host: longHost})
	e.Emit(normal)
	close(w.release)
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	var got []map[string]any
	for line := range strings.Lines(w.buf.String()) {
		var ce cloudEvent
		if err := json.Unmarshal([]byte(line), &ce); err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		got = append(got, ce.Data)
	}
	if len(got) != 3 {
		t.Fatalf("%d events written, want 3", len(got))
	}
	for _, f := range []struct{ name, orig string }{{"path", longPath}, {"host", longHost}} {
		v, _ := got[1][f.name].(string)
		kept, marked := strings.CutSuffix(v, truncMarker)
		if len(v) > maxField || !marked || !strings.HasPrefix(f.orig, kept) || len(kept) < maxField-len(truncMarker)-utf8.UTFMax {
			t.Errorf("%s = %.40q... (%d bytes), want at most %d bytes: a prefix of the original and %q",
				f.name, v, len(v), maxField, truncMarker)
		}
		if strings.Contains(v, "\ufffd") {
			t.Errorf("%s cut inside a UTF-8 sequence", f.name)
		}
	}
	if got[2]["path"] != normal.Path || got[2]["host"] != normal.Host {
		t.Errorf("normal event: path %q host %q, want %q %q", got[2]["path"], got[2]["host"], normal.Path, normal.Host)
	}
}

// TestCapFieldsCopies: a cut field is a copy, so the queue does not pin the
// request's memory (a 2 KiB prefix would keep the whole 30 KiB header
// alive); a field within the bound is the caller's string, not copied.
func TestCapFieldsCopies(t *testing.T) {
	long := strings.Repeat("x", 30<<10)
	short := strings.Repeat("y", maxField)
	ev := Event{Path: long, Host: short, Method: long, RequestID: long, ClientIP: long, Subject: long, Issuer: long, JTI: long}
	capFields(&ev)
	start := uintptr(unsafe.Pointer(unsafe.StringData(long)))
	for name, v := range map[string]string{"path": ev.Path, "method": ev.Method, "request_id": ev.RequestID,
		"client_ip": ev.ClientIP, "subject": ev.Subject, "issuer": ev.Issuer, "jti": ev.JTI} {
		if len(v) != maxField || !strings.HasSuffix(v, truncMarker) {
			t.Errorf("%s: %d bytes, want %d ending in %q", name, len(v), maxField, truncMarker)
		}
		if p := uintptr(unsafe.Pointer(unsafe.StringData(v))); p >= start && p < start+uintptr(len(long)) {
			t.Errorf("%s points into the original string", name)
		}
	}
	if unsafe.StringData(ev.Host) != unsafe.StringData(short) {
		t.Error("a field within the bound was copied")
	}
}

// TestQueueMemoryBounded: a full queue of events carrying 16 KiB paths and
// hosts (what a client can send under the default header limit) holds a
// few KiB per event, not the request's strings.
func TestQueueMemoryBounded(t *testing.T) {
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	cfg := DefaultConfig()
	cfg.QueueSize = 4000
	e, err := New(cfg, Options{Stdout: w})
	if err != nil {
		t.Fatal(err)
	}
	e.Emit(Event{Decision: "deny"})
	<-w.entered
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc
	for i := range cfg.QueueSize {
		// A fresh path and Host per request, as the proxy passes them.
		e.Emit(Event{Decision: "deny", Reason: "missing_token",
			Path: "/" + strings.Repeat("a", 16<<10) + strconv.Itoa(i), Host: strings.Repeat("h", 16<<10) + strconv.Itoa(i)})
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	grew := int64(ms.HeapAlloc) - int64(before)
	// Uncapped: 4000 * 32 KiB = 125 MiB; capped: 4000 * 4 KiB = 16 MiB.
	if grew > 48<<20 {
		t.Errorf("a queue of %d events holds %d MiB, want under 48", len(e.q), grew>>20)
	}
	close(w.release)
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}
