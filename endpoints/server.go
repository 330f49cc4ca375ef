package endpoints

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/engine"
	"github.com/quictun/quictun/recovery"
)

// ServerConfig is what a server endpoint needs; cmd/quictun-server fills it.
//
// Zero limits and timeouts take their defaults; negative ones are an error.
type ServerConfig struct {
	// ListenOn is the UDP address to listen on ("0.0.0.0:7500").
	ListenOn string
	Parser   token.Parser
	TLS      *tls.Config
	// ResetKey, when set, lets a restarted server reset its old sessions at once.
	ResetKey *[32]byte
	Engine   engine.Config
	// DialTimeout bounds connecting to a server application (0: 5 s).
	DialTimeout time.Duration
	// PreambleTimeout bounds how long a new session may take for its TLS
	// handshake, a new stream to send its header, and a new session to present
	// a valid header (its hello) before it is closed (0: 10 s).
	PreambleTimeout time.Duration
	// DrainTimeout is how long shutdown lets live tunnels finish (0: 10 s).
	DrainTimeout time.Duration
	// Secret, when set, must come in every stream's header (compared in
	// constant time); a client without it is refused with CodeAuthFailed, and
	// its session is closed unless it presented the secret before. At most
	// preamble.MaxSecretLen bytes.
	Secret []byte
	// Policy restricts the targets tokens may name; nil allows every target.
	Policy *policy.Policy
	Limits Limits
	// WrapUDP, when set, puts a layer between the UDP socket and quic-go (link
	// emulation in tests).
	WrapUDP func(net.PacketConn) net.PacketConn
	// Recovery configures the loss-recovery layer; nil is recovery.DefaultConfig.
	Recovery *recovery.Config
	Logger   *slog.Logger
}

// Limits protect a server from more than it can carry. Past a limit a new
// session or tunnel is refused with CodeOverloaded; live ones are untouched.
// Zero is the default of each.
type Limits struct {
	MaxSessions          int // QUIC sessions at once (default 256)
	MaxTunnels           int // tunnels at once over all sessions (default 8192)
	MaxTunnelsPerSession int // tunnels at once on one session (default 4096)
	// MaxHeaderSize bounds a stream's header: token plus secret (default
	// preamble.MaxHeaderLen, which is also the most it may be).
	MaxHeaderSize int
	// MaxTokenSize bounds the token inside the header (default the smaller of
	// preamble.MaxTokenLen and MaxHeaderSize; never more than either).
	MaxTokenSize int
}

func (l *Limits) setDefaults() error {
	err := errors.Join(
		orDefault("Limits.MaxSessions", &l.MaxSessions, 256),
		orDefault("Limits.MaxTunnels", &l.MaxTunnels, 8192),
		orDefault("Limits.MaxTunnelsPerSession", &l.MaxTunnelsPerSession, 4096),
		orDefault("Limits.MaxHeaderSize", &l.MaxHeaderSize, preamble.MaxHeaderLen),
	)
	// After MaxHeaderSize has its default: the token's defaults to what fits.
	return errors.Join(err, orDefault("Limits.MaxTokenSize", &l.MaxTokenSize, min(preamble.MaxTokenLen, l.MaxHeaderSize)))
}

// validate names the first limit that the wire format cannot honour.
func (l *Limits) validate() error {
	switch {
	case l.MaxHeaderSize > preamble.MaxHeaderLen:
		return fmt.Errorf("max preamble size %d bytes exceeds the wire format's limit of %d", l.MaxHeaderSize, preamble.MaxHeaderLen)
	case l.MaxTokenSize > preamble.MaxTokenLen:
		return fmt.Errorf("max token size %d bytes exceeds the wire format's limit of %d", l.MaxTokenSize, preamble.MaxTokenLen)
	case l.MaxTokenSize > l.MaxHeaderSize:
		return fmt.Errorf("max token size %d bytes exceeds the max preamble size of %d bytes that holds it", l.MaxTokenSize, l.MaxHeaderSize)
	}
	return nil
}

// validateSecret refuses a secret that no header could carry: every tunnel
// would fail.
func validateSecret(secret []byte) error {
	if len(secret) > preamble.MaxSecretLen {
		return fmt.Errorf("shared secret of %d bytes exceeds the wire format's limit of %d", len(secret), preamble.MaxSecretLen)
	}
	return nil
}

func (c *ServerConfig) setDefaults() error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(
		c.Limits.setDefaults(),
		checkIdleTimeout(c.Engine),
		orDefault("DialTimeout", &c.DialTimeout, 5*time.Second),
		orDefault("PreambleTimeout", &c.PreambleTimeout, 10*time.Second),
		orDefault("DrainTimeout", &c.DrainTimeout, 10*time.Second),
	)
}

// checkIdleTimeout refuses a negative idle timeout, which the engine would
// take as none.
func checkIdleTimeout(c engine.Config) error {
	if c.IdleTimeout < 0 {
		return fmt.Errorf("Engine.IdleTimeout is negative (%v); 0 means never", c.IdleTimeout)
	}
	return nil
}

// orDefault sets a zero *v to def; a negative one is an error naming field,
// rather than a default the caller did not ask for.
func orDefault[T int | time.Duration](field string, v *T, def T) error {
	switch {
	case *v < 0:
		return fmt.Errorf("%s is negative (%v); 0 means the default, %v", field, *v, def)
	case *v == 0:
		*v = def
	}
	return nil
}

// Server is a server endpoint: it accepts QUIC sessions from client endpoints
// and connects each of their streams to the server application its token names.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
	reg *engine.Registry

	conn net.PacketConn // the UDP socket with the layers above it; closing it closes them all
	rec  *recovery.Conn // the loss-recovery layer
	tr   *quic.Transport
	ln   *quic.Listener

	metrics    *metrics
	handshakes *handshakeGate
	draining   atomic.Bool
	tunnels    atomic.Int64 // admitted tunnels, for Limits.MaxTunnels
	secret     [sha256.Size]byte
	sessions   struct {
		sync.Mutex
		live map[*quic.Conn]*serverSession
	}
}

// serverSession is one client endpoint's session as the server tracks it.
//
// A session holds one of the server's MaxSessions slots from its handshake on,
// but mutual TLS aside, the handshake proves nothing about the client; the
// shared secret comes in stream headers. So a session must present one valid
// header (the client's hello, or any tunnel's) within PreambleTimeout, and one
// that presents a wrong secret before a valid one is closed: without it, anyone
// who reaches the port could hold every slot with keep-alives.
type serverSession struct {
	conn     *quic.Conn
	peer     string       // the client's address, and its certificate's subject under mutual TLS
	tunnels  atomic.Int64 // admitted streams, for Limits.MaxTunnelsPerSession
	authOnce sync.Once
	authed   chan struct{} // closed once a header passed authentication
}

func (sess *serverSession) authenticate() { sess.authOnce.Do(func() { close(sess.authed) }) }

func (sess *serverSession) authenticated() bool {
	select {
	case <-sess.authed:
		return true
	default:
		return false
	}
}

// NewServer validates cfg and binds the UDP socket, so that a bad address fails
// at start and Addr is known before Run.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.Parser == nil || cfg.TLS == nil {
		return nil, errors.New("server: token parser and TLS config are required")
	}
	if err := cfg.Limits.validate(); err != nil {
		return nil, err
	}
	if err := validateSecret(cfg.Secret); err != nil {
		return nil, err
	}
	udpAddr, err := net.ResolveUDPAddr("udp", cfg.ListenOn)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", cfg.ListenOn, err)
	}
	udp, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.ListenOn, err)
	}
	qc := serverQUICConfig(cfg)
	pc, rec, err := linkLayers(udp, cfg.WrapUDP, cfg.Recovery, true, qc)
	if err != nil {
		return nil, err
	}
	gate := &handshakeGate{limit: maxPendingHandshakes, log: cfg.Logger}
	hs := newHandshakes(engine.ServerEndpoint)
	tr := &quic.Transport{Conn: pc, VerifySourceAddress: gate.crowded,
		ConnContext: func(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
			ctx, err := gate.started(ctx, info) // counts it against the pending handshakes
			if err != nil {
				return ctx, err
			}
			return hs.watch(ctx, info) // counts its failure by reason
		}}
	if cfg.ResetKey != nil {
		k := quic.StatelessResetKey(*cfg.ResetKey)
		tr.StatelessResetKey = &k
	}
	ln, err := tr.Listen(cfg.TLS, qc)
	if err != nil {
		tr.Close()
		pc.Close()
		return nil, fmt.Errorf("listen on %s: %w", cfg.ListenOn, err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, reg: engine.NewRegistry(cfg.Engine), conn: pc, rec: rec, tr: tr, ln: ln, handshakes: gate}
	s.sessions.live = make(map[*quic.Conn]*serverSession)
	if len(cfg.Secret) > 0 {
		s.secret = sha256.Sum256(cfg.Secret)
	}
	s.metrics = newMetrics(engine.ServerEndpoint, s.reg, s.liveSessions, hs, newRecoveryCollector(rec, string(engine.ServerEndpoint)))
	warnIfOpen(s.log, s.Addr(), &cfg)
	return s, nil
}

// serverQUICConfig is the server's QUIC configuration: the endpoints' common
// one, with the handshake bounded by PreambleTimeout (quic-go aborts a
// handshake that takes twice its idle timeout, or that hears nothing for the
// idle timeout), and the streams a client may have open at once bounded by
// the tunnel limit per session plus room for the refusals of a session at
// its limit, so that streams waiting for their header cannot pile up past it.
func serverQUICConfig(cfg ServerConfig) *quic.Config {
	qc := quicConfig()
	qc.HandshakeIdleTimeout = cfg.PreambleTimeout / 2
	qc.MaxIncomingStreams = int64(min(cfg.Limits.MaxTunnelsPerSession+refusalsInFlight, maxStreamsPerSession))
	return qc
}

// refusalsInFlight is how many streams past its tunnel limit a session may
// open at once: each is answered at once with CodeOverloaded, and the client
// learns of its refusal instead of waiting for QUIC stream credit.
const refusalsInFlight = 64

// warnIfOpen warns loudly when anyone who can reach the server may use it:
// it listens beyond loopback with neither mutual TLS nor a shared secret.
func warnIfOpen(log *slog.Logger, addr net.Addr, cfg *ServerConfig) {
	if isLoopback(addr) {
		return
	}
	if cfg.TLS.ClientAuth != tls.RequireAndVerifyClientCert && len(cfg.Secret) == 0 {
		log.Warn("ANYONE CAN USE THIS SERVER: it listens beyond loopback with neither a shared secret (--secret) " +
			"nor mutual TLS (--verify-remote-endpoint); every client that can reach the port can open tunnels " +
			"to every target tokens may name")
	}
	if cfg.Policy == nil {
		log.Warn("no allow rules (--allow): tokens may name any target this host can reach")
	}
}

func isLoopback(a net.Addr) bool {
	u, ok := a.(*net.UDPAddr)
	return ok && u.IP.IsLoopback()
}

// Recovery is the server's loss-recovery layer.
func (s *Server) Recovery() *recovery.Conn { return s.rec }

// Gatherer is the server's Prometheus registry.
func (s *Server) Gatherer() prometheus.Gatherer { return s.metrics.registry }

func (s *Server) liveSessions() []*quic.Conn {
	s.sessions.Lock()
	defer s.sessions.Unlock()
	out := make([]*quic.Conn, 0, len(s.sessions.live))
	for c := range s.sessions.live {
		out = append(out, c)
	}
	return out
}

// Addr is the UDP address the server listens on.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// Registry is the server's tunnel table.
func (s *Server) Registry() *engine.Registry { return s.reg }

// Run serves until ctx ends, then shuts down gracefully: it refuses new
// tunnels, lets live ones drain for DrainTimeout, closes the rest and closes
// every session. It returns nil after ctx ended, or the error that stopped it
// from accepting sessions (its UDP socket failed), after the same shutdown, so
// that the program exits with a failure. Every goroutine it started has ended
// when it returns.
func (s *Server) Run(ctx context.Context) error {
	tunnelsCtx, stopTunnels := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopTunnels(nil)
	var handlers sync.WaitGroup
	var failed error
	for {
		conn, err := s.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() == nil {
				failed = fmt.Errorf("accept sessions: %w", err)
			}
			break
		}
		s.metrics.accepted(conn)
		sess, ok := s.trackSession(conn)
		if !ok {
			s.log.Warn("session refused: too many sessions", "session", sess.peer, "max", s.cfg.Limits.MaxSessions)
			s.metrics.failed("too many sessions")
			conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeOverloaded), "server overloaded: too many sessions")
			continue
		}
		handlers.Go(func() { s.serveSession(tunnelsCtx, sess, &handlers) })
	}

	s.draining.Store(true)
	if failed != nil {
		s.log.Error("cannot accept sessions: shutting down, draining tunnels", "err", failed, "tunnels", s.reg.Len(), "for", s.cfg.DrainTimeout)
	} else {
		s.log.Info("shutting down: draining tunnels", "tunnels", s.reg.Len(), "for", s.cfg.DrainTimeout)
	}
	deadline := time.Now().Add(s.cfg.DrainTimeout)
	drain(s.reg, deadline)
	settle(s.liveSessions(), deadline)
	stopTunnels(engine.ErrShutdown)
	s.closeSessions("server shutting down")
	handlers.Wait()
	s.ln.Close()
	s.tr.Close()
	s.conn.Close()
	s.log.Info("stopped")
	return failed
}

// drain waits until reg has no live tunnel or the deadline passes.
func drain(reg *engine.Registry, deadline time.Time) {
	for reg.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// settle gives quic-go time to deliver what the drained tunnels wrote last
// before their sessions are closed: a tunnel ends when both its directions are
// closed, not when the peer has acknowledged the data, and a CONNECTION_CLOSE
// throws away whatever is still unacknowledged (on a lossy link, the tail of a
// transfer). quic-go does not expose bytes in flight; a session whose traffic
// has stopped for four probe timeouts (a lost tail is resent at one, two and
// four of them) has nothing left to deliver. settle returns when every session
// is that quiet, or has ended, or at the deadline.
func settle(sessions []*quic.Conn, deadline time.Time) {
	type progress struct {
		bytes uint64
		since time.Time
	}
	seen := make(map[*quic.Conn]progress, len(sessions))
	for {
		now := time.Now()
		settled := true
		for _, conn := range sessions {
			if conn.Context().Err() != nil {
				continue
			}
			st := conn.ConnectionStats()
			bytes := st.BytesSent + st.BytesReceived
			if p, ok := seen[conn]; !ok || p.bytes != bytes {
				seen[conn] = progress{bytes, now}
				settled = false
				continue
			}
			pto := st.SmoothedRTT + max(4*st.MeanDeviation, time.Millisecond) + 25*time.Millisecond // RFC 9002, quic-go's max ACK delay
			if now.Sub(seen[conn].since) < max(4*pto, 100*time.Millisecond) {
				settled = false
			}
		}
		if settled || !now.Before(deadline) {
			return
		}
		time.Sleep(min(10*time.Millisecond, time.Until(deadline)))
	}
}

// trackSession registers a new session unless the server has MaxSessions.
func (s *Server) trackSession(conn *quic.Conn) (*serverSession, bool) {
	s.handshakes.accepted(conn)
	sess := &serverSession{conn: conn, peer: sessionPeer(conn), authed: make(chan struct{})}
	s.sessions.Lock()
	defer s.sessions.Unlock()
	if len(s.sessions.live) >= s.cfg.Limits.MaxSessions {
		return sess, false
	}
	s.sessions.live[conn] = sess
	return sess, true
}

func (s *Server) untrackSession(conn *quic.Conn) {
	s.sessions.Lock()
	defer s.sessions.Unlock()
	delete(s.sessions.live, conn)
}

func (s *Server) closeSessions(why string) {
	s.sessions.Lock()
	defer s.sessions.Unlock()
	for conn := range s.sessions.live {
		conn.CloseWithError(0, why)
	}
}

// serveSession accepts the streams of one session until the session ends; it
// stays tracked until then, so that shutdown can close it with a
// CONNECTION_CLOSE the client hears (a transport closed under a live session
// leaves the client to find out by timeout).
//
// A stream counts against its session's tunnel limit from the moment it is
// accepted, not from when its header is read: streams that never send one
// would otherwise each hold a goroutine past the limit.
func (s *Server) serveSession(ctx context.Context, sess *serverSession, handlers *sync.WaitGroup) {
	defer s.untrackSession(sess.conn)
	log := s.log.With("session", sess.peer)
	log.Info("session opened")
	handlers.Go(func() { discardProbes(sess.conn) })
	handlers.Go(func() { s.closeIfSilent(sess, log) })
	for {
		stream, err := sess.conn.AcceptStream(sess.conn.Context())
		if err != nil {
			log.Info("session closed", "reason", sessionEndReason(sess.conn, err))
			return
		}
		if !s.admitStream(sess) {
			handlers.Go(func() {
				log.Warn("tunnel refused", "stream", int64(stream.StreamID()), "status", preamble.CodeOverloaded,
					"session_streams", sess.tunnels.Load(), "max", s.cfg.Limits.MaxTunnelsPerSession)
				s.refuse(stream, preamble.CodeOverloaded, "too many tunnels")
			})
			continue
		}
		handlers.Go(func() {
			defer sess.tunnels.Add(-1)
			s.serveStream(ctx, sess, stream)
		})
	}
}

// closeIfSilent closes a session that has presented no valid header within
// PreambleTimeout, so that it frees its slot (see serverSession).
func (s *Server) closeIfSilent(sess *serverSession, log *slog.Logger) {
	timer := time.NewTimer(s.cfg.PreambleTimeout)
	defer timer.Stop()
	select {
	case <-sess.authed:
	case <-sess.conn.Context().Done():
	case <-timer.C:
		log.Warn("session closed: no valid header within the handshake timeout", "timeout", s.cfg.PreambleTimeout)
		sess.conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeAuthFailed), "authentication failed: no valid header in time")
	}
}

// closeRefused closes a session whose first secret was wrong, once the client
// has had time to read the auth-failed status (a few round trips, within
// bounds); the CONNECTION_CLOSE carries the same code, should the status be
// lost. A client that hears the status closes the session itself first.
func (s *Server) closeRefused(sess *serverSession) {
	grace := min(max(3*sess.conn.ConnectionStats().SmoothedRTT, 100*time.Millisecond), time.Second)
	timer := time.NewTimer(grace)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-sess.conn.Context().Done():
		return
	}
	sess.conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeAuthFailed), "authentication failed: wrong or missing shared secret")
}

// discardProbes reads the client's liveness probes (see probePeriod) so that
// they do not queue up, until the session ends.
func discardProbes(conn *quic.Conn) {
	for {
		if _, err := conn.ReceiveDatagram(conn.Context()); err != nil {
			return
		}
	}
}

// sessionPeer names the client endpoint of a session: its address, and its
// certificate's subject under mutual TLS.
func sessionPeer(conn *quic.Conn) string {
	if id := trust.PeerIdentity(conn.ConnectionState().TLS); id != "" {
		return id + "@" + conn.RemoteAddr().String()
	}
	return conn.RemoteAddr().String()
}

func sessionEndReason(conn *quic.Conn, err error) string {
	if cause := context.Cause(conn.Context()); cause != nil {
		return cause.Error()
	}
	return err.Error()
}

// serveStream reads a stream's header, checks who may ask for what, connects
// to the target and runs the tunnel. Every refusal is answered with a status
// frame and logged with the client's identity; no other tunnel is touched.
func (s *Server) serveStream(ctx context.Context, sess *serverSession, stream *quic.Stream) {
	log := s.log.With("session", sess.peer, "stream", int64(stream.StreamID()))
	if s.draining.Load() {
		s.refuse(stream, preamble.CodeShutdown, "server is shutting down")
		return
	}
	_ = stream.SetReadDeadline(time.Now().Add(s.cfg.PreambleTimeout))
	hdr, err := preamble.ReadHeaderLimit(stream, s.cfg.Limits.MaxHeaderSize)
	if err != nil {
		if errors.Is(err, preamble.ErrMalformed) {
			log.Warn("tunnel refused", "status", preamble.CodeBadPreamble, "err", err)
			s.refuse(stream, preamble.CodeBadPreamble, err.Error())
		} else {
			log.Warn("tunnel abandoned before its header", "err", err)
			s.metrics.failedWith(preamble.CodeBadPreamble)
			stream.CancelRead(quic.StreamErrorCode(preamble.CodeBadPreamble))
			stream.CancelWrite(quic.StreamErrorCode(preamble.CodeBadPreamble))
		}
		return
	}
	_ = stream.SetReadDeadline(time.Time{})
	if !s.authenticated(hdr.Secret) {
		first := !sess.authenticated()
		log.Warn("tunnel refused", "status", preamble.CodeAuthFailed, "secret_given", len(hdr.Secret) > 0, "hello", hdr.Hello, "closing_session", first)
		s.refuse(stream, preamble.CodeAuthFailed, "wrong or missing shared secret")
		if first {
			s.closeRefused(sess)
		}
		return
	}
	sess.authenticate()
	if hdr.Hello {
		log.Debug("session authenticated")
		_, _ = stream.Write(preamble.AppendStatus(nil, preamble.Status{Code: preamble.CodeOK}))
		_ = stream.Close()
		stream.CancelRead(0)
		return
	}
	// What a client sent as its token is shown only when it is an address
	// (see token.Describe): it may be a credential.
	if len(hdr.Token) > s.cfg.Limits.MaxTokenSize {
		log.Warn("tunnel refused", "status", preamble.CodeBadToken, "token_len", len(hdr.Token), "max", s.cfg.Limits.MaxTokenSize)
		s.refuse(stream, preamble.CodeBadToken, fmt.Sprintf("token of %d bytes exceeds the limit of %d", len(hdr.Token), s.cfg.Limits.MaxTokenSize))
		return
	}
	if !s.admitTunnel() {
		log.Warn("tunnel refused", "status", preamble.CodeOverloaded, "tunnels", s.tunnels.Load(), "max", s.cfg.Limits.MaxTunnels)
		s.refuse(stream, preamble.CodeOverloaded, "too many tunnels")
		return
	}
	defer s.tunnels.Add(-1)
	target, err := s.cfg.Parser.Parse(hdr.Token)
	if err != nil {
		log.Warn("tunnel refused", "status", preamble.CodeBadToken, "token", token.Describe(hdr.Token), "err", err)
		s.refuse(stream, preamble.CodeBadToken, "")
		return
	}
	// The target is an internal address: it goes to the log, not to the client.
	log = log.With("target", target.String())
	dialAddr, err := s.cfg.Policy.Check(ctx, target)
	if err != nil {
		log.Warn("tunnel refused", "status", preamble.CodeForbidden, "err", err)
		s.refuse(stream, preamble.CodeForbidden, "")
		return
	}
	app, err := dialAddr.Dial(ctx, s.cfg.DialTimeout)
	if err != nil {
		log.Warn("tunnel refused", "status", preamble.CodeUnreachable, "err", err)
		s.refuse(stream, preamble.CodeUnreachable, "")
		return
	}
	if _, err := stream.Write(preamble.AppendStatus(nil, preamble.Status{Code: preamble.CodeOK})); err != nil {
		log.Warn("tunnel lost before it started", "err", err)
		app.Close()
		stream.CancelRead(quic.StreamErrorCode(preamble.CodeInternal))
		return
	}
	t := s.reg.Open(ctx, engine.Info{
		Endpoint:           engine.ServerEndpoint,
		StreamID:           int64(stream.StreamID()),
		ServerAppAddr:      target.Display(),
		RemoteEndpointAddr: sess.conn.RemoteAddr().String(),
		Session:            sess.peer,
	})
	log = log.With("tunnel", t.ID)
	log.Debug("tunnel opened")
	err = t.Run(engine.StreamSide(stream), engine.ConnSide(app))
	s.metrics.ended(err)
	logTunnelEnd(log, t, err)
}

// authenticated compares hashes in constant time, so neither the secret nor
// its length leaks through timing.
func (s *Server) authenticated(secret []byte) bool {
	if len(s.cfg.Secret) == 0 {
		return true
	}
	h := sha256.Sum256(secret)
	return subtle.ConstantTimeCompare(h[:], s.secret[:]) == 1
}

// admitStream counts a new stream, header or not, against the tunnel limit
// of its session, or refuses it.
func (s *Server) admitStream(sess *serverSession) bool {
	if sess.tunnels.Add(1) > int64(s.cfg.Limits.MaxTunnelsPerSession) {
		sess.tunnels.Add(-1)
		return false
	}
	return true
}

// admitTunnel counts a tunnel against the server's limit, or refuses it. It
// is checked once the header is read, so that a new session's hello gets
// through even while the server is full of other sessions' tunnels.
func (s *Server) admitTunnel() bool {
	if s.tunnels.Add(1) > int64(s.cfg.Limits.MaxTunnels) {
		s.tunnels.Add(-1)
		return false
	}
	return true
}

// refuse answers a stream with a failure status, then stops it: the status is
// sent before FIN, and STOP_SENDING with the same code tells the client to stop
// sending application bytes that nobody will read.
func (s *Server) refuse(stream *quic.Stream, code preamble.Code, msg string) {
	s.metrics.failedWith(code)
	_, _ = stream.Write(preamble.AppendStatus(nil, preamble.Status{Code: code, Message: msg}))
	_ = stream.Close()
	stream.CancelRead(quic.StreamErrorCode(code))
}

func logTunnelEnd(log *slog.Logger, t *engine.Tunnel, err error) {
	attrs := []any{"up", t.BytesUp(), "down", t.BytesDown(), "duration", time.Since(t.CreatedAt).Round(time.Millisecond)}
	if err != nil {
		log.Info("tunnel closed", append(attrs, "reason", err)...)
		return
	}
	log.Info("tunnel closed", attrs...)
}
