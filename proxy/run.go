package proxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

// Options are what main (or an embedding program such as the quickstart)
// passes to Run.
type Options struct {
	ConfigPath string
	Version    string
	// Logger receives gatehouse's structured logs; nil: JSON on Stderr at
	// the config's log.level (which a reload may change).
	Logger *slog.Logger
	// Stderr is where those JSON logs go when Logger is nil; nil: os.Stderr.
	Stderr io.Writer
	// Stdout is where the `stdout` audit sink writes; nil: os.Stdout.
	Stdout io.Writer
	// Listening, if set, is called once both listeners are bound.
	Listening func(main, admin net.Addr)
	// WatchInterval is how often watch_config looks at the file; 0: 1s.
	WatchInterval time.Duration
}

// Run loads the config, serves until ctx ends, then stops gracefully within
// timeouts.shutdown: stop accepting, finish in-flight requests, flush the
// audit queue. SIGHUP (and, with watch_config, a change of the file)
// reloads. It returns nil after a clean stop.
func Run(ctx context.Context, opts Options) error {
	// Digest before load: a change between the two makes the watcher
	// reload once more, never miss the change.
	loaded := fileDigest(opts.ConfigPath)
	cfg, err := LoadConfig(opts.ConfigPath)
	if err != nil {
		return err
	}
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	log := opts.Logger
	if log == nil {
		stderr := opts.Stderr
		if stderr == nil {
			stderr = os.Stderr
		}
		log = slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	}
	stdout := opts.Stdout
	if stdout == nil {
		stdout = os.Stdout
	}
	host, _ := os.Hostname()
	s := &server{
		loaded: loaded,
		opts:   opts,
		log:    log,
		level:  level,
		deps: deps{
			metrics: NewMetrics(opts.Version),
			log:     log,
			now:     time.Now,
			source:  "gatehouse/" + host,
			stdout:  stdout,
		},
	}
	s.parts = newParts(s.logFlush)
	if cfg.Egress != nil {
		s.deps.inbound = newInboundTable(unixNanos(s.deps.now))
	}
	s.logWarnings(cfg, "start")
	return s.run(ctx, cfg)
}

// logWarnings logs what `-t` prints as warnings (paths that a differently
// cased or slashed request could use to reach a weaker rule): an operator
// who never runs -t still sees them.
func (s *server) logWarnings(cfg *Config, trigger string) {
	for _, w := range cfg.Warnings {
		s.log.Warn("config warning", "trigger", trigger, "warning", w)
	}
}

type server struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	deps    deps
	parts   *parts // what handlers share across reloads
	current atomic.Pointer[Handler]
	cert    atomic.Pointer[tls.Certificate]
	mu      sync.Mutex // serialises reloads
	// loaded is the SHA-256 of the config file as read for the running
	// config (taken just before it was read), the watcher's starting
	// point: a watcher that read the file itself when its goroutine first
	// ran missed a change made between the load and then. Written and read
	// by the Run loop's goroutine only.
	loaded []byte
	// retiring counts the retires of replaced handlers still running;
	// shutdown waits for them (bounded).
	retiring sync.WaitGroup
}

func (s *server) logFlush(msg string, err error) { s.log.Warn(msg, "error", err.Error()) }

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.current.Load().ServeHTTP(w, r)
}

// run serves cfg until ctx ends or the listener fails, in named steps:
// bind, trap SIGHUP, start admin, build the first handler, serve, then the
// loop of reloads and the stop.
func (s *server) run(ctx context.Context, cfg *Config) error {
	ln, adminLn, err := listen(cfg)
	if err != nil {
		return err
	}
	defer ln.Close()
	if adminLn != nil {
		defer adminLn.Close()
	}
	var egressLn net.Listener
	if cfg.Egress != nil {
		if egressLn, err = net.Listen("tcp", cfg.Egress.Listen); err != nil {
			return fmt.Errorf("listen egress %s: %w", cfg.Egress.Listen, err)
		}
		defer egressLn.Close()
	}

	// SIGHUP is caught from before the "listening" line on: its default
	// action would end the process, and a supervisor may send it as soon as
	// it sees that line.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// Hijacked (WebSocket) and streaming requests are ended through this
	// context when the graceful stop runs out of time.
	baseCtx, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()

	// The admin listener answers /healthz and (503) /readyz while the first
	// key fetches run.
	if adminLn != nil {
		admin := s.adminServer(cfg)
		go func() { _ = admin.Serve(adminLn) }()
		defer admin.Close()
	}

	first, err := build(ctx, cfg, s.deps, s.parts)
	if err != nil {
		return err
	}
	s.current.Store(first)
	if cfg.TLS != nil {
		s.cert.Store(&cfg.TLS.cert)
	}

	srv, serveErr := s.serve(ln, cfg, baseCtx)
	var adminAddr, egressAddr net.Addr
	if adminLn != nil {
		adminAddr = adminLn.Addr()
	}
	var egressSrv *http.Server
	if egressLn != nil {
		egressSrv = s.serveEgress(egressLn, cfg, baseCtx)
		egressAddr = egressLn.Addr()
	}
	s.log.Info("listening", "addr", ln.Addr().String(), "admin", addrString(adminAddr), "egress", addrString(egressAddr), "tls", cfg.TLS != nil)
	if s.opts.Listening != nil {
		s.opts.Listening(ln.Addr(), adminAddr)
	}

	w := watcher{s: s, ctx: ctx, changed: make(chan struct{}, 1)}
	defer w.set(false)
	w.set(cfg.WatchConfig)

	for {
		select {
		case <-ctx.Done():
			return s.shutdown(srv, egressSrv, cancelBase)
		case err := <-serveErr:
			if errors.Is(err, http.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			s.reload(ctx, "signal")
			// SPEC.md 15: SIGHUP also refetches every JWKS (rate limited);
			// the fetches run on the issuers' loops, this loop does not wait.
			go s.current.Load().verifier.Refetch(ctx)
			if err := s.current.Load().emitter.Reopen(); err != nil {
				s.log.Error("audit reopen failed", "error", err.Error())
			}
			w.set(s.current.Load().cfg.WatchConfig)
		case <-w.changed:
			s.reload(ctx, "watch")
			w.set(s.current.Load().cfg.WatchConfig)
		}
	}
}

// listen binds the main listener and, unless admin.listen is "", the admin one.
func listen(cfg *Config) (ln, adminLn net.Listener, err error) {
	if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	if cfg.AdminListen != "" {
		if adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			ln.Close()
			return nil, nil, fmt.Errorf("listen admin %s: %w", cfg.AdminListen, err)
		}
	}
	return ln, adminLn, nil
}

func (s *server) adminServer(cfg *Config) *http.Server {
	return &http.Server{
		Handler:           adminHandler(s.deps.metrics, &s.current),
		ReadHeaderTimeout: cfg.Timeouts.ReadHeader,
		IdleTimeout:       cfg.Timeouts.Idle,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// serve starts the main server on ln (TLS when configured); its end is
// sent on the returned channel.
func (s *server) serve(ln net.Listener, cfg *Config, baseCtx context.Context) (*http.Server, <-chan error) {
	maxHeader := int(cfg.Limits.MaxHeaderBytes) - 4096 // net/http allows 4096 bytes over MaxHeaderBytes
	if maxHeader < 1024 {
		maxHeader = 1024
	}
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: cfg.Timeouts.ReadHeader,
		IdleTimeout:       cfg.Timeouts.Idle,
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		Protocols:         serverProtocols(cfg),
	}
	serveErr := make(chan error, 1)
	if cfg.TLS != nil {
		srv.TLSConfig = &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return s.cert.Load(), nil
			},
		}
		go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { serveErr <- srv.Serve(ln) }()
	}
	return srv, serveErr
}

// watcher follows watch_config across reloads: a reload that turns it on
// starts polling, one that turns it off stops it.
type watcher struct {
	s       *server
	ctx     context.Context
	changed chan struct{}
	stop    context.CancelFunc // nil while not watching
}

func (w *watcher) set(on bool) {
	if on == (w.stop != nil) {
		return
	}
	if !on {
		w.stop()
		w.stop = nil
		return
	}
	var watchCtx context.Context
	watchCtx, w.stop = context.WithCancel(w.ctx)
	go w.s.watch(watchCtx, w.changed, w.s.loaded)
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func (s *server) shutdown(srv, egressSrv *http.Server, cancelBase context.CancelFunc) error {
	h := s.current.Load()
	timeout := h.cfg.Timeouts.Shutdown
	s.log.Info("shutting down", "timeout", timeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := srv.Shutdown(ctx)
	// The app's outbound calls belong to its in-flight requests: the
	// egress listener keeps accepting until the main one has drained, then
	// drains itself within what is left of the budget.
	if egressSrv != nil {
		if eerr := egressSrv.Shutdown(ctx); eerr != nil {
			_ = egressSrv.Close()
		}
	}
	cancelBase()
	if err != nil {
		s.log.Warn("in-flight requests cut at shutdown timeout", "error", err.Error())
		_ = srv.Close()
	}
	// The audit queue gets what is left of the shutdown budget, at least 1s.
	flushCtx, cancelFlush := context.WithTimeout(context.Background(), max(time.Until(deadlineOf(ctx)), time.Second))
	defer cancelFlush()
	// Handlers replaced by reloads may still be draining: their retires
	// close what only they hold, and may hold the last use of an emitter.
	retired := make(chan struct{})
	go func() { s.retiring.Wait(); close(retired) }()
	select {
	case <-retired:
	case <-flushCtx.Done():
		s.log.Warn("replaced configs still draining at shutdown")
	}
	h.retire(flushCtx)
	s.log.Info("stopped")
	return nil
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// reload loads the config again and swaps in a whole new pipeline. A config
// that fails, or that changes what only a restart can change, keeps the
// running one; every error is logged.
func (s *server) reload(ctx context.Context, trigger string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.current.Load()
	loaded := fileDigest(s.opts.ConfigPath)
	cfg, err := LoadConfig(s.opts.ConfigPath)
	if err == nil {
		err = restartOnly(old.cfg, cfg)
	}
	if err != nil {
		s.deps.metrics.reloads.WithLabelValues("error").Inc()
		for _, e := range yamlpos.Errors(err) {
			s.log.Error("reload failed, keeping the running config", "trigger", trigger, "error", e.Error())
		}
		return
	}
	next, err := build(ctx, cfg, s.deps, s.parts)
	if err != nil {
		s.deps.metrics.reloads.WithLabelValues("error").Inc()
		s.log.Error("reload failed, keeping the running config", "trigger", trigger, "error", err.Error())
		return
	}
	if cfg.TLS != nil {
		s.cert.Store(&cfg.TLS.cert)
	}
	s.current.Store(next)
	s.loaded = loaded
	s.level.Set(cfg.LogLevel)
	s.deps.metrics.reloads.WithLabelValues("success").Inc()
	s.log.Info("config reloaded", "trigger", trigger)
	s.logWarnings(cfg, trigger)
	s.retiring.Add(1)
	go func() {
		defer s.retiring.Done()
		rctx, cancel := context.WithTimeout(context.Background(), cfg.Timeouts.Shutdown)
		defer cancel()
		old.retire(rctx)
	}()
}

// restartOnly refuses a reload that changes what is bound at start: the
// listeners, and the settings net/http reads from its Server on every
// connection (changing those on a serving Server would be a data race, and
// ignoring them would report a reload that did not happen).
func restartOnly(old, cfg *Config) error {
	var errs yamlpos.List
	for _, c := range []struct {
		key      string
		was, now any
	}{
		{"timeouts.read_header", old.Timeouts.ReadHeader, cfg.Timeouts.ReadHeader},
		{"timeouts.idle", old.Timeouts.Idle, cfg.Timeouts.Idle},
		{"limits.max_header_bytes", old.Limits.MaxHeaderBytes, cfg.Limits.MaxHeaderBytes},
	} {
		if c.was != c.now {
			errs = append(errs, yamlpos.Errorf(yamlpos.Pos{File: cfg.File}, "%s changed from %v to %v: a restart is needed", c.key, c.was, c.now))
		}
	}
	if old.Listen != cfg.Listen {
		errs = append(errs, yamlpos.Errorf(yamlpos.Pos{File: cfg.File}, "listen changed from %q to %q: a restart is needed", old.Listen, cfg.Listen))
	}
	if oldE, newE := egressListen(old), egressListen(cfg); oldE != newE {
		errs = append(errs, yamlpos.Errorf(yamlpos.Pos{File: cfg.File}, "egress.listen changed from %q to %q: a restart is needed", oldE, newE))
	}
	if old.AdminListen != cfg.AdminListen {
		errs = append(errs, yamlpos.Errorf(yamlpos.Pos{File: cfg.File}, "admin.listen changed from %q to %q: a restart is needed", old.AdminListen, cfg.AdminListen))
	}
	if !slices.Equal(old.ListenProtocols, cfg.ListenProtocols) {
		errs = append(errs, yamlpos.Errorf(yamlpos.Pos{File: cfg.File}, "listen_protocols changed from %v to %v: a restart is needed", old.ListenProtocols, cfg.ListenProtocols))
	}
	if (old.TLS == nil) != (cfg.TLS == nil) {
		errs = append(errs, yamlpos.Errorf(yamlpos.Pos{File: cfg.File}, "tls turned on or off: a restart is needed"))
	}
	if len(errs) > 0 {
		return errs
	}
	return nil
}

// watch polls the config file's content. Polling the path (not an inotify
// watch on the file) follows Kubernetes ConfigMap updates, where the mounted
// file is a symlink whose target directory is swapped.
func (s *server) watch(ctx context.Context, changed chan<- struct{}, last []byte) {
	interval := s.opts.WatchInterval
	if interval <= 0 {
		interval = time.Second
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d := fileDigest(s.opts.ConfigPath)
			if d == nil || bytes.Equal(d, last) {
				continue
			}
			last = d
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	}
}

func fileDigest(path string) []byte {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	sum := sha256.Sum256(b)
	return sum[:]
}

// egressListen is egress.listen, "" when egress is off.
func egressListen(c *Config) string {
	if c.Egress == nil {
		return ""
	}
	return c.Egress.Listen
}

// serveEgress starts the egress listener (SPEC.md 11) on ln. HTTP/1.1
// only: what HTTP_PROXY clients speak. Each call is answered by the
// current config snapshot, so a reload changes routes at once.
func (s *server) serveEgress(ln net.Listener, cfg *Config, baseCtx context.Context) *http.Server {
	maxHeader := max(int(cfg.Limits.MaxHeaderBytes)-4096, 1024)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.current.Load().serveEgress(w, r)
		}),
		ReadHeaderTimeout: cfg.Timeouts.ReadHeader,
		IdleTimeout:       cfg.Timeouts.Idle,
		MaxHeaderBytes:    maxHeader,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
	}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("egress listener failed", "error", err.Error())
		}
	}()
	return srv
}
