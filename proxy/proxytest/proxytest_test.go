package proxytest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		return "", err
	}
	return bufio.NewReader(c).ReadString('\n')
}

// TestForwarderCut: a cut link refuses new connections (closes them at
// once) and a restored one forwards again.
func TestForwarderCut(t *testing.T) {
	f := NewForwarder(t, echoServer(t))
	if got, err := roundTrip(f.Addr()); err != nil || got != "ping\n" {
		t.Fatalf("before the cut: %q, %v", got, err)
	}
	f.SetCut(true)
	if got, err := roundTrip(f.Addr()); err == nil {
		t.Fatalf("during the cut: got %q, want an error", got)
	}
	f.SetCut(false)
	if got, err := roundTrip(f.Addr()); err != nil || got != "ping\n" {
		t.Fatalf("after the cut: %q, %v", got, err)
	}
	if n := f.Accepted(); n != 2 {
		t.Errorf("Accepted() = %d, want 2 (the cut one is not forwarded)", n)
	}
}

// TestUpstreamRecords: the upstream keeps each request and the raw bytes.
func TestUpstreamRecords(t *testing.T) {
	u := NewUpstream(t)
	mark := u.WireLen()
	res, err := http.Post(u.URL+"/a?b=1", "text/plain", strings.NewReader("body"))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	got := u.Last(t)
	if got.Method != "POST" || got.RequestURI != "/a?b=1" || got.Body != "body" {
		t.Errorf("Last() = %+v", got)
	}
	if w := u.WireSince(mark); !strings.HasPrefix(w, "POST /a?b=1 HTTP/1.1\r\n") {
		t.Errorf("wire starts %q", w)
	}
}
