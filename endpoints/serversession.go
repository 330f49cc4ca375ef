package endpoints

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/endpoints/trust"
)

// serverSession is one client endpoint's session as the server tracks it.
//
// A session starts unauthenticated, in a small pool of its own (see
// sessionTable): its first stream must be its hello, nothing else is read
// from it before the hello is answered, and it must come within
// PreambleTimeout. Authenticated, it takes one of the MaxSessions slots and
// opens tunnels.
type serverSession struct {
	conn    *quic.Conn
	peer    string       // the client's address, and its certificate's subject under mutual TLS
	key     netip.Prefix // what the per-address bounds count it by (clientKey)
	tunnels atomic.Int64 // admitted streams, for Limits.MaxTunnelsPerSession
	flows   flowTable    // its UDP flows, for its datagram receiver
	authed  chan struct{}
	// adopt serves a stream that closeOnEarlyStream accepted once the hello
	// was answered; set before the hello is read.
	adopt func(*quic.Stream)
	// Set before authed is closed, read after.
	identity *identity.Identity
	// Guarded by the session table's lock.
	promoted, evicted bool
}

func (sess *serverSession) authenticated() bool {
	select {
	case <-sess.authed:
		return true
	default:
		return false
	}
}

// identityName is the session's identity for logs, metrics and /tunnels.
func (sess *serverSession) identityName() string {
	if !sess.authenticated() {
		return ""
	}
	return sess.identity.Display()
}

// sessionTable is every session the server holds, with the bounds that keep a
// stranger from crowding out a client with credentials:
//   - unauthenticated sessions live in a pool of MaxPendingSessions; a newcomer
//     evicts the oldest (of its own address first, past MaxPendingPerAddress),
//     so a redialling stranger cannot hold the pool against a client whose
//     hello takes one round trip;
//   - authenticated sessions take MaxSessions slots, and no identity more
//     than its max-sessions;
//   - no client address holds more than MaxSessionsPerAddress of either kind.
type sessionTable struct {
	sync.Mutex
	live        map[*quic.Conn]*serverSession
	pending     []*serverSession // oldest first
	perKey      map[netip.Prefix]int
	authed      int
	perIdentity map[string]int // authenticated sessions by identity name
	tunnelsBy   map[string]int // tunnels by identity name, for its max-tunnels
}

var errTooManyFromAddress = errors.New("too many sessions from this address")

// trackSession registers a new, unauthenticated session. It returns the
// session it evicted from the pool, to close, or an error when the session's
// address holds its share already.
func (s *Server) trackSession(conn *quic.Conn) (sess, evicted *serverSession, err error) {
	s.handshakes.accepted(conn)
	sess = &serverSession{conn: conn, peer: sessionPeer(conn), key: clientKey(conn.RemoteAddr()), authed: make(chan struct{})}
	l := &s.cfg.Limits
	t := &s.sessions
	t.Lock()
	defer t.Unlock()
	if t.perKey[sess.key] >= l.MaxSessionsPerAddress {
		return sess, nil, errTooManyFromAddress
	}
	sameKey := 0
	for _, p := range t.pending {
		if p.key == sess.key {
			sameKey++
		}
	}
	switch {
	case sameKey >= l.MaxPendingPerAddress:
		evicted = t.pending[slices.IndexFunc(t.pending, func(p *serverSession) bool { return p.key == sess.key })]
	case len(t.pending) >= l.MaxPendingSessions:
		evicted = t.pending[0]
	}
	if evicted != nil {
		evicted.evicted = true
		t.pending = slices.DeleteFunc(t.pending, func(p *serverSession) bool { return p == evicted })
	}
	t.pending = append(t.pending, sess)
	t.live[conn] = sess
	t.perKey[sess.key]++
	return sess, evicted, nil
}

// promote moves an authenticated session out of the pool into a slot.
func (s *Server) promote(sess *serverSession, id *identity.Identity) error {
	t := &s.sessions
	t.Lock()
	defer t.Unlock()
	switch {
	case sess.evicted:
		return errors.New("evicted from the unauthenticated pool before its hello")
	case t.authed >= s.cfg.Limits.MaxSessions:
		return fmt.Errorf("too many sessions (%d)", s.cfg.Limits.MaxSessions)
	case id.MaxSessions > 0 && t.perIdentity[id.Name] >= id.MaxSessions:
		return fmt.Errorf("identity %s has its %d sessions", id.Display(), id.MaxSessions)
	}
	t.pending = slices.DeleteFunc(t.pending, func(p *serverSession) bool { return p == sess })
	sess.promoted = true
	sess.identity = id
	t.authed++
	t.perIdentity[id.Name]++
	return nil
}

func (s *Server) untrackSession(sess *serverSession) {
	t := &s.sessions
	t.Lock()
	defer t.Unlock()
	delete(t.live, sess.conn)
	if t.perKey[sess.key]--; t.perKey[sess.key] <= 0 {
		delete(t.perKey, sess.key)
	}
	if sess.promoted {
		t.authed--
		if t.perIdentity[sess.identity.Name]--; t.perIdentity[sess.identity.Name] <= 0 {
			delete(t.perIdentity, sess.identity.Name)
		}
	} else {
		t.pending = slices.DeleteFunc(t.pending, func(p *serverSession) bool { return p == sess })
	}
}

// admitIdentityTunnel counts a tunnel against its identity's max-tunnels;
// release undoes it.
func (s *Server) admitIdentityTunnel(id *identity.Identity) (release func(), ok bool) {
	if id.MaxTunnels == 0 {
		return func() {}, true
	}
	t := &s.sessions
	t.Lock()
	defer t.Unlock()
	if t.tunnelsBy[id.Name] >= id.MaxTunnels {
		return nil, false
	}
	t.tunnelsBy[id.Name]++
	return func() {
		t.Lock()
		defer t.Unlock()
		if t.tunnelsBy[id.Name]--; t.tunnelsBy[id.Name] <= 0 {
			delete(t.tunnelsBy, id.Name)
		}
	}, true
}

// closeSessions closes every session. CloseWithError waits for the session's
// loop, which may be waiting for the table's lock (windowMayGrow): close
// outside it.
func (s *Server) closeSessions(why string) {
	for _, conn := range s.liveSessions() {
		conn.CloseWithError(0, why)
	}
}

// windowMayGrow is quic-go's AllowConnectionWindowIncrease: only an
// authenticated session's connection window grows past its initial size.
func (s *Server) windowMayGrow(conn *quic.Conn, _ uint64) bool {
	s.sessions.Lock()
	defer s.sessions.Unlock()
	sess := s.sessions.live[conn]
	return sess != nil && sess.promoted
}

// serveSession authenticates a session, then accepts its streams until the
// session ends; it stays tracked until then, so that shutdown can close it
// with a CONNECTION_CLOSE the client hears (a transport closed under a live
// session leaves the client to find out by timeout).
//
// A stream counts against its session's tunnel limit from the moment it is
// accepted, not from when its header is read: streams that never send one
// would otherwise each hold a goroutine past the limit.
func (s *Server) serveSession(ctx context.Context, sess *serverSession, handlers *sync.WaitGroup) {
	defer s.untrackSession(sess)
	log := s.log.With("session", sess.peer)
	handlers.Go(func() { s.receiveDatagrams(sess) })
	serve := func(stream *quic.Stream) {
		if !s.admitStream(sess) {
			handlers.Go(func() {
				log.Warn("tunnel refused", "stream", int64(stream.StreamID()), "status", preamble.CodeOverloaded,
					"session_streams", sess.tunnels.Load(), "max", s.cfg.Limits.MaxTunnelsPerSession)
				s.refuse(stream, preamble.CodeOverloaded, "too many tunnels")
			})
			return
		}
		handlers.Go(func() {
			defer sess.tunnels.Add(-1)
			s.serveStream(ctx, sess, stream)
		})
	}
	sess.adopt = serve
	if !s.authenticate(sess, handlers) {
		return
	}
	log = log.With("identity", sess.identityName())
	log.Info("session opened")
	for {
		stream, err := sess.conn.AcceptStream(sess.conn.Context())
		if err != nil {
			log.Info("session closed", "reason", sessionEndReason(sess.conn, err))
			return
		}
		serve(stream)
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
