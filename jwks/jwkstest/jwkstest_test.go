package jwkstest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestServer(t *testing.T) {
	k := NewKey("RS256", "a")
	s := NewServer(k)
	defer s.Close()
	s.SetCacheControl("max-age=60")
	resp, err := http.Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var doc struct{ Keys []map[string]any }
	if err := json.Unmarshal(body, &doc); err != nil || len(doc.Keys) != 1 || doc.Keys[0]["kid"] != "a" || doc.Keys[0]["alg"] != "RS256" {
		t.Fatalf("JWKS = %s (%v)", body, err)
	}
	if _, ok := doc.Keys[0]["d"]; ok {
		t.Fatal("JWKS holds the private exponent")
	}
	etag := resp.Header.Get("ETag")
	if etag == "" || resp.Header.Get("Cache-Control") != "max-age=60" {
		t.Fatalf("headers = %v", resp.Header)
	}
	req, _ := http.NewRequest(http.MethodGet, s.URL, nil)
	req.Header.Set("If-None-Match", etag)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional GET = %v, %v", resp.Status, err)
	}
	resp.Body.Close()
	s.SetHandler(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) })
	resp, _ = http.Get(s.URL)
	resp.Body.Close()
	if resp.StatusCode != 500 || s.Fetches() != 3 {
		t.Errorf("fault = %d, fetches = %d", resp.StatusCode, s.Fetches())
	}
	http.DefaultClient.CloseIdleConnections()
}

func TestSignShapes(t *testing.T) {
	for _, alg := range []string{"RS256", "PS384", "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS512"} {
		t.Run(alg, func(t *testing.T) {
			k := NewKey(alg, "kid-"+alg)
			tok := k.Sign(map[string]any{"sub": "x"})
			if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, "=+/") {
				t.Errorf("token %q is not compact base64url", tok)
			}
			if alg[:2] == "HS" {
				if len(k.Secret()) < 32 {
					t.Errorf("secret of %d bytes", len(k.Secret()))
				}
				return
			}
			if !strings.Contains(string(k.PublicPEM()), "BEGIN PUBLIC KEY") {
				t.Errorf("PEM = %s", k.PublicPEM())
			}
		})
	}
}
