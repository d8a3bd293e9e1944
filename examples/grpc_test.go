package examples_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestGRPCDemo runs `go run ./examples/grpc` as the README says: a grpc-go
// client and server through gatehouse, every step as its story says.
func TestGRPCDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "run", "./grpc").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "every step went as the story says") {
		t.Fatalf("go run ./examples/grpc: %v\n%s", err, out)
	}
	for _, want := range []string{"Unauthenticated (a bearer token is required)", `x-auth-subject="alice"`, "PermissionDenied", "5 echoed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
}
