package endpoints

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/codecs/speedtest"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/engine"
)

// serveStream reads a stream's header, checks who may ask for what, connects
// to the target and runs the tunnel. Every refusal is answered with a status
// frame and logged with the client's identity; no other tunnel is touched.
func (s *Server) serveStream(ctx context.Context, sess *serverSession, stream *quic.Stream) {
	log := s.log.With("session", sess.peer, "identity", sess.identityName(), "stream", int64(stream.StreamID()))
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
	if hdr.Bind != "" {
		s.serveBind(ctx, sess, stream, hdr, log)
		return
	}
	if hdr.Hello {
		log.Warn("tunnel refused", "status", preamble.CodeBadPreamble, "err", "a second hello")
		s.refuse(stream, preamble.CodeBadPreamble, "a session says hello once")
		return
	}
	if string(hdr.Token) == speedtest.Token {
		s.serveSpeedTest(ctx, sess, stream, log)
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
	release, ok := s.admitIdentityTunnel(sess.identity)
	if !ok {
		log.Warn("tunnel refused", "status", preamble.CodeOverloaded, "identity", sess.identity.Display(), "max", sess.identity.MaxTunnels)
		s.refuse(stream, preamble.CodeOverloaded, "too many tunnels for this identity")
		return
	}
	defer release()
	target, err := s.cfg.Parser.Parse(hdr.Token)
	if err != nil {
		log.Warn("tunnel refused", "status", preamble.CodeBadToken, "token", token.Describe(hdr.Token), "err", err)
		s.refuse(stream, preamble.CodeBadToken, "")
		return
	}
	// The target is an internal address: it goes to the log, not to the client.
	log = log.With("target", target.String())
	dialAddr, err := s.auth.Load().policyFor(sess.identity).Check(ctx, target)
	if err != nil {
		log.Warn("tunnel refused", "status", preamble.CodeForbidden, "err", err)
		s.refuse(stream, preamble.CodeForbidden, "")
		return
	}
	if dialAddr.Network == address.UDP {
		s.serveFlow(ctx, sess, stream, target, dialAddr, log)
		return
	}
	app, err := dialAddr.Dial(ctx, s.cfg.DialTimeout)
	if err != nil {
		code := preamble.CodeUnreachable
		if errors.Is(err, address.ErrNotSocket) { // a link or a file where a UNIX target should be
			code = preamble.CodeForbidden
		}
		log.Warn("tunnel refused", "status", code, "err", err)
		s.refuse(stream, code, "")
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
		Identity:           sess.identityName(),
	})
	log = log.With("tunnel", t.ID)
	log.Debug("tunnel opened")
	err = t.Run(engine.StreamSide(stream), engine.ConnSide(app))
	s.metrics.ended(err)
	logTunnelEnd(log, t, err)
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
