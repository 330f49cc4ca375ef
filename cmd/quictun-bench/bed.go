//go:build linux

package main

import (
	"context"
	"errors"
	"os"

	"github.com/quictun/quictun/bench/runner"
)

// checkRoot refuses a run that needs namespaces without root, before any work starts.
func checkRoot(backend string) error {
	if backend != "loopback" && os.Geteuid() != 0 {
		return exitCode{code: 2, err: errors.New("this needs root: it creates network namespaces, TUN devices and routes for the emulated link (run it as root, e.g. sudo task bench)")}
	}
	return nil
}

// bedFactory picks the test hosts.
func bedFactory(ctx context.Context, backend, prefix string) (runner.BedFactory, error) {
	if backend == "loopback" {
		return runner.Loopback, nil
	}
	if err := checkRoot(backend); err != nil {
		return nil, err
	}
	return runner.Namespaces(ctx, prefix, backend)
}
