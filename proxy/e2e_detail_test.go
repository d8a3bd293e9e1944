package proxy_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

// TestAuditSubjectAndDetail runs the binary: the audit subject comes from
// the issuer's subject_claim (the seeds' tokens carry userId, not sub), and
// every denial says which check failed in data.detail, never the token or
// a claim value (SPEC.md 15).
func TestAuditSubjectAndDetail(t *testing.T) {
	w := newWorld(t)
	config := strings.Replace(w.config("", ""), "    leeway: 0s\n", "    leeway: 0s\n    subject_claim: userId\n", 1)
	g := startProcess(t, config)

	secretEmail := "alice-secret@example.com"
	good := w.token(map[string]any{"userId": "u-42", "email": secretEmail})
	// Signed by a key the JWKS does not hold: an unknown kid.
	other := jwkstest.NewKey("RS256", "not-published").Sign(map[string]any{
		"iss": issuer, "aud": "api", "userId": "u-42", "exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix()})
	cases := []struct {
		name, id, path, token  string
		wantReason, wantDetail string
		wantSubject            string
	}{
		{"allowed: subject from userId", "d-allow", "/api/x", good, "ok", "", "u-42"},
		{"no token", "d-missing", "/api/x", "", "missing_token", "no token", ""},
		{"roles", "d-roles", "/admin/x", good, "insufficient_scope", "roles all [admin]", "u-42"},
		{"expired", "d-expired", "/api/x", w.token(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), "token_expired", "expired", ""},
		{"audience", "d-aud", "/api/x", w.token(map[string]any{"aud": "other"}), "invalid_token", "audience", ""},
		{"unknown kid", "d-kid", "/api/x", other, "invalid_token", "unknown key id", ""},
		{"default deny", "d-default", "/elsewhere", good, "forbidden", "no route matched", ""},
		{"bad path", "d-path", "/a/%2F/b", "", "bad_request", "path", ""},
	}
	for _, tt := range cases {
		h := map[string][]string{"X-Request-Id": {tt.id}}
		if tt.token != "" {
			h["Authorization"] = []string{"Bearer " + tt.token}
		}
		do(t, "GET", g.URL+tt.path, h, "")
	}
	g.Stop()

	events := map[string]map[string]any{}
	for _, l := range strings.Split(strings.TrimSpace(g.Stdout.String()), "\n") {
		var ev struct {
			Data map[string]any `json:"data"`
		}
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatalf("stdout line %q: %v", l, err)
		}
		id, _ := ev.Data["request_id"].(string)
		events[id] = ev.Data
	}
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			ev, ok := events[tt.id]
			if !ok {
				t.Fatalf("no audit event for %s in:\n%s", tt.id, g.Stdout.String())
			}
			if ev["reason"] != tt.wantReason {
				t.Errorf("reason = %v, want %s", ev["reason"], tt.wantReason)
			}
			detail, _ := ev["detail"].(string)
			if detail != tt.wantDetail {
				t.Errorf("detail = %q, want %q", detail, tt.wantDetail)
			}
			subject, _ := ev["subject"].(string)
			if subject != tt.wantSubject {
				t.Errorf("subject = %q, want %q", subject, tt.wantSubject)
			}
		})
	}
	// Neither the audit stream nor the debug log may carry a token or a
	// claim value.
	for _, out := range []string{g.Stdout.String(), g.Stderr.String()} {
		if strings.Contains(out, good) || strings.Contains(out, strings.Split(good, ".")[2]) || strings.Contains(out, secretEmail) {
			t.Fatalf("a token, its signature or a claim value leaked:\n%s", out)
		}
	}
	if !strings.Contains(g.Stderr.String(), `"detail":"roles all [admin]"`) {
		t.Errorf("the debug decision line does not carry the detail:\n%s", g.Stderr.String())
	}
}
