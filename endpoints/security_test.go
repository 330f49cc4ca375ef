package endpoints

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/policy"
)

// roundTrip sends a message through the client endpoint and expects it back.
func roundTrip(t *testing.T, a net.Addr, msg string) {
	t.Helper()
	c := dialApp(t, a)
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write([]byte(msg))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("round trip: %q, %v", buf, err)
	}
}

func TestSharedSecret(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.Secret = []byte("open sesame") }})
	defer stopServer()
	for _, secret := range []string{"", "open sesam", "open sesame!"} {
		cli, stop := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String(),
			clientMods: func(c *ClientConfig) { c.Secret = []byte(secret) }})
		assertClosedPromptly(t, cli.Addr(), true)
		stop()
	}
	cli, stop := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String(),
		clientMods: func(c *ClientConfig) { c.Secret = []byte("open sesame") }})
	defer stop()
	roundTrip(t, cli.Addr(), "with the right secret")
	if got := gather(t, srv)[`quictun_tunnel_failures_total{endpoint="server",reason="authentication failed"}`]; got != 3 {
		t.Fatalf("%v auth failures counted, want 3", got)
	}
}

func TestAllowRules(t *testing.T) {
	allowed := startApp(t, loopbackTCP(), echo)
	defer allowed.close()
	other := startApp(t, loopbackTCP(), echo)
	defer other.close()
	pol, err := policy.Parse([]string{allowed.addr.Addr})
	if err != nil {
		t.Fatal(err)
	}
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.Policy = pol }})
	defer stopServer()
	bad, stopBad := startClient(t, srv.Addr().String(), pairOptions{token: other.addr.String()})
	defer stopBad()
	assertClosedPromptly(t, bad.Addr(), true)
	good, stopGood := startClient(t, srv.Addr().String(), pairOptions{token: allowed.addr.String()})
	defer stopGood()
	roundTrip(t, good.Addr(), "allowed")
	if got := gather(t, srv)[`quictun_tunnel_failures_total{endpoint="server",reason="forbidden target"}`]; got != 1 {
		t.Fatalf("%v forbidden counted, want 1", got)
	}
}

// Over a limit, the new tunnel is refused and the live ones are untouched.
func TestTunnelLimitRefusesOnlyTheNewOne(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	p := startPair(t, pairOptions{token: app.addr.String(),
		serverMods: func(c *ServerConfig) { c.Limits.MaxTunnelsPerSession = 2 }})
	defer p.stop()
	var live []net.Conn
	for range 2 {
		c := dialApp(t, p.client.Addr())
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("x"))
		io.ReadFull(c, make([]byte, 1))
		live = append(live, c)
	}
	assertClosedPromptly(t, p.client.Addr(), true)
	for _, c := range live {
		c.Write([]byte("still here"))
		if _, err := io.ReadFull(c, make([]byte, 10)); err != nil {
			t.Fatalf("a live tunnel was hurt by the refusal: %v", err)
		}
	}
	live[0].Close()
	waitUntil(t, func() bool { return p.server.Registry().Len() == 1 })
	roundTrip(t, p.client.Addr(), "room again")
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
	}
}

// A session limit refuses the extra session; the first keeps working.
func TestSessionLimit(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.Limits.MaxSessions = 1 }})
	defer stopServer()
	first, stopFirst := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String()})
	defer stopFirst()
	roundTrip(t, first.Addr(), "first")
	second, stopSecond := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String(),
		clientMods: func(c *ClientConfig) { c.SessionWait = 500 * time.Millisecond }})
	defer stopSecond()
	c := dialApp(t, second.Addr())
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("second session got a tunnel past MaxSessions")
	}
	c.Close()
	roundTrip(t, first.Addr(), "first still works")
}

// Streams that never finish their header, and garbage datagrams, cost the
// server nothing lasting: a normal tunnel works meanwhile and afterwards.
func TestStalledHeadersAndGarbage(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	p := startPair(t, pairOptions{token: app.addr.String(),
		serverMods: func(c *ServerConfig) { c.PreambleTimeout = 300 * time.Millisecond }})
	defer p.stop()

	// A raw QUIC client that opens streams, sends one byte of a header, stalls.
	tlsConf := p.client.cfg.TLS.Clone()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, p.server.Addr().String(), tlsConf, quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	var stalled []*quic.Stream
	for range 20 {
		st, err := conn.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{preamble.Version})
		stalled = append(stalled, st)
	}
	// Garbage of every size on the server's port.
	junk, err := net.Dial("udp", p.server.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer junk.Close()
	buf := make([]byte, 1500)
	for i := range 5000 {
		rand.Read(buf)
		junk.Write(buf[:1+i%len(buf)])
	}
	roundTrip(t, p.client.Addr(), "through the noise")

	// The stalled streams are reset by the server once the header timeout passes.
	for _, st := range stalled {
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Read(make([]byte, 1)); err == nil {
			t.Fatal("a stalled stream was answered")
		}
	}
	if live := p.server.Registry().Len(); live != 0 {
		t.Fatalf("%d tunnels live after the stalled streams", live)
	}
	roundTrip(t, p.client.Addr(), "and afterwards")
}
