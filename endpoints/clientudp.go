package endpoints

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	pc *net.UDPConn
	mu sync.Mutex
	// flows by source; an entry with retryAt set is a refused one.
	flows map[netip.AddrPort]*clientFlow
}

type clientFlow struct {
	app     *peerSide
	retryAt time.Time // set once the flow failed to start: its datagrams are dropped until then
}

func (f *forward) bindUDP() error {
	pc, err := f.listen.ListenPacket()
	if err != nil {
		return fmt.Errorf("forward %s: %w", f.name, err)
	}
	// The kernel caps these at net.core.rmem_max/wmem_max (raise them as for QUIC).
	_ = pc.SetReadBuffer(forwardSocketBuffer)
	_ = pc.SetWriteBuffer(forwardSocketBuffer)
	f.udp = &udpForward{pc: pc, flows: map[netip.AddrPort]*clientFlow{}}
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
		u.mu.Lock()
		fl := u.flows[src]
		switch {
		case fl != nil && fl.retryAt.IsZero():
		case fl != nil && time.Now().Before(fl.retryAt):
			u.mu.Unlock()
			c.udp.stats.drop(dropRefusedFlow, 1)
			continue
		case len(u.flows) >= maxFlowsPerForward && fl == nil:
			u.mu.Unlock()
			c.udp.stats.drop(dropTooManyFlows, 1)
			continue
		default:
			fl = &clientFlow{app: newPeerSide(u.pc, src, c.udp.stats)}
			u.flows[src] = fl
			f.handlers.Go(func() { c.serveFlow(f, src, fl) })
		}
		u.mu.Unlock()
		fl.app.deliver(d)
	}
}

// serveFlow opens the stream of a new flow, waits for the server's answer
// (datagrams that come meanwhile wait in the flow's queue) and runs it.
func (c *Client) serveFlow(f *forward, src netip.AddrPort, fl *clientFlow) {
	log := c.log.With("forward", f.name, "app", "udp:"+src.String())
	u := f.udp
	failed := func(reason string, err error) {
		log.Warn("udp flow refused", "err", err)
		c.metrics.failed(reason)
		f.stats.failed(reason)
		u.mu.Lock()
		fl.retryAt = time.Now().Add(flowRetryAfter)
		u.mu.Unlock()
		fl.app.Abort(0)
	}
	setup, cancel := context.WithTimeout(f.ctx, c.cfg.SessionWait)
	defer cancel()
	tok, err := f.tokens.Token(setup, net.UDPAddrFromAddrPort(src))
	if err != nil {
		failed(failNoToken, err)
		return
	}
	hdr, err := preamble.AppendHeader(nil, preamble.Header{Token: []byte(tok)})
	if err != nil {
		failed(failNoToken, err)
		return
	}
	st, conn, err := c.sessions.openStream(setup)
	if err != nil {
		failed(failNoSession, err)
		return
	}
	if err := awaitFlowStatus(setup, st, hdr); err != nil {
		reason := failNoSession
		if se := (*preamble.StatusError)(nil); errors.As(err, &se) {
			reason = se.Status.Code.String()
		}
		failed(reason, err)
		return
	}
	defer func() {
		u.mu.Lock()
		if u.flows[src] == fl {
			delete(u.flows, src)
		}
		u.mu.Unlock()
	}()
	t := c.reg.Open(f.tunnels, engine.Info{
		Endpoint:           engine.ClientEndpoint,
		StreamID:           int64(st.StreamID()),
		ClientAppAddr:      "udp:" + src.String(),
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
	stats  *udpStats
	t      atomic.Pointer[engine.Tunnel] // nil until the flow started
	in     chan []byte
	queued atomic.Int64
	mu     sync.Mutex
	closed bool
	done   chan struct{}
}

func newPeerSide(pc *net.UDPConn, src netip.AddrPort, stats *udpStats) *peerSide {
	return &peerSide{pc: pc, src: src, stats: stats, in: make(chan []byte, flowQueueLen), done: make(chan struct{})}
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
	if p.queued.Load()+int64(len(d)) > flowQueueBytes {
		p.dropped(dropQueueFull)
		return
	}
	select {
	case p.in <- d:
		p.queued.Add(int64(len(d)))
	default:
		p.dropped(dropQueueFull)
	}
}

func (p *peerSide) Read(b []byte) (int, error) {
	select {
	case d := <-p.in:
		p.queued.Add(-int64(len(d)))
		return copy(b, d), nil
	case <-p.done:
		return 0, io.EOF
	}
}

func (p *peerSide) Write(b []byte) (int, error) {
	if _, err := p.pc.WriteToUDPAddrPort(b, p.src); err != nil {
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
	}
	return nil
}
