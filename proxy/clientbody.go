package proxy

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// clientBody remembers that reading the client's request body failed, so
// that the upstream error handler can tell a body the client framed badly
// (broken chunked encoding, fewer bytes than Content-Length: SPEC.md 4)
// from an upstream that failed. The transport reads it on its own
// goroutine, hence the lock.
type clientBody struct {
	io.ReadCloser
	mu  sync.Mutex
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && clientFault(err) {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

// clientFault: a read error of the server's request body is the client's,
// except a body over limits.max_body_bytes (413, its own answer) and a read
// after the transport closed the body (the upstream side ended it).
func clientFault(err error) bool {
	var mbe *http.MaxBytesError
	return !errors.As(err, &mbe) && !errors.Is(err, http.ErrBodyReadAfterClose)
}

// watchClientBody wraps r's body, when it has one, in a clientBody.
func watchClientBody(r *http.Request) {
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &clientBody{ReadCloser: r.Body}
	}
}

// clientBodyError is the read error of r's body, or nil.
func clientBodyError(r *http.Request) error {
	b, ok := r.Body.(*clientBody)
	if !ok {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}
