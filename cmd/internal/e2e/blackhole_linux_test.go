package e2e

import (
	"errors"
	"net"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// blackHole is a loopback TCP address that never answers a connect: a
// listener with a backlog of 0 that never accepts. Linux drops a SYN to a
// listener whose accept queue is full (with backlog 0, full at once or after
// one connection, by kernel version), so a dial there hangs until its timeout,
// as one to a firewalled host does.
func blackHole(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	for range 4 {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			if ne := net.Error(nil); !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("filling the accept queue: %v", err)
			}
			return addr // full: this dial's SYN was dropped
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the accept queue of a listener with backlog 0 never filled")
	return ""
}

// The server dials a target that never answers: after --dial-timeout it
// refuses the tunnel, the client closes the application at once, and both
// ends log why.
func TestBlackHoledTargetTimesOut(t *testing.T) {
	target := blackHole(t)
	udp, listen := freePort(t, "udp"), freePort(t, "tcp")
	srv := start(t, "quictun-server", "--listen-on", udp, "--dial-timeout", "400ms")
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli := start(t, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
		"--token-source", "tcp:"+target, "--server-fingerprint", fp)
	cli.waitLog(t, "quictun-client listening")

	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write([]byte("hello?"))
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(make([]byte, 10))
	took := time.Since(start)
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v: want the application closed", n, err)
	}
	if took < 400*time.Millisecond || took > 2*time.Second {
		t.Fatalf("closed after %v: want the 400ms dial timeout, and under 2 s", took)
	}
	srv.waitLog(t, `level=WARN msg="tunnel refused" .*target=tcp:`+target+` status="target unreachable" err=".*i/o timeout"`)
	cli.waitLog(t, `msg="tunnel closed" .*reason=".*server refused tunnel: target unreachable\\n`) // the dial error stays in the server's log
}
