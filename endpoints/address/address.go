// Package address parses and uses the application addresses of quictun:
// "tcp:HOST:PORT", "unix:PATH", "udp:HOST:PORT", or a bare "HOST:PORT"
// meaning tcp.
package address

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// Networks an Address can name.
const (
	TCP  = "tcp"
	Unix = "unix"
	// UDP addresses carry flows of datagrams (see endpoints' UDP flows), not
	// connections: they are listened on with ListenPacket.
	UDP = "udp"
)

// ErrNotSocket is a UNIX target path whose last component is a symbolic link
// or not a socket at all.
var ErrNotSocket = errors.New("not a socket")

// maxUnixPath is the size of sun_path on Linux minus the terminating NUL.
const maxUnixPath = 107

// Address is an application endpoint: a TCP or UDP host and port, or a UNIX
// socket path.
type Address struct {
	Network string // TCP, Unix or UDP
	Addr    string // "host:port" for TCP and UDP, the path for Unix
}

// Parse reads "tcp:HOST:PORT", "unix:PATH" or "HOST:PORT". IPv6 literals take
// brackets ("tcp:[::1]:22"). The host may be empty only for a listen address
// (":6500"), which ParseListen allows.
func Parse(s string) (Address, error) {
	a, err := parse(s)
	if err != nil {
		return Address{}, err
	}
	if a.Network == TCP || a.Network == UDP {
		host, _, _ := net.SplitHostPort(a.Addr)
		if host == "" {
			return Address{}, fmt.Errorf("address %q: missing host", s)
		}
	}
	return a, nil
}

// ParseListen is Parse for an address to listen on, where an empty host means
// every interface.
func ParseListen(s string) (Address, error) { return parse(s) }

func parse(s string) (Address, error) {
	switch {
	case strings.HasPrefix(s, "unix:"):
		path := strings.TrimPrefix(s, "unix:")
		if path == "" {
			return Address{}, fmt.Errorf("address %q: empty socket path", s)
		}
		if len(path) > maxUnixPath {
			return Address{}, fmt.Errorf("address %q: socket path longer than %d bytes", s, maxUnixPath)
		}
		if strings.ContainsRune(path, 0) {
			return Address{}, fmt.Errorf("address %q: NUL in socket path", s)
		}
		return Address{Network: Unix, Addr: path}, nil
	case strings.HasPrefix(s, "tcp:"):
		s = strings.TrimPrefix(s, "tcp:")
	case strings.HasPrefix(s, "udp:"):
		rest := strings.TrimPrefix(s, "udp:")
		a, err := parse(rest)
		if err != nil || strings.HasPrefix(rest, "tcp:") || a.Network != TCP { // "udp:unix:..." is no address
			return Address{}, fmt.Errorf("address %q: want udp:HOST:PORT", s)
		}
		a.Network = UDP
		return a, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Address{}, fmt.Errorf("address %q: want tcp:HOST:PORT, unix:PATH, udp:HOST:PORT or HOST:PORT (%s)", s, addrErrText(err))
	}
	if err := checkPort(port); err != nil {
		return Address{}, fmt.Errorf("address %q: %w", s, err)
	}
	if strings.ContainsAny(host, " /\\\x00") {
		return Address{}, fmt.Errorf("address %q: bad host %q", s, host)
	}
	return Address{Network: TCP, Addr: net.JoinHostPort(host, port)}, nil
}

// ParseHostPort checks a UDP endpoint address ("HOST:PORT", IPv6 in brackets).
func ParseHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("endpoint %q: want HOST:PORT (%s)", s, addrErrText(err))
	}
	if strings.ContainsAny(host, " /\\\x00") {
		return fmt.Errorf("endpoint %q: bad host %q", s, host)
	}
	if err := checkPort(port); err != nil {
		return fmt.Errorf("endpoint %q: %w", s, err)
	}
	return nil
}

// addrErrText is the reason inside a net.AddrError, without the address that
// the caller's message already shows.
func addrErrText(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}

func checkPort(port string) error {
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

func (a Address) String() string { return a.Network + ":" + a.Addr }

// Display is the address as the API shows it, in the original quic-tun's form:
// a bare HOST:PORT for TCP ("10.0.0.5:22", "[::1]:22") and unix:PATH for a
// UNIX socket, so that the two cannot be confused.
func (a Address) Display() string {
	if a.Network == TCP {
		return a.Addr
	}
	return a.String()
}

// DisplayConn is the application end of an accepted connection as the API
// shows it: the peer's HOST:PORT for TCP, and unix:PATH for a UNIX socket,
// where the path is the peer's name or, for the usual unnamed peer, the socket
// it connected to.
func DisplayConn(c net.Conn) string {
	ua, ok := c.RemoteAddr().(*net.UnixAddr)
	if !ok {
		return c.RemoteAddr().String()
	}
	name := ua.Name
	if name == "" || name == "@" {
		name = c.LocalAddr().String()
	}
	return Unix + ":" + name
}

// Dial connects to the address within timeout (and ctx). A UNIX socket is
// connected only when the path's last component is a socket itself, not a
// symbolic link and not another kind of file (see dialUnix).
func (a Address) Dial(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	if a.Network == Unix && !strings.HasPrefix(a.Addr, "@") {
		return dialUnix(ctx, d, a.Addr)
	}
	// net's error already names the network and address.
	return d.DialContext(ctx, a.Network, a.Addr)
}

// Listen opens a listener on the address. For a UNIX socket, a stale socket
// file left by a crashed process is removed first, but only when nothing
// answers on it: a live socket is never stolen.
func (a Address) Listen() (net.Listener, error) {
	if a.Network == UDP {
		return nil, fmt.Errorf("listen on %s: a UDP address takes datagrams, not connections", a)
	}
	if a.Network == Unix && !strings.HasPrefix(a.Addr, "@") {
		if err := removeStaleSocket(a.Addr); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", a, err)
		}
	}
	ln, err := net.Listen(a.Network, a.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a, err)
	}
	return ln, nil
}

// ListenPacket opens a UDP socket on a UDP address.
func (a Address) ListenPacket() (*net.UDPConn, error) {
	if a.Network != UDP {
		return nil, fmt.Errorf("listen on %s: not a UDP address", a)
	}
	ua, err := net.ResolveUDPAddr(UDP, a.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a, err)
	}
	c, err := net.ListenUDP(UDP, ua)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", a, err)
	}
	return c, nil
}

func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout(Unix, path, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("%s is in use by another process", path)
	}
	return os.Remove(path)
}
