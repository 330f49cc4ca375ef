package endpoints

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/trust"
)

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
