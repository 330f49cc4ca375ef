package address

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
)

// UnixTargetsSupported says whether this platform dials UNIX socket targets: Windows
// has AF_UNIX since Windows 10 (1803).
const UnixTargetsSupported = true

// dialUnix connects to the socket at path when its last component is a socket itself
// (an AF_UNIX reparse point), not a symbolic link or another file. Windows has no
// O_PATH to connect through the very file checked, so the check runs before the
// connect and again after it, and the connection is kept only when both saw the same
// file: a swap between them is caught; what is left is a swap and a swap back within
// the connect, by someone who may write the socket's folder.
func dialUnix(ctx context.Context, d *net.Dialer, path string) (net.Conn, error) {
	before, err := socketAt(path)
	if err != nil {
		return nil, err
	}
	c, err := d.DialContext(ctx, Unix, path)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) {
			err = oe.Err
		}
		return nil, fmt.Errorf("dial unix %s: %w", path, err)
	}
	after, err := socketAt(path)
	if err != nil || !os.SameFile(before, after) {
		c.Close()
		return nil, fmt.Errorf("dial unix %s: %w: the file changed while connecting", path, ErrNotSocket)
	}
	return c, nil
}

// socketAt checks that path itself is a socket.
func socketAt(path string) (os.FileInfo, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: Unix, Addr: &net.UnixAddr{Name: path, Net: Unix}, Err: err}
	}
	switch {
	case fi.Mode()&os.ModeSocket != 0:
		return fi, nil
	case fi.Mode()&os.ModeSymlink != 0:
		return nil, fmt.Errorf("dial unix %s: %w: a symbolic link (name the socket itself)", path, ErrNotSocket)
	}
	return nil, fmt.Errorf("dial unix %s: %w", path, ErrNotSocket)
}
