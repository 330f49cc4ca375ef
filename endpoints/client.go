package endpoints

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/engine"
	"github.com/quictun/quictun/recovery"
)

// ClientConfig is what a client endpoint needs; cmd/quictun-client fills it.
type ClientConfig struct {
	// ListenOn is where applications connect (TCP or UNIX socket).
	ListenOn address.Address
	// ServerEndpoint is the server endpoint's UDP "host:port".
	ServerEndpoint string
	Tokens         token.Source
	TLS            *tls.Config
	// Secret is the shared secret sent in each header; empty sends none. At
	// most preamble.MaxSecretLen bytes.
	Secret []byte
	Engine engine.Config
	// SessionWait is how long a new application connection waits for a session
	// while the server is unreachable, before it is closed (0: 10 s; negative
	// is an error).
	SessionWait time.Duration
	// DrainTimeout is how long shutdown lets live tunnels finish (0: 10 s;
	// negative is an error).
	DrainTimeout time.Duration
	// WrapUDP, when set, puts a layer between the UDP socket and quic-go (link
	// emulation in tests).
	WrapUDP func(net.PacketConn) net.PacketConn
	// Recovery configures the loss-recovery layer; nil is recovery.DefaultConfig.
	Recovery *recovery.Config
	Logger   *slog.Logger
}

func (c *ClientConfig) setDefaults() error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(
		checkIdleTimeout(c.Engine),
		orDefault("SessionWait", &c.SessionWait, 10*time.Second),
		orDefault("DrainTimeout", &c.DrainTimeout, 10*time.Second),
	)
}

// Client is a client endpoint: it accepts application connections and carries
// each over its own stream of one warm QUIC session to the server endpoint.
type Client struct {
	cfg      ClientConfig
	log      *slog.Logger
	reg      *engine.Registry
	ln       net.Listener
	conn     net.PacketConn // the UDP socket with the layers above it; closing it closes them all
	rec      *recovery.Conn // the loss-recovery layer; nil when it is off
	tr       *quic.Transport
	sessions *sessionKeeper
	metrics  *metrics
}

// NewClient validates cfg and binds both the application listener and the UDP
// socket, so that errors show at start and Addr is known before Run.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if cfg.Tokens == nil || cfg.TLS == nil {
		return nil, errors.New("client: token source and TLS config are required")
	}
	if err := validateSecret(cfg.Secret); err != nil {
		return nil, err
	}
	if err := address.ParseHostPort(cfg.ServerEndpoint); err != nil {
		return nil, err
	}
	ln, err := cfg.ListenOn.Listen()
	if err != nil {
		return nil, err
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("open UDP socket: %w", err)
	}
	qc := quicConfig()
	pc, rec, err := linkLayers(udp, cfg.WrapUDP, cfg.Recovery, false, qc)
	if err != nil {
		ln.Close()
		return nil, err
	}
	tr := &quic.Transport{Conn: pc}
	c := &Client{
		cfg: cfg, log: cfg.Logger, reg: engine.NewRegistry(cfg.Engine),
		ln: ln, conn: pc, rec: rec, tr: tr,
		sessions: newSessionKeeper(tr, cfg.ServerEndpoint, cfg.TLS, qc, cfg.Secret, cfg.Logger),
	}
	hs := newHandshakes(engine.ClientEndpoint)
	c.sessions.dialFailed = hs.failed
	var extra []prometheus.Collector
	if rec != nil {
		extra = append(extra, newRecoveryCollector(rec, string(engine.ClientEndpoint)))
	}
	c.metrics = newMetrics(engine.ClientEndpoint, c.reg, c.sessions.live, hs, extra...)
	return c, nil
}

// Recovery is the client's loss-recovery layer, nil when it is off.
func (c *Client) Recovery() *recovery.Conn { return c.rec }

// Gatherer is the client's Prometheus registry.
func (c *Client) Gatherer() prometheus.Gatherer { return c.metrics.registry }

// Addr is where applications connect.
func (c *Client) Addr() net.Addr { return c.ln.Addr() }

// Registry is the client's tunnel table.
func (c *Client) Registry() *engine.Registry { return c.reg }

// Run serves until ctx ends, then stops accepting, lets live tunnels drain for
// DrainTimeout, closes the rest and the session, and returns nil once every
// goroutine it started has ended.
func (c *Client) Run(ctx context.Context) error {
	keeperCtx, stopKeeper := context.WithCancel(context.WithoutCancel(ctx))
	tunnelsCtx, stopTunnels := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopTunnels(nil)
	var keeper, handlers sync.WaitGroup
	keeper.Go(func() { c.sessions.run(keeperCtx) })

	stopAccept := context.AfterFunc(ctx, func() { c.ln.Close() })
	defer stopAccept()
	var backoff time.Duration
	for {
		app, err := c.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			// Out of file descriptors and the like: back off rather than spin.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			c.log.Error("accept application connection", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
				continue
			case <-ctx.Done():
			}
			break
		}
		backoff = 0
		handlers.Go(func() { c.serveApp(ctx, tunnelsCtx, app) })
	}

	c.log.Info("shutting down: draining tunnels", "tunnels", c.reg.Len(), "for", c.cfg.DrainTimeout)
	deadline := time.Now().Add(c.cfg.DrainTimeout)
	drain(c.reg, deadline)
	settle(c.sessions.live(), deadline)
	stopTunnels(engine.ErrShutdown)
	handlers.Wait()
	stopKeeper()
	keeper.Wait()
	c.tr.Close()
	c.conn.Close()
	c.log.Info("stopped")
	return nil
}

// serveApp carries one application connection. acceptCtx bounds the set-up
// (an application that connects while the endpoint stops is refused);
// tunnelsCtx bounds the tunnel itself.
func (c *Client) serveApp(acceptCtx, tunnelsCtx context.Context, app net.Conn) {
	log := c.log.With("app", app.RemoteAddr().String())
	setup, cancel := context.WithTimeout(acceptCtx, c.cfg.SessionWait)
	defer cancel()
	tok, err := c.cfg.Tokens.Token(setup, app.RemoteAddr())
	if err != nil {
		log.Warn("application connection closed: no token", "err", err)
		c.metrics.failed(failNoToken)
		app.Close()
		return
	}
	hdr, err := preamble.AppendHeader(nil, preamble.Header{Token: []byte(tok), Secret: c.cfg.Secret})
	if err != nil {
		log.Warn("application connection closed: bad token", "err", err)
		c.metrics.failed(failNoToken)
		app.Close()
		return
	}
	stream, err := openClientStream(setup, c.sessions, c.cfg.SessionWait, hdr)
	if err != nil {
		log.Warn("application connection closed: no tunnel", "err", err)
		c.metrics.failed(failNoSession)
		app.Close()
		return
	}
	_, conn := stream.current()
	t := c.reg.Open(tunnelsCtx, engine.Info{
		Endpoint:           engine.ClientEndpoint,
		StreamID:           stream.StreamID(),
		ClientAppAddr:      address.DisplayConn(app),
		ServerAppAddr:      displayTarget(tok),
		RemoteEndpointAddr: conn.RemoteAddr().String(),
		Session:            conn.RemoteAddr().String(),
	})
	log = log.With("tunnel", t.ID, "stream", stream.StreamID())
	log.Debug("tunnel opened")
	// A replay moves the tunnel to a stream of the next session: the API
	// shows that one from then on.
	stream.replayed = func(st *quic.Stream, conn *quic.Conn) {
		t.SetStream(int64(st.StreamID()), conn.RemoteAddr().String())
		log.Info("tunnel replayed on a new session", "new_stream", int64(st.StreamID()))
	}
	err = t.Run(engine.ConnSide(app), stream)
	// Only a refusal (the status, or a reset before it came) is a tunnel that
	// failed to start; a reset later ended a tunnel that ran.
	if se := (*preamble.StatusError)(nil); errors.As(err, &se) {
		c.metrics.failedWith(se.Status.Code)
	} else {
		c.metrics.ended(err)
	}
	logTunnelEnd(log, t, err)
}

// displayTarget shows the token as the server application's address when it
// is one (the Fixed source's usual case), in the API's form (see
// address.Display), and nothing otherwise: a token may be a credential and
// must not leak into the API.
func displayTarget(tok string) string {
	if a, err := address.Parse(tok); err == nil {
		return a.Display()
	}
	return ""
}
