// Command gatehouse is a reverse-proxy authentication sidecar: it verifies
// JWTs, enforces route policies, injects claims as headers and forwards to
// the app. main parses flags and calls proxy.Run, or dispatches the
// subcommands `explain`, `test` and `revoke` to proxy; everything else lives in the
// packages.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/gatehouse/gatehouse/internal/yamlpos"
	"github.com/gatehouse/gatehouse/proxy"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() { os.Exit(run()) }

func run() int {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "explain":
			return proxy.Explain(os.Args[2:], os.Stdout, os.Stderr)
		case "test":
			return proxy.PolicyTest(os.Args[2:], os.Stdout, os.Stderr)
		case "revoke":
			return proxy.Revoke(os.Args[2:], os.Stdout, os.Stderr)
		}
	}
	fs := flag.NewFlagSet("gatehouse", flag.ContinueOnError)
	def := os.Getenv("GATEHOUSE_CONFIG")
	if def == "" {
		def = "gatehouse.yaml"
	}
	configPath := fs.String("config", def, "config file (default $GATEHOUSE_CONFIG, else gatehouse.yaml)")
	test := fs.Bool("t", false, "test the config and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "gatehouse: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Printf("gatehouse %s %s\n", version, runtime.Version())
		return 0
	}
	if *test {
		cfg, err := proxy.LoadConfig(*configPath)
		if err != nil {
			for _, e := range yamlpos.Errors(err) {
				fmt.Fprintln(os.Stderr, e)
			}
			return 1
		}
		for _, w := range cfg.Warnings {
			fmt.Fprintln(os.Stderr, w)
		}
		fmt.Printf("configuration file %s test is successful\n", *configPath)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := proxy.Run(ctx, proxy.Options{ConfigPath: *configPath, Version: version}); err != nil {
		for _, e := range yamlpos.Errors(err) {
			fmt.Fprintln(os.Stderr, e)
		}
		return 1
	}
	return 0
}
