package recovery

import (
	"encoding/binary"
	"net"
	"sync"
	"time"

	"github.com/quictun/quictun/codecs/fecframe"
)

// giveUpAfter is how long a missing source waits for the repairs that could
// rebuild it: a repair leaves the sender at most a span after its sources, and
// one this late would be worth nothing to quic-go anyway.
const giveUpAfter = 150 * time.Millisecond

// delivery is a rebuilt datagram waiting for quic-go's next ReadFrom.
type delivery struct {
	buf  *buffer
	addr net.Addr
}

// receiver is the receiving half of a peer: it hands every source to quic-go at
// once, keeps it for the decoder, rebuilds missing ones as soon as the repairs
// allow, and measures loss and queueing delay for Feedback and for telling
// random loss from congestion. The ReadFrom goroutine and the flusher share it
// under mu (see Conn for the lock order).
type receiver struct {
	mu   sync.Mutex
	seqs seqTracker
	path pathMonitor

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
	guard slowStartGuard

	// dec decodes what the peer sends (made on its first source or repair);
	// gaveUp is its give-ups already counted; quiet: its sources were given
	// back for a quiet peer.
	dec    *rlcDecoder
	gaveUp int
	quiet  bool

	addr        net.Addr         // the peer's, for Feedback
	buffers     *allowance       // the peer's share of the pool
	feedbackTag *fecframe.Tagger // our key for the peer: Feedback is about its frames
	fbBuf       [fecframe.FeedbackLen]byte
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

// release decides, for a data datagram just taken in (and kept for decoding),
// whether quic-go gets it and how late: the slow-start guard may drop it (see
// slowStartGuard), the trainer hold it back (see trainer).
func (r *receiver) release(c *Conn, p *peer, quic []byte, now time.Duration) (deliver bool, hold time.Duration) {
	if !c.cfg.noRamp && r.guard.drop(quic, r.path.queue(), now, time.Duration(p.minRTT.Load())) {
		c.stats.withheld.Add(1)
		return false, 0
	}
	if c.cfg.noTrain {
		return true, 0
	}
	return true, r.train.hold(quic, now, p.rttOr(0))
}

// onSource takes a source datagram whose payload the caller has already copied
// out. It reports whether to hand it to quic-go, whether it kept buf, and for
// how long to hold the datagram back before quic-go gets it (see trainer).
func (r *receiver) onSource(c *Conn, p *peer, f *fecframe.Frame, buf *buffer, now time.Duration) (deliver, kept bool, hold time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.retired {
		return true, false, 0
	}
	r.account(c, p, f.Seq, f.Timestamp, now)
	r.quiet = false
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
	if r.dec == nil {
		r.dec = newRLCDecoder(c.pool)
	}
	return r.dec
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

// countUnrepaired counts n sources that will reach quic-go neither received
// nor rebuilt.
func (r *receiver) countUnrepaired(c *Conn, n int) {
	if n <= 0 {
		return
	}
	r.unrepaired += uint32(n)
	c.stats.unrepaired.Add(uint64(n))
	// quic-go sees this loss on its own; no need to withhold another.
	r.withholdPending = false
	r.guard.lossShown()
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
	r.guard.lossShown()
	c.stats.withheld.Add(1)
	return true
}

// countGivenUp counts what the decoder gave up since the last call.
func (r *receiver) countGivenUp(c *Conn) {
	r.countUnrepaired(c, r.dec.gaveUp-r.gaveUp)
	r.gaveUp = r.dec.gaveUp
}

// deliverSolved queues what the decoder rebuilt for quic-go (or withholds one
// for congestion), and counts what it gave up. Only the ReadFrom goroutine
// calls it: the queue (Conn.pending) is its own.
func (r *receiver) deliverSolved(c *Conn, p *peer, now time.Duration) {
	r.countGivenUp(c)
	for _, s := range r.dec.take() {
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

// service sends Feedback when due, gives up the sources missing for longer
// than giveUpAfter, and gives a quiet peer's sources back. The flusher calls it;
// it solves nothing (giving up only drops equations), so it never touches what
// the ReadFrom goroutine owns. It returns when it next needs to run, 0 for
// "nothing pending".
func (r *receiver) service(c *Conn, now time.Duration) (next time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dec != nil {
		if oldest := r.dec.giveUpBefore(now - giveUpAfter); oldest > 0 && (next == 0 || oldest+giveUpAfter < next) {
			next = oldest + giveUpAfter
		}
		r.countGivenUp(c)
		// A peer quiet for that long sends no repair of what it sent before.
		if quiet := r.echoAt + giveUpAfter; quiet <= now {
			if !r.quiet {
				r.dec.releaseSources()
				r.quiet = true
			}
		} else if next == 0 || quiet < next {
			next = quiet
		}
	}
	if r.feedbackDue {
		due := r.lastFeedback + feedbackInterval
		if due <= now {
			r.sendFeedback(c, now)
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

// sendFeedback reports on what the peer sends, to its address.
func (r *receiver) sendFeedback(c *Conn, now time.Duration) {
	fb := fecframe.Feedback{
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
	b := fecframe.AppendFeedback(r.fbBuf[:0], fb)
	r.feedbackTag.Seal(b)
	c.inner.WriteTo(b, r.addr) //nolint:errcheck // the next one carries the same cumulative counts
	c.stats.feedbackSent.Add(1)
	r.feedbackDue = false
	r.lastFeedback = now
}

// shutdown frees every buffer the receiver holds.
func (r *receiver) shutdown() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.retired = true
	if r.dec != nil {
		r.dec.reset()
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
