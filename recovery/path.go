package recovery

import "time"

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
