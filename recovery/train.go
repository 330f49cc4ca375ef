package recovery

import "time"

// Teaching the peer's quic-go that this path reorders.
//
// A rebuilt datagram reaches quic-go a little after the ones sent behind it, so
// quic-go's sender meets it as reordering. quic-go adapts to reordering the way
// RFC 9002 allows (README, point 2): after a packet it declared lost is acked
// after all, it stops counting packets and doubles its time threshold, from 1/8
// of a round trip up to a whole one, each time such a late ack came later than the
// current threshold. Left to chance, that happens on the first unlucky repairs, each
// costing a window cut if anything else is lost in the same round trip. The
// trainer does it on purpose, early and cleanly: while the peer is sending in
// earnest, it holds back trainRounds data datagrams, one at a time, for
// trainHold of the round trip, far enough apart that each is a separate event.
// A datagram held that long is past every threshold below the last, and still
// well inside the round trip after which quic-go would drop it as a duplicate
// (it stops accepting packet numbers below an ACK its peer has acknowledged).
// Its ack undoes the cut its loss caused; quic-go resends its frames, which the
// receiving quic-go discards.
//
// After training, quic-go tolerates repairs up to about a round trip late, which
// is what lets the sender code over longer groups (see controller.span).
const (
	trainRounds = 5   // three doublings, and two more in case a round fell short
	trainHold   = 0.8 // of the smoothed round trip
	// trainBusy data datagrams within an eighth of a round trip mean the peer's
	// quic-go has packets in flight behind the held one, whose acks make it
	// declare the held one lost (the time threshold needs a later packet acked).
	trainBusy = 8
	// Training waits until quic-go's slow start is long over: a round is a window
	// cut that only an all-spurious epoch undoes, and a cut that sticks in slow
	// start (any real loss in the same round trip does it) ends slow start for
	// good, short of the path's capacity.
	trainAfter     = time.Second
	trainAfterRTTs = 10
)

// trainer decides which data datagrams to hold back. It lives in the receiver
// and runs under its lock.
type trainer struct {
	started     bool
	start       time.Duration // the first 1-RTT datagram
	done        int           // rounds started
	next        time.Duration // earliest time for the next round
	windowStart time.Duration
	windowCount int
}

// hold reports for how long to hold back the data datagram arriving now, 0 for
// not at all. quic is the datagram's QUIC packet, rtt the smoothed round trip (0
// while unknown).
func (t *trainer) hold(quic []byte, now, rtt time.Duration) time.Duration {
	if connecting(quic) {
		*t = trainer{}
		return 0
	}
	if t.done >= trainRounds || rtt <= 0 {
		return 0
	}
	if !t.started {
		t.started, t.start = true, now
	}
	if now-t.start < max(trainAfter, trainAfterRTTs*rtt) {
		return 0
	}
	if now-t.windowStart > rtt/8 {
		t.windowStart, t.windowCount = now, 0
	}
	t.windowCount++
	if t.windowCount < trainBusy || now < t.next {
		return 0
	}
	t.done++
	h := time.Duration(trainHold * float64(rtt))
	// The next round must follow quic-go's reaction to this one: its loss
	// declaration (at most two round trips after sending) and the late ack.
	t.next = now + h + 2*rtt
	t.windowCount = 0
	return h
}

// trained reports whether every round has been played out: the last one's late
// ack has had time to reach the peer's quic-go.
func (t *trainer) trained(now time.Duration) bool {
	return t.done >= trainRounds && now >= t.next
}
