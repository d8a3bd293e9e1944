package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestQuickRun builds the harness and runs every configuration once with
// tiny durations. It checks that the harness works (both proxies answered,
// with the status each configuration expects, and the bad-signature flood
// fetched no keys), never how fast anything was.
func TestQuickRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds two binaries and runs both proxies")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "loadtest")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("build loadtest: %v", err)
	}
	cmd := exec.Command(bin, "-quick", "-duration", "200ms", "-warmup", "50ms", "-conns", "4", "-pool", "200", "-cold-tokens", "300")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("loadtest -quick: %v\nstderr:\n%s", err, stderr.String())
		}
	case <-time.After(4 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("loadtest -quick did not finish in 4 minutes\nstderr:\n%s", stderr.String())
	}

	rows := map[string][]string{} // "config proxy" -> cells
	for _, line := range strings.Split(stdout.String(), "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| configuration") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		name, _, _ := strings.Cut(cells[0], " (")
		rows[name+" "+cells[1]] = cells
	}
	for _, c := range allConfigs {
		if strings.HasPrefix(c.sink, "rabbitmq") && strings.Contains(stderr.String(), "skipping one-rs256-rabbitmq") {
			continue
		}
		for _, p := range []string{"baseline", "gatehouse"} {
			t.Run(c.name+"/"+p, func(t *testing.T) {
				cells, ok := rows[c.name+" "+p]
				if !ok {
					t.Fatalf("no row for %s %s in:\n%s", c.name, p, stdout.String())
				}
				if bad := cells[len(cells)-1]; bad != "0" {
					t.Errorf("bad answers = %s, want 0 (stderr:\n%s)", bad, stderr.String())
				}
				if cells[2] == "0" {
					t.Errorf("req/s = 0: no request was answered")
				}
				if p == "gatehouse" && c.tokens == tokensBadSig {
					if f := cells[len(cells)-3]; f != "0" {
						t.Errorf("JWKS fetches during the bad-signature flood = %s, want 0", f)
					}
				}
			})
		}
	}
	if !strings.Contains(stdout.String(), "ratio") {
		t.Errorf("no ratio in the report:\n%s", stdout.String())
	}
}
