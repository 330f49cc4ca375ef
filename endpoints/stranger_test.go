package endpoints

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/endpoints/trust"
)

// stranger dials the server from a loopback address of its own, so that the
// server's per-address bounds see one client address per stranger.
type stranger struct {
	t   testing.TB
	udp *net.UDPConn
	tr  *quic.Transport
}

func newStranger(t testing.TB) *stranger {
	t.Helper()
	ip := net.IPv4(127, byte(1+rand.IntN(254)), byte(rand.IntN(256)), byte(1+rand.IntN(254)))
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	return &stranger{t: t, udp: udp, tr: &quic.Transport{Conn: udp}}
}

func (s *stranger) close() { s.tr.Close(); s.udp.Close() }

// dial completes a handshake; err when the server refused it.
func (s *stranger) dial(server net.Addr) (*quic.Conn, error) {
	tlsConf, err := trust.LoadClient(trust.ClientOptions{Endpoint: server.String(), InsecureSkipVerify: true}, testLogger(s.t))
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.tr.Dial(ctx, server, tlsConf, quicConfig())
}

// A stranger who redials from many addresses and never says hello holds no
// slot a client with the secret needs: with the server's pool of
// unauthenticated sessions full and churning, a real client gets through
// within 2 s, and the strangers' sessions are evicted or closed.
func TestRedialingStrangerCannotHoldTheSlots(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.Secret = []byte("the-real-clients-secret")
		c.Limits.MaxSessions = 4
	}})
	defer stopServer()

	ctx, stopStrangers := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var held atomic.Int64
	for range 8 {
		s := newStranger(t)
		defer s.close()
		wg.Go(func() {
			var conns []*quic.Conn
			defer func() {
				for _, c := range conns {
					c.CloseWithError(0, "")
				}
			}()
			for i := 0; i < 2000 && ctx.Err() == nil; i++ {
				c, err := s.dial(srv.Addr())
				if err != nil {
					continue
				}
				held.Add(1)
				conns = append(conns, c)
			}
		})
	}
	defer func() { stopStrangers(); wg.Wait() }()
	waitUntil(t, func() bool { return held.Load() >= 32 }) // twice the pool
	cli, stop := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String(),
		clientMods: func(c *ClientConfig) { c.Secret = []byte("the-real-clients-secret") }})
	defer stop()
	start := time.Now()
	roundTrip(t, cli.Addr(), "the real client")
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("the real client got through after %v, want within 2 s", took)
	}
	srv.sessions.Lock()
	pending, authed := len(srv.sessions.pending), srv.sessions.authed
	srv.sessions.Unlock()
	if pending > srv.cfg.Limits.MaxPendingSessions || authed != 1 {
		t.Fatalf("%d unauthenticated sessions held (pool %d), %d authenticated; want the pool's bound and the one client",
			pending, srv.cfg.Limits.MaxPendingSessions, authed)
	}
	t.Logf("the real client got through in %v while strangers held %d handshakes", time.Since(start).Round(time.Millisecond), held.Load())
}

// One session gets one guess: a stranger that sends a wrong proof and then a
// thousand more hellos on further streams has its session closed, and the
// server compared one proof. Its address then waits (its next handshake is
// refused) while a client elsewhere is untouched, and after the wait a right
// proof from the same address gets in.
func TestOneGuessPerSessionAndAPricePerAddress(t *testing.T) {
	ids, _, err := identity.Parse(strings.NewReader("alice alices-secret-0123456789\n"), "ids", nil)
	if err != nil {
		t.Fatal(err)
	}
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.Identities = ids
		c.AuthPenalty = 3 * time.Second
	}})
	defer stopServer()
	cli, stop := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String(),
		clientMods: func(c *ClientConfig) { c.Identity, c.Secret = "alice", []byte("alices-secret-0123456789") }})
	defer stop()
	roundTrip(t, cli.Addr(), "alice before")

	s := newStranger(t)
	defer s.close()
	conn, err := s.dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	guess := credentials{identity: "alice", secret: []byte("alices-secret-012345678X")}
	var sent int
	for i := range 1000 {
		if i > 0 {
			guess.secret = []byte(fmt.Sprintf("alices-secret-%010d", i))
		}
		h, err := guess.hello(conn)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := preamble.AppendHeader(nil, h)
		st, err := conn.OpenStream()
		if err != nil {
			break
		}
		if _, err := st.Write(b); err != nil {
			break
		}
		st.Close()
		sent++
	}
	sessionClosedWith(t, conn, preamble.CodeAuthFailed, 5*time.Second)
	if got := gather(t, srv)[`quictun_hellos_total{endpoint="server",identity="alice",result="wrong proof"}`]; got != 1 {
		t.Fatalf("%v proofs compared of %d sent, want 1", got, sent)
	}
	// The address waits: its next handshake is refused.
	if c, err := s.dial(srv.Addr()); err == nil {
		c.CloseWithError(0, "")
		t.Fatal("the guessing address got a new session at once")
	} else if ae := (*quic.TransportError)(nil); !errors.As(err, &ae) || ae.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("the guessing address: %v, want CONNECTION_REFUSED", err)
	}
	roundTrip(t, cli.Addr(), "alice untouched")
	// After its wait, the right proof from that address gets in.
	var ok *quic.Conn
	waitUntil(t, func() bool {
		c, err := s.dial(srv.Addr())
		if err != nil {
			return false
		}
		ok = c
		return true
	})
	defer ok.CloseWithError(0, "")
	right := credentials{identity: "alice", secret: []byte("alices-secret-0123456789")}
	h, _ := right.hello(ok)
	if status, err := rawHeader(t, ok, h); err != nil || status.Code != preamble.CodeOK {
		t.Fatalf("right proof after the wait: %v, %v", status, err)
	}
}

// Penalties double with each failure up to their cap, are forgotten on
// success, and the table stays bounded whatever the number of addresses.
func TestPenaltiesDoubleAndStayBounded(t *testing.T) {
	p := newPenalties(time.Second)
	key := clientKey(&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1})
	if other := clientKey(&net.UDPAddr{IP: net.ParseIP("2001:db8::ffff:2"), Port: 2}); other != key {
		t.Fatalf("two addresses of one /64 count apart: %v, %v", key, other)
	}
	var got []time.Duration
	for range 12 {
		got = append(got, p.fail(key))
	}
	if got[0] != time.Second || got[1] != 2*time.Second || got[2] != 4*time.Second || got[11] != maxPenalty {
		t.Fatalf("penalties %v", got)
	}
	if p.refused(key) == 0 {
		t.Fatal("a penalized address may try")
	}
	p.forgive(key)
	if p.refused(key) != 0 || p.fail(key) != time.Second {
		t.Fatal("success did not clear the failures")
	}
	for i := range 3 * maxPenaltyTable {
		p.fail(clientKey(&net.UDPAddr{IP: net.IPv4(10, byte(i>>16), byte(i>>8), byte(i))}))
	}
	if n := len(p.byAddr); n > maxPenaltyTable {
		t.Fatalf("%d penalties held, want at most %d", n, maxPenaltyTable)
	}
}

// A man in the middle who relays a real client's hello onto a session of its
// own gains nothing: the proof is bound to the TLS session it was made on.
func TestProofReplayedByAManInTheMiddleIsRefused(t *testing.T) {
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.Secret = []byte("the-real-clients-secret")
		c.AuthPenalty = time.Millisecond
	}})
	defer stopServer()
	creds := credentials{secret: []byte("the-real-clients-secret")}
	victim := rawSession(t, srv.Addr())
	defer victim.CloseWithError(0, "")
	captured, err := creds.hello(victim)
	if err != nil {
		t.Fatal(err)
	}
	mitm := rawSession(t, srv.Addr())
	defer mitm.CloseWithError(0, "")
	status, err := rawHeader(t, mitm, captured)
	if err == nil && status.Code != preamble.CodeAuthFailed {
		t.Fatalf("a replayed proof: %v; want it refused", status)
	}
	sessionClosedWith(t, mitm, preamble.CodeAuthFailed, 5*time.Second)
	if status, err := rawHeader(t, victim, captured); err != nil || status.Code != preamble.CodeOK {
		t.Fatalf("the proof on its own session: %v, %v", status, err)
	}
}

// A session that opens a second stream before its hello is answered is
// closed: a stranger cannot park streams, each with buffers, on a session
// that has proved nothing.
func TestStreamsBeforeTheHelloCloseTheSession(t *testing.T) {
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.Secret = []byte("the-real-clients-secret") }})
	defer stopServer()
	conn := rawSession(t, srv.Addr())
	defer conn.CloseWithError(0, "")
	for range 2 {
		st, err := conn.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{preamble.Version, 100}) // half a header
	}
	sessionClosedWith(t, conn, preamble.CodeAuthFailed, 5*time.Second)
}

// Sixteen and more strangers that keep redialling, each session with thousands
// of half-sent headers on as many streams as QUIC lets it open, make the
// server hold no more than the bound it states (preAuthBound, a hard cap that
// an attack stays far below, since a session's second stream closes it), and
// a real client still gets in. The server runs in a child process, so that
// its memory is its own.
func TestStrangersStayWithinTheStatedBound(t *testing.T) {
	if os.Getenv("QUICTUN_BOUND_SERVER") != "" {
		runBoundServer(t)
		return
	}
	if testing.Short() {
		t.Skip("starts a child server process")
	}
	if raceEnabled {
		t.Skip("the race detector multiplies memory; scripts/test.sh runs this test without it")
	}
	child := exec.Command(os.Args[0], "-test.run=^TestStrangersStayWithinTheStatedBound$", "-test.v")
	child.Env = append(os.Environ(), "QUICTUN_BOUND_SERVER=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { in.Close(); child.Wait() }()
	lines := bufio.NewScanner(out)
	var addr *net.UDPAddr
	for lines.Scan() {
		if a, ok := strings.CutPrefix(lines.Text(), "listening "); ok {
			addr, _ = net.ResolveUDPAddr("udp", a)
			break
		}
	}
	if addr == nil {
		t.Fatal("the child server did not start")
	}
	pid := child.Process.Pid
	base := rssOf(t, pid, "VmRSS")

	ctx, stopStrangers := context.WithTimeout(context.Background(), 20*time.Second)
	defer stopStrangers()
	var wg sync.WaitGroup
	var sessions, streams atomic.Int64
	for range 24 {
		s := newStranger(t)
		defer s.close()
		wg.Go(func() {
			for i := 0; i < 200 && ctx.Err() == nil; i++ {
				c, err := s.dial(addr)
				if err != nil {
					continue
				}
				sessions.Add(1)
				for range 4096 {
					st, err := c.OpenStream()
					if err != nil {
						break
					}
					if _, err := st.Write([]byte{preamble.Version, 0x7f, 0xff, 1, 2}); err != nil { // 16 KiB announced
						break
					}
					streams.Add(1)
				}
				<-c.Context().Done()
			}
		})
	}
	for sessions.Load() < 64 && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	// A real client gets in during the attack.
	real := newStranger(t)
	defer real.close()
	var in2 *quic.Conn
	waitUntil(t, func() bool {
		c, err := real.dial(addr)
		if err != nil {
			return false
		}
		h, _ := credentials{secret: []byte("the-real-clients-secret")}.hello(c)
		status, err := rawHeader(t, c, h)
		if err != nil || status.Code != preamble.CodeOK {
			c.CloseWithError(0, "")
			return false
		}
		in2 = c
		return true
	})
	defer in2.CloseWithError(0, "")
	attacked := sessions.Load()
	stopStrangers()
	wg.Wait()
	if attacked < 64 {
		t.Fatalf("only %d stranger sessions in 20 s", attacked)
	}
	peak := rssOf(t, pid, "VmHWM")
	limits := boundLimits
	limits.setDefaults()
	bound := int64(preAuthBound(limits))
	t.Logf("%d stranger sessions, %d half-sent headers: server RSS %d MiB at start, peak %d MiB; stated bound %d MiB",
		sessions.Load(), streams.Load(), base>>20, peak>>20, bound>>20)
	if peak-base > bound {
		t.Fatalf("strangers made the server grow by %d MiB, over the bound of %d MiB", (peak-base)>>20, bound>>20)
	}
}

// boundLimits are the child server's: the defaults.
var boundLimits = Limits{}

// runBoundServer is the child of TestStrangersStayWithinTheStatedBound: a
// server with a secret, until its stdin closes.
func runBoundServer(t *testing.T) {
	srv, stop := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.Secret = []byte("the-real-clients-secret")
		c.Limits = boundLimits
		c.AuthPenalty = time.Millisecond
	}})
	defer stop()
	fmt.Printf("listening %s\n", srv.Addr())
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// rssOf reads a memory figure (VmRSS, VmHWM) of a process, in bytes.
func rssOf(t *testing.T, pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
