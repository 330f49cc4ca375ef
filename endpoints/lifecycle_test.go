package endpoints

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/internal/logtap"
)

// Zero limits and timeouts take their defaults; negative ones, and a header
// limit above the ceiling, are errors that name the field.
func TestConfigZeroIsDefaultNegativeIsAnError(t *testing.T) {
	id, err := trust.LoadServer(trust.ServerOptions{StateDir: t.TempDir()}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	parser, _ := token.NewParser("cleartext", "")
	base := ServerConfig{ListenOn: "127.0.0.1:0", Parser: parser, TLS: id.TLS, Logger: testLogger(t)}
	for want, mod := range map[string]func(*ServerConfig){
		"DialTimeout is negative (-1s); 0 means the default, 5s":                 func(c *ServerConfig) { c.DialTimeout = -time.Second },
		"PreambleTimeout is negative":                                            func(c *ServerConfig) { c.PreambleTimeout = -1 },
		"DrainTimeout is negative":                                               func(c *ServerConfig) { c.DrainTimeout = -1 },
		"Limits.MaxSessions is negative (-1); 0 means the default, 256":          func(c *ServerConfig) { c.Limits.MaxSessions = -1 },
		"Limits.MaxTunnels is negative":                                          func(c *ServerConfig) { c.Limits.MaxTunnels = -1 },
		"Limits.MaxTunnelsPerSession is negative":                                func(c *ServerConfig) { c.Limits.MaxTunnelsPerSession = -1 },
		"Limits.MaxHeaderSize is negative":                                       func(c *ServerConfig) { c.Limits.MaxHeaderSize = -1 },
		"max preamble size 16385 bytes exceeds the wire format's limit of 16384": func(c *ServerConfig) { c.Limits.MaxHeaderSize = preamble.MaxHeaderLen + 1 },
		"Engine.IdleTimeout is negative (-1s); 0 means never":                    func(c *ServerConfig) { c.Engine.IdleTimeout = -time.Second },
	} {
		cfg := base
		mod(&cfg)
		if srv, err := NewServer(cfg); err == nil || !strings.Contains(err.Error(), want) {
			if srv != nil {
				srv.conn.Close()
			}
			t.Errorf("got %v, want %q", err, want)
		}
	}
	srv, err := NewServer(base)
	if err != nil {
		t.Fatal(err)
	}
	srv.conn.Close()
	want := Limits{MaxSessions: 256, MaxSessionsPerAddress: 64, MaxPendingSessions: 16, MaxPendingPerAddress: 4, MaxTunnels: 8192, MaxTunnelsPerSession: 4096, MaxHeaderSize: preamble.MaxHeaderLen, MaxTokenSize: preamble.MaxTokenLen}
	if c := srv.cfg; c.Limits != want || c.DialTimeout != 5*time.Second || c.PreambleTimeout != 10*time.Second || c.DrainTimeout != 10*time.Second || c.AuthPenalty != time.Second {
		t.Errorf("defaults: %+v", c)
	}

	src, _ := token.NewSource("fixed", "tcp:127.0.0.1:1", token.SourceOptions{})
	for want, mod := range map[string]func(*ClientConfig){
		"SessionWait is negative":        func(c *ClientConfig) { c.SessionWait = -1 },
		"DrainTimeout is negative":       func(c *ClientConfig) { c.DrainTimeout = -1 },
		"Engine.IdleTimeout is negative": func(c *ClientConfig) { c.Engine.IdleTimeout = -1 },
	} {
		cfg := ClientConfig{ListenOn: loopbackTCP(), ServerEndpoint: "127.0.0.1:1", Tokens: src, TLS: id.TLS}
		mod(&cfg)
		if _, err := NewClient(cfg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("client: got %v, want %q", err, want)
		}
	}
}

// A server whose socket fails cannot accept sessions any more: Run shuts down
// and returns the error (the program exits non-zero), instead of nil.
func TestServerRunReturnsAFatalAcceptError(t *testing.T) {
	var logs logtap.Tap
	id, err := trust.LoadServer(trust.ServerOptions{StateDir: t.TempDir()}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	parser, _ := token.NewParser("cleartext", "")
	srv, err := NewServer(ServerConfig{ListenOn: "127.0.0.1:0", Parser: parser, TLS: id.TLS,
		Logger: logs.Logger(slog.LevelDebug, "side", "server"), DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	srv.conn.Close() // the UDP socket and the layers on it fail under quic-go
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "accept sessions") {
			t.Fatalf("Run returned %v, want the accept error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its socket failed")
	}
	if !strings.Contains(logs.String(), `level=ERROR msg="cannot accept sessions: shutting down, draining tunnels"`) {
		t.Errorf("log:\n%s", logs.String())
	}
}

// A tunnel that ran and was then reset by the server (its application's
// connection failed) is a tunnel ended by the peer, not a refusal: the client
// logs it and counts it as such.
func TestServerResetAfterStartIsNotARefusal(t *testing.T) {
	resetNow := make(chan struct{})
	srvApp := startApp(t, loopbackTCP(), func(c net.Conn) {
		buf := make([]byte, 5)
		io.ReadFull(c, buf)
		c.Write(buf)
		<-resetNow
		c.(*net.TCPConn).SetLinger(0) // the Close after this returns sends RST
	})
	defer srvApp.close()
	var clientLog logtap.Tap
	p := startPair(t, pairOptions{token: srvApp.addr.String(),
		clientMods: func(c *ClientConfig) { c.Logger = clientLog.Logger(slog.LevelDebug, "side", "client") }})
	defer p.stop()

	c := dialApp(t, p.client.Addr())
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q, %v", buf, err)
	}
	close(resetNow)
	start := time.Now()
	if n, err := c.Read(buf); n != 0 || err == nil {
		t.Fatalf("read %d bytes, %v after the reset", n, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the application was closed %v after the reset", d)
	}
	waitUntil(t, func() bool {
		return gather(t, p.client)[`quictun_tunnels_closed_total{endpoint="client",how="peer"}`] == 1
	})
	for k, v := range gather(t, p.client) {
		if strings.HasPrefix(k, "quictun_tunnel_failures_total") && v != 0 {
			t.Errorf("%s = %v: a tunnel that ran counted as a failure to start", k, v)
		}
	}
	waitUntil(t, func() bool { return strings.Contains(clientLog.String(), `msg="tunnel closed"`) })
	if log := clientLog.String(); !strings.Contains(log, "tunnel reset by the server endpoint: internal error") || strings.Contains(log, "refused") {
		t.Errorf("client log:\n%s", log)
	}
}

// A refused tunnel is still a refusal on the client, also when the reset
// overtakes the status frame; this one's target is unreachable.
func TestRefusalIsStillAFailure(t *testing.T) {
	var clientLog logtap.Tap
	p := startPair(t, pairOptions{token: "tcp:127.0.0.1:1",
		clientMods: func(c *ClientConfig) { c.Logger = clientLog.Logger(slog.LevelDebug, "side", "client") }})
	defer p.stop()
	assertClosedPromptly(t, p.client.Addr(), true)
	waitUntil(t, func() bool {
		return gather(t, p.client)[`quictun_tunnel_failures_total{endpoint="client",reason="target unreachable"}`] == 1
	})
	if got := gather(t, p.client)[`quictun_tunnels_closed_total{endpoint="client",how="peer"}`]; got != 0 {
		t.Errorf("a refusal counted as a tunnel ended by the peer: %v", got)
	}
	if log := clientLog.String(); !strings.Contains(log, "server refused tunnel: target unreachable") {
		t.Errorf("client log:\n%s", log)
	}
}
