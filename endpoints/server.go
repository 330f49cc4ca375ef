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
type ServerConfig struct {
	// ListenOn is the UDP address to listen on ("0.0.0.0:7500").
	ListenOn string
	Parser   token.Parser
	TLS      *tls.Config
	// ResetKey, when set, lets a restarted server reset its old sessions at once.
	ResetKey *[32]byte
	Engine   engine.Config
	// DialTimeout bounds connecting to a server application (default 5 s).
	DialTimeout time.Duration
	// PreambleTimeout bounds how long a new stream may take to send its header
	// (default 10 s).
	PreambleTimeout time.Duration
	// DrainTimeout is how long shutdown lets live tunnels finish (default 10 s).
	DrainTimeout time.Duration
	// Secret, when set, must come in every stream's header (compared in
	// constant time); a client without it is refused with CodeAuthFailed.
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
type Limits struct {
	MaxSessions          int // QUIC sessions at once (default 256)
	MaxTunnels           int // tunnels at once over all sessions (default 8192)
	MaxTunnelsPerSession int // tunnels at once on one session (default 4096)
	// MaxHeaderSize bounds a stream's header: token plus secret (default and
	// ceiling preamble.MaxHeaderLen).
	MaxHeaderSize int
}

func (l *Limits) setDefaults() {
	if l.MaxSessions <= 0 {
		l.MaxSessions = 256
	}
	if l.MaxTunnels <= 0 {
		l.MaxTunnels = 8192
	}
	if l.MaxTunnelsPerSession <= 0 {
		l.MaxTunnelsPerSession = 4096
	}
	if l.MaxHeaderSize <= 0 || l.MaxHeaderSize > preamble.MaxHeaderLen {
		l.MaxHeaderSize = preamble.MaxHeaderLen
	}
}

func (c *ServerConfig) setDefaults() {
	c.Limits.setDefaults()
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.PreambleTimeout <= 0 {
		c.PreambleTimeout = 10 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
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

	metrics  *metrics
	draining atomic.Bool
	tunnels  atomic.Int64 // admitted tunnels, for Limits.MaxTunnels
	secret   [sha256.Size]byte
	sessions struct {
		sync.Mutex
		live map[*quic.Conn]*serverSession
	}
}

// serverSession is one client endpoint's session as the server tracks it.
type serverSession struct {
	conn    *quic.Conn
	peer    string       // the client's address, and its certificate's subject under mutual TLS
	tunnels atomic.Int64 // admitted tunnels, for Limits.MaxTunnelsPerSession
}

// NewServer validates cfg and binds the UDP socket, so that a bad address fails
// at start and Addr is known before Run.
func NewServer(cfg ServerConfig) (*Server, error) {
	cfg.setDefaults()
	if cfg.Parser == nil || cfg.TLS == nil {
		return nil, errors.New("server: token parser and TLS config are required")
	}
	udpAddr, err := net.ResolveUDPAddr("udp", cfg.ListenOn)
	if err != nil {
		return nil, fmt.Errorf("listen on %q: %w", cfg.ListenOn, err)
	}
	udp, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.ListenOn, err)
	}
	qc := quicConfig()
	qc.HandshakeIdleTimeout = min(qc.HandshakeIdleTimeout, cfg.PreambleTimeout)
	pc, rec, err := linkLayers(udp, cfg.WrapUDP, cfg.Recovery, true, qc)
	if err != nil {
		return nil, err
	}
	hs := newHandshakes(engine.ServerEndpoint)
	tr := &quic.Transport{Conn: pc, ConnContext: hs.watch}
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
	s := &Server{cfg: cfg, log: cfg.Logger, reg: engine.NewRegistry(cfg.Engine), conn: pc, rec: rec, tr: tr, ln: ln}
	s.sessions.live = make(map[*quic.Conn]*serverSession)
	if len(cfg.Secret) > 0 {
		s.secret = sha256.Sum256(cfg.Secret)
	}
	s.metrics = newMetrics(engine.ServerEndpoint, s.reg, s.liveSessions, hs, newRecoveryCollector(rec, string(engine.ServerEndpoint)))
	return s, nil
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
// tunnels, lets live ones drain for DrainTimeout, closes the rest, closes every
// session and returns nil. Every goroutine it started has ended when it returns.
func (s *Server) Run(ctx context.Context) error {
	tunnelsCtx, stopTunnels := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopTunnels(nil)
	var handlers sync.WaitGroup
	for {
		conn, err := s.ln.Accept(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("accept session", "err", err)
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
	s.log.Info("shutting down: draining tunnels", "tunnels", s.reg.Len(), "for", s.cfg.DrainTimeout)
	drain(s.reg, s.cfg.DrainTimeout)
	stopTunnels(engine.ErrShutdown)
	s.closeSessions("server shutting down")
	handlers.Wait()
	s.ln.Close()
	s.tr.Close()
	s.conn.Close()
	s.log.Info("stopped")
	return nil
}

// drain waits until reg has no live tunnel or the bound passes.
func drain(reg *engine.Registry, bound time.Duration) {
	deadline := time.Now().Add(bound)
	for reg.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// trackSession registers a new session unless the server has MaxSessions.
func (s *Server) trackSession(conn *quic.Conn) (*serverSession, bool) {
	sess := &serverSession{conn: conn, peer: sessionPeer(conn)}
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
func (s *Server) serveSession(ctx context.Context, sess *serverSession, handlers *sync.WaitGroup) {
	defer s.untrackSession(sess.conn)
	log := s.log.With("session", sess.peer)
	log.Info("session opened")
	handlers.Go(func() { discardProbes(sess.conn) })
	for {
		stream, err := sess.conn.AcceptStream(sess.conn.Context())
		if err != nil {
			log.Info("session closed", "reason", sessionEndReason(sess.conn, err))
			return
		}
		handlers.Go(func() { s.serveStream(ctx, sess, stream) })
	}
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
		log.Warn("tunnel refused", "status", preamble.CodeAuthFailed, "secret_given", len(hdr.Secret) > 0)
		s.refuse(stream, preamble.CodeAuthFailed, "wrong or missing shared secret")
		return
	}
	if !s.admit(sess) {
		log.Warn("tunnel refused", "status", preamble.CodeOverloaded,
			"tunnels", s.tunnels.Load(), "session_tunnels", sess.tunnels.Load())
		s.refuse(stream, preamble.CodeOverloaded, "too many tunnels")
		return
	}
	defer s.release(sess)
	target, err := s.cfg.Parser.Parse(hdr.Token)
	if err != nil {
		log.Warn("tunnel refused", "status", preamble.CodeBadToken, "err", err)
		s.refuse(stream, preamble.CodeBadToken, err.Error())
		return
	}
	log = log.With("target", target.String())
	dialAddr, err := s.cfg.Policy.Check(ctx, target)
	if err != nil {
		log.Warn("tunnel refused", "status", preamble.CodeForbidden, "err", err)
		s.refuse(stream, preamble.CodeForbidden, target.String()+" is not allowed")
		return
	}
	app, err := dialAddr.Dial(ctx, s.cfg.DialTimeout)
	if err != nil {
		log.Warn("tunnel refused", "status", preamble.CodeUnreachable, "err", err)
		s.refuse(stream, preamble.CodeUnreachable, err.Error())
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

// admit counts a tunnel against the limits, or refuses it.
func (s *Server) admit(sess *serverSession) bool {
	total, mine := s.tunnels.Add(1), sess.tunnels.Add(1)
	if total > int64(s.cfg.Limits.MaxTunnels) || mine > int64(s.cfg.Limits.MaxTunnelsPerSession) {
		s.release(sess)
		return false
	}
	return true
}

func (s *Server) release(sess *serverSession) {
	s.tunnels.Add(-1)
	sess.tunnels.Add(-1)
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
