package endpoints

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/internal/logtap"
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
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.Secret = []byte("open sesame")
		c.AuthPenalty = time.Millisecond // the wrong clients share the right one's address
	}})
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
	// Each wrong client's hello is refused, at least once (it redials).
	m := gather(t, srv)
	if got := m[`quictun_hellos_total{endpoint="server",identity="",result="no proof"}`]; got < 1 {
		t.Fatalf("%v hellos without a proof counted, want at least 1", got)
	}
	if got := m[`quictun_hellos_total{endpoint="server",identity="",result="wrong proof"}`]; got < 2 {
		t.Fatalf("%v wrong proofs counted, want at least 2", got)
	}
	if got := m[`quictun_hellos_total{endpoint="server",identity="shared",result="ok"}`]; got != 1 {
		t.Fatalf("%v good hellos counted, want 1", got)
	}
}

// helloSession is a raw session that has said its hello with creds, and the
// status the server answered (an error when the server closed the session
// instead).
func helloSession(t *testing.T, server net.Addr, creds credentials) (*quic.Conn, preamble.Status, error) {
	t.Helper()
	conn := rawSession(t, server)
	hdr, err := creds.hello(conn)
	if err != nil {
		t.Fatal(err)
	}
	status, err := rawHeader(t, conn, hdr)
	return conn, status, err
}

// helloedSession is a raw session whose hello the server answered OK.
func helloedSession(t *testing.T, server net.Addr, creds credentials) *quic.Conn {
	t.Helper()
	conn, status, err := helloSession(t, server, creds)
	if err != nil || status.Code != preamble.CodeOK {
		conn.CloseWithError(0, "")
		t.Fatalf("hello: %v, %v", status, err)
	}
	return conn
}

// rawSession is a QUIC session to a server endpoint from a bare quic-go
// client: it speaks only what a test makes it say.
func rawSession(t *testing.T, server net.Addr) *quic.Conn {
	t.Helper()
	tlsConf, err := trust.LoadClient(trust.ClientOptions{Endpoint: server.String(), KnownHosts: filepath.Join(t.TempDir(), "kh")}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, server.String(), tlsConf, quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	return conn
}

// rawHeader sends hdr on a new stream of conn and returns the status answered.
func rawHeader(t *testing.T, conn *quic.Conn, hdr preamble.Header) (preamble.Status, error) {
	t.Helper()
	st, err := conn.OpenStream()
	if err != nil {
		return preamble.Status{}, err
	}
	defer st.CancelRead(0)
	b, err := preamble.AppendHeader(nil, hdr)
	if err != nil {
		t.Fatal(err)
	}
	st.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := st.Write(b); err != nil {
		return preamble.Status{}, err
	}
	st.Close()
	return preamble.ReadStatus(st)
}

// sessionClosedWith waits for conn to be closed by the server with code.
func sessionClosedWith(t *testing.T, conn *quic.Conn, code preamble.Code, within time.Duration) {
	t.Helper()
	select {
	case <-conn.Context().Done():
	case <-time.After(within):
		t.Fatalf("session still open after %v", within)
	}
	var ae *quic.ApplicationError
	if cause := context.Cause(conn.Context()); !errors.As(cause, &ae) || !ae.Remote || preamble.Code(ae.ErrorCode) != code {
		t.Fatalf("session ended with %v, want the server's %s", cause, code)
	}
}

// Sessions that never present a valid header lose their slot after the
// handshake timeout, and one that presents a wrong secret loses it at once:
// they cannot lock a real client out of a server with few session slots.
func TestUnauthenticatedSessionsFreeTheirSlots(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	var logs logtap.Tap
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.Secret = []byte("open sesame")
		c.Limits.MaxSessions = 2
		c.PreambleTimeout = time.Second
		c.Logger = logs.Logger(slog.LevelDebug, "side", "server")
	}})
	defer stopServer()
	// Two sessions that complete the handshake, then only keep alive, as
	// many as the server has slots for sessions that authenticated.
	idle := []*quic.Conn{rawSession(t, srv.Addr()), rawSession(t, srv.Addr())}
	for _, c := range idle {
		defer c.CloseWithError(0, "")
	}
	waitUntil(t, func() bool { return len(srv.liveSessions()) == 2 })

	cli, stop := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String(),
		clientMods: func(c *ClientConfig) { c.Secret = []byte("open sesame") }})
	defer stop()
	start := time.Now()
	roundTrip(t, cli.Addr(), "let in once the idle ones are gone")
	t.Logf("the real client got through after %v", time.Since(start).Round(time.Millisecond))
	for _, c := range idle {
		sessionClosedWith(t, c, preamble.CodeAuthFailed, 5*time.Second)
	}
	logs.WaitForLine(t, "session closed: no hello within the handshake timeout")

	// The real client's session presented its secret: it outlives the timeout.
	session := cli.sessions.live()[0]
	time.Sleep(1500 * time.Millisecond)
	roundTrip(t, cli.Addr(), "still the same session")
	if live := cli.sessions.live(); len(live) != 1 || live[0] != session {
		t.Fatal("the authenticated session was closed")
	}

	// A wrong secret closes its session at once. Its address (this host's,
	// which the real client shares) now waits before a new session, but the
	// real client's live session is untouched.
	bad, status, err := helloSession(t, srv.Addr(), credentials{secret: []byte("open sesam")})
	defer bad.CloseWithError(0, "")
	if err == nil && status.Code != preamble.CodeAuthFailed {
		t.Fatalf("wrong secret: status %v; want %s", status, preamble.CodeAuthFailed)
	}
	sessionClosedWith(t, bad, preamble.CodeAuthFailed, 2*time.Second)
	roundTrip(t, cli.Addr(), "untouched by the wrong one")
}

// A client whose secret the server refuses closes its applications at once,
// with a log line that says why, instead of letting them wait for a session.
func TestRefusedSecretFailsApplicationsFast(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.Secret = []byte("open sesame") }})
	defer stopServer()
	var logs logtap.Tap
	cli, stop := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String(),
		clientMods: func(c *ClientConfig) {
			c.Secret = []byte("wrong")
			c.SessionWait = 30 * time.Second
			c.Logger = logs.Logger(slog.LevelDebug, "side", "client")
		}})
	defer stop()
	logs.WaitForLine(t, "refused this client's credentials")
	for range 5 {
		assertClosedPromptly(t, cli.Addr(), true)
	}
}

// Streams that wait for their header count against the tunnel limit of their
// session: past it, new streams are refused at once, and QUIC's stream credit
// stops the session from opening more than a few beyond, so one session cannot
// hold a goroutine for each of tens of thousands of silent streams.
func TestSilentStreamsCountAgainstTheLimit(t *testing.T) {
	const limit = 50
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	p := startPair(t, pairOptions{token: app.addr.String(), serverMods: func(c *ServerConfig) {
		c.Limits.MaxTunnelsPerSession = limit
		c.PreambleTimeout = 3 * time.Second
	}})
	defer p.stop()
	roundTrip(t, p.client.Addr(), "before")

	raw := rawSession(t, p.server.Addr())
	defer raw.CloseWithError(0, "")
	if status, err := rawHeader(t, raw, preamble.Header{Hello: true}); err != nil || status.Code != preamble.CodeOK {
		t.Fatalf("hello: %v, %v", status, err)
	}
	before := runtime.NumGoroutine()
	var silent []*quic.Stream
	for {
		st, err := raw.OpenStream()
		if err != nil {
			break // out of stream credit
		}
		st.Write([]byte{preamble.Version}) // and never the rest
		silent = append(silent, st)
		if len(silent) > 10*limit {
			t.Fatalf("opened %d streams: no QUIC stream limit", len(silent))
		}
	}
	if max := limit + refusalsInFlight; len(silent) > max {
		t.Fatalf("opened %d streams at once, want at most %d", len(silent), max)
	}
	// The ones past the limit are refused as overloaded, without waiting.
	refused := 0
	for _, st := range silent[limit:] {
		st.SetReadDeadline(time.Now().Add(time.Second))
		status, err := preamble.ReadStatus(st)
		if err != nil || status.Code != preamble.CodeOverloaded {
			t.Fatalf("stream past the limit: %v, %v; want %s", status, err, preamble.CodeOverloaded)
		}
		refused++
	}
	if grown := runtime.NumGoroutine() - before; grown > 2*limit {
		t.Errorf("%d goroutines more for %d silent streams; want about %d", grown, len(silent), limit)
	}
	t.Logf("%d silent streams opened, %d refused at once, %d goroutines more", len(silent), refused, runtime.NumGoroutine()-before)
	// Another session is untouched.
	roundTrip(t, p.client.Addr(), "other sessions unaffected")
	// The silent ones are reset after the header timeout, and give their room back.
	for _, st := range silent[:limit] {
		st.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("a silent stream was not reset: %v", err)
		}
	}
	waitUntil(t, func() bool { return p.server.tunnels.Load() == 0 })
	if status, err := rawHeader(t, raw, preamble.Header{Token: []byte(app.addr.String())}); err != nil || status.Code != preamble.CodeOK {
		t.Fatalf("a tunnel after the silent streams: %v, %v", status, err)
	}
}

func TestAllowRules(t *testing.T) {
	allowed := startApp(t, loopbackTCP(), echo)
	defer allowed.close()
	other := startApp(t, loopbackTCP(), echo)
	defer other.close()
	pol, err := policy.Parse([]string{allowed.addr.Addr}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.Rules = pol }})
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
	if status, err := rawHeader(t, conn, preamble.Header{Hello: true}); err != nil || status.Code != preamble.CodeOK {
		t.Fatalf("hello: %v, %v", status, err)
	}
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
	waitUntil(t, func() bool { return p.server.Registry().Len() == 0 })
	roundTrip(t, p.client.Addr(), "and afterwards")
}

// A token longer than the server's limit is refused with a reason the client
// logs, and a tunnel that is already live does not notice.
func TestOversizedTokenIsRefused(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	var srvLogs, cliLogs logtap.Tap
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.Limits.MaxTokenSize = 64
		c.Logger = srvLogs.Logger(slog.LevelDebug, "side", "server")
	}})
	defer stopServer()
	good, stopGood := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String()})
	defer stopGood()
	live := dialApp(t, good.Addr())
	defer live.Close()
	live.SetDeadline(time.Now().Add(5 * time.Second))
	live.Write([]byte("x"))
	io.ReadFull(live, make([]byte, 1))

	long := app.addr.String() + "#" + strings.Repeat("x", 100)
	bad, stopBad := startClient(t, srv.Addr().String(), pairOptions{token: long,
		clientMods: func(c *ClientConfig) { c.Logger = cliLogs.Logger(slog.LevelDebug, "side", "client") }})
	defer stopBad()
	assertClosedPromptly(t, bad.Addr(), true)
	srvLogs.WaitForLine(t, "tunnel refused", "status=\"bad token\"", fmt.Sprintf("token_len=%d", len(long)), "max=64")
	cliLogs.WaitForLine(t, "tunnel closed", fmt.Sprintf("token of %d bytes exceeds the limit of 64", len(long)))

	live.Write([]byte("still here"))
	if _, err := io.ReadFull(live, make([]byte, 10)); err != nil {
		t.Fatalf("the live tunnel was hurt: %v", err)
	}
}

// Limits the wire format cannot carry, and a secret no header could hold, fail
// at start with an error that says so, for both endpoints.
func TestConfigBeyondTheWireFormatFailsAtStart(t *testing.T) {
	for name, tc := range map[string]struct {
		mod  func(*ServerConfig)
		want string
	}{
		"secret":        {func(c *ServerConfig) { c.Secret = make([]byte, preamble.MaxSecretLen+1) }, "shared secret of 1025 bytes"},
		"preamble size": {func(c *ServerConfig) { c.Limits.MaxHeaderSize = preamble.MaxHeaderLen + 1 }, "max preamble size 16385"},
		"token size":    {func(c *ServerConfig) { c.Limits.MaxTokenSize = preamble.MaxTokenLen + 1 }, "max token size 8193"},
		"token in preamble": {func(c *ServerConfig) { c.Limits.MaxHeaderSize, c.Limits.MaxTokenSize = 1000, 2000 },
			"max token size 2000 bytes exceeds the max preamble size of 1000"},
	} {
		id, err := trust.LoadServer(trust.ServerOptions{StateDir: t.TempDir()}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		parser, _ := token.NewParser("cleartext", "")
		cfg := ServerConfig{ListenOn: "127.0.0.1:0", Parser: parser, TLS: id.TLS, Logger: testLogger(t)}
		tc.mod(&cfg)
		srv, err := NewServer(cfg)
		if err == nil {
			srv.conn.Close()
			t.Errorf("%s: server started", name)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
		}
	}
	// A smaller preamble size lowers the default token size with it.
	id, _ := trust.LoadServer(trust.ServerOptions{StateDir: t.TempDir()}, testLogger(t))
	parser, _ := token.NewParser("cleartext", "")
	srv, err := NewServer(ServerConfig{ListenOn: "127.0.0.1:0", Parser: parser, TLS: id.TLS, Logger: testLogger(t),
		Limits: Limits{MaxHeaderSize: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	srv.ln.Close()
	srv.tr.Close()
	srv.conn.Close()
	if srv.cfg.Limits.MaxTokenSize != 1000 {
		t.Errorf("token size %d with a 1000-byte preamble", srv.cfg.Limits.MaxTokenSize)
	}

	tlsConf, _ := trust.LoadClient(trust.ClientOptions{Endpoint: "127.0.0.1:1", InsecureSkipVerify: true}, testLogger(t))
	src, _ := token.NewSource("fixed", "tcp:127.0.0.1:1", token.SourceOptions{})
	_, err = NewClient(ClientConfig{ListenOn: loopbackTCP(), ServerEndpoint: "127.0.0.1:1", Tokens: src, TLS: tlsConf,
		Secret: make([]byte, preamble.MaxSecretLen+1), Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "shared secret of 1025 bytes") {
		t.Errorf("client with a secret too long: %v", err)
	}
}

// --handshake-timeout bounds the whole TLS handshake, also above quic-go's
// 5 s default: quic-go gives up on a handshake after twice its idle timeout.
func TestHandshakeTimeoutBoundsTheHandshake(t *testing.T) {
	for _, d := range []time.Duration{2 * time.Second, 10 * time.Second, 30 * time.Second} {
		cfg := ServerConfig{PreambleTimeout: d}
		cfg.setDefaults()
		if got := 2 * serverQUICConfig(cfg).HandshakeIdleTimeout; got != d {
			t.Errorf("--handshake-timeout %v: handshakes may take %v", d, got)
		}
	}
}

// A token that may be a credential, and the server's internal addresses,
// appear in no log line and no answer to the client: the server logs what it
// knows, the client hears a generic reason.
func TestSecretsAndInternalAddressesStayOnTheServer(t *testing.T) {
	const secretToken = "hunter2-api-key-0123456789"
	ln, _ := net.Listen("tcp", "127.0.0.3:0")
	dead := "tcp:" + ln.Addr().String()
	ln.Close()
	allowed := startApp(t, loopbackTCP(), echo)
	defer allowed.close()
	pol, err := policy.Parse([]string{allowed.addr.Addr, "127.0.0.3:1-65535"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	forbidden := "tcp:127.0.0.4:22"
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	var srvLogs, cliLogs logtap.Tap
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.Parser, _ = token.NewParser("cleartext", "base64")
		c.Rules = pol
		c.Logger = srvLogs.Logger(slog.LevelDebug, "side", "server")
	}})
	defer stopServer()
	for _, tok := range []string{secretToken, b64(dead), b64(forbidden)} {
		cli, stop := startClient(t, srv.Addr().String(), pairOptions{token: tok,
			clientMods: func(c *ClientConfig) { c.Logger = cliLogs.Logger(slog.LevelDebug, "side", "client") }})
		assertClosedPromptly(t, cli.Addr(), true)
		stop()
	}
	srvLogs.WaitForLine(t, "tunnel refused", `status="bad token"`, fmt.Sprintf("(%d bytes, not an address)", len(secretToken)))
	srvLogs.WaitForLine(t, "tunnel refused", `status="target unreachable"`, dead)
	srvLogs.WaitForLine(t, "tunnel refused", `status="forbidden target"`, forbidden)
	for _, refusal := range []string{"bad token", "target unreachable", "forbidden target"} {
		cliLogs.WaitForLine(t, "tunnel closed", "server refused tunnel: "+refusal)
	}
	if strings.Contains(srvLogs.String()+cliLogs.String(), secretToken) {
		t.Error("the secret-like token was logged")
	}
	for _, internal := range []string{"127.0.0.3", "127.0.0.4"} {
		if strings.Contains(cliLogs.String(), internal) {
			t.Errorf("the client learnt the internal address %s", internal)
		}
	}
}

// The limit on tunnels over all sessions: past it the new tunnel is refused,
// whichever session asks, and the live ones are untouched.
func TestTotalTunnelLimitAcrossSessions(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.Limits.MaxTunnels = 2 }})
	defer stopServer()
	a, stopA := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String()})
	defer stopA()
	b, stopB := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String()})
	defer stopB()
	var live []net.Conn
	for _, cli := range []*Client{a, b} {
		c := dialApp(t, cli.Addr())
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("x"))
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		live = append(live, c)
	}
	assertClosedPromptly(t, a.Addr(), true)
	assertClosedPromptly(t, b.Addr(), true)
	if got := gather(t, srv)[`quictun_tunnel_failures_total{endpoint="server",reason="server overloaded"}`]; got != 2 {
		t.Fatalf("%v refused as overloaded, want 2", got)
	}
	for _, c := range live {
		c.Write([]byte("still here"))
		if _, err := io.ReadFull(c, make([]byte, 10)); err != nil {
			t.Fatalf("a live tunnel was hurt by the refusals: %v", err)
		}
	}
	live[0].Close()
	waitUntil(t, func() bool { return srv.Registry().Len() == 1 })
	roundTrip(t, b.Addr(), "room again")
}

// A forbidden target is logged with who asked: the client's certificate
// subject under mutual TLS, and its address.
func TestForbiddenTargetLogNamesTheClient(t *testing.T) {
	ca := newTestCA(t, "test CA")
	certFile, keyFile := ca.issue(t, "alice", false)
	caFile := ca.file
	pol, _ := policy.Parse([]string{"127.0.0.1:1"}, nil)
	var logs logtap.Tap
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		id, err := trust.LoadServer(trust.ServerOptions{StateDir: t.TempDir(), VerifyClient: true, CAFile: caFile}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		c.TLS, c.Rules, c.Logger = id.TLS, pol, logs.Logger(slog.LevelDebug, "side", "server")
	}})
	defer stopServer()
	cli, stop := startClient(t, srv.Addr().String(), pairOptions{token: "tcp:127.0.0.5:22", clientMods: func(c *ClientConfig) {
		tlsConf, err := trust.LoadClient(trust.ClientOptions{Endpoint: srv.Addr().String(), KnownHosts: filepath.Join(t.TempDir(), "kh"),
			CertFile: certFile, KeyFile: keyFile}, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		c.TLS = tlsConf
	}})
	defer stop()
	assertClosedPromptly(t, cli.Addr(), true)
	udpPort := cli.conn.LocalAddr().(*net.UDPAddr).Port
	logs.WaitForLine(t, "tunnel refused", `status="forbidden target"`, fmt.Sprintf("session=alice@127.0.0.1:%d", udpPort), "target=tcp:127.0.0.5:22")
}

// A server that anyone who reaches it may use says so loudly at start.
func TestOpenServerWarnsLoudly(t *testing.T) {
	public := &net.UDPAddr{IP: net.IPv4zero, Port: 7500}
	loopback := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7500}
	for name, tc := range map[string]struct {
		addr net.Addr
		cfg  ServerConfig
		open bool
	}{
		"open":          {public, ServerConfig{TLS: &tls.Config{}}, true},
		"secret":        {public, ServerConfig{TLS: &tls.Config{}, Secret: []byte("s")}, false},
		"mutual TLS":    {public, ServerConfig{TLS: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}}, false},
		"loopback only": {loopback, ServerConfig{TLS: &tls.Config{}}, false},
	} {
		var logs logtap.Tap
		st, err := (&Server{cfg: tc.cfg, udpAddr: tc.addr}).newAuthState(identity.NewTable(tc.cfg.Secret), nil)
		if err != nil {
			t.Fatal(err)
		}
		warnIfOpen(logs.Logger(slog.LevelDebug, "side", "server"), tc.addr, st)
		if got := len(logs.Lines("level=WARN", "ANYONE CAN USE THIS SERVER")) > 0; got != tc.open {
			t.Errorf("%s: open-server warning %v, want %v", name, got, tc.open)
		}
	}
}
