package recovery

import (
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quictun/quictun/codecs/fecframe"
)

// maxGroup bounds the group sizes the parity model sizes for (shape.mFor).
const maxGroup = 256

// shape is how the sender protects what it sends.
type shape struct {
	// k is the group the span top-up and the window rule size for: a flow that
	// sends fewer than k sources in a span gets mFor[its sources] repairs.
	k    int
	mFor [maxGroup + 1]uint8
	span time.Duration
	// every is how many sources go out per repair.
	every float64
	// copies: small sources also go out as a repair of their own (see
	// sender.copy).
	copies bool
}

// parityPer is the repairs sent per n sources.
func (sh *shape) parityPer(n int) int { return int(math.Round(float64(n) / sh.every)) }

// sender is the sending half of a peer: it frames quic-go's datagrams as sources
// of the sliding-window code (its rlcEncoder keeps the window) and adds the
// repairs they earn, tagged for the peer. All of it runs in the caller's
// goroutine (quic-go's send loop, or the flusher for span deadlines) under mu;
// the lock is also held across the socket writes so that a window's buffers are
// never released while the kernel reads them.
type sender struct {
	mu       sync.Mutex
	seq      uint32
	shape    shape
	enc      rlcEncoder
	out      outBatch
	retired  bool // the peer is gone; send plain
	dataSent atomic.Uint64
	copies   copyBudget
	buffers  *allowance       // the peer's share of the pool
	tag      *fecframe.Tagger // under the key the peer gave us
}

// seal tags a frame for the peer. Callers hold mu.
func (s *sender) seal(b []byte) {
	if s.tag != nil {
		s.tag.Seal(b)
	}
}

// outBatch collects the datagrams one write produces, in order, so they leave in
// as few system calls as possible (see socket). Repair buffers are released after
// the flush.
type outBatch struct {
	dgrams [][]byte
	bufs   []*buffer
}

// maxOutBatch flushes a batch early: a GSO send takes at most 64 segments.
const maxOutBatch = 128

// flush sends the batch to addr and releases what waited for it. Callers hold mu.
func (s *sender) flush(c *Conn, p *peer, addr net.Addr) error {
	var err error
	if len(s.out.dgrams) > 0 {
		err = c.sock.writeBatch(s.out.dgrams, addr, p.sockaddr(c, addr))
	}
	clear(s.out.dgrams)
	s.out.dgrams = s.out.dgrams[:0]
	for _, b := range s.out.bufs {
		c.pool.put(b)
	}
	clear(s.out.bufs)
	s.out.bufs = s.out.bufs[:0]
	return err
}

// send frames the datagrams in b (segments of seg bytes, the last may be shorter;
// seg 0: one datagram) and writes them, with the repairs they earn. Datagrams
// that cannot be framed (too large, or no buffer to keep them in) go out plain,
// which the peer reads as QUIC.
func (s *sender) send(c *Conn, p *peer, b []byte, seg int, addr net.Addr) error {
	if seg <= 0 {
		seg = len(b)
	}
	now := c.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	var err error
	for len(b) > 0 {
		d := b[:min(seg, len(b))]
		b = b[len(d):]
		if s.retired || len(d) > fecframe.MaxPayload {
			s.out.dgrams = append(s.out.dgrams, d)
		} else if buf := s.buffers.get(c.pool); buf == nil {
			s.out.dgrams = append(s.out.dgrams, d)
		} else {
			s.source(c, d, buf, now)
		}
		if len(s.out.dgrams) >= maxOutBatch {
			err = errors.Join(err, s.flush(c, p, addr))
		}
	}
	return errors.Join(err, s.flush(c, p, addr))
}

// source sends one datagram as a source, and a repair when one is due. Callers
// hold mu.
func (s *sender) source(c *Conn, b []byte, buf *buffer, now time.Duration) {
	e := &s.enc
	copy(buf.b[fecframe.DataHeaderLen:], b)
	fecframe.PutSource(buf.b[:], fecframe.Source{Seq: s.seq, SSN: e.ssn, Timestamp: stamp(now)}, len(b))
	s.seq++
	buf.n = fecframe.DataHeaderLen + len(b)
	s.seal(buf.b[:buf.n])
	c.pool.put(e.add(buf, now)) // rlcWindowMax sources ago: long out of the batch
	if e.spanSources == 0 {
		e.spanStart = now
		c.flusher.wake(now + s.shape.span)
	}
	e.spanSources++
	s.out.dgrams = append(s.out.dgrams, buf.b[:buf.n])
	c.stats.dataSent.Add(1)
	s.dataSent.Add(1)
	e.credit += 1 / max(s.shape.every, 1)
	if e.credit >= 1 {
		e.credit--
		s.repair(c, now)
	}
	if s.shape.copies && len(b) >= copyMin && len(b) <= copyMax && s.copies.take(now) {
		s.copy(c, now)
	}
	if e.spanSources >= s.shape.k {
		e.spanSources, e.spanRepairs = 0, 0 // fast enough for the rate alone
	}
}

// closeSpan ends the current span, topping its repairs up to what a group of
// its sources would have had, unless the window already holds a group's worth
// of sources (a fast flow, whose rate alone suffices). Callers hold mu.
func (s *sender) closeSpan(c *Conn, now time.Duration) {
	e := &s.enc
	if e.windowLen(now) < s.shape.k {
		for range int(s.shape.mFor[min(e.spanSources, s.shape.k)]) - e.spanRepairs {
			s.repair(c, now)
		}
	}
	e.spanSources, e.spanRepairs = 0, 0
}

// repair adds to the batch a repair over the window. Callers hold mu.
func (s *sender) repair(c *Conn, now time.Duration) {
	first, count, L := s.enc.shardLen(now)
	if count > 0 && s.encodeRepair(c, first, count, L, now) {
		s.enc.spanRepairs++
	}
}

// Small sources: a keystroke, a game tick, a DNS query or a probe is one small
// datagram among a bulk flow's, and its loss waits for the window's repairs,
// up to every sources later (10 ms at 1% loss and 50 Mbit/s). A repair of that
// source alone rebuilds it at once for a few dozen bytes. ACK-only packets
// (under copyMin) need no rebuild; the budget bounds what a peer sending only
// small datagrams costs.
const (
	copyMin, copyMax = 56, 400 // QUIC datagram bytes
	copyRate         = 500     // copies per second, at most
	copyBurst        = 32
)

// copy adds to the batch a repair of the newest source alone. Callers hold mu.
func (s *sender) copy(c *Conn, now time.Duration) {
	e := &s.enc
	src := e.ring[(e.ssn-1)%rlcWindowMax]
	if s.encodeRepair(c, e.ssn-1, 1, src.n-fecframe.DataShardOffset, now) {
		c.stats.copiesSent.Add(1)
	}
}

// encodeRepair adds to the batch a repair over the count sources from first,
// L bytes long. It reports false when no buffer was left for it (the sources
// go unprotected). Callers hold mu.
func (s *sender) encodeRepair(c *Conn, first uint32, count, L int, now time.Duration) bool {
	pb := s.buffers.get(c.pool)
	if pb == nil {
		return false
	}
	s.enc.encode(pb.b[fecframe.RepairHeaderLen:fecframe.RepairHeaderLen+L], s.seq, first, count)
	fecframe.PutRepair(pb.b[:], fecframe.Repair{Seq: s.seq, Timestamp: stamp(now), First: first, Count: uint16(count)})
	s.seal(pb.b[:fecframe.RepairHeaderLen+L])
	s.seq++
	s.out.dgrams = append(s.out.dgrams, pb.b[:fecframe.RepairHeaderLen+L])
	s.out.bufs = append(s.out.bufs, pb)
	c.stats.paritySent.Add(1)
	return true
}

// copyBudget is a token bucket of copies: copyRate a second, copyBurst at once.
type copyBudget struct {
	started bool
	tokens  float64
	at      time.Duration
}

func (b *copyBudget) take(now time.Duration) bool {
	if !b.started {
		b.started, b.tokens = true, copyBurst
	} else {
		b.tokens = min(b.tokens+(now-b.at).Seconds()*copyRate, copyBurst)
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// flushDue closes the span when it has run out, and gives the window back once
// it has aged out.
func (s *sender) flushDue(c *Conn, p *peer, now time.Duration) (next time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := &s.enc
	if e.spanSources > 0 {
		if due := e.spanStart + s.shape.span; due <= now {
			s.closeSpan(c, now)
		} else {
			next = due
		}
	}
	if last, ok := e.quietSince(); ok {
		// Sources older than the window are in no repair again: a paused flow
		// gives its buffers back (a server may have many such peers).
		if due := last + rlcWindowAge; due <= now {
			e.release(c.pool)
		} else if next == 0 || due < next {
			next = due
		}
	}
	s.flush(c, p, p.addr) //nolint:errcheck // repairs are best effort
	return next
}

// setShape switches to a new shape.
func (s *sender) setShape(sh *shape) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shape = *sh
}

// shutdown releases every buffer the sender holds.
func (s *sender) shutdown(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retired = true
	s.enc.release(c.pool)
}

// stamp is the wire timestamp: microseconds on the Conn's clock, wrapping.
func stamp(t time.Duration) uint32 { return uint32(t / time.Microsecond) }
