package proxy

import "testing"

func TestCheckListen(t *testing.T) {
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{":8080", true}, {"127.0.0.1:0", true}, {"[::1]:9090", true}, {"localhost:65535", true},
		{"8080", false}, {"127.0.0.1:", false}, {":65536", false}, {":-1", false}, {":http", false}, {"::1:80", false},
	} {
		if err := checkListen(tt.addr); (err == nil) != tt.ok {
			t.Errorf("checkListen(%q) = %v, want ok=%v", tt.addr, err, tt.ok)
		}
	}
}
