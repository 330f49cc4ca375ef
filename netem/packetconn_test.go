package netem

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/quictun/quictun/internal/testtls"
)

func listenLoopbackUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPacketConnLossOverUDP(t *testing.T) {
	defer goleak.VerifyNone(t)
	recv := listenLoopbackUDP(t)
	defer recv.Close()
	if err := recv.SetReadBuffer(8 << 20); err != nil {
		t.Fatal(err)
	}
	send := NewPacketConn(listenLoopbackUDP(t), Model{Loss: 0.1, Delay: time.Millisecond}, 11)
	defer send.Close()

	const n = 1000
	payload := make([]byte, 1200)
	for i := range n {
		payload[0], payload[1] = byte(i>>8), byte(i)
		if nw, err := send.WriteTo(payload, recv.LocalAddr()); err != nil || nw != len(payload) {
			t.Fatalf("WriteTo = %d, %v", nw, err)
		}
		if i%100 == 99 {
			time.Sleep(2 * time.Millisecond) // stay well inside the loopback socket buffer
		}
	}
	var s Stats
	waitFor(t, "the emulated wire to drain", func() bool {
		s = send.Stats()
		return s.Delivered+s.DroppedLoss == n
	})
	if s.DroppedLoss < 60 || s.DroppedLoss > 140 || s.DroppedQueue != 0 || s.DeliverErrors != 0 {
		t.Fatalf("stats %+v: want about 100 of %d lost, none dropped otherwise", s, n)
	}
	// Read while the sender writes would be closer to life, but the socket buffer is
	// large enough here that reading afterwards loses nothing.
	got, last := 0, -1
	buf := make([]byte, 2048)
	for got < int(s.Delivered) {
		_ = recv.SetReadDeadline(time.Now().Add(2 * time.Second))
		nr, _, err := recv.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", got, s.Delivered, err)
		}
		seq := int(buf[0])<<8 | int(buf[1])
		if nr != len(payload) || seq <= last {
			t.Fatalf("datagram %d: %d bytes, sequence %d after %d", got, nr, seq, last)
		}
		last = seq
		got++
	}
}

func TestPacketConnForwardsConnMethods(t *testing.T) {
	defer goleak.VerifyNone(t)
	inner := listenLoopbackUDP(t)
	c := NewPacketConn(inner, Model{}, 1)
	if c.LocalAddr().String() != inner.LocalAddr().String() {
		t.Errorf("LocalAddr %v, want %v", c.LocalAddr(), inner.LocalAddr())
	}
	if err := c.SetReadBuffer(1 << 20); err != nil {
		t.Errorf("SetReadBuffer: %v", err)
	}
	if err := c.SetWriteBuffer(1 << 20); err != nil {
		t.Errorf("SetWriteBuffer: %v", err)
	}
	if err := c.SetReadDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadFrom(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("ReadFrom past the deadline = %v, want a timeout", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WriteTo([]byte{1}, inner.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo after Close = %v, want net.ErrClosed", err)
	}
	if _, _, err := inner.ReadFrom(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("inner conn still open after Close: %v", err)
	}
}

func TestPacketConnInvalidModel(t *testing.T) {
	defer goleak.VerifyNone(t)
	c := NewPacketConn(listenLoopbackUDP(t), Model{Loss: 3}, 1)
	defer c.Close()
	if _, err := c.WriteTo([]byte{1}, c.LocalAddr()); err == nil {
		t.Error("WriteTo with loss 3 succeeded")
	}
}

// TestQUICOverLossyLink moves 1 MiB through quic-go with 5% loss and a few ms of delay
// in both directions, both ends wrapped, and checks it arrives intact.
func TestQUICOverLossyLink(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	m := Model{Loss: 0.05, Delay: 2 * time.Millisecond, Jitter: time.Millisecond}
	serverConn := NewPacketConn(listenLoopbackUDP(t), m, 1)
	clientConn := NewPacketConn(listenLoopbackUDP(t), m, 2)
	serverTr := &quic.Transport{Conn: serverConn}
	clientTr := &quic.Transport{Conn: clientConn}
	defer func() {
		clientTr.Close()
		serverTr.Close()
		clientConn.Close()
		serverConn.Close()
	}()

	ln, err := serverTr.Listen(testtls.Server(t, "netem-test"), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	data := make([]byte, 1<<20)
	_, _ = rand.Read(data)

	type result struct {
		sum [32]byte
		n   int
		err error
	}
	received := make(chan result, 1)
	go func() {
		r := result{}
		defer func() { received <- r }()
		conn, err := ln.Accept(ctx)
		if err != nil {
			r.err = err
			return
		}
		defer conn.CloseWithError(0, "")
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			r.err = err
			return
		}
		h := sha256.New()
		n, err := io.Copy(h, str)
		r.n, r.err = int(n), err
		copy(r.sum[:], h.Sum(nil))
		if err == nil {
			_, r.err = str.Write([]byte("ok"))
			_ = str.Close()
		}
		// The client closes the connection once it has read the answer; closing first
		// here could discard "ok" before it got across the lossy link.
		select {
		case <-conn.Context().Done():
		case <-ctx.Done():
		}
	}()

	conn, err := clientTr.Dial(ctx, serverConn.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"netem-test"}}, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	str, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := str.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := str.Close(); err != nil {
		t.Fatal(err)
	}
	ack, err := io.ReadAll(str)
	if err != nil || !bytes.Equal(ack, []byte("ok")) {
		t.Fatalf("server answer %q, %v", ack, err)
	}
	_ = conn.CloseWithError(0, "")
	r := <-received
	if r.err != nil {
		t.Fatalf("server: %v", r.err)
	}
	if r.n != len(data) || r.sum != sha256.Sum256(data) {
		t.Fatalf("server received %d bytes with a different digest", r.n)
	}
	up, down := clientConn.Stats(), serverConn.Stats()
	if up.DroppedLoss == 0 || down.DroppedLoss == 0 {
		t.Errorf("no loss was emulated: up %+v down %+v", up, down)
	}
	t.Logf("up: %d datagrams sent, %d lost; down: %d sent, %d lost", up.Sent, up.DroppedLoss, down.Sent, down.DroppedLoss)
}
