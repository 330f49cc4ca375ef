//go:build linux

package host

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// openTUN creates a layer-3 TUN device without packet-information header (IFF_NO_PI:
// every read and write is exactly one IP packet) in the current network namespace and
// returns its non-blocking fd. The forwarder polls it itself, on real-time threads,
// rather than through Go's netpoller (see forwarder). The device is not persistent: it
// disappears when the fd is closed, also when the process dies, which is half of the
// crash cleanup for free.
func openTUN(name string) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("create tun %s: %w", name, err)
	}
	return fd, nil
}
