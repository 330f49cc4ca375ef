package host

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// openTUN creates a layer-3 TUN device without packet-information header (IFF_NO_PI:
// every read and write is exactly one IP packet) in the current network namespace, and
// returns it as a pollable *os.File so that Close unblocks a goroutine parked in Read.
// The device is not persistent: it disappears when the file is closed, also when the
// process dies, which is half of the crash cleanup for free.
func openTUN(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("create tun %s: %w", name, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tun %s non-blocking: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "tun:"+name), nil
}
