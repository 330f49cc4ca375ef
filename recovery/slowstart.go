package recovery

import "time"

// Ending quic-go's slow start before it floods the path's queue.
//
// quic-go leaves slow start on a loss or on its hybrid slow start's delay test,
// which compares only the first 8 round-trip samples of each round against the
// minimum. On a long fat path that test can miss the queue building up (measured:
// 100 Mbit/s, RTT 200 ms, a one-BDP drop-tail queue: the window went on doubling
// to 6000 packets, about 3.5 BDPs, before the first loss was declared a round trip
// after the queue had overflowed), and the overshoot is then dropped by the queue:
// 2700 datagrams in one round. TCP's SACK shrugs that off; quic-go does not, since
// a stream's receiver keeps at most 1000 gaps (protocol.MaxStreamFrameSorterGaps)
// and closes the whole connection, every tunnel on it, with "too many gaps in
// received data" when the holes of one stream outnumber that.
//
// The receiver sees every datagram's queueing delay, not 8 a round. While the
// peer's flow has ramped up (its arrival rate grew by half from one round trip to
// the next since it was last idle) and quic-go has been shown no loss yet, a queue
// that holds rampQueue of delay for as long again, growing as fast as an
// overshoot makes it grow, is slow start overshooting the path: the guard then
// drops one data datagram. quic-go declares it lost a round trip later,
// cuts its window to 0.7 and leaves slow start, by which time its window is about
// twice what the path held when the queue began to build, so the cut still leaves
// a full path and the queue never overflows. It fires once per connection, and
// only on paths that hold at least rampLargePath data datagrams per round trip:
// an overshoot drops up to about twice what the path holds (the path and a queue
// of the same size), so on smaller paths it stays under the gap limit, and there
// quic-go's own exit on that loss leaves it a larger window than the guard's early
// cut (measured at 100 Mbit/s, RTT 50 ms: about 500 packets instead of 440).
const (
	// rampQueueMin and rampQueueMax bound rampQueue, an eighth of the minimum
	// round trip: hybrid slow start's own threshold.
	rampQueueMin = 4 * time.Millisecond
	rampQueueMax = 16 * time.Millisecond
	// rampGrowth is the growth of the arrival rate, from one round trip to the
	// next, that counts as slow start (which doubles it).
	rampGrowth = 1.5
	// rampMinBin: a rate is only compared with one of at least this many datagrams
	// per round trip, so that a flow's first packets, or its start after an idle
	// spell, are no evidence of a ramp.
	rampMinBin = 16
	// rampSlopeWindows: the queue's growth is measured from a starting point
	// this many thresholds old at most.
	rampSlopeWindows = 4
	// rampLargePath is half of quic-go's gap limit.
	rampLargePath = 500
)

// rampQueue is the queueing delay that ends slow start on a path of the given
// minimum round trip.
func rampQueue(minRTT time.Duration) time.Duration {
	return min(max(minRTT/8, rampQueueMin), rampQueueMax)
}

// slowStartGuard decides when to drop the datagram that ends the peer's slow start.
// It lives in the receiver and runs under its lock.
type slowStartGuard struct {
	// over: quic-go's slow start is over, ended by the guard or by a loss it was
	// shown; the guard stays quiet until the peer's next connection.
	over bool
	// Data datagrams per minimum round trip, in the current bin and the one before.
	binStart     time.Duration
	bin, prevBin int
	grew         bool // a bin held rampGrowth x the one before, since the last idle spell
	deep         bool // the queue holds rampQueue
	deepSince    time.Duration
	deepFrom     time.Duration // the queueing delay at deepSince
}

// drop reports whether to withhold the data datagram arriving now. quic is its
// QUIC packet, q the queueing delay it met, minRTT the path's minimum round trip
// (0 while unknown).
func (g *slowStartGuard) drop(quic []byte, q, now, minRTT time.Duration) bool {
	if connecting(quic) {
		*g = slowStartGuard{}
		return false
	}
	if g.over || minRTT <= 0 {
		return false
	}
	if el := now - g.binStart; el >= minRTT {
		if el >= 2*minRTT {
			g.bin, g.grew = 0, false // an idle spell: nothing to compare with
		}
		if g.prevBin >= rampMinBin && float64(g.bin) >= rampGrowth*float64(g.prevBin) {
			g.grew = true
		}
		g.prevBin, g.bin, g.binStart = g.bin, 0, now
	}
	g.bin++
	threshold := rampQueue(minRTT)
	if q < threshold {
		g.deep = false
		return false
	}
	if !g.deep || now-g.deepSince > rampSlopeWindows*threshold {
		// The queue's growth is judged over windows of threshold: start one.
		g.deep, g.deepSince, g.deepFrom = true, now, q
	}
	// A queue that holds (not a stall's backlog, which clears) and grows as an
	// overshoot makes it grow (not a sender held by its flow-control window:
	// README, "Slow-start guard").
	if now-g.deepSince < threshold || q-g.deepFrom < threshold/2 || !g.grew ||
		max(g.bin, g.prevBin) < rampLargePath {
		return false
	}
	g.over = true
	return true
}

// lossShown tells the guard that quic-go has been shown a loss: its slow start
// is over without the guard.
func (g *slowStartGuard) lossShown() { g.over = true }
