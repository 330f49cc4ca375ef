package e2e

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// slowSource is a server application that answers each request (one byte)
// with size random bytes spread over about d, then closes.
func slowSource(t *testing.T, size int, d time.Duration) (addr string, sum [32]byte) {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(data)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
					return
				}
				const chunks = 40
				for i := range chunks {
					if _, err := c.Write(data[i*size/chunks : (i+1)*size/chunks]); err != nil {
						return
					}
					time.Sleep(d / chunks)
				}
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), sha256.Sum256(data)
}

// SIGTERM to both endpoints while a tunnel is in the middle of a transfer:
// neither takes a new tunnel, the live one finishes with every byte, and both
// exit 0 once it has, well within --drain-timeout.
func TestSIGTERMDrainsALiveTunnel(t *testing.T) {
	const size, spread, drain = 8 << 20, 2 * time.Second, 8 * time.Second
	target, want := slowSource(t, size, spread)
	udp, listen := freePort(t, "udp"), freePort(t, "tcp")
	srv := start(t, "quictun-server", "--listen-on", udp, "--drain-timeout", drain.String())
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli := start(t, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
		"--token-source", "tcp:"+target, "--server-fingerprint", fp, "--drain-timeout", drain.String())
	cli.waitLog(t, "quictun-client listening")

	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	c.Write([]byte("?"))
	// Half-closed: the server's side of the tunnel ends right behind the
	// application's last bytes, the hardest case for the drain.
	c.(*net.TCPConn).CloseWrite()
	h := sha256.New()
	if _, err := io.CopyN(h, c, 64<<10); err != nil {
		t.Fatalf("the transfer did not start: %v", err)
	}

	signalled := time.Now()
	for _, p := range []*proc{srv, cli} {
		p.cmd.Process.Signal(syscall.SIGTERM)
	}
	srv.waitLog(t, "shutting down: draining tunnels")
	cli.waitLog(t, "shutting down: draining tunnels")
	if !exited(cli) && !exited(srv) {
		// While draining, neither endpoint takes a new tunnel.
		if late, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
			late.SetReadDeadline(time.Now().Add(5 * time.Second))
			late.Write([]byte("?"))
			if n, _ := late.Read(make([]byte, 1)); n != 0 {
				t.Error("a tunnel opened after SIGTERM got data")
			}
			late.Close()
		}
	}

	n, err := io.Copy(h, c)
	finished := time.Now()
	if err != nil || n+64<<10 != size || [32]byte(h.Sum(nil)) != want {
		t.Fatalf("after SIGTERM: %d of %d bytes, %v, checksum ok %v", n+64<<10, size, err, [32]byte(h.Sum(nil)) == want)
	}
	if finished.Sub(signalled) < spread/2 {
		t.Fatalf("the transfer finished %v after SIGTERM: the test did not catch it live", finished.Sub(signalled))
	}
	c.Close()
	for name, p := range map[string]*proc{"server": srv, "client": cli} {
		select {
		case <-p.done:
		case <-time.After(signalled.Add(drain + 2*time.Second).Sub(time.Now())):
			t.Fatalf("%s: no exit within the drain bound", name)
		}
		exitedAt := time.Now()
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("%s: exit code %d after SIGTERM", name, code)
		}
		t.Logf("%s exited %v after SIGTERM (transfer done after %v)", name,
			exitedAt.Sub(signalled).Round(time.Millisecond), finished.Sub(signalled).Round(time.Millisecond))
	}
}

func exited(p *proc) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
