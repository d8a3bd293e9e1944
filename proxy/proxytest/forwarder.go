package proxytest

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Forwarder is a TCP proxy (to a broker, an issuer, an upstream) that the
// test can cut: cutting closes every open connection and closes new ones at
// once. It stops when the test ends.
type Forwarder struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
	n      int // connections forwarded
}

// NewForwarder listens on 127.0.0.1 and forwards each connection to target
// (host:port).
func NewForwarder(t testing.TB, target string) *Forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Forwarder{ln: ln, target: target, conns: map[net.Conn]bool{}}
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.Close)
	return f
}

// Addr is the forwarder's host:port.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

// Accepted is the number of connections forwarded so far.
func (f *Forwarder) Accepted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		if f.cut {
			f.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.DialTimeout("tcp", f.target, 3*time.Second)
		if err != nil {
			f.mu.Unlock()
			c.Close()
			continue
		}
		f.conns[c], f.conns[up] = true, true
		f.n++
		f.mu.Unlock()
		f.wg.Add(2)
		pipe := func(dst, src net.Conn) {
			defer f.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// SetCut cuts (true) or restores (false) the link.
func (f *Forwarder) SetCut(cut bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut = cut
	if cut {
		for c := range f.conns {
			c.Close()
		}
		f.conns = map[net.Conn]bool{}
	}
}

// Close stops listening, cuts every connection and waits for the copies.
func (f *Forwarder) Close() {
	f.ln.Close()
	f.SetCut(true)
	f.wg.Wait()
}
