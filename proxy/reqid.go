package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"sync/atomic"
)

// Request ids are a random per-process prefix and a counter: unique without
// a random read per request.
var (
	reqIDPrefix  = newReqIDPrefix()
	reqIDCounter atomic.Uint64
)

func newReqIDPrefix() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:]) + "-"
}

func newRequestID() string {
	id, _ := newRequestIDHeader()
	return id
}

// newRequestIDHeader returns a new id and the header value holding it.
func newRequestIDHeader() (string, []string) {
	var b [40]byte // 17 bytes of prefix and at most 13 base-36 digits
	id := string(strconv.AppendUint(append(b[:0], reqIDPrefix...), reqIDCounter.Add(1), 36))
	return id, []string{id}
}

// validRequestID reports whether a client's X-Request-Id may be kept:
// [A-Za-z0-9._:-]{1,128} (SPEC.md 4).
func validRequestID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}
