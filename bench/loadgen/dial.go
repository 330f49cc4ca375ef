//go:build linux

package loadgen

import (
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// dialer sets the TCP congestion control on each connection it makes, so a benchmark
// compares algorithms per connection and never touches the host's default.
func dialer(congestion string) *net.Dialer {
	d := &net.Dialer{}
	if congestion == "" {
		return d
	}
	d.Control = func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, congestion)
		})
		if err == nil && serr != nil {
			err = fmt.Errorf("set TCP congestion control %q: %w", congestion, serr)
		}
		return err
	}
	return d
}
