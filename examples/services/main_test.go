package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
)

var client = &http.Client{Timeout: 20 * time.Second}

func get(t *testing.T, u string, header http.Header) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", u, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

func login(t *testing.T, issuer, user, password string) string {
	t.Helper()
	resp, err := client.PostForm(issuer+"/login", url.Values{"username": {user}, "password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.AccessToken == "" {
		t.Fatalf("login %s: %d %v", user, resp.StatusCode, err)
	}
	return v.AccessToken
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// callB asks A's gatehouse for GET /call/<how> with tok and returns A's
// answer (B's inside it).
func callB(t *testing.T, d *demo, how, tok string) (int, called, whoami) {
	t.Helper()
	status, body := get(t, d.aGate+"/call/"+how, bearer(tok))
	var c called
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatalf("/call/%s: %d %q: %v", how, status, body, err)
	}
	var w whoami
	if c.BStatus == 200 {
		if err := json.Unmarshal(c.BAnswer, &w); err != nil {
			t.Fatalf("B's answer %q: %v", c.BAnswer, err)
		}
	}
	return status, c, w
}

func errorCode(t *testing.T, b []byte) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	return e.Error
}

// TestServices runs the example in process on free ports: a user's token
// to A makes B see the user (propagate), the user with A as actor and B's
// audience (exchange), or A itself (client_credentials); B's gatehouse
// refuses what it did not verify; an audience the issuer refuses and the
// issuer going down give 502 token_unavailable at A's egress, while a
// cached client_credentials token keeps working.
func TestServices(t *testing.T) {
	t.Setenv(secretEnv, "test-secret-"+strings.ReplaceAll(t.Name(), "/", "-"))
	ctx, cancel := context.WithCancel(context.Background())
	d, err := start(ctx, ports{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		done := make(chan error, 1)
		go func() { done <- d.wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("stop: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the gatehouses did not stop within 30s")
		}
	})

	alice := login(t, d.issuer, "alice", "wonderland")
	bob := login(t, d.issuer, "bob", "builder") // used once the issuer is down

	status, c, w := callB(t, d, "propagate", alice)
	if status != 200 || c.Caller != "alice" || w.Service != "B" || w.Sub != "alice" || w.Aud != audienceA || w.Actor != "" {
		t.Errorf("propagate: %d %+v %+v", status, c, w)
	}
	status, c, w = callB(t, d, "exchange", alice)
	if status != 200 || w.Sub != "alice" || w.Aud != audienceB || w.Actor != clientID || w.ClientID != clientID {
		t.Errorf("exchange: %d %+v %+v", status, c, w)
	}
	status, c, w = callB(t, d, "client_credentials", alice)
	if status != 200 || w.Sub != clientID || w.Aud != audienceB || w.Actor != "" {
		t.Errorf("client_credentials: %d %+v %+v", status, c, w)
	}
	if w.Token {
		t.Errorf("B's app received the token; forward_token is false")
	}

	// The issuer serves no "nobody-api": it answers invalid_target, and
	// A's egress answers 502 token_unavailable without calling B.
	status, c, _ = callB(t, d, "nobody", alice)
	if status != 502 || c.BStatus != 502 || errorCode(t, c.BAnswer) != "token_unavailable" {
		t.Errorf("exchange for an unknown audience: %d %+v", status, c)
	}

	// B's gatehouse verifies: no token, or one signed by another key, and
	// B's app is not reached.
	if s, b := get(t, d.bGate+"/whoami", nil); s != 401 || errorCode(t, b) != "missing_token" {
		t.Errorf("B without a token: %d %s", s, b)
	}
	forged := jwkstest.NewKey("RS256", "key-1").Sign(map[string]any{"iss": d.issuer, "aud": audienceB, "sub": "mallory", "exp": time.Now().Add(time.Hour).Unix()})
	if s, b := get(t, d.bGate+"/whoami", bearer(forged)); s != 401 {
		t.Errorf("B with a forged token: %d %s", s, b)
	}
	// A's gatehouse refuses a token for B's audience (the client
	// credentials token A's egress got is of no use at A's front door).
	ccTok := tokenAt(t, d, "client_credentials")
	if s, b := get(t, d.aGate+"/call/propagate", bearer(ccTok)); s != 401 {
		t.Errorf("A with a token for service-b: %d %s", s, b)
	}
	// A call on the egress listener that belongs to no inbound request.
	if s, b := get(t, d.aEgress+"/whoami", http.Header{"X-Request-Id": {"made-up"}}); s != 403 {
		t.Errorf("egress call without an inbound request: %d %s", s, b)
	} else if code := errorCode(t, b); code != "forbidden" && code != "no_inbound_token" {
		t.Errorf("egress call without an inbound request: %s", b)
	}
	req, _ := http.NewRequest("GET", d.aEgress+"/whoami", nil)
	req.Host = "b-propagate"
	req.Header.Set("X-Request-Id", "made-up")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || errorCode(t, b) != "no_inbound_token" {
		t.Errorf("propagate without an inbound request: %d %s", resp.StatusCode, b)
	}

	// The identity provider goes down.
	if err := d.issuerSrv.Close(); err != nil {
		t.Fatal(err)
	}
	// bob's token was never exchanged: nothing cached, 502.
	status, c, _ = callB(t, d, "exchange", bob)
	if status != 502 || errorCode(t, c.BAnswer) != "token_unavailable" {
		t.Errorf("exchange with the issuer down: %d %+v", status, c)
	}
	// A's own token is cached and still valid: used while the IdP is down.
	status, _, w = callB(t, d, "client_credentials", bob)
	if status != 200 || w.Sub != clientID {
		t.Errorf("client_credentials with the issuer down: %d %+v", status, w)
	}
	// propagate needs no IdP (B's gatehouse has the keys).
	status, _, w = callB(t, d, "propagate", bob)
	if status != 200 || w.Sub != "bob" {
		t.Errorf("propagate with the issuer down: %d %+v", status, w)
	}
}

// tokenAt fetches a client credentials token for B from the issuer as A's
// gatehouse does.
func tokenAt(t *testing.T, d *demo, grant string) string {
	t.Helper()
	req, _ := http.NewRequest("POST", d.issuer+"/token", strings.NewReader(url.Values{"grant_type": {grant}, "audience": {audienceB}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(clientID, os.Getenv(secretEnv))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.AccessToken == "" {
		t.Fatalf("token: %d %v", resp.StatusCode, err)
	}
	return v.AccessToken
}

var bannerLine = regexp.MustCompile(`(?m)^  ([a-z-]+) +(http://127\.0\.0\.1:[0-9]+)`)

// TestServicesCommand runs the program as `go run` would (built once) on
// free ports: it prints its banner, the exchange story works at the
// printed addresses, and SIGINT stops it with status 0.
func TestServicesCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the example")
	}
	bin := filepath.Join(t.TempDir(), "services")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-free-ports")
	cmd.Env = append(os.Environ(), secretEnv+"=")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	urls := make(chan map[string]string, 1)
	go func() {
		m := map[string]string{}
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if g := bannerLine.FindStringSubmatch(sc.Text()); g != nil {
				m[g[1]] = g[2]
				if len(m) == 8 {
					urls <- m
				}
			}
		}
		exited <- cmd.Wait()
	}()
	// Harmless once it exited; a program that hangs is not left behind.
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	var u map[string]string
	select {
	case u = <-urls:
	case err := <-exited:
		t.Fatalf("exited before its banner: %v\n%s", err, stderr.String())
	case <-time.After(90 * time.Second):
		t.Fatalf("no banner within 90s\n%s", stderr.String())
	}
	d := &demo{issuer: u["issuer"], aGate: u["a-gate"]}
	_, _, w := callB(t, d, "exchange", login(t, d.issuer, "alice", "wonderland"))
	if w.Sub != "alice" || w.Aud != audienceB || w.Actor != clientID {
		t.Errorf("exchange through the program: %+v", w)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("did not stop within 30s of SIGINT")
	}
}
