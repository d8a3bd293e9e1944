package policy_test

import (
	"fmt"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/policy"
)

func Example() {
	d := yamlpos.NewDecoder("gatehouse.yaml")
	root := d.Parse([]byte(`
routes:
  - location: "= /login"
    auth: none
  - location: "/api/orders/"
    methods: [GET]
    roles: { any: [user, admin] }
  - location: "~ ^/admin(/|$)"
    roles: { all: [admin] }
default: deny
`))
	m := d.Map(root, "paths", "routes", "default")
	engine := policy.Decode(d, m.Get("paths"), m.Get("routes"), m.Get("default"))
	if err := d.Err(); err != nil {
		fmt.Println(err)
		return
	}
	user := &policy.Subject{Roles: []string{"user"}}
	for _, req := range []struct {
		method, path string
		s            *policy.Subject
	}{
		{"POST", "/login", nil},
		{"GET", "//api/orders/%34%32", user},
		{"GET", "/api/orders/../../admin/", user},
		{"GET", "/api/orders/..%2F..%2Fadmin", user},
		{"GET", "/api/orders/1", nil},
		{"DELETE", "/api/orders/1", user},
	} {
		path, ok := policy.Normalize(req.path)
		if !ok {
			fmt.Printf("%-6s %-30s 400 bad_request\n", req.method, req.path)
			continue
		}
		dec := engine.Match(req.method, path).Decide(req.s)
		fmt.Printf("%-6s %-30s %-16s %-5v %s\n", req.method, req.path, dec.Route.Name, dec.Allow, dec.Reason)
	}
	// Output:
	// POST   /login                         = /login         true  public
	// GET    //api/orders/%34%32            /api/orders/     true  ok
	// GET    /api/orders/../../admin/       ~ ^/admin(/|$)   false insufficient_scope
	// GET    /api/orders/..%2F..%2Fadmin    400 bad_request
	// GET    /api/orders/1                  /api/orders/     false missing_token
	// DELETE /api/orders/1                  default          false forbidden
}
