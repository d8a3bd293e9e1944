package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/gatehouse/gatehouse/jwks/jwkstest"
	"github.com/gatehouse/gatehouse/proxy"
)

// ExampleNew builds gatehouse's pipeline in-process, in front of an app
// that greets the subject gatehouse verified.
func ExampleNew() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s", r.Header.Get("X-Auth-Subject"))
	}))
	defer app.Close()
	key := jwkstest.NewKey("ES256", "k1")
	keys := jwkstest.NewServer(key)
	defer keys.Close()

	cfg, err := proxy.ParseConfig("example.yaml", []byte(`listen: ":8080"
upstream: "`+app.URL+`"
issuers:
  - issuer: "https://auth.example.com"
    audiences: [orders-api]
    jwks_url: "`+keys.URL+`"
headers:
  X-Auth-Subject: sub
routes:
  - location: "/api/orders/"
audit:
  sink: none
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	h, err := proxy.New(context.Background(), cfg, proxy.HandlerOptions{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close(context.Background())

	token := key.Sign(map[string]any{
		"iss": "https://auth.example.com", "aud": "orders-api", "sub": "alice",
		"exp": time.Now().Add(time.Hour).Unix(),
	})
	for _, auth := range []string{"", "Bearer " + token} {
		r := httptest.NewRequest("GET", "/api/orders/42", nil)
		r.Header.Set("X-Request-Id", "example-1")
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		body, _ := io.ReadAll(w.Result().Body)
		fmt.Printf("%d %s\n", w.Code, bytes.TrimSpace(body))
	}
	// Output:
	// 401 {"error":"missing_token","message":"a bearer token is required","request_id":"example-1"}
	// 200 hello alice
}
