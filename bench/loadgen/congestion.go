//go:build linux

package loadgen

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// The TCP contenders compare congestion control algorithms per connection, never by
// changing the host default. Both ends of a connection send (the echo server sends
// every byte back), so both set it: the client on the socket it dials, the server on
// its listening socket, whose TCP_CONGESTION every accepted socket inherits.

// dialer sets the TCP congestion control on each connection it makes.
func dialer(congestion string) *net.Dialer {
	return &net.Dialer{Control: congestionControl(congestion)}
}

// Listen listens on addr (TCP) with the given congestion control set on the listening
// socket, so that every accepted connection uses it; "" leaves the host default.
func Listen(ctx context.Context, addr, congestion string) (net.Listener, error) {
	lc := net.ListenConfig{Control: congestionControl(congestion)}
	return lc.Listen(ctx, "tcp", addr)
}

// congestionControl is a Dialer/ListenConfig Control function setting TCP_CONGESTION
// before connect or listen; nil for "".
func congestionControl(congestion string) func(network, address string, c syscall.RawConn) error {
	if congestion == "" {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, congestion)
		})
		if err == nil && serr != nil {
			err = fmt.Errorf("set TCP congestion control %q: %w", congestion, serr)
		}
		return err
	}
}

// Congestion reads the TCP congestion control of a connection (TCP_CONGESTION).
func Congestion(conn net.Conn) (string, error) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return "", fmt.Errorf("%T has no socket", conn)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return "", err
	}
	var name string
	var gerr error
	if err := raw.Control(func(fd uintptr) {
		name, gerr = unix.GetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION)
	}); err != nil {
		return "", err
	}
	if gerr != nil {
		return "", fmt.Errorf("get TCP congestion control: %w", gerr)
	}
	return name, nil
}
