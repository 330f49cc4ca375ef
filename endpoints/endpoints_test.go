package endpoints

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/engine"
)

// fasthttp's date updater lives as long as the process once an API has served
// (TestForwardsThroughTheAPI).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"))
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// pair is a server endpoint and a client endpoint on loopback, both running.
type pair struct {
	server *Server
	client *Client
	stop   func()
}

type pairOptions struct {
	listenOn   address.Address // client's application listener; default loopbackTCP()
	token      string          // Fixed token
	serverUDP  string          // default 127.0.0.1:0
	stateDir   string
	tokenSrc   token.Source
	clientMods func(*ClientConfig)
	serverMods func(*ServerConfig)
}

func startServer(t testing.TB, o pairOptions) (*Server, func()) {
	t.Helper()
	if o.stateDir == "" {
		o.stateDir = t.TempDir()
	}
	id, err := trust.LoadServer(trust.ServerOptions{StateDir: o.stateDir}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	parser, _ := token.NewParser("cleartext", "")
	cfg := ServerConfig{ListenOn: o.serverUDP, Parser: parser, TLS: id.TLS, ResetKey: &id.ResetKey,
		Logger: testLogger(t).With("side", "server"), DrainTimeout: time.Second}
	if cfg.ListenOn == "" {
		cfg.ListenOn = "127.0.0.1:0"
	}
	if o.serverMods != nil {
		o.serverMods(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return srv, run(srv.Run)
}

func run(f func(context.Context) error) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func startClient(t testing.TB, serverAddr string, o pairOptions) (*Client, func()) {
	t.Helper()
	tlsConf, err := trust.LoadClient(trust.ClientOptions{Endpoint: serverAddr, KnownHosts: filepath.Join(t.TempDir(), "kh")}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	src := o.tokenSrc
	if src == nil {
		src, err = token.NewSource("fixed", o.token, token.SourceOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	if o.listenOn == (address.Address{}) {
		o.listenOn = loopbackTCP()
	}
	cfg := ClientConfig{ListenOn: o.listenOn, ServerEndpoint: serverAddr, Tokens: src, TLS: tlsConf,
		Logger: testLogger(t).With("side", "client"), DrainTimeout: time.Second, SessionWait: 5 * time.Second}
	if o.clientMods != nil {
		o.clientMods(&cfg)
	}
	cli, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cli, run(cli.Run)
}

func startPair(t testing.TB, o pairOptions) *pair {
	t.Helper()
	srv, stopServer := startServer(t, o)
	cli, stopClient := startClient(t, srv.Addr().String(), o)
	return &pair{server: srv, client: cli, stop: func() { stopClient(); stopServer() }}
}

// app is a server application on loopback: each connection is handled by fn.
type app struct {
	ln   net.Listener
	wg   sync.WaitGroup
	addr address.Address
}

func startApp(t testing.TB, a address.Address, fn func(net.Conn)) *app {
	t.Helper()
	ln, err := a.Listen()
	if err != nil {
		t.Fatal(err)
	}
	s := &app{ln: ln, addr: address.Address{Network: a.Network, Addr: ln.Addr().String()}}
	s.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { defer c.Close(); fn(c) })
		}
	})
	return s
}

func (s *app) close() { s.ln.Close(); s.wg.Wait() }

func echo(c net.Conn) { io.Copy(c, c) }

// loopbackTCP is a listen address on a loopback IP of its own. This machine's
// tests leave tens of thousands of loopback connections in TIME_WAIT; once the
// even ephemeral ports run out, a dial from 127.0.0.1 can pick a source port
// that mirrors a TIME_WAIT entry of a fresh 127.0.0.1 listener and be reset.
// A random 127.x.y.z keeps each test's tuples apart.
func loopbackTCP() address.Address {
	ip := net.IPv4(127, byte(1+rand.IntN(254)), byte(rand.IntN(256)), byte(1+rand.IntN(254)))
	return address.Address{Network: "tcp", Addr: net.JoinHostPort(ip.String(), "0")}
}

func dialApp(t testing.TB, a net.Addr) net.Conn {
	t.Helper()
	c, err := net.DialTimeout(a.Network(), a.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func closeWrite(c net.Conn) error {
	return c.(interface{ CloseWrite() error }).CloseWrite()
}

func TestLargeTransferBothWaysIntact(t *testing.T) {
	const size = 64 << 20
	// The server application sends its own stream of random bytes while
	// checking what it receives, so both directions are loaded at once.
	type digest struct {
		sum [32]byte
		n   int64
	}
	got := make(chan digest, 1)
	down := make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(down)
	srvApp := startApp(t, loopbackTCP(), func(c net.Conn) {
		var wg sync.WaitGroup
		wg.Go(func() { c.Write(down); closeWrite(c) })
		h := sha256.New()
		n, _ := io.Copy(h, c)
		wg.Wait()
		got <- digest{[32]byte(h.Sum(nil)), n}
	})
	defer srvApp.close()
	p := startPair(t, pairOptions{token: srvApp.addr.String()})
	defer p.stop()

	up := make([]byte, size)
	rand.NewChaCha8([32]byte{2}).Read(up)
	c := dialApp(t, p.client.Addr())
	defer c.Close()
	var wg sync.WaitGroup
	wg.Go(func() { c.Write(up); closeWrite(c) })
	h := sha256.New()
	n, err := io.Copy(h, c)
	wg.Wait()
	if err != nil || n != size || !bytes.Equal(h.Sum(nil), sha(down)) {
		t.Fatalf("downstream: %d bytes, err %v, checksum ok %v", n, err, bytes.Equal(h.Sum(nil), sha(down)))
	}
	d := <-got
	if d.n != size || d.sum != [32]byte(sha(up)) {
		t.Fatalf("upstream: %d bytes, checksum ok %v", d.n, d.sum == [32]byte(sha(up)))
	}
}

func sha(b []byte) []byte { s := sha256.Sum256(b); return s[:] }

// The application shuts its write side first and still gets every byte the
// server application sends after that.
func TestHalfCloseKeepsTheOtherDirection(t *testing.T) {
	srvApp := startApp(t, loopbackTCP(), func(c net.Conn) {
		req, _ := io.ReadAll(c) // until the client's FIN
		time.Sleep(100 * time.Millisecond)
		for range 100 {
			c.Write(bytes.Repeat([]byte("after-eof "), 1000))
		}
		c.Write([]byte(fmt.Sprintf("got %d bytes", len(req))))
	})
	defer srvApp.close()
	p := startPair(t, pairOptions{token: srvApp.addr.String()})
	defer p.stop()

	c := dialApp(t, p.client.Addr())
	defer c.Close()
	c.Write(bytes.Repeat([]byte("q"), 12345))
	if err := closeWrite(c); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if want := 100*10000 + len("got 12345 bytes"); len(resp) != want || !strings.HasSuffix(string(resp), "got 12345 bytes") {
		t.Fatalf("got %d bytes ending %q, want %d", len(resp), resp[max(0, len(resp)-20):], want)
	}
}

func TestTCPAndUnixInEveryCombination(t *testing.T) {
	dir := t.TempDir()
	for _, clientNet := range []string{"tcp", "unix"} {
		for _, serverNet := range []string{"tcp", "unix"} {
			t.Run(clientNet+"-to-"+serverNet, func(t *testing.T) {
				target := address.Address{Network: "tcp", Addr: "[::1]:0"}
				if serverNet == "unix" {
					target = address.Address{Network: "unix", Addr: filepath.Join(dir, "srv-"+clientNet+".sock")}
				}
				listen := address.Address{Network: "tcp", Addr: "[::1]:0"}
				if clientNet == "unix" {
					listen = address.Address{Network: "unix", Addr: filepath.Join(dir, "cli-"+serverNet+".sock")}
				}
				srvApp := startApp(t, target, echo)
				defer srvApp.close()
				p := startPair(t, pairOptions{token: srvApp.addr.String(), listenOn: listen, serverUDP: "[::1]:0"})
				defer p.stop()
				c := dialApp(t, p.client.Addr())
				defer c.Close()
				msg := []byte("hello over " + clientNet + " to " + serverNet)
				c.Write(msg)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("got %q, %v", got, err)
				}
				// The API shows TCP addresses bare (as quic-tun does) and UNIX
				// sockets as unix:PATH, on both endpoints.
				wantTarget := srvApp.addr.Addr
				if serverNet == "unix" {
					wantTarget = "unix:" + srvApp.addr.Addr
				}
				wantApp := c.LocalAddr().String()
				if clientNet == "unix" {
					wantApp = "unix:" + listen.Addr
				}
				for _, side := range []struct {
					name     string
					snaps    []engine.Snapshot
					app      string
					endpoint engine.Endpoint
				}{
					{"client", p.client.Registry().Snapshots(), wantApp, engine.ClientEndpoint},
					{"server", p.server.Registry().Snapshots(), "", engine.ServerEndpoint},
				} {
					if len(side.snaps) != 1 {
						t.Fatalf("%s: %d tunnels", side.name, len(side.snaps))
					}
					in := side.snaps[0].Info
					if in.ServerAppAddr != wantTarget || in.ClientAppAddr != side.app || in.Endpoint != side.endpoint {
						t.Errorf("%s: serverAppAddr %q, clientAppAddr %q; want %q, %q", side.name, in.ServerAppAddr, in.ClientAppAddr, wantTarget, side.app)
					}
				}
				closeWrite(c)
				if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
					t.Fatalf("after the echo: %q, %v", rest, err)
				}
			})
		}
	}
}

func TestThousandConcurrentTunnels(t *testing.T) {
	if testing.Short() {
		t.Skip("1000 tunnels: not in -short")
	}
	const n = 1000
	srvApp := startApp(t, loopbackTCP(), echo)
	defer srvApp.close()
	p := startPair(t, pairOptions{token: srvApp.addr.String()})
	defer p.stop()

	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = dialApp(t, p.client.Addr())
		defer conns[i].Close()
	}
	// Every tunnel is open at once before any finishes.
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i, c := range conns {
		wg.Go(func() {
			msg := []byte(fmt.Sprintf("tunnel %d says hello", i))
			c.SetDeadline(time.Now().Add(60 * time.Second))
			if _, err := c.Write(msg); err != nil {
				errs <- err
				return
			}
			buf := make([]byte, len(msg))
			if _, err := io.ReadFull(c, buf); err != nil || !bytes.Equal(buf, msg) {
				errs <- fmt.Errorf("tunnel %d: %q, %v", i, buf, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if live := p.server.Registry().Len(); live != n {
		t.Errorf("server sees %d live tunnels, want %d", live, n)
	}
}

// A slow application must not slow the others: one tunnel whose application
// never reads is stuck with a full window while another moves data.
func TestStuckApplicationDoesNotBlockOthers(t *testing.T) {
	block := make(chan struct{})
	srvApp := startApp(t, loopbackTCP(), func(c net.Conn) {
		var first [1]byte
		io.ReadFull(c, first[:])
		if first[0] == 's' { // the stuck one: stop reading
			<-block
			return
		}
		c.Write(first[:])
		io.Copy(c, c)
	})
	defer srvApp.close()
	defer close(block)
	p := startPair(t, pairOptions{token: srvApp.addr.String()})
	defer p.stop()

	stuck := dialApp(t, p.client.Addr())
	defer stuck.Close()
	go func() {
		stuck.Write([]byte("s"))
		stuck.Write(make([]byte, 256<<20)) // far beyond every window; blocks
	}()
	time.Sleep(200 * time.Millisecond)
	c := dialApp(t, p.client.Addr())
	defer c.Close()
	if err := echoThrough(c, 'f', make([]byte, 8<<20), 60*time.Second); err != nil {
		t.Fatalf("the healthy tunnel stalled behind the stuck one: %v", err)
	}
}

func TestUnreachableTargetClosesApplicationPromptly(t *testing.T) {
	// A port that nothing listens on, on another loopback address than the
	// client's listener, which could otherwise be given the same port.
	ln, _ := net.Listen("tcp", "127.0.0.3:0")
	dead := ln.Addr().String()
	ln.Close()
	p := startPair(t, pairOptions{token: "tcp:" + dead})
	defer p.stop()
	assertClosedPromptly(t, p.client.Addr(), true)
}

func TestBadTokenClosesApplication(t *testing.T) {
	p := startPair(t, pairOptions{token: "this is not an address"})
	defer p.stop()
	assertClosedPromptly(t, p.client.Addr(), false)
}

func assertClosedPromptly(t *testing.T, a net.Addr, sendFirst bool) {
	t.Helper()
	start := time.Now()
	c, err := net.DialTimeout(a.Network(), a.String(), 5*time.Second)
	if errors.Is(err, syscall.ECONNRESET) {
		return // refused so fast that the reset beat the end of the handshake
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if sendFirst {
		c.Write([]byte("hello?"))
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(make([]byte, 10))
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d bytes, err %v: want the connection closed", n, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v, want under 2 s", d)
	}
}

// The server restarts on the same port: the client redials and new
// application connections work again.
func TestServerRestartClientRedials(t *testing.T) {
	srvApp := startApp(t, loopbackTCP(), echo)
	defer srvApp.close()
	stateDir := t.TempDir()
	srv, stopServer := startServer(t, pairOptions{stateDir: stateDir})
	udpAddr := srv.Addr().String()
	cli, stopClient := startClient(t, udpAddr, pairOptions{token: srvApp.addr.String()})
	defer stopClient()

	roundTrip := func() error {
		c, err := net.DialTimeout("tcp", cli.Addr().String(), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(8 * time.Second))
		if _, err := c.Write([]byte("ping")); err != nil {
			return err
		}
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		return err
	}
	if err := roundTrip(); err != nil {
		t.Fatalf("before restart: %v", err)
	}
	live := dialApp(t, cli.Addr())
	defer live.Close()
	live.Write([]byte("x"))
	io.ReadFull(live, make([]byte, 1))

	stopServer()
	// The live tunnel ends (no hang) once its session is gone.
	live.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := live.Read(make([]byte, 1)); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("live tunnel hung after the server went away")
	}

	_, stopServer = startServer(t, pairOptions{stateDir: stateDir, serverUDP: udpAddr})
	defer stopServer()
	if err := roundTrip(); err != nil {
		t.Fatalf("after restart: %v", err)
	}
}

// Each token source picks the tunnel's target end to end: File by the
// application's address, Http by asking a web service.
func TestTokenSourcesEndToEnd(t *testing.T) {
	hello := func(tag string) func(net.Conn) {
		return func(c net.Conn) { c.Write([]byte(tag)) }
	}
	appA := startApp(t, loopbackTCP(), hello("A"))
	defer appA.close()
	appB := startApp(t, loopbackTCP(), hello("B"))
	defer appB.close()

	readTag := func(a net.Addr) string {
		c := dialApp(t, a)
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		return string(b)
	}

	path := filepath.Join(t.TempDir(), "tokens")
	os.WriteFile(path, []byte("127.0.0.0/8 "+appA.addr.String()+"\n* "+appB.addr.String()+"\n"), 0o600)
	fileSrc, err := token.NewSource("File", path, token.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := startPair(t, pairOptions{tokenSrc: fileSrc})
	if got := readTag(p.client.Addr()); got != "A" {
		t.Errorf("File source: reached %q, want A", got)
	}
	p.stop()

	var asked sync.Map
	web := startApp(t, loopbackTCP(), func(c net.Conn) {
		req := make([]byte, 4096)
		n, _ := c.Read(req)
		asked.Store(strings.Fields(string(req[:n]))[1], true)
		body := `{"token": "` + appB.addr.String() + `"}`
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	})
	defer web.close()
	httpSrc, err := token.NewSource("Http", "http://"+web.addr.Addr+"/token", token.SourceOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p = startPair(t, pairOptions{tokenSrc: httpSrc})
	defer p.stop()
	if got := readTag(p.client.Addr()); got != "B" {
		t.Errorf("Http source: reached %q, want B", got)
	}
	n := 0
	asked.Range(func(k, _ any) bool {
		if !strings.HasPrefix(k.(string), "/token?addr=127.") {
			t.Errorf("asked %s", k)
		}
		n++
		return true
	})
	if n != 1 {
		t.Errorf("web service asked %d times, want 1", n)
	}
}

func TestMetricsCountTunnelsRefusalsAndSessions(t *testing.T) {
	srvApp := startApp(t, loopbackTCP(), echo)
	defer srvApp.close()
	srv, stopServer := startServer(t, pairOptions{})
	defer stopServer()
	good, stopGood := startClient(t, srv.Addr().String(), pairOptions{token: srvApp.addr.String()})
	defer stopGood()
	bad, stopBad := startClient(t, srv.Addr().String(), pairOptions{token: "no-such-address"})
	defer stopBad()

	c := dialApp(t, good.Addr())
	c.Write([]byte("12345"))
	io.ReadFull(c, make([]byte, 5))
	c.Close()
	assertClosedPromptly(t, bad.Addr(), false)

	want := map[string]float64{
		`quictun_tunnels_opened_total{endpoint="server"}`:                     1,
		`quictun_tunnel_failures_total{endpoint="server",reason="bad token"}`: 1,
		`quictun_tunnel_failures_total{endpoint="client",reason="bad token"}`: 1,
		`quictun_sessions_open{endpoint="server"}`:                            2,
		`quictun_tunnel_bytes_total{direction="up",endpoint="server"}`:        5,
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := gather(t, srv, bad)
		missing := ""
		for k, v := range want {
			if got[k] != v {
				missing += fmt.Sprintf("%s = %v, want %v; ", k, got[k], v)
			}
		}
		rtts := 0
		for k, v := range got {
			if strings.HasPrefix(k, `quictun_session_rtt_seconds{endpoint="server",session="127.0.0.1:`) && v > 0 {
				rtts++
			}
		}
		if rtts != 2 {
			missing += fmt.Sprintf("%d session RTTs, want 2; ", rtts)
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// gather flattens the metrics of endpoints into "name{labels}" -> value.
func gather(t *testing.T, eps ...interface{ Gatherer() prometheus.Gatherer }) map[string]float64 {
	out := map[string]float64{}
	for _, ep := range eps {
		mfs, err := ep.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				var labels []string
				for _, l := range m.GetLabel() {
					labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
				}
				v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
				out[mf.GetName()+"{"+strings.Join(labels, ",")+"}"] = v
			}
		}
	}
	return out
}

// The server dies without a word (as with kill -9) and comes back on the same
// port with the same key: the client still holds the old session, and the first
// application connection after the restart rides it into a stateless reset.
// That tunnel is replayed on the next session: the application sees nothing.
func TestServerCrashTunnelReplayedOnNextSession(t *testing.T) {
	app := startApp(t, loopbackTCP(), func(c net.Conn) {
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		c.Write(append([]byte("echo:"), buf...))
		io.Copy(io.Discard, c) // hold the tunnel until the client is done
	})
	defer app.close()
	stateDir := t.TempDir()
	srv, stopServer := startServer(t, pairOptions{stateDir: stateDir})
	udpAddr := srv.Addr().String()
	cli, stopClient := startClient(t, udpAddr, pairOptions{token: app.addr.String()})
	defer stopClient()
	// ask sends through a new tunnel, then runs inspect while it is live.
	ask := func(inspect func()) string {
		c := dialApp(t, cli.Addr())
		defer c.Close()
		c.SetDeadline(time.Now().Add(8 * time.Second))
		c.Write([]byte("hello"))
		b := make([]byte, len("echo:hello"))
		if _, err := io.ReadFull(c, b); err != nil {
			return err.Error()
		}
		inspect()
		return string(b)
	}
	if got := ask(func() {}); got != "echo:hello" {
		t.Fatalf("before the crash: %q", got)
	}
	// Crash: the transport goes without CONNECTION_CLOSE to anyone.
	srv.tr.Close()
	stopServer()
	srv, stopServer = startServer(t, pairOptions{stateDir: stateDir, serverUDP: udpAddr})
	defer stopServer()
	got := ask(func() {
		// The client's view of the tunnel follows it to the new session's
		// stream: the same stream the new server sees.
		c, s := cli.Registry().Snapshots(), srv.Registry().Snapshots()
		if len(c) != 1 || len(s) != 1 {
			t.Fatalf("%d tunnels on the client, %d on the server", len(c), len(s))
		}
		if c[0].Info.StreamID != s[0].Info.StreamID || c[0].Info.RemoteEndpointAddr != srv.Addr().String() {
			t.Errorf("client shows stream %d at %s; the server has stream %d at %s", c[0].Info.StreamID,
				c[0].Info.RemoteEndpointAddr, s[0].Info.StreamID, srv.Addr())
		}
	})
	if got != "echo:hello" {
		t.Fatalf("first connection after the restart: %q", got)
	}
}
