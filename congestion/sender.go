// Package congestion is quictun's congestion controller for quic-go: a sender
// that paces at the path's delivery rate and keeps about two bandwidth-delay
// products in flight, in the way of BBR (Cardwell et al., 2016), and takes
// neither a loss nor a late repair for congestion. quic-go's own Reno halves
// its window on every loss the recovery layer could not repair in time, and on
// a long path regrows it by one packet a round trip: at 200 ms and 5% loss it
// carried a quarter of the link. quic-go runs it through the Config.Congestion
// hook of quictun's patch set (third_party/README.md).
package congestion

import (
	"time"

	qcc "github.com/quic-go/quic-go/congestion"
)

const (
	// startupGain doubles the delivery rate each round trip (2/ln 2), as slow start does.
	startupGain = 2.885
	// startupRounds without 25% growth of the delivery rate end startup: the pipe
	// is full. So does a queue (startupDelay), usually well before, which on a
	// long fat path overflows within the round trip that it takes to see it.
	startupRounds = 3
	// cwndGain in flight beyond the path's bandwidth-delay product absorbs delayed
	// and aggregated acks.
	cwndGain = 2.0
	// bwRounds is how many round trips the bandwidth estimate remembers its maximum.
	bwRounds = 10
	// minCwndPackets keeps a trickle going, as RFC 9002's minimum window does.
	minCwndPackets = 4
	// initialCwndPackets is quic-go's initial window.
	initialCwndPackets = 32
	// maxCwndPackets is quic-go's ceiling for its own window.
	maxCwndPackets = 10000
	// congestedLoss of a round trip's packets lost, and at least congestedMinLost,
	// is a rate above the path's (checkLoss).
	congestedLoss    = 0.10
	congestedMinLost = 8
	// minBDPRTT floors the round trip a window is sized from: on a LAN or loopback
	// the scheduler's jitter exceeds the path's round trip many times over.
	minBDPRTT = 2 * time.Millisecond
)

// startupStep is the most packets startup adds to the window per round trip:
// half of quic-go's limit of 1000 gaps in a stream it receives, which an
// overflow of the queue by a whole round trip's growth would exceed.
const startupStep = 500

// A round trip above startupDelay for half a minimum round trip, and at least
// startupQueued, is a queue that has built up, not jitter (a stall of the path
// delays a batch of packets; a queue delays every one after it).
const startupQueued = 20 * time.Millisecond

// startupDelay is the rise of the round trip over its minimum that ends startup
// before the queue overflows (quic-go's stream reassembly closes a connection
// whose stream has more than 1000 gaps, which an overflow of a long fat path's
// queue can make): an eighth of the minimum, 4 to 16 ms, as hybrid slow start.
func startupDelay(minRTT time.Duration) time.Duration {
	return min(max(minRTT/8, 4*time.Millisecond), 16*time.Millisecond)
}

// The standing-queue control. An estimate a little above the path's rate (the
// maximum of noisy samples) paces a little too fast, and with nothing else in the
// way the queue grows until the window stops it, at cwndGain BDPs in flight: a
// full drop-tail queue of one BDP, and every keystroke behind it. So the window's
// headroom above the BDP halves on each round trip whose least RTT stood above the
// minimum by queueAllowed, and grows back by headroomStep a round trip without. A
// queue that outlasts competingRounds at the least headroom is not ours (a
// loss-based sender beside us keeps it full): yielding to it more would starve
// us (so would a route that got longer), so the headroom stays whole for
// competingHold round trips, twice as long each time it is found again.
const (
	queueMinRTT     = 10 * time.Millisecond // below it the scheduler's jitter is the queue
	headroomStep    = 1.0 / 16
	competingRounds = bwRounds + 2 // what takes an over-estimate to age out of bw
	competingHold   = 8 * competingRounds
	competingMaxLog = 5
)

// queueAllowed is the standing queue the control lets be: a tenth of the round
// trip, 2 to 10 ms. The least headroom is half of it.
func queueAllowed(minRTT time.Duration) time.Duration {
	return min(max(minRTT/10, 2*time.Millisecond), 10*time.Millisecond)
}

// probeGains is ProbeBW's cycle: one round trip above the estimate to find more
// bandwidth, one below to drain what that queued, six at it.
var probeGains = [...]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

type mode uint8

const (
	startup mode = iota // find the bandwidth: the rate doubles each round trip
	drain               // empty the queue startup left
	probeBW             // cruise at the estimate, probing now and then
)

// Sender implements quic-go's congestion.SendAlgorithm. quic-go calls it from
// its connection's run loop only, so it takes no lock.
type Sender struct {
	rtt qcc.RTTStats
	mss qcc.ByteCount

	mode  mode
	cwnd  qcc.ByteCount
	pacer pacer
	log   sentLog

	// Delivery-rate sampling (draft-cheng-iccrg-delivery-rate-estimation).
	delivered     qcc.ByteCount // bytes acked so far
	deliveredTime qcc.Time      // when delivered last grew
	firstSentTime qcc.Time      // when the packet last acked was sent

	bw       maxFilter // bytes per second, over bwRounds round trips
	round    int64
	roundEnd qcc.ByteCount // delivered when the next round trip starts
	// Packets acked and lost in this round trip.
	roundAcked, roundLost int
	congestedAt           qcc.Time // the last round trip checkLoss took for congestion

	fullBW       float64 // startup: the estimate that last grew by 25%
	fullBWRounds int
	queuedSince  qcc.Time // startup: since when every round trip exceeded startupDelay

	cycle      int
	cycleStart qcc.Time
	cycleBW    float64 // the estimate when the last cycle began
	// filled: the path was seen full (a rate that stopped growing, a congested
	// round trip), so ProbeBW's growth is the way back, never a reason for startup.
	filled bool
	// probeSent is what was sent in this cycle's probing phase; appLimited says
	// that the last probe went unused (see advanceCycle).
	probeSent        qcc.ByteCount
	probeStartBW     float64 // the estimate when the probe began
	probeCwndLimited bool
	appLimited       bool

	// The standing-queue control: the least RTT of this round trip, the window's
	// headroom above the BDP (in BDPs), the round trips in a row that found a
	// queue at the least headroom, the round until which a queue is taken for
	// another sender's, and how often that was found since a queue last drained.
	roundMinRTT    time.Duration
	headroom       float64
	queuedRounds   int
	competingUntil int64
	competingFound int
	yielding       bool    // every round trip since yieldBW found a queue
	yieldBW        float64 // the estimate when the headroom last began to shrink
	probeGain      float64 // this cycle's (setProbeGain)
}

var _ qcc.SendAlgorithm = (*Sender)(nil)

// New is a qcc.New: quic-go's Config.Congestion.
func New(rtt qcc.RTTStats, initialMaxDatagramSize qcc.ByteCount) qcc.SendAlgorithm {
	s := &Sender{rtt: rtt, mss: initialMaxDatagramSize, headroom: cwndGain - 1, probeGain: probeGains[0]}
	s.cwnd = initialCwndPackets * s.mss
	s.pacer.mss = s.mss
	return s
}

// BandwidthEstimate is the sender's estimate of the path's delivery rate, in
// bytes per second (0 before the first sample).
func (s *Sender) BandwidthEstimate() float64 { return s.bw.get() }

func (s *Sender) minRTT() time.Duration {
	if r := s.rtt.MinRTT(); r > 0 {
		return r
	}
	return 100 * time.Millisecond // RFC 9002's initial RTT guess
}

// bdp is the bandwidth-delay product of the estimates.
func (s *Sender) bdp() qcc.ByteCount {
	return qcc.ByteCount(s.bw.get() * max(s.minRTT(), minBDPRTT).Seconds())
}

func (s *Sender) gains() (pacing, cwnd float64) {
	switch s.mode {
	case startup:
		return startupGain, startupGain
	case drain:
		return 1 / startupGain, startupGain
	default:
		if s.appLimited {
			// Nothing queued that the phases below the probe would drain, and
			// pacing near the application's own rate would hold its packets.
			return max(probeGains[s.cycle], probeGains[0]), cwndGain
		}
		if s.cycle == 0 {
			return s.probeGain, cwndGain
		}
		return probeGains[s.cycle], cwndGain
	}
}

// pacingRate is in bytes per second. In startup it is at least the window's
// rate, as BBR's: an estimate made of a trickle (a session's first keepalives and
// handshakes) would otherwise pace the start of a stream at a few times the
// trickle, and hold it back for round trips while the window doubles.
func (s *Sender) pacingRate() float64 {
	pg, _ := s.gains()
	rtt := s.rtt.SmoothedRTT()
	if rtt <= 0 {
		rtt = s.minRTT()
	}
	window := float64(s.cwnd) / rtt.Seconds()
	if bw := s.bw.get(); bw > 0 && (s.mode != startup || bw >= window) {
		return pg * bw
	}
	return pg * window
}

func (s *Sender) TimeUntilSend(qcc.ByteCount) qcc.Time {
	return s.pacer.timeUntilSend(s.pacingRate())
}

func (s *Sender) HasPacingBudget(now qcc.Time) bool {
	return s.pacer.budget(now, s.pacingRate()) >= s.mss
}

func (s *Sender) CanSend(bytesInFlight qcc.ByteCount) bool { return bytesInFlight < s.cwnd }

func (s *Sender) OnPacketSent(sent qcc.Time, bytesInFlight qcc.ByteCount, pn qcc.PacketNumber, bytes qcc.ByteCount, retransmittable bool) {
	if s.mode == probeBW && s.cycle == 0 {
		s.probeSent += bytes
		s.probeCwndLimited = s.probeCwndLimited || bytesInFlight+s.mss > s.cwnd
	}
	if !retransmittable {
		// An ACK-only packet is neither paced nor in flight: quic-go sends it
		// even when pacing limited. Charged to the budget, the acks of a
		// download starved what the receiver sends (its rate estimate is its
		// own trickle): window updates and keystrokes waited hundreds of ms.
		return
	}
	s.pacer.sent(sent, bytes, s.pacingRate())
	prior := bytesInFlight - bytes // quic-go counts the packet in before it calls
	if prior <= 0 {
		// Starting from idle: the time spent idle is no part of any rate.
		s.firstSentTime, s.deliveredTime = sent, sent
	}
	s.log.add(sentPacket{
		pn:            pn,
		sent:          sent,
		delivered:     s.delivered,
		deliveredTime: s.deliveredTime,
		firstSentTime: s.firstSentTime,
		appLimited:    prior+bytes < s.appLimit(),
	})
}

// appLimit is the least in flight that fills the path: a packet sent with less
// says how fast the application wrote, not what the path carries. In startup
// the window is the limit, after it the pacing rate (a path's worth in flight).
func (s *Sender) appLimit() qcc.ByteCount {
	if s.mode == startup {
		return s.cwnd / 2
	}
	return s.bdp() / 2
}

func (s *Sender) OnPacketAcked(pn qcc.PacketNumber, acked, priorInFlight qcc.ByteCount, now qcc.Time) {
	p, ok := s.log.remove(pn)
	if !ok {
		return
	}
	s.delivered += acked
	s.deliveredTime = now
	s.firstSentTime = p.sent

	s.roundAcked++
	if r := s.rtt.LatestRTT(); r > 0 && (s.roundMinRTT == 0 || r < s.roundMinRTT) {
		s.roundMinRTT = r
	}
	roundStart := false
	if p.delivered >= s.roundEnd {
		s.round++
		s.roundEnd = s.delivered
		roundStart = true
		s.checkLoss(now)
		s.checkQueue()
	}
	// The rate over the packet's flight: the longer of its send and ack spans, so
	// that neither a burst of sends nor a burst of acks inflates it; spans shorter
	// than the minimum round trip are ack compression, not the path.
	interval := max(p.sent.Sub(p.firstSentTime), now.Sub(p.deliveredTime))
	if interval > 0 && interval >= s.rtt.MinRTT() && p.sent >= s.congestedAt {
		rate := float64(s.delivered-p.delivered) / interval.Seconds()
		if !p.appLimited || rate >= s.bw.get() {
			s.bw.update(rate, s.round, bwRounds)
		}
	}

	switch s.mode {
	case startup:
		if p.appLimited {
			// Neither a rate that did not grow nor a late ack (the peer delays
			// acks of a trickle) says anything about the path.
			break
		}
		queued := false
		if min := s.rtt.MinRTT(); min > 0 && s.rtt.LatestRTT() > min+startupDelay(min) {
			if s.queuedSince == 0 {
				s.queuedSince = now
			}
			queued = now.Sub(s.queuedSince) >= max(min/2, startupQueued)
		} else {
			s.queuedSince = 0
		}
		if roundStart {
			s.checkFullPipe()
		}
		if s.fullBWRounds >= startupRounds {
			s.mode, s.filled = drain, true
		} else if queued {
			s.mode = drain
		}
	case drain:
		if priorInFlight-acked <= s.bdp() {
			s.enterProbeBW(now)
		}
	case probeBW:
		s.advanceCycle(now, priorInFlight-acked)
	}
	s.setCwnd(acked)
}

// checkLoss, at a round's start, takes a round trip that lost more than
// congestedLoss of its packets for a rate above the path's: an estimate fooled
// by a burst of acks, a policer, a receiver that cannot keep up. Random loss
// below that is not congestion (quic-go sees little of it under the recovery
// layer, which leaves it the loss from a full queue).
func (s *Sender) checkLoss(now qcc.Time) {
	acked, lost := s.roundAcked, s.roundLost
	s.roundAcked, s.roundLost = 0, 0
	if lost < congestedMinLost || float64(lost) <= congestedLoss*float64(acked+lost) {
		return
	}
	ratio := float64(lost) / float64(acked+lost)
	// Packets sent before now measured the rate that was too high.
	s.congestedAt = now
	s.bw.reset(s.bw.get()*(1-ratio), s.round)
	s.filled = true
	if s.mode == startup {
		s.mode = drain
	}
}

// checkQueue, at a round's start, moves the window's headroom on the least RTT
// of the round that ended (see queueAllowed).
func (s *Sender) checkQueue() {
	least := s.roundMinRTT
	s.roundMinRTT = 0
	minRTT := s.rtt.MinRTT()
	if s.mode != probeBW || minRTT < queueMinRTT || least == 0 || s.round < s.competingUntil {
		return
	}
	allowed := queueAllowed(minRTT)
	floor := float64(allowed) / 2 / float64(minRTT)
	if least-minRTT <= allowed {
		s.queuedRounds, s.competingFound, s.yielding = 0, 0, false
		s.headroom = min(s.headroom+headroomStep, cwndGain-1)
		return
	}
	if !s.yielding {
		s.yielding, s.yieldBW = true, s.bw.get()
	}
	if s.headroom > floor {
		s.headroom, s.queuedRounds = max(s.headroom/2, floor), 0
		return
	}
	if s.queuedRounds++; s.queuedRounds > competingRounds {
		// What the estimate lost while yielding was the other sender's gain.
		if s.bw.get() < s.yieldBW {
			s.bw.reset(s.yieldBW, s.round)
		}
		s.headroom, s.queuedRounds = cwndGain-1, 0
		s.competingUntil = s.round + competingHold<<min(s.competingFound, competingMaxLog)
		s.competingFound++
	}
}

// checkFullPipe counts, at a round's start, the rounds in which the delivery
// rate did not grow by a quarter.
func (s *Sender) checkFullPipe() {
	if bw := s.bw.get(); bw >= 1.25*s.fullBW {
		s.fullBW, s.fullBWRounds = bw, 0
	} else {
		s.fullBWRounds++
	}
}

func (s *Sender) enterProbeBW(now qcc.Time) {
	s.mode = probeBW
	s.cycleBW = s.bw.get()
	// Start at a cruising phase, not a probe on top of the queue drain just emptied.
	s.cycle = 2 + int(s.round%int64(len(probeGains)-2))
	s.cycleStart = now
	s.appLimited = false
}

// advanceCycle moves ProbeBW's gain on each minimum round trip, ending the drain
// phase early once what the probe queued has gone.
func (s *Sender) advanceCycle(now qcc.Time, inFlight qcc.ByteCount) {
	elapsed := now.Sub(s.cycleStart)
	if elapsed < s.minRTT() && !(probeGains[s.cycle] < 1 && inFlight <= s.bdp()) {
		return
	}
	if s.cycle == 0 {
		// A probe that sent less than a tenth above the estimate, and not for
		// want of window, found the application, not the path, to be the limit
		// (a UDP stream below the path's rate): until the next probe says
		// otherwise, pace at the probe's rate, so that the estimate, which is
		// about the application's rate, never holds its packets back.
		sentRate := float64(s.probeSent) / max(elapsed, time.Millisecond).Seconds()
		s.appLimited = !s.probeCwndLimited && sentRate < (1+0.4*(s.probeGain-1))*s.probeStartBW
		s.probeSent, s.probeCwndLimited = 0, false
	}
	s.cycle = (s.cycle + 1) % len(probeGains)
	s.cycleStart = now
	if s.cycle == 0 {
		s.probeStartBW = s.bw.get()
		// A cycle that found a quarter more bandwidth after startup ended on a
		// queue says that was jitter: find the rate again.
		if bw := s.bw.get(); bw >= 1.25*s.cycleBW && !s.filled {
			s.mode, s.fullBW, s.fullBWRounds, s.queuedSince = startup, bw, 0, 0
		}
		s.setProbeGain()
		s.cycleBW = s.bw.get()
	}
}

// setProbeGain, as a cycle begins, sizes its probe. A probe of a quarter above
// a path that is full queues a quarter of a round trip for a round trip (50 ms
// on a 200 ms path, in front of every keystroke); so once a probe found no more
// bandwidth, the next ones probe by queueAllowed only, until one finds more
// (half its own gain): then the path has room again, and a full probe finds it
// fast.
func (s *Sender) setProbeGain() {
	used := s.probeGain
	grew := s.cycleBW > 0 && s.bw.get() >= (1+(used-1)/2)*s.cycleBW
	s.probeGain = probeGains[0]
	if minRTT := s.rtt.MinRTT(); minRTT >= queueMinRTT && !s.appLimited && !grew && s.cycleBW > 0 {
		s.probeGain = min(1+float64(queueAllowed(minRTT))/float64(minRTT), probeGains[0])
	}
}

func (s *Sender) setCwnd(acked qcc.ByteCount) {
	_, cg := s.gains()
	if s.mode == probeBW {
		cg = 1 + s.headroom
	}
	target := max(qcc.ByteCount(cg*float64(s.bdp()))+3*s.mss, minCwndPackets*s.mss)
	if s.mode == startup {
		// Slow start's doubling, by at most startupStep a round trip (RFC 3742's
		// limited slow start): what overflows the queue before startup sees it
		// is about one round trip's growth.
		s.cwnd += qcc.ByteCount(float64(acked) * min(1, float64(startupStep*s.mss)/float64(s.cwnd)))
	} else {
		s.cwnd = min(s.cwnd+acked, target)
	}
	s.cwnd = min(max(s.cwnd, minCwndPackets*s.mss), maxCwndPackets*s.mss)
}

// OnCongestionEvent is a lost packet (or an ECN mark, lostBytes 0). A loss is
// not taken for congestion, only a round trip that lost much (checkLoss).
func (s *Sender) OnCongestionEvent(pn qcc.PacketNumber, lostBytes, _ qcc.ByteCount) {
	if lostBytes > 0 {
		s.log.remove(pn)
		s.roundLost++
	}
}

func (s *Sender) OnSpuriousLoss(qcc.PacketNumber) {}

func (s *Sender) MaybeExitSlowStart() {}

// OnRetransmissionTimeout: a probe timeout with packets lost is the path gone
// quiet; the window starts over from the minimum, the estimates stay.
func (s *Sender) OnRetransmissionTimeout(packetsRetransmitted bool) {
	if packetsRetransmitted {
		s.cwnd = minCwndPackets * s.mss
	}
}

func (s *Sender) SetMaxDatagramSize(size qcc.ByteCount) {
	if s.cwnd == initialCwndPackets*s.mss {
		s.cwnd = initialCwndPackets * size
	}
	s.mss, s.pacer.mss = size, size
}

func (s *Sender) InSlowStart() bool { return s.mode == startup }

func (s *Sender) InRecovery() bool { return false }

func (s *Sender) GetCongestionWindow() qcc.ByteCount { return s.cwnd }
