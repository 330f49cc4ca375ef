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
	// ListenOn and Tokens, when set, make the forward named DefaultForward:
	// applications that connect to ListenOn (TCP or UNIX socket) get tunnels
	// to where Tokens says.
	ListenOn address.Address
	Tokens   token.Source
	// Forwards are further forwards (see ForwardSpec), all over the same
	// session. A client needs at least one forward.
	Forwards []ForwardSpec
	// Reverses are reverse forwards (see ReverseSpec): the server listens,
	// this client dials their targets.
	Reverses []ReverseSpec
	// ServerEndpoint is the server endpoint's UDP "host:port".
	ServerEndpoint string
	TLS            *tls.Config
	// Secret is the client's secret, proved in each session's hello (never
	// sent); empty proves none. At most preamble.MaxSecretLen bytes.
	Secret []byte
	// Identity names the server's identity that Secret belongs to; empty is
	// the server's shared secret (--secret).
	Identity string
	Engine   engine.Config
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
	// Congestion names the sender's congestion controller (quicconf.BBR, the
	// default, or quicconf.Reno).
	Congestion string
	Logger     *slog.Logger
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

// Client is a client endpoint: it accepts application connections on each of
// its forwards and carries each over its own stream of one warm QUIC session
// to the server endpoint.
type Client struct {
	cfg      ClientConfig
	log      *slog.Logger
	reg      *engine.Registry
	conn     net.PacketConn // the UDP socket with the layers above it; closing it closes them all
	rec      *recovery.Conn // the loss-recovery layer; nil when it is off
	tr       *quic.Transport
	sessions *sessionKeeper
	metrics  *metrics
	forwards forwardSet
	first    string // the first forward's name, for Addr

	udp   udpEndpoint // UDP flows' counts (clientudp.go)
	flows struct {    // UDP flows by session, for the sessions' datagrams
		sync.Mutex
		bySession map[*quic.Conn]*flowTable
	}

	accepters sync.WaitGroup // the forwards' accept loops
	retirers  sync.WaitGroup // removed forwards draining
	reverse   reverseSet
}

// NewClient validates cfg and binds the forwards' listeners and the UDP
// socket, so that errors show at start and Addr is known before Run.
func NewClient(cfg ClientConfig) (*Client, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	legacy := cfg.ListenOn != (address.Address{}) || cfg.Tokens != nil
	if legacy && (cfg.Tokens == nil || cfg.ListenOn == (address.Address{})) {
		return nil, errors.New("client: ListenOn and Tokens go together")
	}
	if !legacy && len(cfg.Forwards) == 0 && len(cfg.Reverses) == 0 {
		return nil, errors.New("client: no forward: nothing to listen on")
	}
	if cfg.TLS == nil {
		return nil, errors.New("client: TLS config is required")
	}
	if err := validateSecret(cfg.Secret); err != nil {
		return nil, err
	}
	if err := address.ParseHostPort(cfg.ServerEndpoint); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: cfg.Logger, reg: engine.NewRegistry(cfg.Engine), udp: udpEndpoint{stats: newUDPStats()}}
	c.forwards.live = map[string]*forward{}
	if err := c.SetReverses(cfg.Reverses); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if legacy {
		f := &forward{name: DefaultForward, listen: cfg.ListenOn, tokens: cfg.Tokens, stats: newForwardStats()}
		if err := f.bind(); err != nil {
			return nil, err
		}
		c.forwards.live[f.name], c.forwards.order = f, []string{f.name}
	}
	if err := c.change(nil, cfg.Forwards, false); err != nil {
		c.closeListeners()
		return nil, err
	}
	if len(c.forwards.order) > 0 {
		c.first = c.forwards.order[0]
	}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		c.closeListeners()
		return nil, fmt.Errorf("open UDP socket: %w", err)
	}
	qc, err := quicConfigFor(cfg.Congestion)
	if err != nil {
		udp.Close()
		c.closeListeners()
		return nil, fmt.Errorf("client: %w", err)
	}
	pc, rec, err := linkLayers(udp, cfg.WrapUDP, cfg.Recovery, false, qc)
	if err != nil {
		c.closeListeners()
		return nil, err
	}
	c.conn, c.rec, c.tr = pc, rec, &quic.Transport{Conn: pc}
	c.sessions = newSessionKeeper(c.tr, cfg.ServerEndpoint, cfg.TLS, qc, credentials{cfg.Identity, cfg.Secret}, cfg.Logger)
	hs := newHandshakes(engine.ClientEndpoint)
	c.sessions.dialFailed = hs.failed
	c.sessions.onSession = c.serveReverse
	c.sessions.datagrams = c.receiveDatagram
	extra := []prometheus.Collector{&forwardCollector{client: c}, c.udp.collector(engine.ClientEndpoint, c.reg), reverseClientCollector{c}}
	if rec != nil {
		extra = append(extra, newRecoveryCollector(rec, string(engine.ClientEndpoint)))
	}
	c.metrics = newMetrics(engine.ClientEndpoint, c.reg, c.sessions.live, hs, extra...)
	return c, nil
}

// closeListeners closes every forward's listener, for a NewClient that fails
// after binding them.
func (c *Client) closeListeners() {
	for _, f := range c.forwards.live {
		f.closeListener()
	}
}

// Recovery is the client's loss-recovery layer, nil when it is off.
func (c *Client) Recovery() *recovery.Conn { return c.rec }

// Gatherer is the client's Prometheus registry.
func (c *Client) Gatherer() prometheus.Gatherer { return c.metrics.registry }

// Addr is where the applications of the client's first forward connect:
// the DefaultForward when ClientConfig made one.
func (c *Client) Addr() net.Addr {
	if a := c.ForwardAddr(c.first); a != nil {
		return a
	}
	return nil
}

// Registry is the client's tunnel table.
func (c *Client) Registry() *engine.Registry { return c.reg }

// Run serves until ctx ends, then stops accepting, lets live tunnels drain for
// DrainTimeout, closes the rest and the session, and returns nil once every
// goroutine it started has ended. Forwards may be added and removed while it
// runs.
func (c *Client) Run(ctx context.Context) error {
	keeperCtx, stopKeeper := context.WithCancel(context.WithoutCancel(ctx))
	tunnelsCtx, stopTunnels := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopTunnels(nil)
	c.reverse.tunnels = tunnelsCtx
	var keeper sync.WaitGroup
	keeper.Go(func() { c.sessions.run(keeperCtx) })

	c.forwards.Lock()
	if c.forwards.running || c.forwards.stopped {
		c.forwards.Unlock()
		stopKeeper()
		keeper.Wait()
		return errors.New("client: Run called twice")
	}
	c.forwards.running, c.forwards.parent, c.forwards.tunnels = true, ctx, tunnelsCtx
	for _, name := range c.forwards.order {
		c.start(c.forwards.live[name])
	}
	c.forwards.Unlock()

	<-ctx.Done()
	c.forwards.Lock()
	c.forwards.stopped = true
	live := make([]*forward, 0, len(c.forwards.live))
	for _, f := range c.forwards.live {
		f.closeListener()
		live = append(live, f)
	}
	c.forwards.Unlock()
	c.accepters.Wait()

	c.log.Info("shutting down: draining tunnels", "tunnels", c.reg.Len(), "for", c.cfg.DrainTimeout)
	deadline := time.Now().Add(c.cfg.DrainTimeout)
	drain(c.reg, deadline)
	settle(c.sessions.live(), deadline)
	stopTunnels(engine.ErrShutdown)
	for _, f := range live {
		f.handlers.Wait()
		f.stopTunnels(nil)
	}
	c.retirers.Wait()
	stopKeeper()
	keeper.Wait()
	c.reverse.handlers.Wait() // their sessions are closed: they end
	c.tr.Close()
	c.conn.Close()
	c.log.Info("stopped")
	return nil
}

// serveApp carries one application connection of forward f. f.ctx bounds
// the set-up (an application that connects while the forward or the
// endpoint stops is refused); f.tunnels bounds the tunnel itself.
func (c *Client) serveApp(f *forward, app net.Conn) {
	log := c.log.With("forward", f.name, "app", app.RemoteAddr().String())
	if f.proxy != "" {
		c.serveProxy(f, app, log)
		return
	}
	setup, cancel := context.WithTimeout(f.ctx, c.cfg.SessionWait)
	defer cancel()
	failed := func(reason string) {
		c.metrics.failed(reason)
		f.stats.failed(reason)
	}
	tok, err := f.tokens.Token(setup, app.RemoteAddr())
	if err != nil {
		log.Warn("application connection closed: no token", "err", err)
		failed(failNoToken)
		app.Close()
		return
	}
	hdr, err := preamble.AppendHeader(nil, preamble.Header{Token: []byte(tok)})
	if err != nil {
		log.Warn("application connection closed: bad token", "err", err)
		failed(failNoToken)
		app.Close()
		return
	}
	stream, err := openClientStream(setup, c.sessions, c.cfg.SessionWait, hdr)
	if err != nil {
		log.Warn("application connection closed: no tunnel", "err", err)
		failed(failNoSession)
		app.Close()
		return
	}
	c.runTunnel(f, app, stream, tok, log)
}

// runTunnel registers and runs the tunnel of app on stream, whose header
// carried tok, until it ends.
func (c *Client) runTunnel(f *forward, app net.Conn, stream *clientStream, tok string, log *slog.Logger) {
	_, conn := stream.current()
	t := c.reg.Open(f.tunnels, engine.Info{
		Endpoint:           engine.ClientEndpoint,
		StreamID:           stream.StreamID(),
		ClientAppAddr:      address.DisplayConn(app),
		ServerAppAddr:      displayTarget(tok),
		RemoteEndpointAddr: conn.RemoteAddr().String(),
		Session:            conn.RemoteAddr().String(),
		Forward:            f.name,
	})
	f.stats.opened.Add(1)
	log = log.With("tunnel", t.ID, "stream", stream.StreamID())
	log.Debug("tunnel opened")
	// A replay moves the tunnel to a stream of the next session: the API
	// shows that one from then on.
	stream.replayed = func(st *quic.Stream, conn *quic.Conn) {
		t.SetStream(int64(st.StreamID()), conn.RemoteAddr().String())
		log.Info("tunnel replayed on a new session", "new_stream", int64(st.StreamID()))
	}
	err := t.Run(engine.ConnSide(app), stream)
	f.stats.closedUp.Add(t.BytesUp())
	f.stats.closedDown.Add(t.BytesDown())
	// Only a refusal (the status, or a reset before it came) is a tunnel that
	// failed to start; a reset later ended a tunnel that ran.
	if se := (*preamble.StatusError)(nil); errors.As(err, &se) {
		c.metrics.failedWith(se.Status.Code)
		f.stats.failed(se.Status.Code.String())
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
