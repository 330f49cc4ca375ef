//go:build linux

package host

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Namespaces are made with `ip netns add`, so they are ordinary named namespaces
// (/run/netns/NAME) that `ip netns exec`, iperf3 and a person at a shell can all use,
// and that outlive a crashed run until CleanupStale removes them.
const netnsDir = "/run/netns"

// runIP runs the ip tool (or another command) and turns a failure into an error that
// carries its output.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) ([]byte, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		return nil, fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(stderr))
	}
	return out, nil
}

// inNamespace runs fn on an OS thread that has joined the named network namespace.
// Sockets and devices fn creates belong to that namespace for their whole life, and can
// be used from any goroutine afterwards. The thread is never handed back to the Go
// scheduler: the goroutine exits while still locked, so the runtime retires the thread
// rather than letting another goroutine run in the wrong namespace.
func inNamespace(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- joinAndRun(ns, fn)
	}()
	return <-errc
}

func joinAndRun(ns string, fn func() error) error {
	fd, err := unix.Open(netnsDir+"/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer unix.Close(fd)
	if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("join namespace %s: %w", ns, err)
	}
	return fn()
}

// namespaceExists reports whether /run/netns/ns is there.
func namespaceExists(ns string) bool {
	_, err := os.Stat(netnsDir + "/" + ns)
	return err == nil
}

// killNamespaceProcesses kills every process whose network namespace is ns (what a
// caller started with Command and did not stop), so that deleting the namespace really
// frees it.
func killNamespaceProcesses(ctx context.Context, ns string) error {
	out, err := output(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return err
	}
	self := os.Getpid()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err != nil || pid == self || pid <= 1 {
			continue
		}
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	return nil
}

func deleteNamespace(ctx context.Context, ns string) error {
	if !namespaceExists(ns) {
		return nil
	}
	killErr := killNamespaceProcesses(ctx, ns)
	if err := run(ctx, "ip", "netns", "del", ns); err != nil {
		if killErr != nil {
			return fmt.Errorf("%w (and listing its processes: %v)", err, killErr)
		}
		return err
	}
	return nil
}
