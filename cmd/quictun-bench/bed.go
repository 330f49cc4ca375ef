//go:build linux

package main

import (
	"context"
	"errors"
	"os"

	"github.com/quictun/quictun/bench/runner"
)

// bedFactory picks the test hosts. Namespaces need root; say so before any work starts.
func bedFactory(ctx context.Context, backend string) (runner.BedFactory, error) {
	if backend == "loopback" {
		return runner.Loopback, nil
	}
	if os.Geteuid() != 0 {
		return nil, exitCode{code: 2, err: errors.New("this needs root: it creates network namespaces, TUN devices and routes for the emulated link (run it as root, e.g. sudo task bench)")}
	}
	return runner.Namespaces(ctx, backend)
}
