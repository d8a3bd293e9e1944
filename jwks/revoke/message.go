package revoke

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"
)

// Message shapes (SPEC.md 12).
const (
	EventType   = "gatehouse.revocation"
	ContentType = "application/cloudevents+json"
	// syncType marks the end of the backlog for the instance that wrote it:
	// the stream tells an AMQP consumer nothing about its tail, so an
	// instance appends one marker at start and is caught up when it reads
	// its own marker back. Other instances skip markers.
	syncType = "gatehouse.revocation.sync"

	// MaxMessageBytes bounds a message: a revocation is a few hundred bytes.
	MaxMessageBytes = 16 << 10
	maxField        = 1024
)

// Revocation is what `gatehouse revoke` asks for.
type Revocation struct {
	Kind   Kind
	Issuer string
	Value  string
	Before time.Time // KindSub; zero: the message's time
	Until  time.Time // zero: time + max_age
	Reason string
}

type envelope struct {
	SpecVersion     string          `json:"specversion"`
	Type            string          `json:"type"`
	Source          string          `json:"source"`
	ID              string          `json:"id"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype,omitempty"`
	Data            json.RawMessage `json:"data,omitempty"`
}

type payload struct {
	Kind   string `json:"kind"`
	Issuer string `json:"issuer,omitempty"`
	Value  string `json:"value"`
	Before string `json:"before,omitempty"`
	Until  string `json:"until,omitempty"`
	Reason string `json:"reason"`
}

var errSync = errors.New("sync marker")

// parse reads one message strictly: bounded size, CloudEvents 1.0 with the
// revocation type, a data object with only the known fields, a known kind,
// bounded UTF-8 strings, RFC 3339 times. maxAge gives the default until.
// It returns errSync (with the marker's id) for a sync marker.
func parse(body []byte, maxAge time.Duration) (Entry, string, error) {
	if len(body) > MaxMessageBytes {
		return Entry{}, "", fmt.Errorf("message of %d bytes (at most %d)", len(body), MaxMessageBytes)
	}
	if !utf8.Valid(body) {
		// encoding/json would quietly turn bad bytes into U+FFFD.
		return Entry{}, "", errors.New("not UTF-8")
	}
	var ev envelope
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&ev); err != nil {
		return Entry{}, "", errors.New("not a JSON object")
	}
	if dec.More() {
		return Entry{}, "", errors.New("trailing data after the event")
	}
	if ev.SpecVersion != "1.0" {
		return Entry{}, "", errors.New("specversion is not 1.0")
	}
	if ev.ID == "" || ev.Source == "" || len(ev.ID) > maxField || len(ev.Source) > maxField {
		return Entry{}, "", errors.New("id and source are required")
	}
	if ev.Type == syncType {
		return Entry{}, ev.ID, errSync
	}
	if ev.Type != EventType {
		return Entry{}, "", errors.New("unknown event type")
	}
	at, err := time.Parse(time.RFC3339Nano, ev.Time)
	if err != nil {
		return Entry{}, "", errors.New("time is not RFC 3339")
	}
	if ev.DataContentType != "" && ev.DataContentType != "application/json" {
		return Entry{}, "", errors.New("datacontenttype is not application/json")
	}
	var p payload
	dd := json.NewDecoder(bytes.NewReader(ev.Data))
	dd.DisallowUnknownFields()
	if len(ev.Data) == 0 || ev.Data[0] != '{' || dd.Decode(&p) != nil || dd.More() {
		return Entry{}, "", errors.New("data is not a revocation object")
	}
	kind, ok := parseKind(p.Kind)
	if !ok {
		return Entry{}, "", errors.New("unknown kind")
	}
	for _, f := range []string{p.Issuer, p.Value, p.Reason} {
		if len(f) > maxField || !utf8.ValidString(f) {
			return Entry{}, "", errors.New("a field is too long or not UTF-8")
		}
	}
	if p.Value == "" {
		return Entry{}, "", errors.New("value is empty")
	}
	e := Entry{Kind: kind, Issuer: p.Issuer, Value: p.Value, Until: at.Add(maxAge)}
	if p.Before != "" {
		if kind != KindSub {
			return Entry{}, "", errors.New("before is for kind sub only")
		}
		b, err := time.Parse(time.RFC3339Nano, p.Before)
		if err != nil {
			return Entry{}, "", errors.New("before is not RFC 3339")
		}
		e.Before = b.Unix()
	} else if kind == KindSub {
		e.Before = at.Unix()
	}
	if p.Until != "" {
		u, err := time.Parse(time.RFC3339Nano, p.Until)
		if err != nil {
			return Entry{}, "", errors.New("until is not RFC 3339")
		}
		e.Until = u
	}
	return e, "", nil
}

// encode builds the CloudEvents message for r at now.
func encode(r Revocation, source string, now time.Time) ([]byte, string, error) {
	p := payload{Kind: r.Kind.String(), Issuer: r.Issuer, Value: r.Value, Reason: r.Reason}
	if !r.Before.IsZero() {
		p.Before = r.Before.UTC().Format(time.RFC3339Nano)
	}
	if !r.Until.IsZero() {
		p.Until = r.Until.UTC().Format(time.RFC3339Nano)
	}
	data, err := json.Marshal(p)
	if err != nil {
		return nil, "", err
	}
	id := newID()
	b, err := json.Marshal(envelope{SpecVersion: "1.0", Type: EventType, Source: source, ID: id,
		Time: now.UTC().Format(time.RFC3339Nano), DataContentType: "application/json", Data: data})
	if err != nil {
		return nil, "", err
	}
	if len(b) > MaxMessageBytes {
		return nil, "", fmt.Errorf("revocation of %d bytes is too large (at most %d)", len(b), MaxMessageBytes)
	}
	return b, id, nil
}

func syncMarker(source, id string, now time.Time) []byte {
	b, _ := json.Marshal(envelope{SpecVersion: "1.0", Type: syncType, Source: source, ID: id,
		Time: now.UTC().Format(time.RFC3339Nano)})
	return b
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
