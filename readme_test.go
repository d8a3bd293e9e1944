package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/proxy"
)

// TestREADMETestCommand keeps .ci/run honest: it must run the exact test
// command that README.md tells users to run.
func TestREADMETestCommand(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)## Running the tests.*?```\n(go test [^\n]+)\n```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no `go test` command under \"## Running the tests\"")
	}
	ci, err := os.ReadFile(".ci/run")
	if err != nil {
		t.Fatal(err)
	}
	cmd := string(m[1])
	for _, line := range strings.Split(string(ci), "\n") {
		if strings.TrimSpace(line) == cmd {
			return
		}
	}
	t.Fatalf(".ci/run does not run README's test command %q on a line of its own", cmd)
}

// TestREADMEConfigsLoad: every complete config README.md shows (a yaml
// block that starts with listen:) passes what `gatehouse -t` checks.
func TestREADMEConfigsLoad(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(listen: .*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d complete configs in README.md, want the two migration examples at least", len(blocks))
	}
	t.Setenv("JWT_SECRET", "0123456789abcdef0123456789abcdef")
	for i, b := range blocks {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("readme-%d.yaml", i))
		if err := os.WriteFile(path, b[1], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := proxy.LoadConfig(path); err != nil {
			t.Errorf("README config %d does not load:\n%s\n%v", i, b[1], err)
		}
	}
}
