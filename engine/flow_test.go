package engine

import (
	"errors"
	"net"
	"testing"
	"time"
)

// udpPair is two UDP sockets on loopback connected to each other.
func udpPair(t testing.TB) (a, b *net.UDPConn) {
	t.Helper()
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err = net.DialUDP("udp", nil, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	// Connect a back to b on the same port.
	a, err = net.DialUDP("udp", a.LocalAddr().(*net.UDPAddr), b.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// startFlow runs a flow between two pairs of UDP sockets: clientApp sends
// to the flow's client side, serverApp gets what its server side sends.
func startFlow(t testing.TB, reg *Registry) (clientApp, serverApp *net.UDPConn, tn *Tunnel, done chan error) {
	t.Helper()
	clientApp, clientSide := udpPair(t)
	serverSide, serverApp := udpPair(t)
	tn = reg.Open(t.Context(), Info{Endpoint: ClientEndpoint})
	done = make(chan error, 1)
	go func() { done <- tn.RunFlow(ConnSide(clientSide), ConnSide(serverSide)) }()
	return clientApp, serverApp, tn, done
}

func ended(t testing.TB, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("flow did not end")
		return nil
	}
}

func read(t testing.TB, c *net.UDPConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 100)
	n, err := c.Read(b)
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n])
}

// A flow counts datagrams, one per Read, and an unanswered one ends after
// the unreplied timeout even though the replied one is long.
func TestFlowUnrepliedTimeout(t *testing.T) {
	reg := NewRegistry(Config{Flow: FlowTimeouts{Unreplied: 200 * time.Millisecond, Replied: time.Hour}})
	clientApp, serverApp, tn, done := startFlow(t, reg)
	for _, m := range []string{"one", "two", "three"} {
		clientApp.Write([]byte(m))
		if got := read(t, serverApp); got != m {
			t.Fatalf("server app got %q, want %q: datagram boundaries kept", got, m)
		}
	}
	if err := ended(t, done); !errors.Is(err, ErrIdle) {
		t.Fatalf("got %v, want ErrIdle", err)
	}
	if up, down, dropped := tn.Packets(); up != 3 || down != 0 || dropped != 0 || !tn.Datagrams() {
		t.Fatalf("packets %d up, %d down, %d dropped", up, down, dropped)
	}
}

// Once answered, a flow lives by the replied timeout: it outlasts several
// unreplied timeouts, then ends by the replied one.
func TestFlowRepliedTimeout(t *testing.T) {
	reg := NewRegistry(Config{Flow: FlowTimeouts{Unreplied: 50 * time.Millisecond, Replied: 600 * time.Millisecond}})
	clientApp, serverApp, tn, done := startFlow(t, reg)
	clientApp.Write([]byte("ping"))
	read(t, serverApp)
	serverApp.Write([]byte("pong"))
	if got := read(t, clientApp); got != "pong" {
		t.Fatalf("client app got %q", got)
	}
	start := time.Now()
	if err := ended(t, done); !errors.Is(err, ErrIdle) {
		t.Fatalf("got %v, want ErrIdle", err)
	}
	// It can end late on a loaded machine, never early.
	if lived := time.Since(start); lived < 400*time.Millisecond {
		t.Fatalf("an answered flow ended after %v, before its replied timeout", lived)
	}
	if up, down, _ := tn.Packets(); up != 1 || down != 1 {
		t.Fatalf("packets %d up, %d down", up, down)
	}
}
