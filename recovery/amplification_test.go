package recovery

import (
	"bytes"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quictun/quictun/codecs/fecframe"
)

// bytesArriving counts the bytes that reach sock until it has been quiet for
// 200 ms.
func bytesArriving(t *testing.T, sock *net.UDPConn) (total, datagrams int) {
	t.Helper()
	buf := make([]byte, 2048)
	for {
		sock.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, _, err := sock.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return total, datagrams
		}
		if err != nil {
			t.Fatal(err)
		}
		total += n
		datagrams++
	}
}

// A datagram with a spoofed source must not make the layer a strong reflector:
// quic-go answers an unproven address with at most three times what came from
// it, and the layer's Hellos, HelloAcks and handshake copies add at most as much
// again as came in. A path a client dials (Config.Dialer) gets its copies; a
// server writing first to an address it holds no state for adds nothing.
func TestAmplificationBound(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv, err := NewConn(listenLoopback(t), Config{Mode: Auto})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := srv.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	victim := listenLoopback(t)
	defer victim.Close()

	// One 1200-byte "Initial" from the victim's address, then quic-go's answer
	// to it: three datagrams of the same size, its own limit.
	const size = 1200
	victim.UDPConn.WriteTo(bytes.Repeat([]byte{0xc0}, size), srv.LocalAddr())
	deadline := time.Now().Add(5 * time.Second)
	for srv.Stats().Peers != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	for range 3 {
		if _, err := srv.WriteTo(bytes.Repeat([]byte{0xc1}, size), victim.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	if got, n := bytesArriving(t, victim.UDPConn); got > 4*size || got < 3*size {
		t.Fatalf("the victim got %d bytes in %d datagrams for the %d it 'sent': want quic-go's 3x plus at most 1x", got, n, size)
	}

	// A Hello flood in the victim's name: each HelloAck (25 bytes) is paid for
	// by what came from the address, so 9-byte Hellos alone buy next to nothing.
	other := listenLoopback(t)
	defer other.Close()
	for range 100 {
		other.UDPConn.WriteTo(fecframe.AppendHello(nil, 7), srv.LocalAddr())
	}
	if got, _ := bytesArriving(t, other.UDPConn); got > 100*fecframe.HelloLen {
		t.Fatalf("100 Hellos of %d bytes drew %d bytes", fecframe.HelloLen, got)
	}

	// The server writes first to an address it knows nothing of: plain only.
	peerSock := listenLoopback(t)
	defer peerSock.Close()
	if _, err := srv.WriteTo(bytes.Repeat([]byte{0xc1}, size), peerSock.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got, n := bytesArriving(t, peerSock.UDPConn); n != 1 || got != size {
		t.Fatalf("a stranger the server wrote to first got %d bytes in %d datagrams, want the one", got, n)
	}
	srv.Close()
	<-done

	// A client dials: the first datagrams go out three times, with a Hello.
	cli, err := NewConn(listenLoopback(t), Config{Mode: Auto, Dialer: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.WriteTo(bytes.Repeat([]byte{0xc1}, size), peerSock.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if got, n := bytesArriving(t, peerSock.UDPConn); n != 4 || got != 3*size+fecframe.HelloLen {
		t.Fatalf("a path we dialled got %d bytes in %d datagrams, want 3 copies and a Hello", got, n)
	}
}
