package endpoints

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/engine"
)

// Reverse UDP forwards, as the server runs them. A udp: binding is a UDP
// socket instead of a listener, and each source address that sends to it is
// a flow: the server opens a stream on the holder's session for it (the
// reverse tunnel's header, whose origin is the source), the client answers
// with a status once its own socket towards its target is ready, and the
// datagrams travel as QUIC datagrams beside the stream (udpframe; the flow
// number of a server-opened stream keeps clear of the client's flows). A
// flow is a registry tunnel run by RunFlow, as a forward flow: the same idle
// timeouts, drop counters and queue bounds. A new source waits for a holder
// as a TCP connection does (SessionWait, at most maxWaitingPerBinding per
// binding, its datagrams queued meanwhile); a source whose flow failed is
// dropped for flowRetryAfter before it is tried again. Flows of a holder
// that another session took over end at once: the source's next datagram
// opens a flow on the new holder's session.
//
// Lock order: the reverse table's lock, then a binding's reverseUDP.mu.

// reverseUDP is a udp: binding's socket and its flows by source address.
type reverseUDP struct {
	pc *net.UDPConn
	mu sync.Mutex
	// flows by source; an entry with retryAt set is a failed one.
	flows   map[netip.AddrPort]*reverseFlow
	swept   time.Time // the last sweep of failed entries (receiver-only)
	stopped bool
}

// reverseFlow is one source's flow on the server.
type reverseFlow struct {
	app     *peerSide
	retryAt time.Time      // set once the flow failed: its datagrams are dropped until then
	holder  *holder        // whose session carries it, once it runs
	t       *engine.Tunnel // once it runs
}

// sweepEvery bounds how often a full flow table is swept of failed entries
// whose wait is over: a flood from many sources must not buy a walk of the
// table per datagram.
const sweepEvery = time.Second

func listenReverseUDP(a address.Address) (*reverseUDP, error) {
	pc, err := a.ListenPacket()
	if err != nil {
		return nil, err
	}
	// Its flows share it, as a udp: forward's flows share the client's.
	_ = pc.SetReadBuffer(forwardSocketBuffer)
	_ = pc.SetWriteBuffer(forwardSocketBuffer)
	return &reverseUDP{pc: pc, flows: map[netip.AddrPort]*reverseFlow{}}, nil
}

// close closes the socket and ends the flows. The caller holds the reverse
// table's lock.
func (u *reverseUDP) close() {
	u.pc.Close()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.stopped = true
	for _, fl := range u.flows {
		fl.end()
	}
}

// endFlowsOf ends the flows that old's session carries; nil-safe for
// bindings that are not udp:. The caller holds the reverse table's lock.
func (u *reverseUDP) endFlowsOf(old *holder) {
	if u == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, fl := range u.flows {
		if fl.holder == old {
			fl.end()
		}
	}
}

// end stops the flow: its tunnel if it runs, its waiting application end if
// not. The caller holds u.mu.
func (fl *reverseFlow) end() {
	if fl.t != nil {
		fl.t.Kill()
	}
	_ = fl.app.Close()
}

// sweep drops failed entries whose wait is over, at most once per
// sweepEvery. The caller holds u.mu.
func (u *reverseUDP) sweep(now time.Time) {
	if now.Sub(u.swept) < sweepEvery {
		return
	}
	u.swept = now
	for src, fl := range u.flows {
		if !fl.retryAt.IsZero() && !now.Before(fl.retryAt) {
			delete(u.flows, src)
		}
	}
}

// receiveReverse is a udp: binding's receiver, its accept loop: it hands
// each datagram to its source's flow, starting one for a new source, until
// the binding's socket is closed.
func (s *Server) receiveReverse(b *binding) {
	u := b.udp
	buf := make([]byte, MaxUDPDatagram+1)
	for {
		n, src, err := u.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.refusals.warn("reverse forward: receive", "bind", b.key, "err", err)
			continue
		}
		if n > MaxUDPDatagram {
			s.udp.stats.drop(dropTooLarge, 1)
			continue
		}
		now := time.Now()
		u.mu.Lock()
		fl := u.flows[src]
		switch {
		case fl != nil && fl.retryAt.IsZero():
			u.mu.Unlock()
			fl.app.deliver(append([]byte(nil), buf[:n]...))
			continue
		case fl != nil && now.Before(fl.retryAt):
			u.mu.Unlock()
			s.udp.stats.drop(dropRefusedFlow, 1)
			continue
		case fl == nil && len(u.flows) >= maxFlowsPerForward:
			u.sweep(now)
			if len(u.flows) >= maxFlowsPerForward {
				u.mu.Unlock()
				s.udp.stats.drop(dropTooManyFlows, 1)
				continue
			}
		}
		u.mu.Unlock()
		// A new flow. Only this loop adds entries, so none for src can
		// appear while the table's lock (taken first) counts it as waiting.
		s.reverse.Lock()
		full := b.waiting >= maxWaitingPerBinding
		if !full {
			b.waiting++
		}
		s.reverse.Unlock()
		if full {
			s.refusals.warn("reverse flow dropped: too many waiting", "bind", b.key, "max", maxWaitingPerBinding)
			s.udp.stats.drop(dropTooManyFlows, 1)
			continue
		}
		fl = &reverseFlow{app: newPeerSide(u.pc, src, s.udp.stats)}
		u.mu.Lock()
		if u.stopped { // released meanwhile
			u.mu.Unlock()
			s.reverse.Lock()
			b.waiting--
			s.reverse.Unlock()
			return
		}
		u.flows[src] = fl
		u.mu.Unlock()
		fl.app.deliver(append([]byte(nil), buf[:n]...))
		s.reverse.routines.Go(func() { s.serveReverseFlow(b, src, fl) })
	}
}

// serveReverseFlow carries one source's flow to the client that holds b:
// it waits up to SessionWait for a holder, opens a stream on its session and
// runs the flow. A flow that could not start makes its source wait
// flowRetryAfter.
func (s *Server) serveReverseFlow(b *binding, src netip.AddrPort, fl *reverseFlow) {
	u := b.udp
	waited := true
	defer func() {
		if waited {
			s.reverse.Lock()
			b.waiting--
			s.reverse.Unlock()
		}
	}()
	s.reverse.Lock()
	name := b.forward
	s.reverse.Unlock()
	log := s.log.With("reverse", name, "bind", b.key, "app", "udp:"+src.String())
	failed := func(reason string) {
		s.metrics.failed(reason)
		u.mu.Lock()
		if u.flows[src] == fl {
			fl.retryAt = time.Now().Add(flowRetryAfter)
		}
		u.mu.Unlock()
		_ = fl.app.Close()
	}
	wait, cancel := context.WithTimeout(b.ctx, s.cfg.SessionWait)
	defer cancel()
	for {
		h := s.nextHolder(wait, b)
		if h == nil {
			log.Warn("reverse flow refused: no session of its client", "waited_up_to", s.cfg.SessionWait)
			failed("reverse: no session")
			return
		}
		st, err := h.sess.conn.OpenStreamSync(wait)
		if err != nil {
			if h.sess.conn.Context().Err() != nil || sessionGone(err) {
				continue // the holder left meanwhile: wait for the next one
			}
			log.Warn("reverse flow refused: no stream", "err", err)
			failed("reverse: no stream")
			return
		}
		s.reverse.Lock()
		b.waiting--
		waited = false
		s.reverse.Unlock()
		s.runReverseFlow(b, h, st, src, fl, failed, log)
		return
	}
}

// runReverseFlow sends the flow's header and waits for the client's status,
// then runs the flow. As the client of a forward flow, the server registers
// the flow only once it is OK: the client's datagrams come back only after
// the first that the server sends, which is after that.
func (s *Server) runReverseFlow(b *binding, h *holder, st *quic.Stream, src netip.AddrPort, fl *reverseFlow, failed func(string), log *slog.Logger) {
	u := b.udp
	sess := h.sess
	log = log.With("session", sess.peer, "identity", sess.identityName(), "stream", int64(st.StreamID()))
	abort := func(code preamble.Code, msg string) {
		log.Warn("reverse flow refused", "status", code, "err", msg)
		st.CancelRead(quic.StreamErrorCode(code))
		st.CancelWrite(quic.StreamErrorCode(code))
		failed(code.String())
	}
	defer func() {
		u.mu.Lock()
		if u.flows[src] == fl && fl.retryAt.IsZero() {
			delete(u.flows, src)
		}
		u.mu.Unlock()
	}()
	if !s.admitTunnel() {
		abort(preamble.CodeOverloaded, "too many tunnels")
		return
	}
	defer s.tunnels.Add(-1)
	release, ok := s.admitIdentityTunnel(sess.identity)
	if !ok {
		abort(preamble.CodeOverloaded, "too many tunnels for this identity")
		return
	}
	defer release()
	hdr, err := preamble.AppendHeader(nil, preamble.Header{Token: []byte(h.asked), Origin: src.String()})
	if err != nil {
		abort(preamble.CodeInternal, err.Error())
		return
	}
	setup, cancel := context.WithTimeout(b.ctx, s.cfg.SessionWait)
	err = awaitFlowStatus(setup, st, hdr)
	cancel()
	if err != nil {
		reason := "reverse: no status"
		if se := (*preamble.StatusError)(nil); errors.As(err, &se) {
			reason = se.Status.Code.String()
		}
		log.Warn("reverse flow refused by the client", "err", err)
		failed(reason)
		return
	}
	t := s.reg.Open(b.ctx, engine.Info{
		Endpoint:           engine.ServerEndpoint,
		StreamID:           int64(st.StreamID()),
		ServerAppAddr:      "udp:" + src.String(),
		RemoteEndpointAddr: sess.conn.RemoteAddr().String(),
		Session:            sess.peer,
		Identity:           sess.identityName(),
		Forward:            h.name,
		Direction:          engine.DirectionReverse,
	})
	t.SetProtocol(ProtocolUDP, nil)
	fl.app.t.Store(t)
	// A takeover ends the flows of the old holder (endFlowsOf, under both
	// locks): either it sees this one, or this one sees the new holder.
	s.reverse.Lock()
	u.mu.Lock()
	fl.holder, fl.t = h, t
	if b.holder != h || b.released {
		t.Kill()
	}
	u.mu.Unlock()
	s.reverse.Unlock()
	s.udp.stats.opened.Add(1)
	flow := newFlowSide(sess.conn, st, t, s.udp.stats)
	sess.flows.add(flow)
	defer sess.flows.remove(flow)
	defer flow.stop()
	log = log.With("tunnel", t.ID)
	log.Debug("reverse flow opened")
	err = t.RunFlow(fl.app, flow)
	s.udp.ended(t)
	s.metrics.ended(err)
	logFlowEnd(log, t, err)
}
