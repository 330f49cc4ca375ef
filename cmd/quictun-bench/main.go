//go:build linux

// Command quictun-bench runs the benchmark suites of `task bench`: it sets up two
// network namespaces joined by an emulated link, runs quictun, kcptun and direct TCP
// across it, and writes a markdown report, charts and JSON under --out.
//
// It also carries a hidden `loadgen` command: the harness runs the same binary inside
// the namespaces as its echo server and load clients.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/alecthomas/kong"
)

type cli struct {
	Run     runCmd     `cmd:"" default:"withargs" help:"Run benchmark suites (the default)."`
	Loadgen loadgenCmd `cmd:"" hidden:"" help:"Load generator steps run inside the test namespaces."`
}

func main() {
	// Ctrl-C cancels the run; every process and namespace is then torn down before exit.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var c cli
	kctx := kong.Parse(&c,
		kong.Name("quictun-bench"),
		kong.Description("Benchmark quictun against direct TCP (cubic, bbr) and kcptun on emulated links."),
		kong.UsageOnError(),
		kong.BindTo(ctx, (*context.Context)(nil)),
	)
	err := kctx.Run()
	stop()
	if err != nil {
		fmt.Fprintf(os.Stderr, "quictun-bench: %v\n", err)
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(ec.code)
		}
		os.Exit(1)
	}
}

// exitCode carries a specific exit status with its error.
type exitCode struct {
	code int
	err  error
}

func (e exitCode) Error() string { return e.err.Error() }
func (e exitCode) Unwrap() error { return e.err }
