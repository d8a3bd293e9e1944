package policy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestNginxDifferential checks that Engine.Match picks the location real
// nginx picks, for generated paths and for the corpus entries Normalize
// accepts. nginx decodes every escape and accepts '\', so the classes
// gatehouse answers 400 are tested on their own (TestNormalize), not here.
// Methods are not compared: nginx has no per-method locations.
func TestNginxDifferential(t *testing.T) {
	bin := findNginx(t)
	configs := []struct {
		name      string
		locations []string
	}{
		{"nginx doc example", []string{"= /", "/", "/documents/", "^~ /images/", `~* \.(gif|jpg|jpeg)$`}},
		{"spec example", []string{"= /login", "/api/orders/", `~ ^/admin(/|$)`, "^~ /static/", `~ \.php$`, "= /"}},
		{"generated 1", generateLocations(rand.New(rand.NewPCG(1, 1)), 60)},
		{"generated 2", generateLocations(rand.New(rand.NewPCG(2, 2)), 60)},
		{"generated 3", generateLocations(rand.New(rand.NewPCG(3, 3)), 200)},
	}
	for i, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			var doc strings.Builder
			doc.WriteString("routes:\n")
			for _, l := range cfg.locations {
				fmt.Fprintf(&doc, "  - location: %s\n", strconv.Quote(l))
			}
			e := load(t, doc.String())
			addr := startNginx(t, bin, cfg.locations)
			c := &nginxClient{t: t, addr: addr}
			defer c.close()

			rng := rand.New(rand.NewPCG(uint64(i)+100, 7))
			var paths []string
			for _, tt := range normalizeCorpus {
				if tt.want != bad && sendable(tt.in) {
					paths = append(paths, tt.in)
				}
			}
			for len(paths) < 1500 {
				if p := generatePath(rng, cfg.locations); sendable(p) {
					if _, ok := Normalize(p); ok {
						paths = append(paths, p)
					}
				}
			}
			mismatches := 0
			hit := map[string]int{}
			for _, p := range paths {
				canon, _ := Normalize(p)
				want := e.Match("GET", canon).Name
				got := c.get(p)
				if i, err := strconv.Atoi(got); err == nil && i >= 0 && i < len(cfg.locations) {
					got = cfg.locations[i]
				}
				hit[got]++
				if got != want {
					mismatches++
					t.Errorf("path %q (normalised %q): nginx chose %q, Engine.Match chose %q", p, canon, got, want)
					if mismatches >= 20 {
						t.Fatal("too many mismatches")
					}
				}
			}
			// Not vacuous: the paths reach most locations, not only the default.
			t.Logf("%d paths, %d distinct answers (default included) for %d locations", len(paths), len(hit), len(cfg.locations))
			if len(hit) < len(cfg.locations)/2 {
				t.Errorf("nginx chose only %d distinct locations of %d: %v", len(hit), len(cfg.locations), hit)
			}
		})
	}
}

// sendable reports whether p can go raw into a request line: no space, no
// control bytes, and no '?' or '#', which would end the path.
func sendable(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f || c == '?' || c == '#' {
			return false
		}
	}
	return true
}

func findNginx(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if st, err2 := os.Stat("/usr/sbin/nginx"); err2 == nil && st.Mode()&0o111 != 0 {
			return "/usr/sbin/nginx"
		}
		msg := "nginx not installed: not on PATH and no /usr/sbin/nginx (apt-get install nginx-light)"
		if os.Getenv("GATEHOUSE_REQUIRE_NGINX") == "1" {
			t.Fatal(msg + "; GATEHOUSE_REQUIRE_NGINX=1")
		}
		t.Skip(msg)
	}
	return bin
}

// nginxConf renders a config with one location per route returning the
// route's index, and `location /` answering "default" unless the routes
// have a "/" prefix of their own: nginx then falls back to it exactly when
// gatehouse falls back to `default` (no exact, prefix or regex match).
func nginxConf(dir string, port int, locations []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "daemon off;\nmaster_process off;\nworker_processes 1;\npid %s;\nerror_log %s warn;\n",
		filepath.Join(dir, "nginx.pid"), filepath.Join(dir, "error.log"))
	b.WriteString("events { worker_connections 64; }\nhttp {\n  access_log off;\n  default_type text/plain;\n  keepalive_requests 1000000;\n")
	for _, p := range []string{"client_body", "proxy", "fastcgi", "uwsgi", "scgi"} {
		fmt.Fprintf(&b, "  %s_temp_path %s;\n", p, filepath.Join(dir, p))
	}
	fmt.Fprintf(&b, "  server {\n    listen 127.0.0.1:%d;\n", port)
	hasRoot := false
	for i, l := range locations {
		k, v, _ := parseLocation(l)
		mod := strings.TrimSuffix(l, v)
		if (k == kindPrefix || k == kindPrefixStop) && v == "/" {
			hasRoot = true
		}
		// The answer is the index: a location's text may hold '$', which
		// nginx would read as a variable in return's text.
		fmt.Fprintf(&b, "    location %s%s { return 200 \"%d\"; }\n", mod, nginxQuote(v), i)
	}
	if !hasRoot {
		b.WriteString("    location / { return 200 \"default\"; }\n")
	}
	b.WriteString("  }\n}\n")
	return b.String()
}

// nginxQuote quotes s for nginx.conf. Inside double quotes nginx turns \"
// and \\ into " and \ and keeps any other backslash as is.
func nginxQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

func startNginx(t *testing.T, bin string, locations []string) string {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir := t.TempDir()
		port := freePort(t)
		conf := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(conf, []byte(nginxConf(dir, port, locations)), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-p", dir+"/", "-c", conf, "-e", "stderr")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Stdout = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatalf("start nginx: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		err := waitListening(addr, exited)
		if err == nil {
			t.Cleanup(func() {
				_ = cmd.Process.Kill()
				<-exited
			})
			return addr
		}
		_ = cmd.Process.Kill()
		<-exited
		logData, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		lastErr = fmt.Errorf("%w\nstderr: %s\nerror.log: %s\nconfig:\n%s", err, stderr.String(), logData, nginxConf(dir, port, locations))
		if !strings.Contains(lastErr.Error(), "Address already in use") {
			break
		}
	}
	t.Fatalf("nginx did not start: %v", lastErr)
	return ""
}

// waitListening polls addr until it accepts a connection, nginx exits, or
// 10 s pass.
func waitListening(addr string, exited <-chan error) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("nginx exited: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // poll interval, bounded by the deadline
	}
	return errors.New("nginx not listening after 10s")
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// nginxClient sends raw request lines over one keep-alive connection, so
// that the path reaches nginx byte for byte (net/http would clean it).
type nginxClient struct {
	t    *testing.T
	addr string
	conn net.Conn
	r    *bufio.Reader
}

func (c *nginxClient) close() {
	if c.conn != nil {
		c.conn.Close()
	}
}

// get returns the route name nginx answers for path, or a description of
// an unexpected answer.
func (c *nginxClient) get(path string) string {
	for attempt := 0; ; attempt++ {
		name, err := c.try(path)
		if err == nil {
			return name
		}
		c.close()
		c.conn = nil
		if attempt == 1 {
			c.t.Fatalf("GET %q from nginx: %v", path, err)
		}
	}
}

func (c *nginxClient) try(path string) (string, error) {
	if c.conn == nil {
		conn, err := net.DialTimeout("tcp", c.addr, 5*time.Second)
		if err != nil {
			return "", err
		}
		c.conn, c.r = conn, bufio.NewReader(conn)
	}
	if err := c.conn.SetDeadline(time.Now().Add(5 * time.Second)); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c.conn, "GET "+path+" HTTP/1.1\r\nHost: t\r\n\r\n"); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	if resp.Close {
		c.close()
		c.conn = nil
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("<nginx status %d>", resp.StatusCode), nil
	}
	return string(body), nil
}

// segments are the building blocks of generated locations and paths: words
// that recur so that locations overlap and paths hit them.
var segments = []string{"api", "v1", "orders", "admin", "images", "documents", "static", "a", "b", "ab", "x.php", "1.gif", "2.JPG", "index.html", "~user", "a-b_c", "Admin"}

func generateLocations(rng *rand.Rand, n int) []string {
	seen := map[string]bool{}
	var out []string
	word := func() string { return segments[rng.IntN(len(segments))] }
	path := func() string {
		var b strings.Builder
		for range 1 + rng.IntN(3) {
			b.WriteString("/" + word())
		}
		switch rng.IntN(3) {
		case 0:
			b.WriteString("/")
		case 1: // cut inside the last segment: a prefix like "/ima"
			s := b.String()
			return s[:len(s)-rng.IntN(3)]
		}
		return b.String()
	}
	for len(out) < n {
		var l string
		switch rng.IntN(8) {
		case 0:
			l = "= " + path()
		case 1, 2:
			l = "^~ " + path()
		case 3, 4:
			l = path()
		case 5:
			l = "~ ^/" + word() + "(/|$)"
		case 6:
			l = "~* " + strings.ReplaceAll(word(), ".", `\.`) + "$"
		case 7:
			l = "~ /" + word() + "/[a-z]+$"
		}
		// nginx refuses a duplicate prefix, and "/x" and "^~ /x" are one.
		k, v, msg := parseLocation(l)
		if msg != "" || !prefixCanMatch(v) {
			continue
		}
		key := v
		if k == kindExact {
			key = "=" + v
		} else if k == kindRegex || k == kindRegexFold {
			key = l
		}
		if seen[key] {
			continue
		}
		seen[key] = true
		out = append(out, l)
	}
	return out
}

// generatePath mixes segments of the locations, plain words, dots, empty
// segments (double slashes) and percent-encoded unreserved characters.
func generatePath(rng *rand.Rand, locations []string) string {
	var parts []string
	for range rng.IntN(6) {
		switch rng.IntN(10) {
		case 0:
			parts = append(parts, ".")
		case 1:
			parts = append(parts, "..")
		case 2:
			parts = append(parts, "")
		case 3:
			l := locations[rng.IntN(len(locations))]
			if _, v, _ := parseLocation(l); strings.HasPrefix(v, "/") {
				parts = append(parts, strings.Trim(v, "/"))
				continue
			}
			parts = append(parts, segments[rng.IntN(len(segments))])
		default:
			parts = append(parts, segments[rng.IntN(len(segments))])
		}
	}
	p := "/" + strings.Join(parts, "/")
	if rng.IntN(4) == 0 {
		p += "/"
	}
	// Percent-encode some unreserved characters; nginx and Normalize both
	// decode them.
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c != '/' && unreserved(c) && rng.IntN(12) == 0 {
			if rng.IntN(2) == 0 {
				fmt.Fprintf(&b, "%%%02x", c)
			} else {
				fmt.Fprintf(&b, "%%%02X", c)
			}
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}
