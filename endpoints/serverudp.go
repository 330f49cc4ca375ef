package endpoints

import (
	"context"
	"log/slog"
	"net"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/engine"
)

// serveFlow runs a UDP flow whose stream's header passed the checks of
// serveStream (limits, policy): it connects a UDP socket to the checked
// target, registers the flow so that the session's datagrams reach it, and
// answers OK. A socket that cannot be made is CodeUnreachable.
func (s *Server) serveFlow(ctx context.Context, sess *serverSession, stream *quic.Stream, target, dialAddr address.Address, log *slog.Logger) {
	app, err := dialAddr.Dial(ctx, s.cfg.DialTimeout)
	if err != nil {
		log.Warn("tunnel refused", "status", preamble.CodeUnreachable, "err", err)
		s.refuse(stream, preamble.CodeUnreachable, "")
		return
	}
	_ = app.(*net.UDPConn).SetReadBuffer(flowSocketBuffer)
	_ = app.(*net.UDPConn).SetWriteBuffer(flowSocketBuffer)
	t := s.reg.Open(ctx, engine.Info{
		Endpoint:           engine.ServerEndpoint,
		StreamID:           int64(stream.StreamID()),
		ServerAppAddr:      target.Display(),
		RemoteEndpointAddr: sess.conn.RemoteAddr().String(),
		Session:            sess.peer,
		Identity:           sess.identityName(),
	})
	t.SetProtocol(ProtocolUDP, nil)
	s.udp.stats.opened.Add(1)
	flow := newFlowSide(sess.conn, stream, t, s.udp.stats)
	// Registered before the OK: the client sends its datagrams once it has it.
	sess.flows.add(flow)
	defer sess.flows.remove(flow)
	defer flow.stop()
	target2 := &targetSide{conn: app.(*net.UDPConn), t: t, stats: s.udp.stats}
	log = log.With("tunnel", t.ID)
	if _, err := stream.Write(preamble.AppendStatus(nil, preamble.Status{Code: preamble.CodeOK})); err != nil {
		log.Warn("tunnel lost before it started", "err", err)
		t.Kill() // Run then closes both at once
	}
	log.Debug("udp flow opened")
	err = t.RunFlow(flow, target2)
	s.udp.ended(t)
	s.metrics.ended(err)
	logFlowEnd(log, t, err)
}

// receiveDatagrams is a session's datagram receiver: it hands each QUIC
// datagram to its flow, until the session ends. Before the session's hello
// is answered there is no flow, and every datagram is dropped as it comes:
// a stranger's datagrams cost the read and a count, and quic-go queues at
// most 128 of them meanwhile.
func (s *Server) receiveDatagrams(sess *serverSession) {
	for {
		b, err := sess.conn.ReceiveDatagram(sess.conn.Context())
		if err != nil {
			return
		}
		if !sess.authenticated() {
			if len(b) != probeSize {
				s.udp.stats.drop(dropUnauthenticated, 1)
			}
			continue
		}
		sess.flows.deliver(b, s.udp.stats)
	}
}

// logFlowEnd is logTunnelEnd with a flow's datagram counts.
func logFlowEnd(log *slog.Logger, t *engine.Tunnel, err error) {
	up, down, dropped := t.Packets()
	log = log.With("packets_up", up, "packets_down", down, "dropped", dropped)
	logTunnelEnd(log, t, err)
}
