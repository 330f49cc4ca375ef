package endpoints

// UDP flows. Each source address that sends to a client's udp: forward is a
// flow; a flow opens a stream whose header's token names the UDP target, so
// the server's policy, identities, limits and status codes apply to it as to
// a TCP tunnel, and the stream's life is the flow's: closing or resetting it
// ends the flow on both endpoints. The datagrams themselves travel as QUIC
// datagrams (RFC 9221, framing in codecs/udpframe) over the client's
// session, below which the loss-recovery layer repairs losses; a datagram
// lost past repair is lost, never waited for. Each endpoint runs a flow as a
// tunnel of its registry (engine.Tunnel.RunFlow): the pumps carry one
// datagram per Read, idle flows end after conntrack's timeouts, and /tunnels
// shows them with protocol "udp".

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/codecs/udpframe"
	"github.com/quictun/quictun/engine"
)

// ProtocolUDP is what /tunnels shows as the protocol of a UDP flow.
const ProtocolUDP = "udp"

// MaxUDPDatagram is the largest datagram a flow carries: one pump buffer
// less a byte, so that a read that fills the buffer is known to be cut. A
// larger one is dropped (counted). It travels in up to 30 QUIC datagrams.
const MaxUDPDatagram = engine.BufferSize - 1

// relearnEvery is how often (in fragmented datagrams) a flow forgets the
// QUIC datagram size it learnt, so that it follows the path MTU as it grows.
const relearnEvery = 256

// Reasons a datagram is dropped, as quictun_udp_datagrams_dropped_total
// counts them.
const (
	dropUnauthenticated = "unauthenticated" // a session that has not proved its hello
	dropMalformed       = "malformed"
	dropUnknownFlow     = "unknown flow" // ended, refused, or never opened
	dropQueueFull       = "queue full"
	dropFragments       = "fragment lost" // a fragmented datagram given up on
	dropTooLarge        = "too large"
	dropUnreachable     = "unreachable" // the application's port refused it (ICMP)
	dropRefusedFlow     = "refused flow"
	dropTooManyFlows    = "too many flows"
)

var dropReasons = []string{dropUnauthenticated, dropMalformed, dropUnknownFlow, dropQueueFull,
	dropFragments, dropTooLarge, dropUnreachable, dropRefusedFlow, dropTooManyFlows,
	dropForeignSource, dropSOCKSFragment}

// udpStats counts what no tunnel counts: drops outside a flow and by reason,
// and the flows opened. Read at scrape time.
type udpStats struct {
	opened     atomic.Uint64
	fragmented atomic.Uint64             // datagrams sent in more than one QUIC datagram
	dropped    map[string]*atomic.Uint64 // fixed keys: dropReasons
	queued     atomic.Int64              // bytes waiting in all flows' queues (endpointQueueSize)
	// SOCKS5 UDP associations (a client's): open now, and opened.
	associations       atomic.Int64
	associationsOpened atomic.Uint64
}

func newUDPStats() *udpStats {
	s := &udpStats{dropped: map[string]*atomic.Uint64{}}
	for _, r := range dropReasons {
		s.dropped[r] = new(atomic.Uint64)
	}
	return s
}

func (s *udpStats) drop(reason string, n int) { s.dropped[reason].Add(uint64(n)) }

// flowID is a flow's number, from its stream's ID (see udpframe).
func flowID(st *quic.Stream) uint64 { return udpframe.FlowNumber(uint64(st.StreamID())) }

// flowTable finds a session's flows by number, for its datagram receiver.
type flowTable struct {
	sync.Mutex
	flows map[uint64]*flowSide
}

func (ft *flowTable) add(f *flowSide) {
	ft.Lock()
	defer ft.Unlock()
	if ft.flows == nil {
		ft.flows = map[uint64]*flowSide{}
	}
	ft.flows[f.flow] = f
}

func (ft *flowTable) remove(f *flowSide) {
	ft.Lock()
	defer ft.Unlock()
	if ft.flows[f.flow] == f {
		delete(ft.flows, f.flow)
	}
}

// deliver routes one QUIC datagram of the session to its flow. Probes (flow
// 0) are dropped silently; everything else that finds no flow is counted.
func (ft *flowTable) deliver(b []byte, stats *udpStats) {
	h, payload, err := udpframe.Parse(b)
	if err != nil || h.Flow == 0 {
		if h.Flow != 0 || len(b) != probeSize {
			stats.drop(dropMalformed, 1)
		}
		return
	}
	ft.Lock()
	f := ft.flows[h.Flow]
	ft.Unlock()
	if f == nil {
		stats.drop(dropUnknownFlow, 1)
		return
	}
	f.receive(h, payload, stats)
}

// flowSide is the QUIC end of a flow, on either endpoint: it reads the
// datagrams its session's receiver hands it and sends datagrams as QUIC
// datagrams; the flow's stream says when the flow ends. It owns one
// goroutine, watchStream, which stop ends and waits for.
type flowSide struct {
	conn   *quic.Conn
	stream *quic.Stream
	flow   uint64
	t      *engine.Tunnel // for drops; set before the session can deliver to it
	stats  *udpStats

	in     *datagramQueue
	ended  chan struct{} // closed when the stream's receive side ends
	reasm  *udpframe.Reassembler
	mu     sync.Mutex // guards closed against receive's send on in
	closed bool

	// The sender's (one pump's) own.
	seq     uint64
	max     int // the largest QUIC datagram payload, learnt from quic-go
	scratch []byte
	urgent  bool // the pump finds the flow interactive (engine.Prioritized)

	abort   sync.Once
	watcher sync.WaitGroup
}

func newFlowSide(conn *quic.Conn, stream *quic.Stream, t *engine.Tunnel, stats *udpStats) *flowSide {
	f := &flowSide{conn: conn, stream: stream, flow: flowID(stream), t: t, stats: stats,
		in: newDatagramQueue(&stats.queued), ended: make(chan struct{}), max: MaxUDPDatagram + udpframe.MaxHeaderLen}
	f.watcher.Go(f.watchStream)
	return f
}

// watchStream reads the flow's stream, which carries nothing after its
// header and status, until the peer ends it (FIN or reset) or stop cancels
// the read.
func (f *flowSide) watchStream() {
	defer close(f.ended)
	var buf [64]byte
	for {
		if _, err := f.stream.Read(buf[:]); err != nil {
			return
		}
	}
}

// receive is the session receiver's: it rebuilds the datagram and queues it
// for the pump, or drops it when the queue is full.
func (f *flowSide) receive(h udpframe.Header, payload []byte, stats *udpStats) {
	if h.Fragmented() {
		if f.reasm == nil {
			f.reasm = udpframe.NewReassembler(MaxUDPDatagram)
		}
		whole, dropped := f.reasm.Add(h, payload)
		if dropped > 0 {
			f.t.Dropped(dropped)
			stats.drop(dropFragments, dropped)
		}
		if whole == nil {
			return
		}
		payload = whole
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return
	}
	if !f.in.push(payload) {
		f.t.Dropped(1)
		stats.drop(dropQueueFull, 1)
	}
}

// Read returns the next datagram; io.EOF once the peer ended the flow.
func (f *flowSide) Read(p []byte) (int, error) {
	d, ok := f.in.pop(f.ended)
	if !ok {
		return 0, io.EOF
	}
	return copy(p, d), nil
}

// SetInteractive: the datagrams of a flow that sends little (a game, voice,
// DNS) go before the session's bulk ones, and past a full congestion window
// (quic-go's SendDatagramUrgent), so they never wait for a bulk flow's backlog.
func (f *flowSide) SetInteractive(on bool) { f.urgent = on }

// Write sends one datagram, in fragments when it does not fit in one QUIC
// datagram. A full send queue makes it wait (quic-go's SendDatagram), which
// slows the application's reads: the socket buffer then drops, as UDP does.
func (f *flowSide) Write(p []byte) (int, error) {
	send := f.conn.SendDatagram
	if f.urgent {
		send = f.conn.SendDatagramUrgent
	}
	for {
		var fragmented bool
		var err error
		f.scratch, fragmented, err = udpframe.Fragments(f.flow, f.seq, p, f.max, f.scratch, send)
		if fragmented {
			f.seq++
			f.stats.fragmented.Add(1)
			if f.seq%relearnEvery == 0 {
				// quic-go's size grows with path MTU discovery: ask again.
				f.max = MaxUDPDatagram + udpframe.MaxHeaderLen
			}
		}
		var tooLarge *quic.DatagramTooLargeError
		switch {
		case err == nil:
			return len(p), nil
		case errors.As(err, &tooLarge) && int(tooLarge.MaxDatagramPayloadSize) < f.max:
			// The path's size, learnt now: send the datagram again, cut to it.
			f.max = int(tooLarge.MaxDatagramPayloadSize)
		case errors.Is(err, udpframe.ErrTooLarge) || errors.As(err, &tooLarge):
			f.t.Dropped(1)
			return len(p), nil
		default:
			return 0, err
		}
	}
}

// CloseWrite ends the flow from this side: the stream's FIN tells the peer.
func (f *flowSide) CloseWrite() error { return f.stream.Close() }

func (f *flowSide) Abort(code uint64) {
	f.abort.Do(func() {
		f.stream.CancelRead(quic.StreamErrorCode(code))
		f.stream.CancelWrite(quic.StreamErrorCode(code))
	})
}

func (f *flowSide) Close() error {
	f.stream.CancelRead(0)
	return nil
}

// stop ends the watcher and waits for it, and takes no more datagrams: the
// flow's owner calls it once the tunnel has ended.
func (f *flowSide) stop() {
	f.stream.CancelRead(quic.StreamErrorCode(preamble.CodeOK))
	f.watcher.Wait()
	f.mu.Lock()
	f.closed = true
	f.in.close()
	f.mu.Unlock()
}

// isUnreachable is an ICMP port unreachable that a connected UDP socket
// reports on its next call: the datagram before was lost, not the flow.
func isUnreachable(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// udpCollector is an endpoint's UDP metrics, read at scrape time.
type udpCollector struct {
	u                                           *udpEndpoint
	reg                                         *engine.Registry
	openDesc, openedDesc, packetsDesc, dropDesc *prometheus.Desc
	fragDesc                                    *prometheus.Desc
	assocDesc, assocOpenedDesc                  *prometheus.Desc // nil on the server
}

func (c *udpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.openDesc
	ch <- c.openedDesc
	ch <- c.packetsDesc
	ch <- c.dropDesc
	ch <- c.fragDesc
	if c.assocDesc != nil {
		ch <- c.assocDesc
		ch <- c.assocOpenedDesc
	}
}

func (c *udpCollector) Collect(ch chan<- prometheus.Metric) {
	open := 0
	up, down := c.u.closedUp.Load(), c.u.closedDown.Load()
	for _, t := range c.reg.Tunnels() {
		if t.Datagrams() {
			open++
			u, d, _ := t.Packets()
			up, down = up+u, down+d
		}
	}
	ch <- prometheus.MustNewConstMetric(c.openDesc, prometheus.GaugeValue, float64(open))
	ch <- prometheus.MustNewConstMetric(c.openedDesc, prometheus.CounterValue, float64(c.u.stats.opened.Load()))
	ch <- prometheus.MustNewConstMetric(c.packetsDesc, prometheus.CounterValue, float64(up), "up")
	ch <- prometheus.MustNewConstMetric(c.packetsDesc, prometheus.CounterValue, float64(down), "down")
	ch <- prometheus.MustNewConstMetric(c.fragDesc, prometheus.CounterValue, float64(c.u.stats.fragmented.Load()))
	for _, r := range dropReasons {
		ch <- prometheus.MustNewConstMetric(c.dropDesc, prometheus.CounterValue, float64(c.u.stats.dropped[r].Load()), r)
	}
	if c.assocDesc != nil {
		ch <- prometheus.MustNewConstMetric(c.assocDesc, prometheus.GaugeValue, float64(c.u.stats.associations.Load()))
		ch <- prometheus.MustNewConstMetric(c.assocOpenedDesc, prometheus.CounterValue, float64(c.u.stats.associationsOpened.Load()))
	}
}

// udpEndpoint is what both endpoints keep for their flows.
type udpEndpoint struct {
	stats *udpStats
	// Packets of flows that have ended, kept as the registry keeps bytes.
	closedUp, closedDown atomic.Uint64
}

func (u *udpEndpoint) collector(side engine.Endpoint, reg *engine.Registry) *udpCollector {
	l := prometheus.Labels{"endpoint": string(side)}
	c := &udpCollector{u: u, reg: reg,
		openDesc:   prometheus.NewDesc("quictun_udp_flows_open", "UDP flows open now.", nil, l),
		openedDesc: prometheus.NewDesc("quictun_udp_flows_opened_total", "UDP flows opened.", nil, l),
		packetsDesc: prometheus.NewDesc("quictun_udp_datagrams_total",
			"Datagrams carried by UDP flows, by direction (up: client application to server application).", []string{"direction"}, l),
		dropDesc: prometheus.NewDesc("quictun_udp_datagrams_dropped_total",
			"Datagrams dropped on the way through this endpoint, by reason.", []string{"reason"}, l),
		fragDesc: prometheus.NewDesc("quictun_udp_datagrams_fragmented_total",
			"Datagrams this endpoint sent in more than one QUIC datagram (larger than the path's QUIC datagram).", nil, l),
	}
	if side == engine.ClientEndpoint {
		c.assocDesc = prometheus.NewDesc("quictun_socks_udp_associations_open",
			"SOCKS5 UDP associations open now (each its flows' owner).", nil, l)
		c.assocOpenedDesc = prometheus.NewDesc("quictun_socks_udp_associations_opened_total",
			"SOCKS5 UDP associations opened.", nil, l)
	}
	return c
}

// ended adds an ended flow's packets to the totals.
func (u *udpEndpoint) ended(t *engine.Tunnel) {
	up, down, _ := t.Packets()
	u.closedUp.Add(up)
	u.closedDown.Add(down)
}

// targetSide is a flow's server application end: a UDP socket connected to
// the target. A read that fills the buffer may have been cut and is dropped;
// an ICMP unreachable loses a datagram, not the flow.
type targetSide struct {
	conn      *net.UDPConn
	t         *engine.Tunnel
	stats     *udpStats
	closeOnce sync.Once
	finished  atomic.Bool // CloseWrite was called: a read of the closed socket is EOF
}

func (s *targetSide) Read(p []byte) (int, error) {
	for {
		n, err := s.conn.Read(p)
		switch {
		case err == nil && n >= len(p):
			s.t.Dropped(1)
			s.stats.drop(dropTooLarge, 1)
		case err == nil:
			return n, nil
		case isUnreachable(err):
			s.t.Dropped(1)
			s.stats.drop(dropUnreachable, 1)
		case s.finished.Load() && errors.Is(err, net.ErrClosed):
			return 0, io.EOF
		default:
			return 0, err
		}
	}
}

func (s *targetSide) Write(p []byte) (int, error) {
	if _, err := s.conn.Write(p); err != nil {
		if !isUnreachable(err) {
			return 0, err
		}
		s.t.Dropped(1)
		s.stats.drop(dropUnreachable, 1)
	}
	return len(p), nil
}

// CloseWrite ends a flow whose peer ended it: there is no half of a flow, so
// the socket closes and the other pump's read ends as EOF.
func (s *targetSide) CloseWrite() error {
	s.finished.Store(true)
	return s.Close()
}

func (s *targetSide) Abort(uint64) { _ = s.Close() }

func (s *targetSide) Close() error {
	var err error
	s.closeOnce.Do(func() { err = s.conn.Close() })
	return err
}
