package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
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
