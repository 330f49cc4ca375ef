package endpoints

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/endpoints/trust"
	"github.com/quictun/quictun/internal/quicconf"
)

// authState is who the server knows and what each may reach. Reload replaces
// it whole; a session reads the current one for each tunnel, so new rules
// apply to new tunnels at once.
type authState struct {
	ids      *identity.Table
	required bool // every session must prove an identity: secrets or mutual TLS
	base     *policy.Policy
	byName   map[string]*policy.Policy // identities with rules of their own
}

func (s *Server) newAuthState(ids *identity.Table, rules *policy.Rules) (*authState, error) {
	mtls := s.cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
	st := &authState{ids: ids, required: ids.HasSecrets() || mtls, byName: map[string]*policy.Policy{}}
	base, err := policy.New(policy.Setup{Listen: s.udpAddr, Listening: s.cfg.Listening, Authenticated: st.required}, rules)
	if err != nil {
		return nil, err
	}
	st.base = base
	for _, name := range ids.Names() {
		if id := ids.Lookup(name); id.Rules != nil {
			st.byName[name] = base.With(id.Rules)
		}
	}
	return st, nil
}

// policyFor is the policy of an identity's tunnels.
func (st *authState) policyFor(id *identity.Identity) *policy.Policy {
	if p := st.byName[id.Name]; p != nil {
		return p
	}
	return st.base
}

// Hello results, as quictun_hellos_total counts them.
const (
	helloOK         = "ok"
	helloBadProof   = "wrong proof"
	helloUnknown    = "unknown identity"
	helloNoProof    = "no proof"
	helloNotHello   = "not a hello"
	helloOverloaded = "overloaded"
	helloLost       = "lost"
)

var errAuth = errors.New("authentication failed")

// certIdentity prefixes the name of a client certificate that no identity
// claims: its subject is its identity, with the server's rules.
const certIdentity = "cert:"

// authenticate reads the session's hello from its first stream and answers
// it. Until it has answered, the session may hold that one stream: a second
// one closes the session, and nothing past the hello's MaxHelloLen bytes is
// read. A failed hello closes the session at once, so a session gets one
// guess, and costs its address a penalty (see penalties).
func (s *Server) authenticate(sess *serverSession, handlers *sync.WaitGroup) bool {
	ctx, cancel := context.WithTimeout(sess.conn.Context(), s.cfg.PreambleTimeout)
	defer cancel()
	stream, err := sess.conn.AcceptStream(ctx)
	if err != nil {
		if sess.conn.Context().Err() == nil {
			s.refusals.warn("session closed: no hello within the handshake timeout", "session", sess.peer, "timeout", s.cfg.PreambleTimeout)
			s.metrics.hello(helloLost, "")
			sess.conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeAuthFailed), "authentication failed: no hello in time")
		}
		return false
	}
	// Stopped before the answer goes out: else it could take the client's
	// first tunnel, opened right after the answer, for an early stream.
	earlyCtx, stopEarly := context.WithCancel(ctx)
	early := make(chan struct{})
	handlers.Go(func() { defer close(early); s.closeOnEarlyStream(earlyCtx, sess) })
	defer func() { stopEarly(); <-early }()
	_ = stream.SetReadDeadline(time.Now().Add(s.cfg.PreambleTimeout))
	hdr, err := preamble.ReadHeaderLimit(stream, preamble.MaxHelloLen)
	if err != nil || !hdr.Hello {
		result, msg := helloNotHello, "the first stream of a session must be its hello"
		if err != nil && !errors.Is(err, preamble.ErrMalformed) {
			result, msg = helloLost, ""
		}
		s.refuseHello(sess, stream, result, "", msg, err)
		return false
	}
	id, result := s.identify(sess, hdr)
	if id == nil {
		s.refuseHello(sess, stream, result, hdr.Identity, "", errAuth)
		return false
	}
	if err := s.promote(sess, id); err != nil {
		s.metrics.hello(helloOverloaded, id.Display())
		s.refusals.warn("session refused", "session", sess.peer, "identity", id.Display(), "err", err)
		s.refuse(stream, preamble.CodeOverloaded, "server overloaded: "+err.Error())
		sess.conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeOverloaded), "server overloaded")
		return false
	}
	stopEarly()
	<-early
	if sess.conn.Context().Err() != nil {
		return false // closed by an early stream
	}
	close(sess.authed)
	sess.conn.SetDatagramReceiveQueue(quicconf.DatagramReceiveQueue)
	// The loss-recovery layer gives an address coding state only while it has
	// an authenticated session (recovery.Conn.Prove).
	context.AfterFunc(sess.conn.Context(), s.rec.Prove(sess.conn.RemoteAddr()))
	s.penalties.forgive(sess.key)
	s.metrics.hello(helloOK, id.Display())
	_, _ = stream.Write(preamble.AppendStatus(nil, preamble.Status{Code: preamble.CodeOK}))
	_ = stream.Close()
	stream.CancelRead(0)
	return true
}

// closeOnEarlyStream closes a session that opens a second stream before its
// hello is answered: no client of ours does, and each such stream would hold
// server memory for a session that has proved nothing.
func (s *Server) closeOnEarlyStream(ctx context.Context, sess *serverSession) {
	st, err := sess.conn.AcceptStream(ctx)
	if err != nil {
		return
	}
	if sess.authenticated() {
		// Raced with the answer (quic-go hands a queued stream even to a
		// cancelled AcceptStream): the stream is the session's first tunnel
		// or bind, opened after the answer, and the serve loop will not see it.
		sess.adopt(st)
		return
	}
	s.refusals.warn("session closed: a stream before its hello was answered", "session", sess.peer)
	sess.conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeAuthFailed), "authentication failed: a stream before the hello's answer")
}

// identify decides who a hello is from. A proof names an identity with a
// secret; without one, a verified client certificate is the identity (the
// one its names map to, or its subject with the server's rules); a server
// that requires neither takes everyone as the shared identity.
func (s *Server) identify(sess *serverSession, hdr preamble.Header) (*identity.Identity, string) {
	st := s.auth.Load()
	cs := sess.conn.ConnectionState().TLS
	if !st.required {
		return &identity.Identity{Name: identity.Anonymous}, helloOK
	}
	if hdr.Proof != nil {
		id := st.ids.Lookup(hdr.Identity)
		switch {
		case id == nil || id.Secret == nil:
			return nil, helloUnknown
		case !preamble.VerifyProof(hdr.Proof, id.Secret, hdr.Identity, cs.ExportKeyingMaterial):
			return nil, helloBadProof
		}
		return id, helloOK
	}
	if len(cs.PeerCertificates) > 0 && s.cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert {
		if id := st.ids.ForCert(cs); id != nil {
			return id, helloOK
		}
		return &identity.Identity{Name: certIdentity + trust.PeerIdentity(cs)}, helloOK
	}
	return nil, helloNoProof
}

// refuseHello answers a failed hello, closes its session at once and charges
// the client's address.
func (s *Server) refuseHello(sess *serverSession, stream *quic.Stream, result, claimed, msg string, err error) {
	label := ""
	if result == helloBadProof {
		label = claimed // a name the table holds; others stay out of the metric's labels
	}
	s.metrics.hello(result, label)
	penalty := s.penalties.fail(sess.key)
	s.refusals.warn("session refused: authentication failed", "session", sess.peer, "reason", result,
		"identity", claimed, "err", err, "address_waits", penalty)
	if msg == "" {
		msg = "wrong or missing credentials"
	}
	s.refuse(stream, preamble.CodeAuthFailed, msg)
	sess.conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeAuthFailed), "authentication failed: "+msg)
}

// Reload replaces the server's identities and rules (SIGHUP). Sessions of
// identities that are gone or whose credentials, rules or quotas changed are
// closed (their clients redial and authenticate anew); every other session
// and its tunnels is untouched. On an error nothing changes.
func (s *Server) Reload(ids *identity.Table, rules *policy.Rules) error {
	if ids == nil {
		ids = identity.NewTable(s.cfg.Secret)
	}
	st, err := s.newAuthState(ids, rules)
	if err != nil {
		return fmt.Errorf("reload: %w", err)
	}
	s.auth.Store(st)
	var revoked []*quic.Conn
	s.sessions.Lock()
	for _, sess := range s.sessions.live {
		if sess.promoted && !st.keeps(sess) {
			revoked = append(revoked, sess.conn)
		}
	}
	s.sessions.Unlock()
	for _, conn := range revoked { // outside the lock: see closeSessions
		conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeAuthFailed), "identity revoked or changed")
	}
	closed := len(revoked)
	s.log.Info("identities and rules reloaded", "identities", ids.Len(), "sessions_closed", closed, "targets", st.base.String())
	return nil
}

// keeps says whether a session stays valid under st: the hello it gave would
// still be taken as the same identity with the same rights.
func (st *authState) keeps(sess *serverSession) bool {
	if !st.required {
		return true
	}
	id := sess.identity
	if now := st.ids.Lookup(id.Name); now != nil {
		return identity.SameCredentials(now, id)
	}
	// A certificate taken as its own identity stays while no entry claims it.
	return strings.HasPrefix(id.Name, certIdentity) && st.ids.ForCert(sess.conn.ConnectionState().TLS) == nil
}
