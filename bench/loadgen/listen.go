//go:build linux

package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Listening reports whether a socket of the given protocol ("tcp" or "udp") is bound
// to port in the calling thread's network namespace (/proc/thread-self/net, so it also
// answers for a thread moved into another namespace). It checks readiness without
// connecting: a probe connection through a tunnel would reach the application behind
// it (and iperf3 counts every connection it accepts).
func Listening(protocol string, port int) (bool, error) {
	var files []string
	var state string
	switch protocol {
	case "tcp":
		files, state = []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"}, "0A" // TCP_LISTEN
	case "udp":
		files, state = []string{"/proc/thread-self/net/udp", "/proc/thread-self/net/udp6"}, "07" // unconnected, bound
	default:
		return false, fmt.Errorf("protocol %q is not tcp or udp", protocol)
	}
	if port < 1 || port > 65535 {
		return false, fmt.Errorf("port %d out of range", port)
	}
	for _, name := range files {
		found, err := scanProcNet(name, port, state)
		if err != nil {
			return false, err
		}
		if found {
			return true, nil
		}
	}
	return false, nil
}

func scanProcNet(name string, port int, state string) (bool, error) {
	f, err := os.Open(name)
	if os.IsNotExist(err) {
		return false, nil // no IPv6 in this kernel or namespace
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Scan() // header
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		local, st := fields[1], fields[3]
		i := strings.LastIndexByte(local, ':')
		if i < 0 {
			continue
		}
		p, err := strconv.ParseUint(local[i+1:], 16, 16)
		if err == nil && int(p) == port && st == state {
			return true, nil
		}
	}
	return false, sc.Err()
}

// WaitListening polls until Listening is true, ctx ends or timeout passes.
func WaitListening(ctx context.Context, protocol string, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := Listening(protocol, port)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s port %d after %s", protocol, port, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
