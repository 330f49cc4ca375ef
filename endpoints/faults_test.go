package endpoints

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/internal/logtap"
	"github.com/quictun/quictun/netem"
	"github.com/quictun/quictun/recovery"
)

// transferThrough sends size random bytes through the client endpoint to a
// checksumApp, runs during meanwhile, and checks the checksum that comes back.
func transferThrough(t *testing.T, client net.Addr, size int, during func()) {
	t.Helper()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{9}).Read(data)
	c := dialApp(t, client)
	defer c.Close()
	c.SetDeadline(time.Now().Add(60 * time.Second))
	done := make(chan error, 1)
	go func() {
		for off := 0; off < len(data); off += 64 << 10 {
			if _, err := c.Write(data[off:min(off+64<<10, len(data))]); err != nil {
				done <- err
				return
			}
		}
		done <- closeWrite(c)
	}()
	during()
	if err := <-done; err != nil {
		t.Fatalf("send: %v", err)
	}
	var reply [32]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		t.Fatalf("no checksum back: %v", err)
	}
	if reply != sha256.Sum256(data) {
		t.Fatal("the server application received different bytes")
	}
}

func checksumApp(t *testing.T) *app {
	return startApp(t, loopbackTCP(), func(c net.Conn) {
		h := sha256.New()
		io.Copy(h, c)
		c.Write(h.Sum(nil))
	})
}

// All packets are dropped both ways for 5 s in the middle of a transfer: the
// session survives and every byte arrives.
func TestFiveSecondBlackout(t *testing.T) {
	if testing.Short() {
		t.Skip("5 s blackout: not in -short")
	}
	app := checksumApp(t)
	defer app.close()
	var links []*netem.PacketConn
	var mu sync.Mutex
	wrap := func(pc net.PacketConn) net.PacketConn {
		l := netem.NewPacketConn(pc, netem.Model{Delay: 5 * time.Millisecond}, int64(len(links)+1))
		mu.Lock()
		links = append(links, l)
		mu.Unlock()
		return l
	}
	p := startPair(t, pairOptions{token: app.addr.String(),
		serverMods: func(c *ServerConfig) { c.WrapUDP = wrap },
		clientMods: func(c *ClientConfig) { c.WrapUDP = wrap }})
	defer p.stop()
	transferThrough(t, p.client.Addr(), 32<<20, func() {
		time.Sleep(200 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		for _, l := range links {
			l.SetModel(netem.Model{Delay: 5 * time.Millisecond, Loss: 1})
		}
		time.Sleep(5 * time.Second)
		for _, l := range links {
			l.SetModel(netem.Model{Delay: 5 * time.Millisecond})
		}
	})
}

// rebindingConn is a client's UDP socket behind a NAT that changes its mapping:
// rebind moves it to a new local port mid-session.
type rebindingConn struct {
	mu  sync.Mutex
	cur *net.UDPConn
}

func (r *rebindingConn) conn() *net.UDPConn {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

func (r *rebindingConn) rebind(t *testing.T) {
	fresh, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	old := r.cur
	r.cur = fresh
	r.mu.Unlock()
	old.Close()
}

func (r *rebindingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c := r.conn()
		n, a, err := c.ReadFrom(b)
		if err != nil && c != r.conn() {
			continue // the socket was swapped under the read
		}
		return n, a, err
	}
}
func (r *rebindingConn) WriteTo(b []byte, a net.Addr) (int, error) { return r.conn().WriteTo(b, a) }
func (r *rebindingConn) Close() error                              { return r.conn().Close() }
func (r *rebindingConn) LocalAddr() net.Addr                       { return r.conn().LocalAddr() }
func (r *rebindingConn) SetDeadline(t time.Time) error             { return r.conn().SetDeadline(t) }
func (r *rebindingConn) SetReadDeadline(t time.Time) error         { return r.conn().SetReadDeadline(t) }
func (r *rebindingConn) SetWriteDeadline(t time.Time) error        { return r.conn().SetWriteDeadline(t) }

// A client whose UDP source port changes (NAT rebinding) in the middle of a
// transfer keeps its session and its live tunnel.
func TestNATRebindingKeepsTheSession(t *testing.T) {
	app := checksumApp(t)
	defer app.close()
	var nat *rebindingConn
	p := startPair(t, pairOptions{token: app.addr.String(),
		// A 50 Mbit/s link, so that the transfer is still running when the port changes.
		serverMods: func(c *ServerConfig) {
			c.WrapUDP = func(pc net.PacketConn) net.PacketConn {
				return netem.NewPacketConn(pc, netem.Model{RateBps: 50e6, Delay: 2 * time.Millisecond}, 1)
			}
		},
		clientMods: func(c *ClientConfig) {
			c.WrapUDP = func(pc net.PacketConn) net.PacketConn {
				// A socket of our own on 127.0.0.1, so the server sees the
				// same address family before and after.
				pc.Close()
				first, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				nat = &rebindingConn{cur: first}
				return netem.NewPacketConn(nat, netem.Model{RateBps: 50e6, Delay: 2 * time.Millisecond}, 2)
			}
		}})
	defer p.stop()
	roundTrip := func() {
		c := dialApp(t, p.client.Addr())
		defer c.Close()
		c.Write([]byte("x"))
		closeWrite(c)
		io.ReadFull(c, make([]byte, 32))
	}
	roundTrip()
	session := p.client.sessions.live()[0]
	before := nat.LocalAddr().String()
	start := time.Now()
	transferThrough(t, p.client.Addr(), 16<<20, func() {
		time.Sleep(500 * time.Millisecond)
		nat.rebind(t)
	})
	if elapsed := time.Since(start); elapsed < 600*time.Millisecond {
		t.Fatalf("transfer took %v: the port changed after it, not during it", elapsed)
	}
	if nat.LocalAddr().String() == before {
		t.Fatal("the port did not change")
	}
	roundTrip()
	if live := p.client.sessions.live(); len(live) != 1 || live[0] != session {
		t.Fatal("the client had to dial a new session")
	}
}

// While the server is down, a new application connection waits SessionWait
// for a session, then is closed with a log line that says why (that they get
// through again once it is back: TestServerRestartClientRedials).
func TestOutageApplicationsWaitThenFail(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	srv, stopServer := startServer(t, pairOptions{})
	udpAddr := srv.Addr().String()
	const wait = 1500 * time.Millisecond
	var logs logtap.Tap
	cli, stopClient := startClient(t, udpAddr, pairOptions{token: app.addr.String(), clientMods: func(c *ClientConfig) {
		c.SessionWait = wait
		c.Logger = logs.Logger(slog.LevelDebug, "side", "client")
	}})
	defer stopClient()
	roundTrip(t, cli.Addr(), "before")
	stopServer()
	waitUntil(t, func() bool { return len(cli.sessions.live()) == 0 })

	start := time.Now()
	c := dialApp(t, cli.Addr())
	c.SetReadDeadline(time.Now().Add(wait + 5*time.Second))
	n, err := c.Read(make([]byte, 1))
	took := time.Since(start)
	c.Close()
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, %v: want the connection closed", n, err)
	}
	if took < wait || took > wait+2*time.Second {
		t.Fatalf("closed after %v, want about the session wait of %v", took, wait)
	}
	logs.WaitForLine(t, "level=WARN", "application connection closed: no tunnel", "no session to server endpoint "+udpAddr)
}

// captureInitials returns n QUIC Initial packets of distinct connection
// attempts: the first packet of each of n dials by a quic-go client whose
// socket sends nothing anywhere.
func captureInitials(t *testing.T, server net.Addr, n int) [][]byte {
	t.Helper()
	tlsConf, err := trust.LoadClient(trust.ClientOptions{Endpoint: server.String(), InsecureSkipVerify: true}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	cc := &captureConn{packets: make(chan []byte, 64), closed: make(chan struct{})}
	tr := &quic.Transport{Conn: cc}
	defer tr.Close()
	defer cc.Close() // first: quic-go does not close a socket it was given
	seen := map[string]bool{}
	var out [][]byte
	for len(out) < n {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); tr.Dial(ctx, server, tlsConf, quicConfig()) }()
		for dialed := false; !dialed; {
			p := <-cc.packets
			// A long header (v1 Initial: type bits 00), then version and the
			// destination connection ID that names the attempt.
			if len(p) < 7 || p[0]&0xb0 != 0x80 || len(p) < 6+int(p[5]) {
				continue
			}
			if dcid := string(p[6 : 6+int(p[5])]); !seen[dcid] {
				seen[dcid], dialed = true, true
				out = append(out, p)
			}
		}
		cancel()
		<-done
	}
	return out
}

// captureConn is a socket that keeps what quic-go sends and receives nothing.
type captureConn struct {
	packets chan []byte
	closed  chan struct{}
	once    sync.Once
}

func (c *captureConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	select {
	case c.packets <- append([]byte(nil), b...):
	default:
	}
	return len(b), nil
}
func (c *captureConn) ReadFrom([]byte) (int, net.Addr, error) {
	<-c.closed
	return 0, nil, net.ErrClosed
}
func (c *captureConn) Close() error                     { c.once.Do(func() { close(c.closed) }); return nil }
func (c *captureConn) LocalAddr() net.Addr              { return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} }
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// The socket buffers are of no concern (and quic-go warns without these).
func (c *captureConn) SetReadBuffer(int) error  { return nil }
func (c *captureConn) SetWriteBuffer(int) error { return nil }

// Many handshakes that start and never finish, each from its own source port:
// the server holds a bounded number at once (past maxPendingHandshakes, new
// attempts must answer a Retry first, which costs the server nothing), keeps
// serving a real client meanwhile, and drops them all within the handshake
// timeout.
func TestHalfOpenHandshakesCostBoundedResources(t *testing.T) {
	const attempts = 400
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	var logs logtap.Tap
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.PreambleTimeout = 2 * time.Second
		c.Logger = logs.Logger(slog.LevelDebug, "side", "server")
	}})
	defer stopServer()
	initials := captureInitials(t, srv.Addr(), attempts)

	before := runtime.NumGoroutine()
	for _, p := range initials {
		s, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := s.WriteTo(p, srv.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	pending, grown := srv.handshakes.pending.Load(), runtime.NumGoroutine()-before
	t.Logf("%d Initials from %d ports: %d handshakes pending, %d goroutines more", len(initials), len(initials), pending, grown)
	if pending > maxPendingHandshakes {
		t.Errorf("%d handshakes pending, want at most %d", pending, maxPendingHandshakes)
	}
	if grown > 6*maxPendingHandshakes {
		t.Errorf("%d goroutines more for %d half-open handshakes", grown, attempts)
	}
	logs.WaitForLine(t, "level=WARN", "many handshakes in progress")

	// A real client gets in meanwhile (through a Retry).
	cli, stopClient := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String()})
	defer stopClient()
	roundTrip(t, cli.Addr(), "through the crowd")

	// quic-go gives up on each after the handshake timeout.
	waitUntil(t, func() bool { return srv.handshakes.pending.Load() == 0 })
	roundTrip(t, cli.Addr(), "and after")
}

// A graceful shutdown loses no byte on a lossy link: the server application
// writes its last bytes and closes, the tunnel ends (its stream is closed, not
// yet acknowledged), and the server endpoint shuts down at that moment. The
// session must not be closed before quic-go has delivered the tail, or the
// client application gets a reset instead of the end of the data. (Without
// the loss-recovery layer, so that quic-go has to resend the tail itself.)
func TestShutdownDeliversTheTailOnALossyLink(t *testing.T) {
	const size = 1 << 20
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{7}).Read(data)
	wrote := make(chan struct{})
	app := startApp(t, loopbackTCP(), func(c net.Conn) {
		c.Write(data)
		close(wrote)
	})
	defer app.close()
	lossy := func(pc net.PacketConn) net.PacketConn {
		return netem.NewPacketConn(pc, netem.Model{Delay: 20 * time.Millisecond, Loss: 0.1}, 3)
	}
	off := &recovery.Config{Mode: recovery.Off}
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.WrapUDP, c.Recovery, c.DrainTimeout = lossy, off, 20*time.Second
	}})
	cli, stopClient := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String(), clientMods: func(c *ClientConfig) {
		c.WrapUDP, c.Recovery = lossy, off
	}})
	defer stopClient()
	c := dialApp(t, cli.Addr())
	defer c.Close()
	closeWrite(c) // the client application has nothing to send
	received := make(chan []byte, 1)
	go func() {
		c.SetReadDeadline(time.Now().Add(60 * time.Second))
		got, _ := io.ReadAll(c)
		received <- got
	}()
	select {
	case <-wrote:
	case <-time.After(60 * time.Second):
		t.Fatal("the server application could not write its data")
	}
	stopServer() // graceful: the tunnel has ended or is about to
	got := <-received
	if len(got) != size || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("the client application got %d of %d bytes (intact: %v)", len(got), size, len(got) == size && sha256.Sum256(got) == sha256.Sum256(data))
	}
}
