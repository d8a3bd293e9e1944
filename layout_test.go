package main

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/gatehouse/gatehouse/"

// TestDependencyDirection holds the layout's line: main → proxy → policy,
// jwks, audit; none of those three import proxy or each other, policy stays
// free of net/http, jwx and prometheus, and yamlpos, claimpath and oauth are leaves.
func TestDependencyDirection(t *testing.T) {
	leaf := []string{module + "proxy", module + "policy", module + "jwks", module + "audit",
		module + "internal/yamlpos", "gopkg.in/yaml.v3", "github.com/lestrrat-go/jwx", "github.com/prometheus", "github.com/rabbitmq"}
	forbidden := map[string][]string{
		"policy":           {module + "proxy", module + "jwks", module + "audit", "net/http", "github.com/lestrrat-go/jwx", "github.com/prometheus", "github.com/rabbitmq"},
		"jwks":             {module + "proxy", module + "policy", module + "audit", "github.com/rabbitmq"},
		"audit":            {module + "proxy", module + "policy", module + "jwks", "github.com/lestrrat-go/jwx"},
		"internal/yamlpos": {module + "proxy", module + "policy", module + "jwks", module + "audit", "net/http"},
		// claimpath is the one claim-path rule, for jwks, policy and proxy alike.
		"internal/claimpath": {module + "proxy", module + "policy", module + "jwks", module + "audit", module + "internal/yamlpos", "gopkg.in/yaml.v3"},
		// jsonx, tlsca and refpool serve every package: leaves, stdlib only.
		"internal/jsonx":   leaf,
		"internal/tlsca":   leaf,
		"internal/refpool": leaf,
		// oauth is egress's OAuth client: stdlib and jwx (to sign the
		// client assertion) only; the proxy registers its metrics.
		"internal/oauth": {module + "proxy", module + "policy", module + "jwks", module + "audit", module + "internal/yamlpos",
			"gopkg.in/yaml.v3", "github.com/prometheus", "github.com/rabbitmq"},
	}
	for pkg, bad := range forbidden {
		out, err := exec.Command("go", "list", "-deps", "./"+pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps ./%s: %v\n%s", pkg, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) == 0 || deps[len(deps)-1] != module+pkg {
			t.Fatalf("go list -deps ./%s did not end with the package itself: %q", pkg, deps)
		}
		for _, dep := range deps {
			for _, b := range bad {
				if dep == b || strings.HasPrefix(dep, b+"/") {
					t.Errorf("%s imports %s (forbidden: %s)", pkg, dep, b)
				}
			}
		}
	}
}
