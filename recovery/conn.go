// Package recovery is quictun's loss-recovery layer: a net.PacketConn that sits
// between quic-go and the UDP socket and hides random packet loss from quic-go,
// whose congestion controller (Reno, no pluggable alternative) otherwise backs off
// on every loss and reaches a few percent of a lossy long link.
//
// It frames each datagram quic-go sends (codecs/fecframe) as a source of a
// sliding-window random linear code (rlc.go) and sends repairs among them, each a
// combination of the latest sources, so a lost datagram is rebuilt within
// milliseconds of the loss. Every datagram is handed to quic-go the moment it
// arrives or is rebuilt, never held back for order:
// quic-go treats a packet that turns up a little late as a spurious loss and
// undoes its window cut, and once it has seen one it stops using packet-count
// reordering altogether; later than about one round trip it does not (see
// README.md for the measurements this design stands on).
//
// Congestion must still show: a loss seen while the path queue sits at its ceiling
// is counted apart, does not raise the parity, and one rebuilt datagram per
// round trip is withheld from quic-go so that its controller backs off.
//
// quic-go runs on top of a Conn unchanged: quic.Transport{Conn: conn}. Both ends
// negotiate the framing by first datagrams (see peer), so every combination of
// settings, and plain quic-go on the other side, connects.
//
// Goroutines and locks. The layer has one goroutine of its own,
// flusher.routineFlush (flush.go), started by NewConn and stopped and waited for
// by Close: it closes spans, sends Feedback, gives up missing sources and forgets
// idle peers. Everything else runs in quic-go's goroutines: its one reader
// (ReadFrom/ReadBatch under Conn.readMu, which owns the read batch, the rebuilt
// datagrams waiting for quic-go and the trainer's held ones, and alone hands
// rebuilt datagrams on), and its writers (WriteTo/WriteMsgUDP). Per proven peer,
// sender.mu guards the encoder and its window (writers, the flusher, and the
// reader when Feedback reshapes it), receiver.mu the decoder and the loss and
// delay accounting (the reader, and the flusher for Feedback and give-ups),
// ctlMu the controller (the reader), hello the negotiation. Lock order:
// readMu, then peerTable.mu, then a peer's hello, sender.mu or receiver.mu
// (never two of the last three at once; peerTable.mu is released before a
// peer's sender or receiver runs, but for retirement, which takes sender.mu and
// receiver.mu in turn under it).
package recovery

import (
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
)

// Conn is a net.PacketConn that adds loss recovery to the datagrams written
// through it and removes it from the datagrams read. It is safe for concurrent use
// by quic-go (one reader, any number of writers).
//
// Strangers get nothing. An address is a stranger until it has proved itself:
// QUIC has accepted a connection from it (the endpoint says so with Prove), or,
// on a Conn with Config.Dialer, quic-go writes to it. A stranger's framed
// datagrams never reach the coding state: the QUIC packet a source or data frame
// carries goes to quic-go (which authenticates it), everything else is dropped,
// and nothing is sent to a stranger but plain QUIC, Hellos, HelloAcks and
// handshake copies, together at most as many bytes as came from it. What all
// strangers together can make a Conn hold is their table entries: at most 256
// (the oldest makes room for a new one) of under 1 KiB each, no pooled buffer
// (TestStrangersHoldNothing, FuzzStrangers). A proven peer holds at most
// min(1024, MaxBuffers/2) pooled buffers (TestFloodDuringLossyTransfer).
//
// Every frame carries a tag under a key its receiver gave the sender in a
// HelloAck (codecs/fecframe): a frame from a proven address whose tag fails is
// counted (Stats.Forged) and dropped, but for the QUIC packet it carries, which
// goes to quic-go as a plain datagram would.
type Conn struct {
	inner  net.PacketConn
	sock   *socket
	cfg    Config
	epoch  time.Time
	secret [32]byte // keys the peers' tags (keyFor)

	pool    *bufferPool
	peers   peerTable
	flusher flusher

	// Read side, owned by whoever holds readMu (quic-go's one reader).
	readMu      sync.Mutex
	pending     []delivery // rebuilt datagrams not yet handed to quic-go
	pendingHead int
	held        []heldDelivery // data datagrams held back by a trainer
	in          inBatch        // datagrams read from inner, not yet processed
	one         [1]ipv4.Message

	plain     plainBatch
	optSocket struct {
		sync.Mutex
		conn *net.UDPConn // see SyscallConn
	}

	stats     counters
	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// counters are the Conn's statistics, updated where the events happen.
type counters struct {
	datagramsSent, datagramsReceived atomic.Uint64
	dataSent, paritySent, copiesSent atomic.Uint64
	framedReceived, feedbackSent     atomic.Uint64
	lost, congestionLost             atomic.Uint64
	ambiguousLost                    atomic.Uint64
	repaired, unrepaired, withheld   atomic.Uint64
	malformed, forged                atomic.Uint64
	repairDelaySum, repairDelayMax   atomic.Int64 // nanoseconds
	data, parity                     atomic.Int64
}

// noteRepaired counts a datagram rebuilt and handed to quic-go delay after it
// was found missing.
func (k *counters) noteRepaired(delay time.Duration) {
	k.repaired.Add(1)
	k.repairDelaySum.Add(int64(delay))
	if int64(delay) > k.repairDelayMax.Load() {
		k.repairDelayMax.Store(int64(delay))
	}
}

// Stats is a snapshot of a Conn's counters. Loss counts are what this Conn's
// receiver saw on the datagrams coming in; PeerLoss is what the peer reports for
// the datagrams going out.
type Stats struct {
	DatagramsSent     uint64 // datagrams quic-go wrote
	DatagramsReceived uint64 // datagrams handed to quic-go, rebuilt ones included
	DataSent          uint64 // sources sent
	ParitySent        uint64 // repairs sent, copies included
	CopiesSent        uint64 // repairs of one small source (see sender.copy)
	FramedReceived    uint64 // sources and repairs received
	Lost              uint64 // datagrams seen missing on arrival (random loss)
	CongestionLost    uint64 // datagrams seen missing while the path queue was full
	AmbiguousLost     uint64 // datagrams seen missing while the queue was filling
	Repaired          uint64 // datagrams rebuilt and handed to quic-go
	Unrepaired        uint64 // sources neither received nor rebuilt
	Withheld          uint64 // rebuilt datagrams kept from quic-go to signal congestion
	Malformed         uint64 // framed datagrams that failed to decode
	Forged            uint64 // frames from a proven address whose tag failed
	// RepairDelay is the mean time from a datagram being found missing to its
	// rebuild, RepairDelayMax the longest: how late rebuilt datagrams reach
	// quic-go.
	RepairDelay, RepairDelayMax time.Duration
	// Overhead is repairs / sources sent.
	Overhead float64
	// Data and Parity are the rate last chosen, by any peer: Parity repairs per
	// Data sources.
	Data, Parity int
	// PeerLoss is the random loss rate the peer measured on what we send (largest
	// over peers), RTT the smoothed round trip (of that peer).
	PeerLoss float64
	RTT      time.Duration
	// Peers are the remote addresses with state, ProvenPeers those proven (the
	// rest are strangers), FramedPeers those we frame for.
	Peers, ProvenPeers, FramedPeers int
}

// NewConn wraps inner, the endpoint's UDP socket. Run quic-go on top with
// quic.Transport{Conn: c}. Close closes inner.
func NewConn(inner net.PacketConn, cfg Config) (*Conn, error) {
	if inner == nil {
		return nil, errors.New("recovery: nil PacketConn")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("recovery: %w", err)
	}
	cfg = cfg.withDefaults()
	c := &Conn{
		inner: inner,
		cfg:   cfg,
		epoch: time.Now(),
		pool:  newBufferPool(cfg.MaxBuffers),
	}
	c.sock = newSocket(inner)
	c.one[0].Buffers = make([][]byte, 1)
	c.peers.m = make(map[peerKey]*peer)
	c.peers.proofs = make(map[peerKey]int)
	rand.Read(c.secret[:]) //nolint:errcheck // crypto/rand.Read never fails
	if cfg.Mode != Off {
		ct := newController(cfg)
		sh := ct.shape()
		c.stats.data.Store(int64(sh.k))
		c.stats.parity.Store(int64(sh.parityPer(sh.k)))
	}
	c.flusher.start(c)
	return c, nil
}

// now is the Conn's clock: monotonic time since the Conn was made.
func (c *Conn) now() time.Duration { return time.Since(c.epoch) }

// Close stops the Conn's goroutine, waits for it, frees its buffers and closes the
// inner PacketConn. It is idempotent.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.flusher.stop()
		c.closeErr = c.inner.Close()
		c.optSocket.Lock()
		if c.optSocket.conn != nil {
			c.optSocket.conn.Close()
		}
		c.optSocket.Unlock()
		for _, p := range c.peers.snapshot(nil) {
			c.peers.remove(c, p)
		}
	})
	return c.closeErr
}

// Prove tells the Conn that addr has proved itself: QUIC has accepted a
// connection from it (a server calls it from its accept path). Until the last
// release of its proofs, the peer gets coding state; after it, the address is a
// stranger again. Release is idempotent.
func (c *Conn) Prove(addr net.Addr) (release func()) {
	key := keyOf(addr)
	c.peers.prove(c, key, addr, c.now())
	var once sync.Once
	return func() { once.Do(func() { c.peers.unprove(c, key) }) }
}

// retirePeer frees a proven peer's buffers.
func (c *Conn) retirePeer(p *peer) {
	if p.proven() {
		p.send.shutdown(c)
		p.recv.shutdown()
	}
}

// Stats returns a snapshot of the counters.
func (c *Conn) Stats() Stats {
	s := Stats{
		DatagramsSent:     c.stats.datagramsSent.Load(),
		DatagramsReceived: c.stats.datagramsReceived.Load(),
		DataSent:          c.stats.dataSent.Load(),
		ParitySent:        c.stats.paritySent.Load(),
		CopiesSent:        c.stats.copiesSent.Load(),
		FramedReceived:    c.stats.framedReceived.Load(),
		Lost:              c.stats.lost.Load(),
		CongestionLost:    c.stats.congestionLost.Load(),
		AmbiguousLost:     c.stats.ambiguousLost.Load(),
		Repaired:          c.stats.repaired.Load(),
		Unrepaired:        c.stats.unrepaired.Load(),
		Withheld:          c.stats.withheld.Load(),
		Malformed:         c.stats.malformed.Load(),
		Forged:            c.stats.forged.Load(),
		Data:              int(c.stats.data.Load()),
		Parity:            int(c.stats.parity.Load()),
	}
	if s.Repaired > 0 {
		s.RepairDelay = time.Duration(c.stats.repairDelaySum.Load() / int64(s.Repaired))
		s.RepairDelayMax = time.Duration(c.stats.repairDelayMax.Load())
	}
	if s.DataSent > 0 {
		s.Overhead = float64(s.ParitySent) / float64(s.DataSent)
	}
	for _, p := range c.peers.snapshot(nil) {
		s.Peers++
		if p.proven() {
			s.ProvenPeers++
		}
		if p.state.Load() == peerFramed {
			s.FramedPeers++
		}
		if l := math.Float64frombits(p.peerLoss.Load()); l >= s.PeerLoss {
			s.PeerLoss = l
			s.RTT = time.Duration(p.rtt.Load())
		}
	}
	return s
}

func floatBits(f float64) uint64 { return math.Float64bits(f) }

// LocalAddr returns the inner PacketConn's local address.
func (c *Conn) LocalAddr() net.Addr { return c.inner.LocalAddr() }

// SetDeadline forwards to the inner PacketConn.
func (c *Conn) SetDeadline(t time.Time) error { return c.inner.SetDeadline(t) }

// SetReadDeadline forwards to the inner PacketConn.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.inner.SetReadDeadline(t) }

// SetWriteDeadline forwards to the inner PacketConn.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.inner.SetWriteDeadline(t) }

// SetReadBuffer sizes the inner socket's receive buffer, if it has one; quic-go
// calls it to ask for room for bursts.
func (c *Conn) SetReadBuffer(n int) error {
	if s, ok := c.inner.(interface{ SetReadBuffer(int) error }); ok {
		return s.SetReadBuffer(n)
	}
	return errors.New("recovery: inner PacketConn has no SetReadBuffer")
}

// SetWriteBuffer sizes the inner socket's send buffer, if it has one.
func (c *Conn) SetWriteBuffer(n int) error {
	if s, ok := c.inner.(interface{ SetWriteBuffer(int) error }); ok {
		return s.SetWriteBuffer(n)
	}
	return errors.New("recovery: inner PacketConn has no SetWriteBuffer")
}

var (
	_ net.PacketConn = (*Conn)(nil)
	// quic-go's interfaces, checked here so that a change of theirs shows.
	_ quic.OOBCapablePacketConn = (*Conn)(nil)
	_ interface {
		ReadBatch([]ipv4.Message, int) (int, error)
	} = (*Conn)(nil)
)
