package endpoints

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/engine"
)

// maxFlowsPerForward bounds the source addresses one UDP forward tracks at
// once (each a flow, or a refused one waiting out flowRetryAfter).
const maxFlowsPerForward = 4096

// forwardSocketBuffer is the receive and send buffer of a udp: forward's socket,
// which all its flows share: at 50 Mbit/s the default 208 KiB holds 15-30 ms of
// datagrams, and a receiver that misses that much CPU on a busy host dropped 4-9%
// of an iperf3 -u stream there (issue 18's bench).
const forwardSocketBuffer = 4 << 20

// flowSocketBuffer is the same for the server's socket of one flow.
const flowSocketBuffer = 1 << 20

// flowRetryAfter is how long the datagrams of a source whose flow was
// refused (or found no session) are dropped before it is asked again: an
// application that keeps sending must not open a stream per datagram.
const flowRetryAfter = 2 * time.Second

// udpForward is a UDP forward's socket and its flows by source address.
type udpForward struct {
	pc    *net.UDPConn
	flows flowSet[netip.AddrPort]
}

type clientFlow struct {
	app     *peerSide
	retryAt time.Time // set once the flow failed to start: its datagrams are dropped until then
}

// flowSet is a set of client flows by key: a udp: forward's by source
// address, a SOCKS5 association's by destination. An entry with retryAt set
// is a refused flow, kept so that its datagrams are dropped for a while.
type flowSet[K comparable] struct {
	mu    sync.Mutex
	flows map[K]*clientFlow
}

// route finds the flow for a datagram of key, or makes one with newFlow
// (fresh: the caller starts it) when there is none or its refusal is over.
// drop, when not empty, is why the datagram is to be dropped instead.
func (s *flowSet[K]) route(key K, limit int, newFlow func() *clientFlow) (fl *clientFlow, fresh bool, drop string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.flows == nil {
		s.flows = map[K]*clientFlow{}
	}
	fl = s.flows[key]
	now := time.Now()
	switch {
	case fl != nil && fl.retryAt.IsZero():
		return fl, false, ""
	case fl != nil && now.Before(fl.retryAt):
		return nil, false, dropRefusedFlow
	case fl == nil && len(s.flows) >= limit:
		// Refused entries whose time is over give their places first.
		for k, old := range s.flows {
			if !old.retryAt.IsZero() && !now.Before(old.retryAt) {
				delete(s.flows, k)
			}
		}
		if len(s.flows) >= limit {
			return nil, false, dropTooManyFlows
		}
	}
	fl = newFlow()
	s.flows[key] = fl
	return fl, true, ""
}

// refused keeps fl's datagrams out for flowRetryAfter.
func (s *flowSet[K]) refused(fl *clientFlow) {
	s.mu.Lock()
	fl.retryAt = time.Now().Add(flowRetryAfter)
	s.mu.Unlock()
}

// forget removes the ended flow fl of key.
func (s *flowSet[K]) forget(key K, fl *clientFlow) {
	s.mu.Lock()
	if s.flows[key] == fl {
		delete(s.flows, key)
	}
	s.mu.Unlock()
}

// each calls fn for every flow, under the set's lock.
func (s *flowSet[K]) each(fn func(*clientFlow)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, fl := range s.flows {
		fn(fl)
	}
}

func (f *forward) bindUDP() error {
	pc, err := f.listen.ListenPacket()
	if err != nil {
		return fmt.Errorf("forward %s: %w", f.name, err)
	}
	// The kernel caps these at net.core.rmem_max/wmem_max (raise them as for QUIC).
	_ = pc.SetReadBuffer(forwardSocketBuffer)
	_ = pc.SetWriteBuffer(forwardSocketBuffer)
	f.udp = &udpForward{pc: pc}
	f.bound = f.listen
	f.bound.Addr = pc.LocalAddr().String()
	return nil
}

// addr is where the forward's applications connect or send.
func (f *forward) addr() net.Addr {
	if f.udp != nil {
		return f.udp.pc.LocalAddr()
	}
	return f.ln.Addr()
}

// receiveApps is a UDP forward's receiver, its accept loop: it hands each
// datagram to its source's flow, starting one for a new source. It ends when
// the forward's socket closes.
func (c *Client) receiveApps(f *forward) {
	defer close(f.accepted)
	stop := context.AfterFunc(f.ctx, f.closeListener)
	defer stop()
	u := f.udp
	buf := make([]byte, MaxUDPDatagram+1)
	for {
		n, src, err := u.pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if f.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			c.log.Warn("receive from applications", "forward", f.name, "err", err)
			continue
		}
		if n > MaxUDPDatagram {
			c.udp.stats.drop(dropTooLarge, 1)
			continue
		}
		d := append([]byte(nil), buf[:n]...)
		fl, fresh, drop := u.flows.route(src, maxFlowsPerForward, func() *clientFlow {
			return &clientFlow{app: newPeerSide(u.pc, src, c.udp.stats)}
		})
		if drop != "" {
			c.udp.stats.drop(drop, 1)
			continue
		}
		if fresh {
			f.handlers.Go(func() { c.serveFlow(f, src, fl) })
		}
		fl.app.deliver(d)
	}
}

// serveFlow starts the flow of a udp: forward's source: its token from the
// forward's source, then runFlow.
func (c *Client) serveFlow(f *forward, src netip.AddrPort, fl *clientFlow) {
	log := c.log.With("forward", f.name, "app", "udp:"+src.String())
	u := f.udp
	setup, cancel := context.WithTimeout(f.ctx, c.cfg.SessionWait)
	defer cancel()
	run := clientFlowRun{
		fl: fl, appAddr: "udp:" + src.String(), setup: setup, tunnels: f.tunnels,
		refused: func() { u.flows.refused(fl) },
		forget:  func() { u.flows.forget(src, fl) },
	}
	tok, err := f.tokens.Token(setup, net.UDPAddrFromAddrPort(src))
	if err != nil {
		c.flowRefused(f, run, log, failNoToken, err)
		return
	}
	run.token = tok
	c.runFlow(f, run, log)
}

// clientFlowRun is what running a client flow needs besides its forward.
type clientFlowRun struct {
	fl      *clientFlow
	token   string
	appAddr string          // its application end, as /tunnels shows it
	setup   context.Context // bounds opening its stream and the server's answer
	tunnels context.Context // its tunnel's
	refused func()          // its owner keeps its datagrams out for a while
	forget  func()          // its owner forgets it once it has ended
}

func (c *Client) flowRefused(f *forward, run clientFlowRun, log *slog.Logger, reason string, err error) {
	log.Warn("udp flow refused", "err", err)
	c.metrics.failed(reason)
	f.stats.failed(reason)
	run.refused()
	run.fl.app.Abort(0)
}

// runFlow opens the stream of a new flow, waits for the server's answer
// (datagrams that come meanwhile wait in the flow's queue) and runs it.
func (c *Client) runFlow(f *forward, run clientFlowRun, log *slog.Logger) {
	fl, tok := run.fl, run.token
	hdr, err := preamble.AppendHeader(nil, preamble.Header{Token: []byte(tok)})
	if err != nil {
		c.flowRefused(f, run, log, failNoToken, err)
		return
	}
	st, conn, err := c.sessions.openStream(run.setup)
	if err != nil {
		c.flowRefused(f, run, log, failNoSession, err)
		return
	}
	if err := awaitFlowStatus(run.setup, st, hdr); err != nil {
		reason := failNoSession
		if se := (*preamble.StatusError)(nil); errors.As(err, &se) {
			reason = se.Status.Code.String()
		}
		c.flowRefused(f, run, log, reason, err)
		return
	}
	defer run.forget()
	t := c.reg.Open(run.tunnels, engine.Info{
		Endpoint:           engine.ClientEndpoint,
		StreamID:           int64(st.StreamID()),
		ClientAppAddr:      run.appAddr,
		ServerAppAddr:      displayTarget(tok),
		RemoteEndpointAddr: conn.RemoteAddr().String(),
		Session:            conn.RemoteAddr().String(),
		Forward:            f.name,
	})
	t.SetProtocol(ProtocolUDP, nil)
	fl.app.t.Store(t)
	c.udp.stats.opened.Add(1)
	f.stats.opened.Add(1)
	flow := newFlowSide(conn, st, t, c.udp.stats)
	table := c.flowTable(conn)
	table.add(flow)
	defer c.dropFlow(conn, table, flow)
	defer flow.stop()
	log = log.With("tunnel", t.ID, "stream", int64(st.StreamID()))
	log.Debug("udp flow opened")
	err = t.RunFlow(fl.app, flow)
	f.stats.closedUp.Add(t.BytesUp())
	f.stats.closedDown.Add(t.BytesDown())
	c.udp.ended(t)
	c.metrics.ended(err)
	logFlowEnd(log, t, err)
}

// awaitFlowStatus sends a flow's header and reads the answer (the server's,
// or for a reverse flow the client's): a flow sends no datagram before it is
// OK, since the answering endpoint registers the flow only then.
func awaitFlowStatus(ctx context.Context, st *quic.Stream, hdr []byte) error {
	fail := func(err error) error {
		st.CancelRead(quic.StreamErrorCode(preamble.CodeInternal))
		st.CancelWrite(quic.StreamErrorCode(preamble.CodeInternal))
		return err
	}
	if _, err := st.Write(hdr); err != nil {
		return fail(err)
	}
	deadline, _ := ctx.Deadline()
	_ = st.SetReadDeadline(deadline)
	status, err := preamble.ReadStatus(st)
	if err != nil {
		return fail(refusal(err))
	}
	if err := status.Err(); err != nil {
		return fail(err)
	}
	_ = st.SetReadDeadline(time.Time{})
	return nil
}

// flowTable is the table of a session's flows, made with its first.
func (c *Client) flowTable(conn *quic.Conn) *flowTable {
	c.flows.Lock()
	defer c.flows.Unlock()
	if c.flows.bySession == nil {
		c.flows.bySession = map[*quic.Conn]*flowTable{}
	}
	t := c.flows.bySession[conn]
	if t == nil {
		t = &flowTable{}
		c.flows.bySession[conn] = t
	}
	return t
}

// dropFlow removes an ended flow, and its session's table with its last.
func (c *Client) dropFlow(conn *quic.Conn, table *flowTable, flow *flowSide) {
	c.flows.Lock()
	defer c.flows.Unlock()
	table.remove(flow)
	table.Lock()
	empty := len(table.flows) == 0
	table.Unlock()
	if empty && c.flows.bySession[conn] == table {
		delete(c.flows.bySession, conn)
	}
}

// receiveDatagram is the session keeper's hook for each QUIC datagram of a
// session: it goes to its flow.
func (c *Client) receiveDatagram(conn *quic.Conn, b []byte) {
	c.flows.Lock()
	table := c.flows.bySession[conn]
	c.flows.Unlock()
	if table == nil {
		if len(b) != probeSize {
			c.udp.stats.drop(dropUnknownFlow, 1)
		}
		return
	}
	table.deliver(b, c.udp.stats)
}

// peerSide is a flow's client application end: its source address on the
// forward's socket. The forward's receiver queues the source's datagrams;
// Write sends to the source.
type peerSide struct {
	pc     *net.UDPConn
	src    netip.AddrPort
	prefix []byte // written ahead of each datagram (a SOCKS5 UDP header), or nil
	out    []byte // Write's (one pump's) buffer for prefix and datagram
	stats  *udpStats
	t      atomic.Pointer[engine.Tunnel] // nil until the flow started
	in     *datagramQueue
	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

func newPeerSide(pc *net.UDPConn, src netip.AddrPort, stats *udpStats) *peerSide {
	return &peerSide{pc: pc, src: src, stats: stats, in: newDatagramQueue(&stats.queued), done: make(chan struct{})}
}

func (p *peerSide) dropped(reason string) {
	if t := p.t.Load(); t != nil {
		t.Dropped(1)
	}
	p.stats.drop(reason, 1)
}

func (p *peerSide) deliver(d []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	if !p.in.push(d) {
		p.dropped(dropQueueFull)
	}
}

func (p *peerSide) Read(b []byte) (int, error) {
	d, ok := p.in.pop(p.done)
	if !ok {
		return 0, io.EOF
	}
	return copy(b, d), nil
}

func (p *peerSide) Write(b []byte) (int, error) {
	d := b
	if p.prefix != nil {
		p.out = append(append(p.out[:0], p.prefix...), b...)
		d = p.out
	}
	if _, err := p.pc.WriteToUDPAddrPort(d, p.src); err != nil {
		if errors.Is(err, net.ErrClosed) {
			return 0, err
		}
		p.dropped(dropUnreachable)
	}
	return len(b), nil
}

// CloseWrite ends the flow's application end: there is no half of a flow.
func (p *peerSide) CloseWrite() error { return p.Close() }

func (p *peerSide) Abort(uint64) { _ = p.Close() }

func (p *peerSide) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.closed {
		p.closed = true
		close(p.done)
		p.in.close()
	}
	return nil
}
