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

// zeroShard stands in for the data shards n..k-1 of a group closed early: the
// coder sees k shards, the wire carries n. Read-only.
var zeroShard [fecframe.MaxShardLen]byte

// sendGroup is a coding group being filled or waiting in the resend history.
type sendGroup struct {
	id        uint32 // on the wire: 24 bits
	inHistory bool
	k         int           // coding size
	n         int           // data shards so far
	slot      int           // interleave slot while open
	opened    time.Duration // when its first datagram went out
	closed    time.Duration // when its parity went out
	shardLen  int           // longest shard: 2 + longest payload
	data      [fecframe.MaxShards]*buffer
}

// shape is how the sender codes new groups.
type shape struct {
	k     int
	depth int                           // groups filled at once
	mFor  [fecframe.MaxShards + 1]uint8 // parity for a group closed with n data shards
	span  time.Duration
	// every is, for the sliding-window code, how many sources go out per repair.
	every float64
}

// parityPer is the parity sent per n data datagrams: a group's, or the
// sliding-window code's repairs for as many sources.
func (sh *shape) parityPer(n int, groups bool) int {
	if groups {
		return int(sh.mFor[n])
	}
	return int(math.Round(float64(n) / sh.every))
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
	// history keeps recently closed groups for NACK resends (unless Config.NoResend), in
	// the order they closed; it owns their buffers. byID finds them by group id
	// (it may point at a group no longer in history: check inHistory and id).
	history     [historyLen]*sendGroup
	historyHead int // oldest
	historyLen  int
	byID        [historyLen]*sendGroup
	out         outBatch
	scratch     [fecframe.MaxShards][]byte
	parityBuf   [fecframe.MaxShards]*buffer
	// resend budget: tokens earned per data datagram sent.
	resendTokens float64
	retired      bool // the peer is gone; send plain
	dataSent     atomic.Uint64
	rlc          rlcSend
	buffers      *allowance       // the peer's share of the pool
	tag          *fecframe.Tagger // under the key the peer gave us
}

// seal tags a frame for the peer. Callers hold mu.
func (s *sender) seal(b []byte) {
	if s.tag != nil {
		s.tag.Seal(b)
	}
}

// rlcSend is the sender's state for the sliding-window code (the default): the
// latest sources, which repairs combine.
type rlcSend struct {
	ssn    uint32
	ring   [rlcWindowMax]*buffer // by ssn % rlcWindowMax
	sentAt [rlcWindowMax]time.Duration
	have   int     // sources in ring
	credit float64 // repairs earned and not sent
	// The current span: a flow that sends fewer than a group's worth of
	// sources within it gets at its end at least the parity such a group
	// would have, so that a slow flow's losses come back within the span too.
	spanStart   time.Duration
	spanSources int
	spanRepairs int
	shards      [rlcWindowMax][]byte
}

const (
	// rlcWindowMax bounds the sources one repair combines: 33 ms at 100 Mbit/s.
	rlcWindowMax = 256
	// rlcWindowAge: older sources are left out of repairs; the receiver has long
	// solved or given up what they could help with.
	rlcWindowAge = 50 * time.Millisecond
)

// historyLen is how many closed groups a sender can keep for resends: more than a
// second of traffic at 100 Mbit/s with full groups. Groups leave it after
// historyAge; a resend later than that is worth nothing to quic-go.
const historyLen = 256

// historyAge is how long a closed group stays available for resends: a NACK
// comes about one round trip after the group closed.
func historyAge(rtt time.Duration) time.Duration {
	return max(150*time.Millisecond, 2*rtt+50*time.Millisecond)
}

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

// outBatch collects the datagrams one write produces, in order, so they leave in
// as few system calls as possible (see wire). Buffers that must outlive the send
// (parity, groups closed during the write) are released after the flush.
type outBatch struct {
	dgrams  [][]byte
	release []*sendGroup
	bufs    []*buffer
}

// maxOutBatch flushes a batch early: a GSO send takes at most 64 segments.
const maxOutBatch = 128

// flush sends the batch to addr and releases what waited for it. Callers hold mu.
func (s *sender) flush(c *Conn, p *peer, addr net.Addr) error {
	var err error
	if len(s.out.dgrams) > 0 {
		err = c.wire.writeBatch(s.out.dgrams, addr, p.sockaddr(c, addr))
	}
	clear(s.out.dgrams)
	s.out.dgrams = s.out.dgrams[:0]
	for _, g := range s.out.release {
		s.releaseGroup(c, g)
	}
	clear(s.out.release)
	s.out.release = s.out.release[:0]
	for _, b := range s.out.bufs {
		c.pool.put(b)
	}
	clear(s.out.bufs)
	s.out.bufs = s.out.bufs[:0]
	return err
}

// send frames the datagrams in b (segments of seg bytes, the last may be shorter;
// seg 0: one datagram) into the current groups and writes them, with the parity
// of every group they complete. Datagrams that cannot be framed (too large, or no
// buffer to keep them in) go out plain, which the peer reads as QUIC.
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
			s.frame(c, p, d, buf, addr, now)
		}
		if len(s.out.dgrams) >= maxOutBatch {
			err = errors.Join(err, s.flush(c, p, addr))
		}
	}
	return errors.Join(err, s.flush(c, p, addr))
}

// frame puts one datagram into a group and the batch. Callers hold mu.
func (s *sender) frame(c *Conn, p *peer, b []byte, buf *buffer, addr net.Addr, now time.Duration) {
	if !c.cfg.groups {
		s.frameSource(c, b, buf, now)
		return
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
	s.seal(buf.b[:buf.n])
	g.data[idx] = buf
	g.n++
	g.shardLen = max(g.shardLen, 2+len(b))
	s.resendTokens = min(s.resendTokens+c.cfg.ResendBudget, 64)
	s.out.dgrams = append(s.out.dgrams, buf.b[:buf.n])
	c.stats.dataSent.Add(1)
	s.dataSent.Add(1)
	if g.n == g.k {
		s.close(c, p, g, now)
	}
}

// frameSource sends one datagram as a source of the sliding-window code, and a
// repair when one is due. Callers hold mu.
func (s *sender) frameSource(c *Conn, b []byte, buf *buffer, now time.Duration) {
	r := &s.rlc
	i := r.ssn % rlcWindowMax
	c.pool.put(r.ring[i]) // rlcWindowMax sources ago: long out of the batch
	copy(buf.b[fecframe.DataHeaderLen:], b)
	fecframe.PutSource(buf.b[:], fecframe.Source{Seq: s.seq, SSN: r.ssn, Timestamp: stamp(now)}, len(b))
	s.seq++
	buf.n = fecframe.DataHeaderLen + len(b)
	s.seal(buf.b[:buf.n])
	r.ring[i], r.sentAt[i] = buf, now
	r.ssn++
	r.have = min(r.have+1, rlcWindowMax)
	if r.spanSources == 0 {
		r.spanStart = now
		c.flusher.wake(now + s.shape.span)
	}
	r.spanSources++
	s.out.dgrams = append(s.out.dgrams, buf.b[:buf.n])
	c.stats.dataSent.Add(1)
	s.dataSent.Add(1)
	r.credit += 1 / max(s.shape.every, 1)
	if r.credit >= 1 {
		r.credit--
		s.repair(c, now)
	}
	if r.spanSources >= s.shape.k {
		r.spanSources, r.spanRepairs = 0, 0 // fast enough for the rate alone
	}
}

// closeSpan ends the current span, topping its repairs up to what a group of
// its sources would have had, unless the window already holds a group's worth
// of sources (a fast flow, whose rate alone suffices). Callers hold mu.
func (s *sender) closeSpan(c *Conn, now time.Duration) {
	r := &s.rlc
	if s.windowLen(now) < s.shape.k {
		for range int(s.shape.mFor[min(r.spanSources, s.shape.k)]) - r.spanRepairs {
			s.repair(c, now)
		}
	}
	r.spanSources, r.spanRepairs = 0, 0
}

// releaseWindow gives back the sources the sliding-window code keeps. Callers
// hold mu.
func (s *sender) releaseWindow(c *Conn) {
	for i, b := range s.rlc.ring {
		c.pool.put(b)
		s.rlc.ring[i] = nil
	}
	s.rlc.have = 0
}

// windowLen is how many of the latest sources a repair sent now combines: at
// most rlcWindowMax, none older than rlcWindowAge. Callers hold mu.
func (s *sender) windowLen(now time.Duration) int {
	r := &s.rlc
	n := 0
	for n < r.have && now-r.sentAt[(r.ssn-1-uint32(n))%rlcWindowMax] <= rlcWindowAge {
		n++
	}
	return n
}

// repair adds to the batch a repair over the latest sources: at most
// rlcWindowMax, none older than rlcWindowAge. Callers hold mu.
func (s *sender) repair(c *Conn, now time.Duration) {
	r := &s.rlc
	count := s.windowLen(now)
	if count == 0 {
		return
	}
	first := r.ssn - uint32(count)
	shards := r.shards[:count]
	L := 0
	for k := range shards {
		b := r.ring[(first+uint32(k))%rlcWindowMax]
		shards[k] = b.b[fecframe.DataShardOffset:b.n]
		L = max(L, b.n-fecframe.DataShardOffset)
	}
	pb := s.buffers.get(c.pool)
	if pb == nil {
		return // out of buffers: these sources go unprotected
	}
	rlcEncode(pb.b[fecframe.RepairHeaderLen:fecframe.RepairHeaderLen+L], s.seq, first, shards)
	clear(shards)
	fecframe.PutRepair(pb.b[:], fecframe.Repair{Seq: s.seq, Timestamp: stamp(now), First: first, Count: uint16(count)})
	s.seal(pb.b[:fecframe.RepairHeaderLen+L])
	s.seq++
	s.out.dgrams = append(s.out.dgrams, pb.b[:fecframe.RepairHeaderLen+L])
	s.out.bufs = append(s.out.bufs, pb)
	c.stats.paritySent.Add(1)
	r.spanRepairs++
}

// flushDue closes the groups that have been open for their span, and the
// sliding-window code's span.
func (s *sender) flushDue(c *Conn, p *peer, now time.Duration) (next time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r := &s.rlc; r.spanSources > 0 {
		if due := r.spanStart + s.shape.span; due <= now {
			s.closeSpan(c, now)
		} else {
			next = due
		}
	}
	if r := &s.rlc; r.have > 0 {
		// Sources older than the window are in no repair again: a paused flow
		// gives its buffers back (a server may have many such peers).
		if due := r.sentAt[(r.ssn-1)%rlcWindowMax] + rlcWindowAge; due <= now {
			s.releaseWindow(c)
		} else if next == 0 || due < next {
			next = due
		}
	}
	for _, g := range s.open[:maxInterleave] {
		if g == nil {
			continue
		}
		if deadline := g.opened + s.shape.span; deadline <= now {
			s.close(c, p, g, now)
		} else if next == 0 || deadline < next {
			next = deadline
		}
	}
	s.flush(c, p, p.addr) //nolint:errcheck // parity is best effort
	return next
}

// close codes a group, adds its parity to the batch and retires it (into the
// resend history, or to be released after the flush). Callers hold mu.
func (s *sender) close(c *Conn, p *peer, g *sendGroup, now time.Duration) {
	s.open[g.slot] = nil
	m := int(s.shape.mFor[g.n])
	if g.k+m > fecframe.MaxShards { // the shape changed while the group was open
		m = fecframe.MaxShards - g.k
	}
	if m > 0 {
		s.addParity(c, g, m, now)
	}
	if !c.cfg.resend() {
		s.out.release = append(s.out.release, g)
		return
	}
	g.closed = now
	s.expireHistory(c, p, now)
	if s.historyLen == historyLen {
		s.dropOldest(c)
	}
	s.history[(s.historyHead+s.historyLen)%historyLen] = g
	s.historyLen++
	g.inHistory = true
	s.byID[g.id%historyLen] = g
}

func (s *sender) addParity(c *Conn, g *sendGroup, m int, now time.Duration) {
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
		pb := s.buffers.get(c.pool)
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
		s.out.bufs = append(s.out.bufs, pb)
		s.parityBuf[j] = nil
		if err != nil {
			continue
		}
		fecframe.PutParity(pb.b[:], fecframe.Parity{
			Seq: s.seq, Group: g.id, Index: uint8(j), Timestamp: ts,
			K: uint8(g.k), N: uint8(g.n), M: uint8(m), Depth: uint8(s.shape.depth),
		})
		s.seal(pb.b[:fecframe.ParityHeaderLen+L])
		s.seq++
		s.out.dgrams = append(s.out.dgrams, pb.b[:fecframe.ParityHeaderLen+L])
		c.stats.paritySent.Add(1)
	}
}

// expireHistory releases the groups that are too old to resend from.
func (s *sender) expireHistory(c *Conn, p *peer, now time.Duration) {
	age := historyAge(p.rttOr(0))
	for s.historyLen > 0 && now-s.history[s.historyHead].closed >= age {
		s.dropOldest(c)
	}
}

func (s *sender) dropOldest(c *Conn) {
	g := s.history[s.historyHead]
	s.history[s.historyHead] = nil
	s.historyHead = (s.historyHead + 1) % historyLen
	s.historyLen--
	g.inHistory = false
	if s.byID[g.id%historyLen] == g {
		s.byID[g.id%historyLen] = nil
	}
	s.releaseGroup(c, g)
}

// resend answers NACKs from the history, within the resend budget.
func (s *sender) resend(c *Conn, p *peer, f *fecframe.Frame, now time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range f.NACKCount() {
		n := f.NACK(i)
		g := s.byID[n.Group%historyLen]
		if g == nil || !g.inHistory || g.id != n.Group || int(n.Index) >= g.n || s.resendTokens < 1 {
			continue
		}
		s.resendTokens--
		d := g.data[n.Index]
		// Resent under a new sequence number so the receiver's loss count stays honest.
		fecframe.PutData(d.b[:], fecframe.Data{Seq: s.seq, Group: g.id, Index: n.Index, Timestamp: stamp(now)}, d.n-fecframe.DataHeaderLen)
		s.seal(d.b[:d.n])
		s.seq++
		s.out.dgrams = append(s.out.dgrams, d.b[:d.n])
		c.stats.resent.Add(1)
	}
	s.flush(c, p, p.addr) //nolint:errcheck // best effort, like the originals
}

// setShape switches to a new shape. Open groups keep their k; if the interleave
// depth shrinks, the groups beyond it are closed now.
func (s *sender) setShape(c *Conn, p *peer, sh *shape, now time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shape = *sh
	for slot := sh.depth; slot < maxInterleave; slot++ {
		if g := s.open[slot]; g != nil {
			s.close(c, p, g, now)
		}
	}
	if s.next >= sh.depth {
		s.next = 0
	}
	s.flush(c, p, p.addr) //nolint:errcheck // parity is best effort
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
	for s.historyLen > 0 {
		s.dropOldest(c)
	}
	s.releaseWindow(c)
}

// stamp is the wire timestamp: microseconds on the Conn's clock, wrapping.
func stamp(t time.Duration) uint32 { return uint32(t / time.Microsecond) }
