package address

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// UnixTargetsSupported says whether this platform dials UNIX socket targets:
// only Linux can check one and connect to the very file it checked.
const UnixTargetsSupported = true

// dialUnix connects to the socket at path without a check-then-use race: it
// opens the path itself (O_PATH|O_NOFOLLOW: a symbolic link in the last
// component is opened as the link, never followed), checks on that descriptor
// that it is a socket, and connects through /proc/self/fd/N, which the kernel
// resolves to the inode the descriptor holds. Whatever is renamed or swapped
// at path in between, the connection reaches the socket that was checked.
// The directories above the last component are followed as usual: an allow
// rule names them (/var/run is itself a link on Debian).
func dialUnix(ctx context.Context, d *net.Dialer, path string) (net.Conn, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: Unix, Addr: &net.UnixAddr{Name: path, Net: Unix}, Err: os.NewSyscallError("open", err)}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("dial unix %s: %w", path, os.NewSyscallError("fstat", err))
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFSOCK:
	case unix.S_IFLNK:
		return nil, fmt.Errorf("dial unix %s: %w: a symbolic link (name the socket itself)", path, ErrNotSocket)
	default:
		return nil, fmt.Errorf("dial unix %s: %w", path, ErrNotSocket)
	}
	via := "/proc/self/fd/" + strconv.Itoa(fd)
	c, err := d.DialContext(ctx, Unix, via)
	if err != nil {
		if _, statErr := os.Stat("/proc/self/fd"); statErr != nil {
			return nil, fmt.Errorf("dial unix %s: UNIX targets are connected through /proc/self/fd, which is not available (is /proc mounted?): %w", path, statErr)
		}
		return nil, fmt.Errorf("dial unix %s: %w", path, unwrapOpError(err))
	}
	return c, nil
}

// unwrapOpError drops net's "dial unix /proc/self/fd/N: " so that the error
// names the path that was asked for, not the descriptor.
func unwrapOpError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err
	}
	return err
}
