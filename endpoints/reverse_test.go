package endpoints

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/engine"
)

const (
	aliceSecret = "alices-secret-0123456789"
	bobSecret   = "bobs-secret-0123456789ab"
)

// freeLoopback is a TCP address on a loopback IP of its own with a port
// that was free a moment ago: what a reverse forward asks the server for.
func freeLoopback(t *testing.T) string {
	t.Helper()
	ln, err := loopbackTCP().Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// reverseServer is a server that knows alice and bob, whose --allow-bind
// rules are allowBind, with mods applied last.
func reverseServer(t *testing.T, allowBind []string, mods func(*ServerConfig)) (*Server, func()) {
	t.Helper()
	return reverseServerIn(t, "", allowBind, mods)
}

// reverseServerIn is reverseServer with its key pair in stateDir ("" for a
// new one).
func reverseServerIn(t *testing.T, stateDir string, allowBind []string, mods func(*ServerConfig)) (*Server, func()) {
	t.Helper()
	ids, _, err := identity.Parse(strings.NewReader("alice "+aliceSecret+"\nbob "+bobSecret+"\n"), "ids", nil)
	if err != nil {
		t.Fatal(err)
	}
	rules, err := policy.ParseBind(allowBind)
	if err != nil {
		t.Fatal(err)
	}
	return startServer(t, pairOptions{stateDir: stateDir, serverMods: func(c *ServerConfig) {
		c.Identities, c.AllowBind = ids, rules
		c.AuthPenalty = time.Millisecond
		if mods != nil {
			mods(c)
		}
	}})
}

// reverseClient is a client with one reverse forward and no forward.
func reverseClient(t *testing.T, server net.Addr, id, secret string, rs ReverseSpec, mods func(*ClientConfig)) (*Client, func()) {
	t.Helper()
	tlsConf, err := trust.LoadClient(trust.ClientOptions{Endpoint: server.String(), KnownHosts: filepath.Join(t.TempDir(), "kh")}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg := ClientConfig{ServerEndpoint: server.String(), TLS: tlsConf, Identity: id, Secret: []byte(secret),
		Reverses: []ReverseSpec{rs}, Logger: testLogger(t).With("side", "client", "identity", id),
		DrainTimeout: time.Second, SessionWait: 5 * time.Second}
	if mods != nil {
		mods(&cfg)
	}
	cli, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cli, run(cli.Run)
}

// heldBy waits until the server's binding of listen is held by identity.
func heldBy(t *testing.T, srv *Server, listen, identity string) {
	t.Helper()
	waitUntil(t, func() bool {
		for _, b := range srv.Bindings() {
			if b.Listen == listen && b.Held && b.Identity == identity {
				return true
			}
		}
		return false
	})
}

// A reverse forward carries 64 MiB each way intact, from a connection to
// the server's listener to an application on the client's side; both
// registries show the tunnel as reverse, with the forward's name.
func TestReverseTransferBothWaysIntact(t *testing.T) {
	const size = 64 << 20
	type digest struct {
		sum [32]byte
		n   int64
	}
	got := make(chan digest, 1)
	down := make([]byte, size)
	rand.NewChaCha8([32]byte{3}).Read(down)
	target := startApp(t, loopbackTCP(), func(c net.Conn) {
		var first [1]byte
		if _, err := io.ReadFull(c, first[:]); err != nil {
			return
		}
		if first[0] == 'e' { // a small echo, to look at the registries
			c.Write(first[:])
			io.Copy(c, c)
			return
		}
		var wg sync.WaitGroup
		wg.Go(func() { c.Write(down); closeWrite(c) })
		h := sha256.New()
		h.Write(first[:])
		n, _ := io.Copy(h, c)
		wg.Wait()
		got <- digest{[32]byte(h.Sum(nil)), n + 1}
	})
	defer target.close()
	listen := freeLoopback(t)
	srv, stopServer := reverseServer(t, []string{listen}, nil)
	defer stopServer()
	cli, stopClient := reverseClient(t, srv.Addr(), "alice", aliceSecret,
		ReverseSpec{Name: "svc", ListenOn: "tcp:" + listen, Target: target.addr.String()}, nil)
	defer stopClient()
	heldBy(t, srv, listen, "alice")

	e := dialApp(t, &net.TCPAddr{IP: net.ParseIP(strings.Split(listen, ":")[0]), Port: port(listen)})
	e.SetDeadline(time.Now().Add(10 * time.Second))
	e.Write([]byte("e"))
	var b [1]byte
	if _, err := io.ReadFull(e, b[:]); err != nil || b[0] != 'e' {
		t.Fatalf("echo through the reverse forward: %q, %v", b, err)
	}
	for name, reg := range map[string]*engine.Registry{"server": srv.Registry(), "client": cli.Registry()} {
		snaps := reg.Snapshots()
		if len(snaps) != 1 || snaps[0].Info.Direction != engine.DirectionReverse || snaps[0].Info.Forward != "svc" {
			t.Fatalf("%s registry: %+v, want one reverse tunnel of forward svc", name, snaps)
		}
	}
	if s := srv.Registry().Snapshots()[0]; s.Info.Identity != "alice" {
		t.Fatalf("server's tunnel identity %q, want alice", s.Info.Identity)
	}
	e.Close()

	up := make([]byte, size)
	rand.NewChaCha8([32]byte{4}).Read(up)
	up[0] = 'b'
	c := dialApp(t, &net.TCPAddr{IP: net.ParseIP(strings.Split(listen, ":")[0]), Port: port(listen)})
	defer c.Close()
	var wg sync.WaitGroup
	wg.Go(func() { c.Write(up); closeWrite(c) })
	h := sha256.New()
	n, err := io.Copy(h, c)
	wg.Wait()
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), sha(down)) {
		t.Fatalf("to the connecting application: %d bytes, err %v, checksum ok %v", n, err, bytes.Equal(h.Sum(nil), sha(down)))
	}
	d := <-got
	if d.n != size || d.sum != [32]byte(sha(up)) {
		t.Fatalf("to the target: %d bytes, checksum ok %v", d.n, d.sum == [32]byte(sha(up)))
	}
}

func port(hostport string) int {
	_, p, _ := net.SplitHostPort(hostport)
	var n int
	for _, r := range p {
		n = n*10 + int(r-'0')
	}
	return n
}

// dialReverse dials the server's listener of a reverse forward.
func dialReverse(t *testing.T, listen string) net.Conn {
	t.Helper()
	c, err := dialFromOwnIP(listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(15 * time.Second))
	return c
}

// greets reads the greeting of the target behind a reverse forward.
func greets(t *testing.T, listen string) string {
	t.Helper()
	c := dialReverse(t, listen)
	defer c.Close()
	line, err := readGreeting(c)
	if err != nil {
		t.Fatalf("greeting through %s: %v", listen, err)
	}
	return line
}

func readGreeting(c net.Conn) (string, error) {
	var line []byte
	b := make([]byte, 1)
	for {
		if _, err := c.Read(b); err != nil {
			return string(line), err
		}
		if b[0] == '\n' {
			return string(line), nil
		}
		line = append(line, b[0])
	}
}

// Nothing is bound without a rule: the bind is refused on both sides with a
// clear status, and the address stays closed. An identity's bind= rule lets
// that identity alone bind.
func TestReverseBindRefusedByPolicy(t *testing.T) {
	target := startApp(t, loopbackTCP(), greeter("target"))
	defer target.close()
	listen := freeLoopback(t)
	ids, _, err := identity.Parse(strings.NewReader("alice "+aliceSecret+" bind="+listen+"\nbob "+bobSecret+"\n"), "ids", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.Identities = ids }})
	defer stopServer()
	rs := ReverseSpec{Name: "svc", ListenOn: "tcp:" + listen, Target: target.addr.String()}
	bob, stopBob := reverseClient(t, srv.Addr(), "bob", bobSecret, rs, nil)
	waitUntil(t, func() bool {
		return gather(t, bob)[`quictun_tunnel_failures_total{endpoint="client",reason="forbidden target"}`] >= 1
	})
	if m := gather(t, srv); m[`quictun_tunnel_failures_total{endpoint="server",reason="forbidden target"}`] < 1 {
		t.Fatal("the server did not count the refused bind")
	}
	if len(srv.Bindings()) != 0 {
		t.Fatalf("bound without a rule: %+v", srv.Bindings())
	}
	if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		c.Close()
		t.Fatal("the refused address accepts connections")
	}
	stopBob()
	_, stopAlice := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, nil)
	defer stopAlice()
	heldBy(t, srv, listen, "alice")
	if got := greets(t, listen); got != "target" {
		t.Fatalf("greeting %q", got)
	}
}

// Two clients ask for one port: the first holds it and the second is
// refused (address in use), whether it is another identity or another
// live client of the same one; connections reach the first's target.
func TestReverseTwoClientsOnePort(t *testing.T) {
	listen := freeLoopback(t)
	srv, stopServer := reverseServer(t, []string{listen}, nil)
	defer stopServer()
	first := startApp(t, loopbackTCP(), greeter("first"))
	defer first.close()
	_, stopFirst := reverseClient(t, srv.Addr(), "alice", aliceSecret,
		ReverseSpec{Name: "svc", ListenOn: "tcp:" + listen, Target: first.addr.String()}, nil)
	defer stopFirst()
	heldBy(t, srv, listen, "alice")
	for _, who := range []struct{ id, secret string }{{"bob", bobSecret}, {"alice", aliceSecret}} {
		other := startApp(t, loopbackTCP(), greeter("second"))
		cli, stop := reverseClient(t, srv.Addr(), who.id, who.secret,
			ReverseSpec{Name: "svc", ListenOn: "tcp:" + listen, Target: other.addr.String()}, nil)
		waitUntil(t, func() bool {
			return gather(t, cli)[`quictun_tunnel_failures_total{endpoint="client",reason="address in use"}`] >= 1
		})
		for range 3 {
			if got := greets(t, listen); got != "first" {
				t.Fatalf("%s's second client: a connection reached %q", who.id, got)
			}
		}
		stop()
		other.close()
	}
	heldBy(t, srv, listen, "alice")
}

// A client that vanishes without a word (its packets stop: killed) is taken
// over by its restart within the ping bound, not the idle timeout; one that
// leaves cleanly keeps its port for the grace, connections made meanwhile
// wait for its next session, and after the grace the port is released.
func TestReverseTakeoverAndGrace(t *testing.T) {
	listen := freeLoopback(t)
	srv, stopServer := reverseServer(t, []string{listen}, func(c *ServerConfig) { c.ReverseGrace = 3 * time.Second })
	defer stopServer()
	target := startApp(t, loopbackTCP(), greeter("target"))
	defer target.close()
	rs := ReverseSpec{Name: "svc", ListenOn: "tcp:" + listen, Target: target.addr.String()}

	var silent atomic.Bool
	_, stopKilled := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, func(c *ClientConfig) {
		c.WrapUDP = func(pc net.PacketConn) net.PacketConn { return &muteConn{PacketConn: pc, mute: &silent} }
	})
	heldBy(t, srv, listen, "alice")
	if got := greets(t, listen); got != "target" {
		t.Fatalf("greeting %q", got)
	}
	silent.Store(true) // killed: nothing more leaves or arrives
	start := time.Now()
	_, stopRestarted := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, nil)
	waitUntil(t, func() bool {
		return gather(t, srv)[`quictun_reverse_bindings{endpoint="server",state="held"}`] == 1 &&
			greetsOnce(listen) == "target"
	})
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("takeover took %v", took)
	}
	stopKilled()

	// A clean leave: the port stays bound, and a connection made now waits
	// for the next session.
	stopRestarted()
	waitUntil(t, func() bool {
		b := srv.Bindings()
		return len(b) == 1 && !b[0].Held
	})
	waiting := dialReverse(t, listen)
	defer waiting.Close()
	_, stopNext := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, nil)
	if line, err := readGreeting(waiting); err != nil || line != "target" {
		t.Fatalf("the waiting connection: %q, %v", line, err)
	}
	stopNext()
	waitUntil(t, func() bool { return len(srv.Bindings()) == 1 && !srv.Bindings()[0].Held })
	// After the grace the port is released.
	deadline := time.Now().Add(10 * time.Second)
	for len(srv.Bindings()) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the binding outlived its grace")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		c.Close()
		t.Fatal("the released address still accepts connections")
	}
}

func greetsOnce(listen string) string {
	c, err := dialFromOwnIP(listen, time.Second)
	if err != nil {
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	line, _ := readGreeting(c)
	return line
}

// muteConn drops everything while mute is set: a peer that was killed.
type muteConn struct {
	net.PacketConn
	mute *atomic.Bool
}

func (m *muteConn) WriteTo(p []byte, a net.Addr) (int, error) {
	if m.mute.Load() {
		return len(p), nil
	}
	return m.PacketConn.WriteTo(p, a)
}

func (m *muteConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, a, err := m.PacketConn.ReadFrom(p)
		if err != nil || !m.mute.Load() {
			return n, a, err
		}
	}
}

// A stranger cannot bind: without the secret its session never gets past
// the hello, a bind request in place of a hello closes the session, and a
// server that authenticates nobody binds for nobody.
func TestStrangerCannotBind(t *testing.T) {
	listen := freeLoopback(t)
	srv, stopServer := reverseServer(t, []string{listen, "udp:" + listen}, nil)
	defer stopServer()
	target := startApp(t, loopbackTCP(), greeter("target"))
	defer target.close()
	echoApp := startUDPApp(t, echoDatagram)
	defer echoApp.close()
	for _, rs := range []ReverseSpec{
		{Name: "svc", ListenOn: "tcp:" + listen, Target: target.addr.String()},
		{Name: "dns", ListenOn: "udp:" + listen, Target: echoApp.token()},
	} {
		before := gather(t, srv)[`quictun_hellos_total{endpoint="server",identity="alice",result="wrong proof"}`]
		_, stop := reverseClient(t, srv.Addr(), "alice", "not-alices-secret-at-all", rs, nil)
		waitUntil(t, func() bool {
			return gather(t, srv)[`quictun_hellos_total{endpoint="server",identity="alice",result="wrong proof"}`] > before
		})
		stop()
		conn := rawSession(t, srv.Addr())
		// The answer is the hello's refusal, when it comes before the session's close.
		if st, err := rawHeader(t, conn, preamble.Header{Bind: rs.ListenOn, Name: "x"}); err == nil && st.Code != preamble.CodeAuthFailed {
			t.Fatalf("a bind request (%s) in place of a hello was answered %+v", rs.ListenOn, st)
		}
		sessionClosedWith(t, conn, preamble.CodeAuthFailed, 5*time.Second)
		if len(srv.Bindings()) != 0 {
			t.Fatalf("a stranger bound: %+v", srv.Bindings())
		}
	}
	// Nor did any of that leave the UDP port bound.
	if c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(listen))); err != nil {
		t.Fatalf("the UDP port is held: %v", err)
	} else {
		c.Close()
	}

	open, stopOpen := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.AllowBind, _ = policy.ParseBind([]string{listen, "udp:" + listen})
	}})
	defer stopOpen()
	conn := helloedSession(t, open.Addr(), credentials{})
	defer conn.CloseWithError(0, "")
	for _, bind := range []string{"tcp:" + listen, "udp:" + listen} {
		st, err := rawHeader(t, conn, preamble.Header{Bind: bind, Name: "x"})
		if err != nil || st.Code != preamble.CodeForbidden || !strings.Contains(st.Message, "authentication") {
			t.Fatalf("a bind (%s) on a server without authentication: %+v, %v", bind, st, err)
		}
	}
	if len(open.Bindings()) != 0 {
		t.Fatal("a server without authentication bound")
	}

	// A rule without udp: opens no UDP port, even for a client that may bind
	// the same address and port over TCP.
	tcpOnly, stopTCPOnly := reverseServer(t, []string{listen}, nil)
	defer stopTCPOnly()
	alice := helloedSession(t, tcpOnly.Addr(), credentials{"alice", []byte(aliceSecret)})
	defer alice.CloseWithError(0, "")
	st, err := rawHeader(t, alice, preamble.Header{Bind: "udp:" + listen, Name: "x"})
	if err != nil || st.Code != preamble.CodeForbidden {
		t.Fatalf("a UDP bind under a TCP rule: %+v, %v", st, err)
	}
	if len(tcpOnly.Bindings()) != 0 {
		t.Fatalf("bound under a TCP rule: %+v", tcpOnly.Bindings())
	}
	// Datagrams are not a stream: a UDP listener needs a UDP target.
	if (ReverseSpec{ListenOn: "udp:" + listen, Target: "tcp:127.0.0.1:22"}).Check() == nil ||
		(ReverseSpec{ListenOn: "tcp:" + listen, Target: "udp:127.0.0.1:53"}).Check() == nil {
		t.Fatal("a reverse forward between UDP and TCP passed its check")
	}
	if err := (ReverseSpec{ListenOn: "udp:" + listen, Target: "udp:127.0.0.1:53"}).Check(); err != nil {
		t.Fatalf("a UDP reverse forward: %v", err)
	}
}

// SetReverses adds a reverse forward on the running session and withdraws a
// removed one at once (no grace: the client said so); /forwards lists them.
func TestSetReversesAddsAndWithdraws(t *testing.T) {
	a, b := freeLoopback(t), freeLoopback(t)
	srv, stopServer := reverseServer(t, []string{a, b}, func(c *ServerConfig) { c.ReverseGrace = time.Minute })
	defer stopServer()
	target := startApp(t, loopbackTCP(), greeter("target"))
	defer target.close()
	ra := ReverseSpec{Name: "a", ListenOn: "tcp:" + a, Target: target.addr.String()}
	rb := ReverseSpec{Name: "b", ListenOn: "tcp:" + b, Target: target.addr.String()}
	cli, stop := reverseClient(t, srv.Addr(), "alice", aliceSecret, ra, nil)
	defer stop()
	heldBy(t, srv, a, "alice")
	if err := cli.SetReverses([]ReverseSpec{ra, rb, {Name: "bad", ListenOn: "nowhere", Target: target.addr.String()}}); err == nil {
		t.Fatal("a bad spec was taken")
	}
	if err := cli.SetReverses([]ReverseSpec{ra, rb}); err != nil {
		t.Fatal(err)
	}
	heldBy(t, srv, b, "alice")
	if got := greets(t, b); got != "target" {
		t.Fatalf("greeting %q", got)
	}
	var listed []string
	for _, f := range cli.ListForwards().([]any) {
		if r, ok := f.(ReverseStatus); ok {
			listed = append(listed, r.Name+"="+r.Direction)
		}
	}
	if strings.Join(listed, ",") != "a=reverse,b=reverse" {
		t.Fatalf("/forwards lists %v", listed)
	}
	if m := gather(t, cli); m[`quictun_reverse_tunnels_opened_total{endpoint="client",reverse="b"}`] != 1 {
		t.Fatalf("reverse b's tunnels opened: %v", m[`quictun_reverse_tunnels_opened_total{endpoint="client",reverse="b"}`])
	}
	if err := cli.SetReverses([]ReverseSpec{rb}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool {
		bs := srv.Bindings()
		return len(bs) == 1 && bs[0].Listen == b
	})
	if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
		c.Close()
		t.Fatal("the withdrawn address still accepts connections")
	}
}

// A restarted server gets the reverse forwards back when the client's
// next session asks again.
func TestRestartedServerGetsReversesBack(t *testing.T) {
	listen := freeLoopback(t)
	stateDir := t.TempDir() // the restarted server keeps its key, which the client knows
	srv, stopServer := reverseServerIn(t, stateDir, []string{listen}, nil)
	udp := srv.Addr().String()
	target := startApp(t, loopbackTCP(), greeter("target"))
	defer target.close()
	_, stop := reverseClient(t, srv.Addr(), "alice", aliceSecret,
		ReverseSpec{Name: "svc", ListenOn: "tcp:" + listen, Target: target.addr.String()}, nil)
	defer stop()
	heldBy(t, srv, listen, "alice")
	stopServer()
	srv, stopServer = reverseServerIn(t, stateDir, []string{listen}, func(c *ServerConfig) { c.ListenOn = udp })
	defer stopServer()
	heldBy(t, srv, listen, "alice")
	if got := greets(t, listen); got != "target" {
		t.Fatalf("greeting after the server's restart %q", got)
	}
}

// A target the client cannot reach is its refusal: the connection on the
// server's side is closed promptly, and both sides count it.
func TestReverseUnreachableTargetCountedBothSides(t *testing.T) {
	listen := freeLoopback(t)
	srv, stopServer := reverseServer(t, []string{listen}, nil)
	defer stopServer()
	closed := freeLoopback(t) // nothing listens there any more
	cli, stop := reverseClient(t, srv.Addr(), "alice", aliceSecret,
		ReverseSpec{Name: "svc", ListenOn: "tcp:" + listen, Target: "tcp:" + closed}, nil)
	defer stop()
	heldBy(t, srv, listen, "alice")
	// The server resets the connection as soon as the client refuses, which can
	// come before the dial has returned: the reset is then the dial's error.
	c, err := dialFromOwnIP(listen, 5*time.Second)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	if err == nil {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || isTimeout(err) {
			t.Fatalf("the connection to an unreachable target: %d bytes, %v", n, err)
		}
		c.Close()
	}
	waitUntil(t, func() bool {
		return gather(t, srv)[`quictun_tunnel_failures_total{endpoint="server",reason="target unreachable"}`] >= 1 &&
			gather(t, cli)[`quictun_reverse_failures_total{endpoint="client",reverse="svc"}`] >= 1 &&
			gather(t, cli)[`quictun_tunnel_failures_total{endpoint="client",reason="target unreachable"}`] >= 1
	})
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// dialFromOwnIP dials a loopback listener from its own address rather than
// 127.0.0.1, so that the connection's tuple stays apart from the many that
// other tests leave in TIME_WAIT (see loopbackTCP).
func dialFromOwnIP(listen string, timeout time.Duration) (net.Conn, error) {
	host, _, _ := net.SplitHostPort(listen)
	d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(host)}}
	return d.Dial("tcp", listen)
}

// Clients racing for one port, started at the same instant, two identities
// with two clients each: exactly one holds it, every other is refused
// (address in use), and every connection reaches the holder's target.
func TestReverseClientsRaceForOnePort(t *testing.T) {
	listen := freeLoopback(t)
	srv, stopServer := reverseServer(t, []string{listen}, nil)
	defer stopServer()
	type racer struct {
		name string
		cli  *Client
		app  *app
	}
	var racers []racer
	for i, who := range []struct{ id, secret string }{{"alice", aliceSecret}, {"bob", bobSecret}, {"alice", aliceSecret}, {"bob", bobSecret}} {
		name := who.id + string(rune('0'+i))
		target := startApp(t, loopbackTCP(), greeter(name))
		defer target.close()
		tlsConf, err := trust.LoadClient(trust.ClientOptions{Endpoint: srv.Addr().String(), KnownHosts: filepath.Join(t.TempDir(), "kh")}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		cli, err := NewClient(ClientConfig{ServerEndpoint: srv.Addr().String(), TLS: tlsConf, Identity: who.id, Secret: []byte(who.secret),
			Reverses:     []ReverseSpec{{Name: "svc", ListenOn: "tcp:" + listen, Target: target.addr.String()}},
			Logger:       testLogger(t).With("side", "client", "racer", name),
			DrainTimeout: time.Second, SessionWait: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		racers = append(racers, racer{name, cli, target})
	}
	// All handshakes at once: each Run starts as the barrier opens.
	barrier := make(chan struct{})
	for _, r := range racers {
		defer run(func(ctx context.Context) error { <-barrier; return r.cli.Run(ctx) })()
	}
	close(barrier)

	var holder string
	waitFor(t, 20*time.Second, "one holder, the others refused", func() bool {
		bs := srv.Bindings()
		if len(bs) != 1 || !bs[0].Held {
			return false
		}
		refused := 0
		for _, r := range racers {
			if gather(t, r.cli)[`quictun_tunnel_failures_total{endpoint="client",reason="address in use"}`] >= 1 {
				refused++
			}
		}
		return refused == len(racers)-1
	})
	for _, r := range racers {
		if gather(t, r.cli)[`quictun_tunnel_failures_total{endpoint="client",reason="address in use"}`] == 0 {
			holder = r.name
		}
	}
	if holder == "" || !strings.HasPrefix(holder, srv.Bindings()[0].Identity) {
		t.Fatalf("holder %q, binding %+v", holder, srv.Bindings())
	}
	for range 8 {
		if got := greets(t, listen); got != holder {
			t.Fatalf("a connection reached %q, the holder is %q", got, holder)
		}
	}
}

// While the client is away, a new connection waits SessionWait for it and is
// then closed, counted; the listener stays bound through the grace, and the
// client's return carries the next connection.
func TestReverseConnectionWaitsThenIsClosed(t *testing.T) {
	const wait = time.Second
	listen := freeLoopback(t)
	srv, stopServer := reverseServer(t, []string{listen}, func(c *ServerConfig) {
		c.SessionWait, c.ReverseGrace = wait, time.Minute
	})
	defer stopServer()
	target := startApp(t, loopbackTCP(), greeter("target"))
	defer target.close()
	rs := ReverseSpec{Name: "svc", ListenOn: "tcp:" + listen, Target: target.addr.String()}
	_, stop := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, nil)
	heldBy(t, srv, listen, "alice")
	stop()
	waitFor(t, 10*time.Second, "the binding waits for its client", func() bool {
		b := srv.Bindings()
		return len(b) == 1 && !b[0].Held
	})
	c := dialReverse(t, listen)
	dialled := time.Now()
	n, err := c.Read(make([]byte, 1))
	waited := time.Since(dialled)
	c.Close()
	if n != 0 || err == nil || isTimeout(err) {
		t.Fatalf("a connection without a session: %d bytes, %v", n, err)
	}
	if waited < wait-100*time.Millisecond {
		t.Fatalf("closed after %v, before the session wait of %v", waited, wait)
	}
	waitFor(t, 5*time.Second, "the closed connection counted", func() bool {
		return gather(t, srv)[`quictun_tunnel_failures_total{endpoint="server",reason="reverse: no session"}`] >= 1
	})
	if b := srv.Bindings(); len(b) != 1 || b[0].Held {
		t.Fatalf("the binding during its grace: %+v", b)
	}
	_, stopAgain := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, nil)
	defer stopAgain()
	heldBy(t, srv, listen, "alice")
	if got := greets(t, listen); got != "target" {
		t.Fatalf("greeting after the client's return %q", got)
	}
}
