//go:build !linux && !windows

package address

import (
	"context"
	"fmt"
	"net"
	"runtime"
)

// UnixTargetsSupported says whether this platform dials UNIX socket targets:
// only Linux can check one and connect to the very file it checked.
const UnixTargetsSupported = false

// dialUnix refuses: without O_PATH and /proc/self/fd, a check that the path
// is a socket and not a link could be raced by a swap before the connect.
func dialUnix(_ context.Context, _ *net.Dialer, path string) (net.Conn, error) {
	return nil, fmt.Errorf("dial unix %s: UNIX socket targets are supported on Linux only (on %s they cannot be checked without a race)", path, runtime.GOOS)
}
