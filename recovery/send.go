package recovery

import (
	"net"
	"sync"
	"time"

	"github.com/quictun/quictun/codecs/fecframe"
)

// zeroShard stands in for the data shards n..k-1 of a group closed early: the
// coder sees k shards, the wire carries n. Read-only.
var zeroShard [fecframe.MaxShardLen]byte

// sendGroup is a coding group being filled or waiting in the resend history.
type sendGroup struct {
	id       uint32
	k        int           // coding size
	n        int           // data shards so far
	slot     int           // interleave slot while open
	opened   time.Duration // when its first datagram went out
	shardLen int           // longest shard: 2 + longest payload
	data     [fecframe.MaxShards]*buffer
}

// shape is how the sender codes new groups.
type shape struct {
	k     int
	depth int                           // groups filled at once
	mFor  [fecframe.MaxShards + 1]uint8 // parity for a group closed with n data shards
	span  time.Duration
}

// sender is the sending half of a peer: it frames quic-go's datagrams, assigns them
// to coding groups round-robin over `depth` open groups, and sends a group's parity
// right after its last datagram, or when the group has been open for `span`.
// All of it runs in the caller's goroutine (quic-go's send loop, or the flusher
// for span deadlines) under mu; the lock is also held across the socket writes so
// that a group's buffers are never released while the kernel reads them.
type sender struct {
	mu        sync.Mutex
	seq       uint32
	nextGroup uint32
	shape     shape
	open      [maxInterleave]*sendGroup
	next      int // interleave slot of the next datagram
	free      []*sendGroup
	// history keeps recently closed groups for NACK resends (Config.Resend).
	history   [historyLen]*sendGroup
	scratch   [fecframe.MaxShards][]byte
	parityBuf [fecframe.MaxShards]*buffer
	// resend budget: tokens earned per data datagram sent.
	resendTokens float64
	retired      bool // the peer is gone; send plain
}

// historyLen is how many closed groups a sender keeps for resends: about a
// quarter of a second of traffic at 100 Mbit/s with full groups.
const historyLen = 32

func (s *sender) getGroup() *sendGroup {
	if n := len(s.free); n > 0 {
		g := s.free[n-1]
		s.free = s.free[:n-1]
		return g
	}
	return new(sendGroup)
}

// releaseGroup returns a group's buffers to the pool and the group to the free list.
func (s *sender) releaseGroup(c *Conn, g *sendGroup) {
	for i := range g.n {
		c.pool.put(g.data[i])
		g.data[i] = nil
	}
	g.n = 0
	s.free = append(s.free, g)
}

// send frames p into the current group and writes it. It reports false when p
// cannot be framed (too large, or no buffer to keep it in) and the caller must
// send it plain.
func (s *sender) send(c *Conn, p *peer, b []byte, addr net.Addr) (bool, error) {
	if len(b) > fecframe.MaxPayload {
		return false, nil
	}
	buf := c.pool.get()
	if buf == nil {
		return false, nil
	}
	now := c.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retired {
		c.pool.put(buf)
		return false, nil
	}
	slot := s.next
	s.next++
	if s.next >= s.shape.depth {
		s.next = 0
	}
	g := s.open[slot]
	if g == nil {
		g = s.getGroup()
		g.id = s.nextGroup & (1<<24 - 1)
		s.nextGroup++
		g.k = s.shape.k
		g.n = 0
		g.slot = slot
		g.opened = now
		g.shardLen = 0
		s.open[slot] = g
		c.flusher.wake(now + s.shape.span)
	}
	idx := g.n
	copy(buf.b[fecframe.DataHeaderLen:], b)
	fecframe.PutData(buf.b[:], fecframe.Data{Seq: s.seq, Group: g.id, Index: uint8(idx), Timestamp: stamp(now)}, len(b))
	s.seq++
	buf.n = fecframe.DataHeaderLen + len(b)
	g.data[idx] = buf
	g.n++
	g.shardLen = max(g.shardLen, 2+len(b))
	s.resendTokens = min(s.resendTokens+c.cfg.ResendBudget, 64)
	_, err := c.inner.WriteTo(buf.b[:buf.n], addr)
	c.stats.dataSent.Add(1)
	if g.n == g.k {
		s.close(c, p, g, addr, now)
	}
	return true, err
}

// flushDue closes the groups that have been open for their span.
func (s *sender) flushDue(c *Conn, p *peer, now time.Duration) (next time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, g := range s.open[:maxInterleave] {
		if g == nil {
			continue
		}
		if deadline := g.opened + s.shape.span; deadline <= now {
			s.close(c, p, g, p.addr, now)
		} else if next == 0 || deadline < next {
			next = deadline
		}
	}
	return next
}

// close codes a group, sends its parity and retires it.
func (s *sender) close(c *Conn, p *peer, g *sendGroup, addr net.Addr, now time.Duration) {
	s.open[g.slot] = nil
	m := int(s.shape.mFor[g.n])
	if g.k+m > fecframe.MaxShards { // the shape changed while the group was open
		m = fecframe.MaxShards - g.k
	}
	if m > 0 {
		s.sendParity(c, g, m, addr, now)
	}
	if !c.cfg.Resend {
		s.releaseGroup(c, g)
		return
	}
	slot := g.id % historyLen
	if old := s.history[slot]; old != nil {
		s.releaseGroup(c, old)
	}
	s.history[slot] = g
}

func (s *sender) sendParity(c *Conn, g *sendGroup, m int, addr net.Addr, now time.Duration) {
	L := g.shardLen
	shards := s.scratch[:g.k+m]
	for i := range g.n {
		d := g.data[i]
		end := fecframe.DataShardOffset + L
		clear(d.b[d.n:end]) // the shard is zero-padded to the group's shard length
		shards[i] = d.b[fecframe.DataShardOffset:end]
	}
	for i := g.n; i < g.k; i++ {
		shards[i] = zeroShard[:L]
	}
	for j := range m {
		pb := c.pool.get()
		if pb == nil { // out of buffers: this group goes unprotected
			for _, b := range s.parityBuf[:j] {
				c.pool.put(b)
			}
			return
		}
		s.parityBuf[j] = pb
		shards[g.k+j] = pb.b[fecframe.ParityHeaderLen : fecframe.ParityHeaderLen+L]
	}
	enc, err := c.codecs.get(g.k, m)
	if err == nil {
		err = enc.Encode(shards)
	}
	ts := stamp(now)
	for j, pb := range s.parityBuf[:m] {
		if err == nil {
			fecframe.PutParity(pb.b[:], fecframe.Parity{
				Seq: s.seq, Group: g.id, Index: uint8(j), Timestamp: ts,
				K: uint8(g.k), N: uint8(g.n), M: uint8(m),
			})
			s.seq++
			c.inner.WriteTo(pb.b[:fecframe.ParityHeaderLen+L], addr) //nolint:errcheck // parity is best effort; quic-go sees errors on its own datagrams
			c.stats.paritySent.Add(1)
		}
		c.pool.put(pb)
		s.parityBuf[j] = nil
	}
}

// resend answers a NACK from the history, within the resend budget.
func (s *sender) resend(c *Conn, addr net.Addr, n fecframe.NACK, now time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.history[n.Group%historyLen]
	if g == nil || g.id != n.Group || int(n.Index) >= g.n || s.resendTokens < 1 {
		return
	}
	s.resendTokens--
	d := g.data[n.Index]
	// Resent under a new sequence number so the receiver's loss count stays honest.
	fecframe.PutData(d.b[:], fecframe.Data{Seq: s.seq, Group: g.id, Index: n.Index, Timestamp: stamp(now)}, d.n-fecframe.DataHeaderLen)
	s.seq++
	c.inner.WriteTo(d.b[:d.n], addr) //nolint:errcheck // best effort, like the original
	c.stats.resent.Add(1)
}

// setShape switches to a new shape. Open groups keep their k; if the interleave
// depth shrinks, the groups beyond it are closed now.
func (s *sender) setShape(c *Conn, p *peer, sh *shape, now time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shape = *sh
	for slot := sh.depth; slot < maxInterleave; slot++ {
		if g := s.open[slot]; g != nil {
			s.close(c, p, g, p.addr, now)
		}
	}
	if s.next >= sh.depth {
		s.next = 0
	}
}

// shutdown releases every buffer the sender holds.
func (s *sender) shutdown(c *Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retired = true
	for i, g := range s.open {
		if g != nil {
			s.releaseGroup(c, g)
			s.open[i] = nil
		}
	}
	for i, g := range s.history {
		if g != nil {
			s.releaseGroup(c, g)
			s.history[i] = nil
		}
	}
}

// stamp is the wire timestamp: microseconds on the Conn's clock, wrapping.
func stamp(t time.Duration) uint32 { return uint32(t / time.Microsecond) }
