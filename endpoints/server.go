package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/engine"
	"github.com/quictun/quictun/internal/quicconf"
	"github.com/quictun/quictun/recovery"
)

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

	udpAddr    net.Addr // the UDP socket's own address
	metrics    *metrics
	handshakes *handshakeGate
	auth       atomic.Pointer[authState] // identities and the targets each may name
	penalties  *penalties
	refusals   *refusalLog
	draining   atomic.Bool
	tunnels    atomic.Int64 // admitted tunnels, for Limits.MaxTunnels
	sessions   sessionTable
	bindRules  atomic.Pointer[policy.BindRules] // --allow-bind
	reverse    reverseTable                     // reverse forwards' listeners
	speedTests speedTests
	udp        udpEndpoint // UDP flows' counts (serverudp.go)
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
	s := &Server{cfg: cfg, log: cfg.Logger, reg: engine.NewRegistry(cfg.Engine), udpAddr: udp.LocalAddr(),
		penalties: newPenalties(cfg.AuthPenalty), refusals: newRefusalLog(cfg.Logger), udp: udpEndpoint{stats: newUDPStats()}}
	s.sessions.live = make(map[*quic.Conn]*serverSession)
	s.sessions.perKey = make(map[netip.Prefix]int)
	s.sessions.perIdentity = make(map[string]int)
	s.sessions.tunnelsBy = make(map[string]int)
	s.reverse.byKey = make(map[string]*binding)
	s.bindRules.Store(cfg.AllowBind)
	ids := cfg.Identities
	if ids == nil {
		ids = identity.NewTable(cfg.Secret)
	}
	st, err := s.newAuthState(ids, cfg.Rules)
	if err != nil {
		udp.Close()
		return nil, fmt.Errorf("server: %w", err)
	}
	s.auth.Store(st)
	qc := serverQUICConfig(cfg)
	if err := quicconf.SetCongestion(qc, cfg.Congestion); err != nil {
		udp.Close()
		return nil, fmt.Errorf("server: %w", err)
	}
	qc.AllowConnectionWindowIncrease = s.windowMayGrow
	pc, rec, err := linkLayers(udp, cfg.WrapUDP, cfg.Recovery, true, qc)
	if err != nil {
		return nil, err
	}
	gate := &handshakeGate{limit: maxPendingHandshakes, log: cfg.Logger}
	hs := newHandshakes(engine.ServerEndpoint)
	tr := &quic.Transport{Conn: pc, VerifySourceAddress: gate.crowded,
		ConnContext: func(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
			if wait := s.penalties.refused(clientKey(info.RemoteAddr)); wait > 0 {
				s.refusals.warn("session refused: its address failed to authenticate and waits", "client", info.RemoteAddr.String(), "for", wait.Round(time.Millisecond))
				return ctx, errPenalized
			}
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
	s.conn, s.rec, s.tr, s.ln, s.handshakes = pc, rec, tr, ln, gate
	s.metrics = newMetrics(engine.ServerEndpoint, s.reg, s.liveSessions, hs, newRecoveryCollector(rec, string(engine.ServerEndpoint)), reverseCollector{s},
		s.udp.collector(engine.ServerEndpoint, s.reg))
	warnIfOpen(s.log, s.Addr(), st)
	s.log.Info("target policy", "targets", st.base.String(), "identities", ids.Len())
	s.log.Info("bounds before authentication", "pending_sessions", cfg.Limits.MaxPendingSessions,
		"pending_per_address", cfg.Limits.MaxPendingPerAddress, "handshakes", maxPendingHandshakes, "at_most_bytes", preAuthBound(cfg.Limits))
	return s, nil
}

// errPenalized refuses a session from an address serving a penalty.
var errPenalized = errors.New("address waits after failed authentication")

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
// it listens beyond loopback with neither mutual TLS nor a secret.
func warnIfOpen(log *slog.Logger, addr net.Addr, st *authState) {
	if isLoopback(addr) {
		return
	}
	if !st.required {
		log.Warn("ANYONE CAN USE THIS SERVER: it listens beyond loopback with neither a shared secret (--secret) " +
			"nor mutual TLS (--verify-remote-endpoint); every client that can reach the port can open tunnels " +
			"to every target tokens may name")
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
		sess, evicted, err := s.trackSession(conn)
		if err != nil {
			s.refusals.warn("session refused", "session", sess.peer, "err", err, "max", s.cfg.Limits.MaxSessionsPerAddress)
			s.metrics.failed("too many sessions")
			// Closed off the accept loop: CloseWithError waits for the session's loop.
			handlers.Go(func() {
				conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeOverloaded), "server overloaded: "+err.Error())
			})
			continue
		}
		if evicted != nil {
			s.refusals.warn("session evicted: the unauthenticated pool is full", "session", evicted.peer, "for", sess.peer)
			handlers.Go(func() {
				evicted.conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeOverloaded), "server overloaded: no hello in time")
			})
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
	s.stopReverse()
	s.ln.Close()
	s.tr.Close()
	s.conn.Close()
	s.log.Info("stopped")
	return failed
}
