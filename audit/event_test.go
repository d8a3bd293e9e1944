package audit

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

var testTime = time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.FixedZone("CET", 3600))

func fullEvent() Event {
	return Event{
		Time: testTime, RequestID: "req-1", Decision: "deny", Reason: "token_expired", Status: 401,
		Route: "/api/orders/", Method: "GET", Path: "/api/orders/42", Host: "shop.example", ClientIP: "10.0.0.7",
		Subject: "123", Issuer: "https://auth.example.com", JTI: "j-1", Roles: []string{"user", "admin"},
		Duration: 210 * time.Microsecond,
	}
}

// cloudEvent is SPEC.md 8's document, decoded strictly.
type cloudEvent struct {
	SpecVersion     string         `json:"specversion"`
	Type            string         `json:"type"`
	Source          string         `json:"source"`
	ID              string         `json:"id"`
	Time            string         `json:"time"`
	DataContentType string         `json:"datacontenttype"`
	Data            map[string]any `json:"data"`
}

func TestAppendCloudEvent(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want map[string]any
	}{
		{
			name: "full",
			ev:   fullEvent(),
			want: map[string]any{"request_id": "req-1", "decision": "deny", "reason": "token_expired", "status": 401.0,
				"route": "/api/orders/", "method": "GET", "path": "/api/orders/42", "host": "shop.example", "client_ip": "10.0.0.7",
				"subject": "123", "issuer": "https://auth.example.com", "jti": "j-1", "roles": []any{"user", "admin"}, "duration_ms": 0.21},
		},
		{
			name: "detail, grpc_status and shadow",
			ev: Event{Time: testTime, Decision: "deny", Reason: "insufficient_scope", Status: 403, Detail: "roles all [admin]",
				GRPCStatus: 7, Shadow: &Shadow{Route: "/new/", Decision: "deny", Reason: "missing_token"}},
			want: map[string]any{"request_id": "", "decision": "deny", "reason": "insufficient_scope", "status": 403.0, "route": "",
				"method": "", "path": "", "host": "", "client_ip": "", "duration_ms": 0.0, "detail": "roles all [admin]",
				"grpc_status": 7.0, "shadow": map[string]any{"route": "/new/", "decision": "deny", "reason": "missing_token"}},
		},
		{
			name: "egress",
			ev:   Event{Time: testTime, Decision: "allow", Reason: "ok", Status: 200, Route: "orders", Egress: true, Strategy: "propagate"},
			want: map[string]any{"request_id": "", "decision": "allow", "reason": "ok", "status": 200.0, "route": "orders", "method": "",
				"path": "", "host": "", "client_ip": "", "strategy": "propagate", "duration_ms": 0.0},
		},
		{
			name: "empty fields",
			ev:   Event{Time: testTime, Decision: "allow"},
			want: map[string]any{"request_id": "", "decision": "allow", "reason": "", "status": 0.0, "route": "", "method": "",
				"path": "", "host": "", "client_ip": "", "duration_ms": 0.0},
		},
		{
			name: "escaping",
			ev: Event{Time: testTime, Decision: "deny", Path: "/a\"b\\c\n\x00\x1f<tag>&\u2028é\xff", Subject: "\t",
				Roles: []string{"\"r\""}},
			want: map[string]any{"request_id": "", "decision": "deny", "reason": "", "status": 0.0, "route": "", "method": "",
				"path": "/a\"b\\c\n\x00\x1f<tag>&\u2028é\ufffd", "host": "", "client_ip": "", "subject": "\t",
				"roles": []any{"\"r\""}, "duration_ms": 0.0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := appendCloudEvent(nil, &tt.ev, "abc", "gatehouse/h", tt.ev.Time)
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			var ce cloudEvent
			if err := dec.Decode(&ce); err != nil {
				t.Fatalf("invalid JSON %s: %v", b, err)
			}
			wantType := "gatehouse.auth." + tt.ev.Decision
			if tt.ev.Egress {
				wantType = "gatehouse.egress." + tt.ev.Decision
			}
			if ce.SpecVersion != "1.0" || ce.Type != wantType || ce.Source != "gatehouse/h" ||
				ce.ID != "abc" || ce.Time != "2026-11-22T09:00:00.123456Z" || ce.DataContentType != "application/json" {
				t.Errorf("envelope = %+v", ce)
			}
			got, _ := json.Marshal(ce.Data)
			want, _ := json.Marshal(tt.want)
			if !bytes.Equal(got, want) {
				t.Errorf("data = %s\nwant   %s", got, want)
			}
			if bytes.ContainsAny(b, "\n\x00") {
				t.Errorf("encoding holds a raw newline or NUL: %q", b)
			}
		})
	}
}

var idPattern = regexp.MustCompile(`"id":"([0-9a-f]{32})"`)

// TestStdoutGolden checks sink stdout's exact output; ids are random per
// process, so they are checked for shape and then replaced.
func TestStdoutGolden(t *testing.T) {
	var out bytes.Buffer
	e, err := New(DefaultConfig(), Options{Stdout: &out, Source: "gatehouse/test-host"})
	if err != nil {
		t.Fatal(err)
	}
	e.Emit(fullEvent())
	e.Emit(Event{Time: testTime, Decision: "allow", Reason: "public", Status: 200, Route: "= /login", Method: "POST", Path: "/login"})
	if err := e.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, m := range idPattern.FindAllSubmatch(out.Bytes(), -1) {
		ids[string(m[1])] = true
	}
	if len(ids) != 2 {
		t.Fatalf("want 2 distinct 32-hex ids, got %v in\n%s", ids, out.Bytes())
	}
	got := idPattern.ReplaceAll(out.Bytes(), []byte(`"id":"ID"`))
	golden := filepath.Join("testdata", "stdout.golden")
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("stdout =\n%s\nwant\n%s", got, want)
	}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ce cloudEvent
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&ce); err != nil {
			t.Errorf("line %q: %v", line, err)
		}
	}
}
