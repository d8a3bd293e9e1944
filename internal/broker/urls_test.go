package broker

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
)

func decode(t *testing.T, src string, o URLOptions) (URLs, []string) {
	t.Helper()
	d := yamlpos.NewDecoder("g.yaml")
	root := d.Parse([]byte(src))
	keys := URLKeysSingle
	if o.List {
		keys = URLKeys
	}
	m := d.Map(root, keys...)
	o.Resolve = true
	u := DecodeURLs(d, m, o)
	var errs []string
	for _, e := range yamlpos.Errors(d.Err()) {
		errs = append(errs, e.Error())
	}
	return u, errs
}

func TestDecodeURLs(t *testing.T) {
	dir := t.TempDir()
	one := filepath.Join(dir, "one")
	two := filepath.Join(dir, "two")
	empty := filepath.Join(dir, "empty")
	os.WriteFile(one, []byte("amqp://u:f1le@a:5672/\n"), 0o600)
	os.WriteFile(two, []byte(" amqp://u:f1le@a:5672/ , amqps://u:f2le@b:5671/vh\n"), 0o600)
	os.WriteFile(empty, []byte("\n"), 0o600)
	t.Setenv("BROKER_TEST_LIST", "amqp://u:e1nv@a/,amqp://u:e2nv@b/")
	t.Setenv("BROKER_TEST_BAD", "amqp://u:e1nv@a/,http://u:e2nv@b/")
	os.Unsetenv("BROKER_TEST_UNSET")
	list := URLOptions{List: true, DefaultEnv: "BROKER_TEST_UNSET", Context: "revocation.rabbitmq"}
	single := URLOptions{DefaultEnv: "BROKER_TEST_UNSET", Context: "sink rabbitmq"}
	for _, tc := range []struct {
		name string
		src  string
		o    URLOptions
		want []string
		errs []string
	}{
		{name: "url", src: "url: amqp://u:s3cret@h/\n", o: single, want: []string{"amqp://u:s3cret@h/"}},
		{name: "url_file single", src: "url_file: " + one + "\n", o: single, want: []string{"amqp://u:f1le@a:5672/"}},
		{name: "url_file list", src: "url_file: " + two + "\n", o: list, want: []string{"amqp://u:f1le@a:5672/", "amqps://u:f2le@b:5671/vh"}},
		{name: "url_env list", src: "url_env: BROKER_TEST_LIST\n", o: list, want: []string{"amqp://u:e1nv@a/", "amqp://u:e2nv@b/"}},
		{name: "urls", src: "urls: [amqp://u:l1st@a/, amqp://u:l2st@b/]\n", o: list, want: []string{"amqp://u:l1st@a/", "amqp://u:l2st@b/"}},
		{name: "urls unknown in a single section", src: "urls: [amqp://a/]\n", o: single,
			errs: []string{"g.yaml:1:1: sink rabbitmq: environment variable BROKER_TEST_UNSET (url_env) is not set", `g.yaml:1:1: unknown key "urls"`}},
		{name: "default env unset", src: "{}\n", o: list,
			errs: []string{"g.yaml:1:1: revocation.rabbitmq: environment variable BROKER_TEST_UNSET (url_env) is not set"}},
		{name: "bad element", src: "urls:\n  - amqp://u:l1st@a/\n  - http://u:l2st@b/\n", o: list,
			errs: []string{"g.yaml:3:5: urls[1]: not a valid amqp:// or amqps:// URL"}},
		{name: "bad in env list", src: "url_env: BROKER_TEST_BAD\n", o: list,
			errs: []string{"g.yaml:1:10: environment variable BROKER_TEST_BAD (URL 2 of 2): not a valid amqp:// or amqps:// URL"}},
		{name: "two keys", src: "url: amqp://a/\nurls: [amqp://b/]\n", o: list,
			errs: []string{"g.yaml:2:1: give only one of url_env, url_file, url and urls (got url, urls)"}},
		{name: "two keys single", src: "url_env: X\nurl: amqp://b/\n", o: single,
			errs: []string{"g.yaml:2:1: give only one of url_env, url_file and url (got url_env, url)"}},
		{name: "empty urls", src: "urls: []\n", o: list, errs: []string{"g.yaml:1:7: urls must list at least one URL"}},
		{name: "empty file", src: "url_file: " + empty + "\n", o: list, errs: []string{"g.yaml:1:11: url_file " + empty + " is empty"}},
		{name: "bad env name", src: "url_env: 1X\n", o: list, errs: []string{`g.yaml:1:10: url_env "1X" is not an environment variable name`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, errs := decode(t, tc.src, tc.o)
			if !slices.Equal(errs, tc.errs) {
				t.Fatalf("errors:\n got %q\nwant %q", errs, tc.errs)
			}
			if !slices.Equal(u.List, tc.want) {
				t.Errorf("URLs %q, want %q", u.List, tc.want)
			}
			for _, e := range errs {
				for _, secret := range []string{"s3cret", "f1le", "f2le", "e1nv", "e2nv", "l1st", "l2st"} {
					if strings.Contains(e, secret) {
						t.Errorf("error leaks a URL password: %s", e)
					}
				}
			}
		})
	}
}
