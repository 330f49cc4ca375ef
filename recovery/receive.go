package recovery

import (
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/quictun/quictun/codecs/fecframe"
)

// recvRing is how many coding groups a receiver tracks at once, indexed by group
// id: at 100 Mbit/s about three quarters of a second, enough to wait for a resend
// on a long path.
const recvRing = 128

// groupTimeout is how long an incomplete group waits for the shards it needs. A
// group's parity leaves the sender at most one GroupSpan after its first datagram
// and the path is FIFO, so anything later than this is not coming, and a repair
// this late would be worth nothing to quic-go anyway.
const groupTimeout = 150 * time.Millisecond

// groupTimeout is how long an incomplete group is kept: with resends, long
// enough for a NACK's answer.
func (r *receiver) groupTimeout(c *Conn, p *peer) time.Duration {
	if c.cfg.resend() {
		return max(groupTimeout, 2*p.rttOr(100*time.Millisecond)+50*time.Millisecond)
	}
	return groupTimeout
}

// recvGroup holds the shards of one group until it can be rebuilt or is given up.
type recvGroup struct {
	k, n, m   int // 0 until a parity shard states the group's shape
	shardLen  int
	first     time.Duration
	dataHave  int
	parHave   int
	delivered [4]uint64 // data indexes handed to quic-go
	data      [fecframe.MaxShards]*buffer
	parity    [fecframe.MaxShards]*buffer
}

var recvGroupPool = sync.Pool{New: func() any { return new(recvGroup) }}

func (g *recvGroup) isDelivered(i uint8) bool { return g.delivered[i>>6]&(1<<(i&63)) != 0 }
func (g *recvGroup) setDelivered(i uint8)     { g.delivered[i>>6] |= 1 << (i & 63) }

// release returns every buffer the group holds.
func (g *recvGroup) release(c *Conn) {
	for i, b := range g.data {
		if b != nil {
			c.pool.put(b)
			g.data[i] = nil
		}
	}
	for i, b := range g.parity {
		if b != nil {
			c.pool.put(b)
			g.parity[i] = nil
		}
	}
}

// ringEntry is one slot of the group ring. A finished group keeps only its id and
// done flag, so late duplicates are recognised without holding the large recvGroup.
type ringEntry struct {
	id     uint32
	used   bool
	done   bool
	nacked bool // a resend was asked for
	g      *recvGroup
}

// delivery is a rebuilt datagram waiting for quic-go's next ReadFrom.
type delivery struct {
	buf  *buffer
	addr net.Addr
}

// receiver is the receiving half of a peer: it hands every data datagram to quic-go
// at once, keeps a copy per group, rebuilds missing ones as soon as enough shards
// are in, and measures loss and queueing delay for Feedback and for telling random
// loss from congestion. It runs in the ReadFrom goroutine; the flusher takes mu
// to send Feedback and expire groups.
type receiver struct {
	mu      sync.Mutex
	ring    [recvRing]ringEntry
	newest  uint32
	started bool
	seqs    seqTracker
	path    pathMonitor

	// Cumulative counters reported in Feedback (they wrap on the wire).
	received, sampled, lost, bursts, congestionLost, unrepaired uint32

	echoTs       uint32
	echoAt       time.Duration
	feedbackDue  bool
	lastFeedback time.Duration

	// Congestion signalling: a loss seen while the path queue sits at its ceiling
	// is congestion; one rebuilt datagram per round trip is then withheld so that
	// quic-go's congestion controller sees it and backs off.
	withholdPending bool
	withholdSince   time.Duration // when the congestion was seen
	lastWithheld    time.Duration
	lastCongestion  time.Duration // the latest loss classified as congestion

	retired bool // the peer is gone: keep nothing

	train trainer
	ramp  rampGuard

	// rlc decodes the sliding-window code, for a peer that sends it (created
	// on its first source or repair); rlcGaveUp is its give-ups already counted.
	rlc       *rlcDecoder
	rlcGaveUp int
	rlcQuiet  bool // its sources were given back for a quiet peer

	buffers     *allowance       // the peer's share of the pool
	feedbackTag *fecframe.Tagger // our key for the peer: Feedback is about its frames

	nacks   []fecframe.NACK
	scratch [fecframe.MaxShards][]byte
	rebuilt [fecframe.MaxShards]*buffer
	fbBuf   [fecframe.FeedbackBaseLen + 4*fecframe.MaxNACKs]byte
}

// restartGroups: a group number this far from the newest one (in either
// direction) means the sender started over; 100 Mbit/s needs half a minute to
// move that far.
const restartGroups = 1 << 12

// serialDiff24 is a-b in 24-bit serial arithmetic, sign-extended.
func serialDiff24(a, b uint32) int32 { return int32((a-b)<<8) >> 8 }

// group returns the group for id, creating it, or nil if id is too old to keep.
func (r *receiver) group(c *Conn, id uint32, now time.Duration) (*ringEntry, *recvGroup) {
	if !r.started {
		r.started = true
		r.newest = id
	}
	d := serialDiff24(id, r.newest)
	if d > restartGroups || d < -restartGroups {
		// Far beyond any reordering: the sender started over (see newPeer).
		for i := range r.ring {
			if r.ring[i].used {
				r.retire(c, &r.ring[i])
			}
		}
		r.newest, d = id, 0
	}
	if d < -recvRing+1 {
		return nil, nil
	}
	if d > 0 {
		r.newest = id
	}
	e := &r.ring[id%recvRing]
	if e.used && e.id == id {
		return e, e.g
	}
	if e.used {
		if serialDiff24(e.id, id) > 0 { // the slot holds a newer group
			return nil, nil
		}
		r.retire(c, e)
	}
	g := recvGroupPool.Get().(*recvGroup)
	*g = recvGroup{first: now}
	*e = ringEntry{id: id, used: true, g: g}
	return e, g
}

// retire ends a group: it counts what could not be rebuilt and frees the slot.
func (r *receiver) retire(c *Conn, e *ringEntry) {
	if g := e.g; g != nil {
		if !e.done {
			missing := 0
			if g.k > 0 {
				missing = g.n - g.dataHave
			}
			r.countUnrepaired(c, missing)
		}
		g.release(c)
		recvGroupPool.Put(g)
	}
	*e = ringEntry{}
}

// finish marks a group done and frees its buffers, keeping the slot's id.
func (r *receiver) finish(c *Conn, e *ringEntry) {
	e.g.release(c)
	recvGroupPool.Put(e.g)
	e.g = nil
	e.done = true
}

// account does the per-datagram bookkeeping common to data and parity.
func (r *receiver) account(c *Conn, p *peer, seq, ts uint32, now time.Duration) {
	r.received++
	r.echoTs, r.echoAt = ts, now
	if !r.feedbackDue {
		r.feedbackDue = true
		c.flusher.wake(max(now, r.lastFeedback+feedbackInterval))
	}
	minRTT := time.Duration(p.minRTT.Load())
	state := r.path.sample(ts, now, minRTT)
	gap := r.seqs.arrive(seq)
	if gap >= blindRun && blindPath(minRTT) {
		state = queueFull // a shallow queue overflowing, not random loss
	}
	if state == queueClear {
		r.sampled++
	}
	switch {
	case gap > 0 && state == queueClear:
		r.lost += uint32(gap)
		r.bursts++
		c.stats.lost.Add(uint64(gap))
	case gap > 0 && state == queueFull:
		r.lastCongestion = now
		r.congestionLost += uint32(gap)
		c.stats.congestionLost.Add(uint64(gap))
		if !r.withholdPending && now-r.lastWithheld > p.rttOr(100*time.Millisecond) {
			r.withholdPending, r.withholdSince = true, now
		}
	case gap > 0:
		c.stats.ambiguousLost.Add(uint64(gap))
	case gap < 0 && state == queueClear: // a datagram counted lost turned up late
		if r.lost > 0 {
			r.lost--
		}
	}
}

// onData takes a data datagram whose payload the caller has already copied out.
// It reports whether to hand it to quic-go, whether it kept buf, and for how
// long to hold the datagram back before quic-go gets it (see trainer).
func (r *receiver) onData(c *Conn, p *peer, f *fecframe.Frame, buf *buffer, now time.Duration) (deliver, kept bool, hold time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retired {
		return true, false, 0
	}
	r.account(c, p, f.Seq, f.Timestamp, now)
	e, g := r.group(c, f.Group, now)
	if e == nil {
		return true, false, 0 // too old to code; quic-go may still use it
	}
	if e.done || g.isDelivered(f.Index) || (g.k > 0 && int(f.Index) >= g.n) {
		return false, false, 0 // duplicate, or a shard already rebuilt or withheld
	}
	g.setDelivered(f.Index)
	g.data[f.Index] = buf
	g.dataHave++
	r.tryRebuild(c, p, e, now)
	deliver, hold = r.release(c, p, f.Payload, now)
	return deliver, true, hold
}

// release decides, for a data datagram just taken in (and kept for decoding),
// whether quic-go gets it and how late: the slow-start guard may drop it (see
// rampGuard), the trainer hold it back (see trainer).
func (r *receiver) release(c *Conn, p *peer, quic []byte, now time.Duration) (deliver bool, hold time.Duration) {
	if !c.cfg.noRamp && r.ramp.drop(quic, r.path.queue(), now, time.Duration(p.minRTT.Load())) {
		c.stats.withheld.Add(1)
		return false, 0
	}
	if c.cfg.noTrain {
		return true, 0
	}
	return true, r.train.hold(quic, now, p.rttOr(0))
}

// onSource takes a source datagram of the sliding-window code, as onData a data
// datagram.
func (r *receiver) onSource(c *Conn, p *peer, f *fecframe.Frame, buf *buffer, now time.Duration) (deliver, kept bool, hold time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retired {
		return true, false, 0
	}
	r.account(c, p, f.Seq, f.Timestamp, now)
	r.rlcQuiet = false
	kept, dup := r.decoder(c).source(f.SSN, buf, fecframe.DataShardOffset, 2+len(f.Payload), now)
	r.deliverSolved(c, p, now)
	if dup {
		return false, false, 0 // received or rebuilt before
	}
	deliver, hold = r.release(c, p, f.Payload, now)
	return deliver, kept, hold
}

// decoder is the peer's sliding-window decoder, made on first use.
func (r *receiver) decoder(c *Conn) *rlcDecoder {
	if r.rlc == nil {
		r.rlc = newRLCDecoder(c.pool)
	}
	return r.rlc
}

// onRepair takes a repair datagram of the sliding-window code and reports
// whether it kept buf.
func (r *receiver) onRepair(c *Conn, p *peer, f *fecframe.Frame, buf *buffer, now time.Duration) (kept bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retired {
		return false
	}
	r.account(c, p, f.Seq, f.Timestamp, now)
	kept = r.decoder(c).repair(f.Seq, f.First, int(f.Count), buf, fecframe.RepairHeaderLen, len(f.Payload), now)
	r.deliverSolved(c, p, now)
	return kept
}

// countUnrepaired counts n data datagrams that will reach quic-go neither
// received nor rebuilt.
func (r *receiver) countUnrepaired(c *Conn, n int) {
	if n <= 0 {
		return
	}
	r.unrepaired += uint32(n)
	c.stats.unrepaired.Add(uint64(n))
	// quic-go sees this loss on its own; no need to withhold another.
	r.withholdPending = false
	r.ramp.lossShown()
}

// withhold reports whether to keep the datagram just rebuilt from quic-go, to
// show it a congestion loss (see account).
func (r *receiver) withhold(c *Conn, p *peer, now time.Duration) bool {
	if r.withholdPending && now-r.withholdSince > p.rttOr(100*time.Millisecond) {
		r.withholdPending = false // the moment has passed: the queue has moved on
	}
	if !r.withholdPending {
		return false
	}
	r.withholdPending = false
	r.lastWithheld = now
	r.ramp.lossShown()
	c.stats.withheld.Add(1)
	return true
}

// deliverSolved hands what the sliding-window decoder rebuilt to quic-go (or
// withholds one for congestion, as tryRebuild), and counts what it gave up.
func (r *receiver) deliverSolved(c *Conn, p *peer, now time.Duration) {
	r.countUnrepaired(c, r.rlc.gaveUp-r.rlcGaveUp)
	r.rlcGaveUp = r.rlc.gaveUp
	for _, s := range r.rlc.take() {
		if len(s.shard) < 2 {
			continue
		}
		plen := int(binary.BigEndian.Uint16(s.shard))
		if 2+plen > len(s.shard) {
			continue // garbage from inconsistent repairs; quic-go would drop it anyway
		}
		if r.withhold(c, p, now) {
			continue
		}
		nb := c.pool.get()
		if nb == nil {
			continue
		}
		nb.n = fecframe.DataHeaderLen + copy(nb.b[fecframe.DataHeaderLen:], s.shard[2:2+plen])
		c.pending = append(c.pending, delivery{buf: nb, addr: p.addr})
		c.stats.noteRepaired(now - s.since)
	}
}

// onParity takes a parity datagram and reports whether it kept buf.
func (r *receiver) onParity(c *Conn, p *peer, f *fecframe.Frame, buf *buffer, now time.Duration) (kept bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retired {
		return false
	}
	r.account(c, p, f.Seq, f.Timestamp, now)
	e, g := r.group(c, f.Group, now)
	if e == nil || e.done {
		return false
	}
	L := len(f.Payload)
	if g.k == 0 {
		g.k, g.n, g.m, g.shardLen = int(f.K), int(f.N), int(f.M), L
	} else if g.k != int(f.K) || g.n != int(f.N) || g.m != int(f.M) || g.shardLen != L {
		return false // disagrees with the group's first parity: not ours to trust
	}
	if g.parity[f.Index] != nil {
		return false
	}
	g.parity[f.Index] = buf
	g.parHave++
	r.tryRebuild(c, p, e, now)
	if c.cfg.resend() {
		r.maybeNACK(c, p, f.Group, int(f.Depth), f.Index == f.M-1, now)
	}
	return true
}

// nackScan is how many groups behind the finished ones maybeNACK looks at.
const nackScan = 16

// maybeNACK asks for resends of the groups that can no longer be rebuilt from
// parity: the parity of group `newest` has arrived, so every group at least
// `depth` older has had all its datagrams sent, and on a FIFO path whatever of
// them has not arrived is lost. When the shard that arrived is the group's last
// parity (lastParity), the group itself is complete too and is asked for at once:
// a resend must beat quic-go's acknowledgement of the ACK that reported the loss
// (about a round trip after it), or quic-go drops it as a duplicate and its window
// cut sticks, so the span of one more group is the difference between a repair
// and none. It asks for just enough data shards to rebuild each group (the
// lowest missing indexes), once per group.
func (r *receiver) maybeNACK(c *Conn, p *peer, newest uint32, depth int, lastParity bool, now time.Duration) {
	if r.lastCongestion > 0 && now-r.lastCongestion < 2*p.rttOr(100*time.Millisecond) {
		// Losses now are (at least partly) congestion: a resend would let quic-go
		// undo the window cut they should cause.
		return
	}
	nacks := r.nacks[:0]
	if lastParity {
		nacks = r.nackGroup(newest, nacks)
	}
	for i := range nackScan {
		nacks = r.nackGroup((newest-uint32(depth)-uint32(i))&(1<<24-1), nacks)
	}
	if len(nacks) > 0 {
		r.sendFeedbackNACKs(c, p, now, nacks)
		c.stats.nacked.Add(uint64(len(nacks)))
	}
	r.nacks = nacks[:0]
}

// nackGroup appends to nacks the data shards group id still needs, once per group.
func (r *receiver) nackGroup(id uint32, nacks []fecframe.NACK) []fecframe.NACK {
	e := &r.ring[id%recvRing]
	if !e.used || e.id != id || e.done || e.nacked || e.g.k == 0 {
		return nacks
	}
	g := e.g
	need := g.n - g.dataHave - g.parHave
	if need <= 0 {
		return nacks
	}
	e.nacked = true
	for idx := 0; idx < g.n && need > 0 && len(nacks) < fecframe.MaxNACKs; idx++ {
		if g.data[idx] == nil {
			nacks = append(nacks, fecframe.NACK{Group: id, Index: uint8(idx)})
			need--
		}
	}
	return nacks
}

// tryRebuild completes a group when all its data is in, or rebuilds the missing
// data once it holds as many shards as the group has data shards.
func (r *receiver) tryRebuild(c *Conn, p *peer, e *ringEntry, now time.Duration) {
	g := e.g
	if g.k == 0 {
		return
	}
	if g.dataHave >= g.n {
		r.finish(c, e)
		return
	}
	if g.dataHave+g.parHave < g.n {
		return
	}
	L := g.shardLen
	shards := r.scratch[:g.k+g.m]
	missing := r.rebuilt[:0]
	ok := true
	for i := range g.n {
		if d := g.data[i]; d != nil {
			end := fecframe.DataShardOffset + L
			if d.n > end { // longer than the group's shards: inconsistent
				ok = false
				break
			}
			clear(d.b[d.n:end])
			shards[i] = d.b[fecframe.DataShardOffset:end]
			continue
		}
		nb := c.pool.get()
		if nb == nil {
			ok = false
			break
		}
		missing = append(missing, nb)
		shards[i] = nb.b[fecframe.DataShardOffset:fecframe.DataShardOffset]
	}
	if ok {
		for i := g.n; i < g.k; i++ {
			shards[i] = zeroShard[:L]
		}
		for j := range g.m {
			if pb := g.parity[j]; pb != nil {
				shards[g.k+j] = pb.b[fecframe.ParityHeaderLen : fecframe.ParityHeaderLen+L]
			} else {
				shards[g.k+j] = nil
			}
		}
		ok = c.codecs.reconstructData(g.k, g.m, shards) == nil
	}
	if !ok {
		for _, nb := range missing {
			c.pool.put(nb)
		}
		r.retire(c, e)
		return
	}
	mi := 0
	for i := range g.n {
		if g.data[i] != nil {
			continue
		}
		nb := missing[mi]
		mi++
		out := shards[i]
		if len(out) > 0 && &out[0] != &nb.b[fecframe.DataShardOffset] {
			copy(nb.b[fecframe.DataShardOffset:], out) // the coder allocated instead of using our buffer
		}
		plen := int(binary.BigEndian.Uint16(nb.b[fecframe.DataShardOffset:]))
		g.setDelivered(uint8(i))
		if 2+plen > L {
			c.pool.put(nb) // garbage from inconsistent shards; quic-go would drop it anyway
			continue
		}
		if r.withhold(c, p, now) {
			c.pool.put(nb)
			continue
		}
		nb.n = fecframe.DataHeaderLen + plen
		c.pending = append(c.pending, delivery{buf: nb, addr: p.addr})
		c.stats.noteRepaired(now - g.first)
	}
	r.finish(c, e)
}

// service sends Feedback when due and gives up on groups that timed out. It
// returns when it next needs to run, 0 for "nothing pending".
func (r *receiver) service(c *Conn, p *peer, now time.Duration) (next time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range r.ring {
		e := &r.ring[i]
		if !e.used || e.done {
			continue
		}
		if deadline := e.g.first + r.groupTimeout(c, p); deadline <= now {
			r.retire(c, e)
		} else if next == 0 || deadline < next {
			next = deadline
		}
	}
	if r.rlc != nil {
		timeout := r.groupTimeout(c, p)
		if oldest := r.rlc.giveUpBefore(now - timeout); oldest > 0 && (next == 0 || oldest+timeout < next) {
			next = oldest + timeout
		}
		r.deliverSolved(c, p, now) // counts what was given up
		// A peer quiet for that long sends no repair of what it sent before.
		if quiet := r.echoAt + timeout; quiet <= now {
			if !r.rlcQuiet {
				r.rlc.releaseSources()
				r.rlcQuiet = true
			}
		} else if next == 0 || quiet < next {
			next = quiet
		}
	}
	if r.feedbackDue {
		due := r.lastFeedback + feedbackInterval
		if due <= now {
			r.sendFeedback(c, p, now)
		} else if next == 0 || due < next {
			next = due
		}
	}
	return next
}

// feedbackInterval paces Feedback: often enough that the sender's estimate and
// round-trip time follow the path, rare enough to cost nothing (40 small
// datagrams a second).
const feedbackInterval = 25 * time.Millisecond

func (r *receiver) sendFeedback(c *Conn, p *peer, now time.Duration) {
	r.sendFeedbackNACKs(c, p, now, nil)
}

func (r *receiver) sendFeedbackNACKs(c *Conn, p *peer, now time.Duration, nacks []fecframe.NACK) {
	fb := fecframe.Feedback{
		NACKs:          nacks,
		EchoTimestamp:  r.echoTs,
		EchoDelay:      stamp(now - r.echoAt),
		Received:       r.received,
		Sampled:        r.sampled,
		Lost:           r.lost,
		Bursts:         r.bursts,
		CongestionLost: r.congestionLost,
		Unrepaired:     r.unrepaired,
	}
	if r.train.trained(now) {
		fb.Flags |= fecframe.FeedbackTrained
	}
	b, err := fecframe.AppendFeedback(r.fbBuf[:0], fb)
	if err != nil {
		return
	}
	r.feedbackTag.Seal(b)
	c.inner.WriteTo(b, p.addr) //nolint:errcheck // the next one carries the same cumulative counts
	c.stats.feedbackSent.Add(1)
	r.feedbackDue = false
	r.lastFeedback = now
}

// shutdown frees every group.
func (r *receiver) shutdown(c *Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retired = true
	if r.rlc != nil {
		r.rlc.reset()
	}
	for i := range r.ring {
		if e := &r.ring[i]; e.used {
			if e.g != nil {
				e.g.release(c)
				recvGroupPool.Put(e.g)
			}
			*e = ringEntry{}
		}
	}
}

// seqTracker finds gaps in the datagram sequence numbers of one direction.
type seqTracker struct {
	started bool
	highest uint32
	seen    [seqWindow / 64]uint64 // arrivals of the last seqWindow sequence numbers
}

const seqWindow = 1024

// arrive records seq. It returns how many sequence numbers it skipped (counted as
// lost now), -1 when seq had been counted lost and turns up late, or 0.
func (t *seqTracker) arrive(seq uint32) int {
	if !t.started {
		t.started = true
		t.highest = seq
		t.mark(seq)
		return 0
	}
	d := int32(seq - t.highest)
	switch {
	case d > 0:
		// Clear the bits of the skipped numbers, then mark seq.
		for s, i := t.highest+1, int32(0); i < d && i < seqWindow; s, i = s+1, i+1 {
			t.seen[(s%seqWindow)/64] &^= 1 << (s % 64)
		}
		t.highest = seq
		t.mark(seq)
		gap := int(d - 1)
		if gap > 1<<16 { // a restart or garbage rather than a loss run
			return 0
		}
		return gap
	case d > -seqWindow:
		if t.marked(seq) {
			return 0 // duplicate
		}
		t.mark(seq)
		return -1
	case d < -1<<16: // the sender started over
		t.seen = [seqWindow / 64]uint64{}
		t.highest = seq
		t.mark(seq)
	}
	return 0
}

func (t *seqTracker) mark(s uint32)        { t.seen[(s%seqWindow)/64] |= 1 << (s % 64) }
func (t *seqTracker) marked(s uint32) bool { return t.seen[(s%seqWindow)/64]&(1<<(s%64)) != 0 }

// pathMonitor follows the one-way delay of a direction to estimate how full the
// bottleneck queue is. The sender's clock is unrelated to ours, so only
// differences matter: queueing delay is the one-way delay above its minimum.
//
// A drop-tail queue drops only when it is full, so it tells random loss from
// congestion by the queueing delay q at the time of the loss, against the highest
// (smoothed) q of the last half minute, the queue's ceiling:
//   - q below most of the ceiling (or below a noise floor): the queue was not
//     full, the loss is random. Only these losses, and the datagrams received in the same
//     state, feed the loss estimate, so queue overflows never raise the parity (and
//     parity never feeds its own overflow). On a path too short to show a queue
//     this way, loss runs stand in for the delay (blindPath).
//   - q near the ceiling, at least congestionShare of the path's minimum round
//     trip, and so for a whole round trip already: congestion. It is shown to
//     quic-go, whose Reno cut (x0.7) then still leaves at least a bandwidth-delay
//     product in flight. A full queue stays full until the senders back off, a
//     round trip at least, while a stall of the machine that makes a queue-like
//     delay spike clears at once; the persistence test tells them apart.
//   - anything between: repaired, but counted nowhere.
type pathMonitor struct {
	started bool
	base    uint32 // (arrival - ts) of the first sample
	// minimum one-way delay, in two windows so it can follow a route change
	minCur, minPrev int64
	minEpoch        int64
	smoothed        float64 // queueing delay, EWMA over ~8 datagrams, microseconds
	// per-second maxima of the smoothed queueing delay
	peaks     [ceilingSeconds]int64
	peakEpoch int64
	// since when the queue has held at least congestionShare of the round trip
	deepSince time.Duration
	deep      bool
}

const (
	ceilingSeconds = 30
	minWindow      = 60 * time.Second
	// A loss with q at or above fullShare x ceiling may be congestion; below it, it
	// is random.
	fullShare = 0.8
	// congestionShare: congestion needs a queue of at least this share of the
	// minimum round trip, so that quic-go's cut to 0.7 keeps the link full
	// (0.7 x 1.43 >= 1).
	congestionShare = 0.43
	// queueNoise: below this much queueing delay the queue counts as empty; it keeps
	// scheduling noise from passing for a queue.
	queueNoise = 2 * time.Millisecond
)

// blindPath reports whether a path's round trip is too short for the queueing
// delay to tell congestion: a queue that holds congestionShare of it is below
// queueNoise. Such a queue (a LAN switch's, tens of microseconds to a
// millisecond) overflows in runs, from the bursts quic-go and the parity send
// into it, while random loss rarely takes blindRun datagrams in a row (at 1%,
// one run in 10^4 losses): on a blind path a run of that length counts as
// congestion. Without this, parity sized for such runs fed its own overflow:
// on a clean 1 Gbit/s, 1 ms link it climbed to 64+66. Bursty random loss on
// such a path is repaired as far as the parity of its shorter runs reaches,
// and quic-go sees the rest, which at a round trip of a few milliseconds
// costs it little time.
func blindPath(minRTT time.Duration) bool {
	return minRTT > 0 && congestionShare*float64(minRTT) < float64(queueNoise)
}

// blindRun is the loss run that counts as congestion on a blind path.
const blindRun = 3

// queueState classifies the path queue at one moment.
type queueState int

const (
	queueClear queueState = iota
	queueAmbiguous
	queueFull
)

// sample records one datagram and classifies the queue it found; minRTT is the
// path's minimum round trip, 0 if not known yet.
func (m *pathMonitor) sample(ts uint32, now, minRTT time.Duration) queueState {
	raw := stamp(now) - ts
	if !m.started {
		m.started = true
		m.base = raw
		m.minCur, m.minPrev = 0, 0
		m.minEpoch = int64(now / minWindow)
		m.peakEpoch = int64(now / time.Second)
	}
	owd := int64(int32(raw - m.base))
	if ep := int64(now / minWindow); ep != m.minEpoch {
		m.minPrev, m.minCur, m.minEpoch = m.minCur, owd, ep
	}
	m.minCur = min(m.minCur, owd)
	m.smoothed += (float64(owd-min(m.minCur, m.minPrev)) - m.smoothed) / 8
	sec := int64(now / time.Second)
	for ; m.peakEpoch < sec; m.peakEpoch++ {
		m.peaks[(m.peakEpoch+1)%ceilingSeconds] = 0
	}
	if s := int64(m.smoothed); s > m.peaks[sec%ceilingSeconds] {
		m.peaks[sec%ceilingSeconds] = s
	}
	q := time.Duration(m.smoothed) * time.Microsecond
	deep := minRTT > 0 && float64(q) >= congestionShare*float64(minRTT)
	if deep && !m.deep {
		m.deepSince = now
	}
	m.deep = deep
	return m.state(q, now, minRTT)
}

// queue is the smoothed queueing delay.
func (m *pathMonitor) queue() time.Duration { return time.Duration(m.smoothed) * time.Microsecond }

// state classifies the queue at smoothed queueing delay q.
func (m *pathMonitor) state(q, now, minRTT time.Duration) queueState {
	if q < queueNoise {
		return queueClear
	}
	var ceiling int64
	for _, p := range m.peaks {
		ceiling = max(ceiling, p)
	}
	c := time.Duration(ceiling) * time.Microsecond
	switch {
	case float64(q) < fullShare*float64(c):
		return queueClear
	case m.deep && now-m.deepSince >= minRTT:
		return queueFull
	}
	return queueAmbiguous
}
