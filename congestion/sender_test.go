package congestion

import (
	"slices"
	"testing"
	"time"

	qcc "github.com/quic-go/quic-go/congestion"
)

// On long lossy paths the sender fills the link: random loss is not taken for
// congestion, up to congestedLoss a round trip. (Under the recovery layer
// quic-go sees much less than the link loses; Reno, on the same simulated path
// at 5% loss, keeps a few packets in flight.)
func TestFillsLongLossyPaths(t *testing.T) {
	for _, tc := range []struct {
		rtt  time.Duration
		loss float64
	}{
		{200 * time.Millisecond, 0.01},
		{200 * time.Millisecond, 0.05},
		{50 * time.Millisecond, 0.05},
		{50 * time.Millisecond, 0},
	} {
		p := newPath(100e6, tc.rtt, tc.rtt, tc.loss)
		p.run(10 * time.Second) // startup and a few cycles
		before := p.delivered
		p.run(20 * time.Second)
		got := goodput(p.delivered-before, 20*time.Second)
		ceiling := 100e6 * (1 - tc.loss)
		t.Logf("rtt %v loss %.0f%%: %.1f Mbit/s of %.1f, estimate %.1f Mbit/s, max queue %v, queue drops %d",
			tc.rtt, 100*tc.loss, got/1e6, ceiling/1e6, p.s.BandwidthEstimate()*8/1e6, p.maxQueue, p.queueDrops)
		if got < 0.85*ceiling {
			t.Errorf("rtt %v loss %.0f%%: %.1f Mbit/s, want at least 85%% of %.1f", tc.rtt, 100*tc.loss, got/1e6, ceiling/1e6)
		}
	}
}

// A path that drops what exceeds its rate without queueing it (a policer, a
// receiver that cannot keep up) shows no delay: the sender learns it from the
// loss of whole round trips, and keeps that loss near congestedLoss.
func TestHeavyLossIsCongestion(t *testing.T) {
	p := newPath(50e6, 50*time.Millisecond, 5*time.Millisecond, 0)
	p.run(5 * time.Second)
	sent, drops, before := p.sent, p.queueDrops, p.delivered
	p.run(20 * time.Second)
	loss := float64(p.queueDrops-drops) / float64(p.sent-sent)
	got := goodput(p.delivered-before, 20*time.Second)
	t.Logf("policed at 50 Mbit/s: %.1f Mbit/s, %.1f%% dropped, estimate %.1f", got/1e6, 100*loss, p.s.BandwidthEstimate()*8/1e6)
	if loss > 1.2*congestedLoss || got < 40e6 {
		t.Errorf("policed at 50 Mbit/s: %.1f Mbit/s with %.1f%% dropped, want at least 40 with at most %.0f%%", got/1e6, 100*loss, 120*congestedLoss)
	}
}

// Cruising, the sender keeps no standing queue: the mean queueing delay of its
// packets stays a small part of the round trip, far below the queue's capacity,
// and nothing overflows it after startup. With jitter in the acks the estimate,
// a maximum of samples, is a little above the path's rate; without the
// standing-queue control (checkQueue) the queue then filled to the window's
// limit: a mean of 43 ms with 1 ms of jitter, and drops every probe.
func TestKeepsNoStandingQueue(t *testing.T) {
	for _, jitter := range []time.Duration{0, time.Millisecond, 3 * time.Millisecond, 10 * time.Millisecond} {
		p := newPath(20e6, 50*time.Millisecond, 50*time.Millisecond, 0.01)
		p.jitter = jitter
		p.run(5 * time.Second)
		sum, sent, drops, before := p.queueSum, p.sent, p.queueDrops, p.delivered
		p.run(20 * time.Second)
		mean := (p.queueSum - sum) / time.Duration(p.sent-sent)
		got := goodput(p.delivered-before, 20*time.Second)
		t.Logf("jitter %v: mean queueing delay %v, queue drops %d after startup, %.1f Mbit/s, estimate %.2f",
			jitter, mean, p.queueDrops-drops, got/1e6, p.s.BandwidthEstimate()*8/1e6)
		if mean > 10*time.Millisecond || p.queueDrops > drops {
			t.Errorf("jitter %v: mean queueing delay %v, %d queue drops after startup; want at most 10 ms, none", jitter, mean, p.queueDrops-drops)
		}
		if got < 0.95*20e6*(1-0.01) {
			t.Errorf("jitter %v: %.1f Mbit/s, want at least 95%% of the link", jitter, got/1e6)
		}
	}
}

// A queue the sender did not cause (a loss-based sender beside it keeps it full,
// a route got longer) does not drain when the sender yields: it stops yielding,
// rather than shrink towards nothing, and still fills the path.
func TestAQueueNotOursIsNotYieldedTo(t *testing.T) {
	for _, rtt := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond} {
		for _, standing := range []time.Duration{5 * time.Millisecond, 20 * time.Millisecond, 40 * time.Millisecond} {
			p := newPath(100e6, rtt, rtt, 0.01)
			p.jitter = time.Millisecond
			p.run(5 * time.Second)
			p.standing = standing
			before := p.delivered
			p.run(20 * time.Second)
			got := goodput(p.delivered-before, 20*time.Second)
			t.Logf("rtt %v, a standing queue of %v: %.1f Mbit/s, estimate %.1f, headroom %.2f",
				rtt, standing, got/1e6, p.s.BandwidthEstimate()*8/1e6, p.s.headroom)
			if got < 0.85*99e6 {
				t.Errorf("rtt %v, a standing queue of %v: %.1f Mbit/s, want at least 85%% of 99", rtt, standing, got/1e6)
			}
		}
	}
}

// Startup ends before it overflows a long fat path's queue by more than quic-go's
// receiver can take (it closes a connection whose stream has 1000 gaps).
func TestStartupDoesNotFloodTheQueue(t *testing.T) {
	for _, queue := range []time.Duration{200 * time.Millisecond, 50 * time.Millisecond} {
		p := newPath(100e6, 200*time.Millisecond, queue, 0)
		p.run(5 * time.Second)
		t.Logf("queue %v: %d dropped in startup, mode %d, estimate %.1f Mbit/s", queue, p.queueDrops, p.s.mode, p.s.BandwidthEstimate()*8/1e6)
		if p.queueDrops > 500 {
			t.Errorf("queue %v: startup dropped %d packets at the queue, want at most 500", queue, p.queueDrops)
		}
		if p.s.mode != probeBW {
			t.Errorf("queue %v: still in mode %d after 5 s", queue, p.s.mode)
		}
	}
}

// Stalls of the path (80 ms in every 500: a busy emulator) are not taken for a
// queue for good: the sender still fills the path.
func TestStallsAreNotAQueue(t *testing.T) {
	for _, rtt := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond} {
		p := newPath(100e6, rtt, rtt, 0.01)
		p.stallEvery, p.stallFor = 500*time.Millisecond, 80*time.Millisecond
		p.run(3 * time.Second)
		before := p.delivered
		p.run(5 * time.Second)
		got := goodput(p.delivered-before, 5*time.Second)
		t.Logf("rtt %v: %.1f Mbit/s from 3 to 8 s, estimate %.1f", rtt, got/1e6, p.s.BandwidthEstimate()*8/1e6)
		if got < 80e6 {
			t.Errorf("rtt %v with stalls: %.1f Mbit/s, want at least 80", rtt, got/1e6)
		}
	}
}

// An application that writes a little for a long time keeps the estimate: when
// it sends in bulk again it starts at the path's rate, not at its own.
func TestQuietSpellKeepsTheEstimate(t *testing.T) {
	p := newPath(100e6, 50*time.Millisecond, 50*time.Millisecond, 0)
	p.run(5 * time.Second)
	full := p.s.BandwidthEstimate()
	quietUntil := p.now + 10*time.Second
	every := 10 * time.Millisecond // a packet per 10 ms: 1 Mbit/s
	last := time.Duration(0)
	p.app = func(now time.Duration) bool {
		if now >= quietUntil {
			return true
		}
		if now-last >= every {
			last = now
			return true
		}
		return false
	}
	p.run(10 * time.Second)
	if got := p.s.BandwidthEstimate(); got < 0.8*full {
		t.Errorf("estimate after a quiet spell %.1f Mbit/s, before %.1f", got*8/1e6, full*8/1e6)
	}
	before := p.delivered
	p.run(2 * time.Second)
	if got := goodput(p.delivered-before, 2*time.Second); got < 80e6 {
		t.Errorf("after the quiet spell: %.1f Mbit/s, want at least 80", got/1e6)
	}
}

// A sender that only trickled so far (the receiving side of a session: window
// updates) is still in startup when it has data in bulk, and fills the path in a
// few round trips.
func TestTrickleThenBulk(t *testing.T) {
	p := newPath(100e6, 50*time.Millisecond, 50*time.Millisecond, 0)
	bulkFrom := 5 * time.Second
	last := -time.Second
	p.app = func(now time.Duration) bool {
		if now >= bulkFrom {
			return true
		}
		if now-last >= 50*time.Millisecond {
			last = now
			return true
		}
		return false
	}
	p.run(bulkFrom)
	if p.s.mode != startup {
		t.Fatalf("after a trickle: mode %d, want startup", p.s.mode)
	}
	p.run(time.Second)
	before := p.delivered
	p.run(2 * time.Second)
	if got := goodput(p.delivered-before, 2*time.Second); got < 85e6 {
		t.Errorf("bulk after a trickle, 1 to 3 s in: %.1f Mbit/s, want at least 85", got/1e6)
	}
}

func TestMaxFilterAgesOut(t *testing.T) {
	var f maxFilter
	f.update(10, 1, 10)
	f.update(5, 2, 10)
	if f.get() != 10 {
		t.Fatalf("max %v, want 10", f.get())
	}
	for r := int64(3); r <= 12; r++ {
		f.update(5, r, 10)
	}
	if f.get() != 5 {
		t.Fatalf("max after the window %v, want 5", f.get())
	}
	f.update(7, 13, 10)
	if f.get() != 7 {
		t.Fatalf("max %v, want 7", f.get())
	}
}

func TestSentLogFindsAndForgets(t *testing.T) {
	var l sentLog
	for pn := qcc.PacketNumber(1); pn <= 100; pn += 3 { // gaps, as quic-go skips numbers
		l.add(sentPacket{pn: pn})
	}
	if _, ok := l.remove(2); ok {
		t.Fatal("removed a packet number never sent")
	}
	for pn := qcc.PacketNumber(1); pn <= 100; pn += 3 {
		if _, ok := l.remove(pn); !ok {
			t.Fatalf("packet %d not found", pn)
		}
		if _, ok := l.remove(pn); ok {
			t.Fatalf("packet %d removed twice", pn)
		}
	}
	if len(l.packets) != 0 {
		t.Fatalf("%d packets left after all were removed", len(l.packets))
	}
}

// An application that sends less than the path carries (UDP: a 50 Mbit/s
// stream on a 100 Mbit/s path, written in batches every 5 ms as a busy host
// schedules it) is not held back by the pacer: each packet leaves soon after
// the application wrote it, though the estimate is near the application's
// rate (what it delivers is all the path is shown). Pacing at the estimate,
// with ProbeBW's phase below it, held the batches back (p99 3.8 ms here, 2.0
// once an unused probe paces the cycle at the probe's rate).
func TestAppLimitedStreamIsNotHeldByThePacer(t *testing.T) {
	const appRate = 50e6
	const batch = 5 * time.Millisecond
	p := newPath(100e6, 50*time.Millisecond, 50*time.Millisecond, 0.01)
	perPacket := float64(simMSS*8) / appRate * float64(time.Second)
	// Packet k is written with its batch, at the end of the 5 ms it falls in.
	written := func(k int) time.Duration { return (time.Duration(float64(k)*perPacket)/batch + 1) * batch }
	p.app = func(now time.Duration) bool { return written(p.sent) <= now }
	var waits []time.Duration
	measure := false
	p.onSend = func(now time.Duration) {
		if measure {
			waits = append(waits, now-written(p.sent-1))
		}
	}
	p.run(5 * time.Second)
	measure = true
	p.run(20 * time.Second)
	slices.Sort(waits)
	p50, p99 := waits[len(waits)/2], waits[len(waits)*99/100]
	t.Logf("app at 50 Mbit/s in 5 ms batches: wait in the sender p50 %v p99 %v max %v; estimate %.1f Mbit/s, queue drops %d",
		p50, p99, waits[len(waits)-1], p.s.BandwidthEstimate()*8/1e6, p.queueDrops)
	if p99 > 3*time.Millisecond {
		t.Errorf("p99 wait in the sender %v, want at most 3 ms", p99)
	}
}

// The receiving end of a download sends an ACK every 0.3 ms (100 Mbit/s acked
// every other packet) and, beside them, a keystroke or a window update every
// 50 ms, its only data: its rate estimate is that trickle. The acks are not
// paced and must not use up the pacing budget of that data.
func TestAcksDoNotStarveATrickle(t *testing.T) {
	rtt := &rttStats{min: 200 * time.Millisecond, smoothed: 200 * time.Millisecond, latest: 200 * time.Millisecond}
	s := New(rtt, 1400).(*Sender)
	start := qcc.Time(time.Second)
	var pn qcc.PacketNumber
	type sentAt struct {
		pn qcc.PacketNumber
		at qcc.Time
	}
	var inFlight []sentAt
	var flight qcc.ByteCount
	worst := time.Duration(0)
	for now := start; now < start.Add(20*time.Second); now = now.Add(300 * time.Microsecond) {
		for len(inFlight) > 0 && now.Sub(inFlight[0].at) >= rtt.min {
			s.OnPacketAcked(inFlight[0].pn, 100, flight, now)
			flight -= 100
			inFlight = inFlight[1:]
		}
		pn++
		s.OnPacketSent(now, flight, pn, 50, false) // an ACK
		if (now.Sub(start)/(300*time.Microsecond))%167 == 0 {
			// The data packet waits for the pacer, as quic-go would make it.
			at := now
			if next := s.TimeUntilSend(100); next > at {
				at = next
			}
			worst = max(worst, at.Sub(now))
			pn++
			flight += 100
			s.OnPacketSent(at, flight, pn, 100, true)
			inFlight = append(inFlight, sentAt{pn, at})
		}
	}
	t.Logf("estimate %.1f kB/s, a data packet waited at most %v for the pacer", s.BandwidthEstimate()/1e3, worst)
	if worst > 5*time.Millisecond {
		t.Errorf("a data packet beside a download's acks waited %v for the pacer, want at most 5 ms", worst)
	}
}

// Once a probe found the path full, the next ones probe by the queue allowed
// only: a probe of a quarter above a full path queued a quarter of a round trip
// (p99 47 ms on a 200 ms path; 17 ms on a 50 ms one) in front of every keystroke.
func TestProbesQueueLittle(t *testing.T) {
	for _, tc := range []struct {
		rate float64
		rtt  time.Duration
	}{{20e6, 50 * time.Millisecond}, {100e6, 200 * time.Millisecond}} {
		p := newPath(tc.rate, tc.rtt, 50*time.Millisecond, 0.01)
		p.jitter = time.Millisecond
		p.run(5 * time.Second)
		p.waits = []time.Duration{}
		before := p.delivered
		p.run(20 * time.Second)
		got, p99 := goodput(p.delivered-before, 20*time.Second), quantile(p.waits, 0.99)
		t.Logf("%.0f Mbit/s, rtt %v: queueing delay p99 %v, %.1f Mbit/s", tc.rate/1e6, tc.rtt, p99, got/1e6)
		if limit := 2*queueAllowed(tc.rtt) + 2*time.Millisecond; p99 > limit {
			t.Errorf("%.0f Mbit/s, rtt %v: queueing delay p99 %v, want at most %v", tc.rate/1e6, tc.rtt, p99, limit)
		}
		if got < 0.95*tc.rate*0.99 {
			t.Errorf("%.0f Mbit/s, rtt %v: %.1f Mbit/s, want at least 95%% of the link", tc.rate/1e6, tc.rtt, got/1e6)
		}
	}
}

// Small probes still find a path that got faster (a competitor left): its
// first probe that grows restores the full one.
func TestFindsFreedCapacity(t *testing.T) {
	for _, rtt := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond} {
		p := newPath(50e6, rtt, rtt, 0.01)
		p.jitter = time.Millisecond
		p.run(10 * time.Second)
		p.rate = 100e6
		start := p.now
		for p.now-start < 10*time.Second {
			before := p.delivered
			p.run(time.Second)
			if goodput(p.delivered-before, time.Second) >= 0.9*100e6*0.99 {
				break
			}
		}
		t.Logf("rtt %v: 90%% of the doubled rate after %v", rtt, p.now-start)
		if p.now-start >= 10*time.Second {
			t.Errorf("rtt %v: the doubled rate not found within 10 s", rtt)
		}
	}
}

// A stream that starts on a session that only trickled so far (a UDP flow's
// first datagrams, iperf3 -u at half the path) waits little in the sender: in
// startup the pacer runs at least at the window's rate, so the trickle's tiny
// estimate does not hold the stream back while the window doubles.
func TestAStreamAfterATrickleWaitsLittle(t *testing.T) {
	p := newPath(100e6, 50*time.Millisecond, 50*time.Millisecond, 0)
	streamFrom, every := 2*time.Second, time.Duration(simMSS*8*float64(time.Second)/50e6)
	trickled, sentAt := time.Duration(-time.Second), 0
	var waits []time.Duration
	made := func(now time.Duration) int { return int((now-streamFrom)/every) + 1 }
	p.app = func(now time.Duration) bool {
		if now < streamFrom {
			return now-trickled >= 50*time.Millisecond
		}
		return made(now) > sentAt
	}
	p.onSend = func(now time.Duration) {
		if now < streamFrom {
			trickled = now
			return
		}
		waits = append(waits, now-(streamFrom+time.Duration(sentAt)*every))
		sentAt++
	}
	p.run(streamFrom + 2*time.Second)
	p99, most := quantile(waits, 0.99), quantile(waits, 1)
	t.Logf("50 Mbit/s after a trickle: %d packets, wait in the sender p99 %v, max %v", len(waits), p99, most)
	if p99 > 50*time.Millisecond {
		t.Errorf("wait in the sender p99 %v, want at most a round trip (50 ms)", p99)
	}
}
