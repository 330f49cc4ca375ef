package recovery

import (
	"math"
	"time"

	"github.com/quictun/quictun/codecs/fecframe"
)

// controller turns the receiver's Feedback into the sender's group shape. In Auto
// mode it estimates the random loss rate and burst length of the path (congestion
// losses are reported apart and left out: parity must not grow because a queue
// overflows) and picks, for every group size n, the least parity that leaves a
// group unrebuildable with probability below n x Config.TargetResidual. It runs in the
// ReadFrom goroutine, where Feedback arrives.
type controller struct {
	cfg  Config
	have bool
	last fecframe.Feedback

	// Decayed sums of sampled datagrams, random losses and loss runs, seeded with
	// a prior worth priorWeight datagrams.
	lossSum, totalSum, burstSum float64
	loss, burst                 float64 // their ratios
	srtt                        time.Duration
	minRTT                      windowedMin
	// trained: the peer's latest Feedback says it has taught our quic-go
	// connection to tolerate repairs up to about a round trip late (see
	// trainer), so groups may be longer.
	trained bool
	// rate is the sender's data datagrams per second, measured over windows.
	rate      float64
	rateCount uint64
	rateSince time.Duration

	// measurement window
	winLost, winTotal, winBursts float64
	winStart                     time.Duration

	applied struct {
		sizing, burst, rate float64
		span                time.Duration
		k                   int
	}
}

// Estimation constants.
const (
	// The prior: until measurements outweigh it, assume a lossy path. A loss
	// quic-go sees in slow start ends its slow start for good, after which Reno
	// grows by one packet per round trip, so the first round trips need strong
	// parity (the prior and its uncertainty size groups for about 9% loss). But the
	// prior must fade within a few hundred datagrams: parity that stays high until
	// quic-go's window nears the path's capacity fills the link early, quic-go's
	// hybrid slow start sees the delay rise and leaves slow start short of the
	// capacity, again for good.
	priorLoss   = 0.03
	priorWeight = 30
	// A window closes after this many datagrams, or this long with some traffic.
	windowDatagrams = 200
	windowTime      = 400 * time.Millisecond
	// decay is the weight of the past per window: about 15 windows of memory.
	decay = 0.93
	// rateWindow is how long the sender's rate is counted before an update.
	rateWindow = 250 * time.Millisecond
	// lossFloor is added to the sizing estimate: the loss may rise before the
	// estimate does.
	lossFloor = 0.0005
	// maxSizingLoss and maxParityOver cap the parity. Parity is traffic quic-go's
	// congestion control does not see; loss beyond a quarter of all datagrams is
	// rarely a property of the path but of overload (a full receive buffer, a
	// saturated link), where more parity only deepens the overload that reported
	// the loss, and so on.
	maxSizingLoss = 0.25
	maxParityOver = 2 // parity datagrams per group, beyond one per data datagram
)

func newController(cfg Config) controller {
	ct := controller{cfg: cfg, lossSum: priorLoss * priorWeight, totalSum: priorWeight, burstSum: priorLoss * priorWeight}
	ct.loss, ct.burst = priorLoss, 1
	return ct
}

// sizingLoss is the loss rate groups are sized for: the estimate plus two
// standard errors, so a young or noisy estimate errs towards parity. Losses that
// come in bursts are fewer independent events, so the error grows with the burst
// length.
func (ct *controller) sizingLoss() float64 {
	p := ct.loss
	return min(p+2*math.Sqrt(p*(1-p)*max(ct.burst, 1)/ct.totalSum)+lossFloor, maxSizingLoss)
}

// onFeedback folds one Feedback in. It reports whether the shape should be
// recomputed.
//
// sent is the number of data datagrams sent to the peer so far, for the rate.
func (ct *controller) onFeedback(fb *fecframe.Feedback, now, rtt time.Duration, sent uint64) bool {
	if el := now - ct.rateSince; el >= rateWindow {
		r := float64(sent-ct.rateCount) / el.Seconds()
		if ct.rate == 0 {
			ct.rate = r
		} else {
			ct.rate += (r - ct.rate) / 4
		}
		ct.rateCount, ct.rateSince = sent, now
	}
	if rtt > 0 {
		ct.minRTT.add(rtt, now)
		if ct.srtt == 0 {
			ct.srtt = rtt
		} else {
			ct.srtt += (rtt - ct.srtt) / 8
		}
	}
	ct.trained = fb.Flags&fecframe.FeedbackTrained != 0
	if !ct.have {
		ct.have = true
		ct.last = *fb
		ct.winStart = now
		return ct.spanChanged()
	}
	dRecv := float64(fb.Sampled - ct.last.Sampled)
	dLost := float64(int32(fb.Lost - ct.last.Lost))
	dBursts := float64(fb.Bursts - ct.last.Bursts)
	ct.last = *fb
	if dLost < 0 {
		dLost = 0
	}
	ct.winLost += dLost
	ct.winTotal += dRecv + dLost
	ct.winBursts += dBursts
	if elapsed := now - ct.winStart; ct.winTotal < windowDatagrams && (elapsed < windowTime || ct.winTotal < 30) &&
		(elapsed < 4*windowTime || ct.winTotal == 0) {
		return ct.spanChanged()
	}
	ct.lossSum = decay*ct.lossSum + ct.winLost
	ct.totalSum = decay*ct.totalSum + ct.winTotal
	ct.burstSum = decay*ct.burstSum + ct.winBursts
	ct.loss = ct.lossSum / ct.totalSum
	// One pseudo-burst of length 1 pulls the burst length back to 1 once losses
	// have faded, instead of keeping the ratio of old, decayed sums.
	ct.burst = max(1, (ct.lossSum+1)/(ct.burstSum+1))
	ct.winLost, ct.winTotal, ct.winBursts, ct.winStart = 0, 0, 0, now
	return ct.spanChanged() || ct.estimateChanged()
}

func (ct *controller) spanChanged() bool {
	return ct.cfg.GroupSpan == 0 && ct.span() != ct.applied.span || ct.largest() != ct.applied.k
}

func (ct *controller) estimateChanged() bool {
	a := ct.applied
	return math.Abs(ct.sizingLoss()-a.sizing) > 0.05*a.sizing || math.Abs(ct.burst-a.burst) > 0.25 ||
		math.Abs(ct.rate-a.rate) > 0.25*a.rate
}

// span is how long a group may stay open. A repair reaches quic-go up to about a
// span after the loss; an untrained quic-go declares a loss 1/8 of a round trip
// after the packet was due, a trained one a round trip after (README, point 2),
// and a repair must also beat quic-go's acknowledgement of the ACK that reported
// the gap (about a round trip), so a trained peer gets a quarter of the round
// trip, at most 25 ms.
func (ct *controller) span() time.Duration {
	if ct.cfg.GroupSpan > 0 {
		return ct.cfg.GroupSpan
	}
	if ct.srtt == 0 {
		return initialGroupSpan
	}
	div, most := time.Duration(untrainedSpanDivisor), maxGroupSpan
	if ct.trained {
		div, most = trainedSpanDivisor, maxTrainedGroupSpan
	}
	// Round to 0.5 ms so that RTT noise does not reshape groups all the time.
	s := (ct.srtt / div).Round(500 * time.Microsecond)
	return min(max(s, minGroupSpan), most)
}

// largest is the largest group. Longer groups need less parity for the same
// residual loss (the law of large numbers), but a repair is as late as its
// group is long, so groups grow beyond untrainedData only for a trained peer,
// and only where the span, not the shortest span allowed, bounds them: on a LAN
// (round trip under trainedSpanDivisor x minGroupSpan) a group of Config.Data can take longer to
// fill than quic-go waits even when trained. Tying the size to the measured
// rate instead (as many as fill a quarter round trip) did worse: the size
// followed every window cut down and back up.
func (ct *controller) largest() int {
	if ct.cfg.Mode == Auto && (!ct.trained || ct.srtt/trainedSpanDivisor < minGroupSpan) {
		return min(ct.cfg.Data, untrainedData)
	}
	return ct.cfg.Data
}

// shape computes the group shape for the current estimate.
func (ct *controller) shape() shape {
	var sh shape
	ct.applied.sizing, ct.applied.burst, ct.applied.span, ct.applied.rate = ct.sizingLoss(), ct.burst, ct.span(), ct.rate
	ct.applied.k = ct.largest()
	sh.span = ct.span()
	sh.k = ct.largest()
	if ct.cfg.Mode == Fixed {
		for n := 1; n <= sh.k; n++ {
			sh.mFor[n] = uint8(ct.cfg.Parity)
		}
		sh.every = float64(ct.cfg.Data) / float64(ct.cfg.Parity)
		return sh
	}
	p, b := ct.sizingLoss(), ct.burst
	maxM := maxGroup - sh.k
	// The parity a group of n would need (a sliding window answers bursts with
	// the repairs after them, so no interleaving), for the span top-up.
	m := 1
	for n := 1; n <= sh.k; n++ {
		m = parityNeededFrom(m, n, maxM, p, b, 1, float64(n)*ct.cfg.TargetResidual)
		sh.mFor[n] = uint8(min(m, n+maxParityOver))
	}
	{
		// The repair rate: the largest of rlcMargin x the loss (more for
		// bursts), a full window's group parity, one per 128 (README,
		// "Sliding-window code").
		w := rlcWindowMax
		if ct.rate > 0 {
			w = min(max(int(ct.rate*rlcWindowAge.Seconds()), sh.k), rlcWindowMax)
		}
		window := float64(parityNeededFrom(1, w, rlcWindowMax/2, p, b, 1, float64(w)*ct.cfg.TargetResidual)) / float64(w)
		sh.every = 1 / max(1.0/128, rlcMargin*b*p/(1-p), window)
	}
	sh.copies = p >= copyLoss
	return sh
}

// copyLoss is the sizing loss from which small sources get copies: below it
// (a clean path: the estimate's floor and error) they would rarely help.
const copyLoss = 0.001

// rlcMargin is how many more repairs than expected losses the sliding-window
// code sends, at the sizing loss (which already errs high).
const rlcMargin = 1.5

// parityNeeded is the least m in 1..maxM such that a group of n data and m parity
// datagrams loses more than m with probability at most target. Losses come in
// bursts of geometric length (mean b) at an overall rate p, and the group is one of
// d interleaved, so it sees every d-th datagram of the wire.
func parityNeeded(n, maxM int, p, b float64, d int, target float64) int {
	return parityNeededFrom(1, n, maxM, p, b, d, target)
}

func parityNeededFrom(m0, n, maxM int, p, b float64, d int, target float64) int {
	for m := max(m0, 1); m < maxM; m++ {
		if burstTail(n+m, p, b, d, m) <= target {
			return m
		}
	}
	return maxM
}

// burstTail is the probability that a group of size g (data plus parity), one of d
// interleaved groups, loses more than j datagrams, when losses come in bursts of
// geometric length with mean b (b >= 1) at an overall loss rate p.
//
// The group spans d*g datagrams of the wire, so the bursts starting there are
// Poisson with mean d*g*p/b. A burst of length L covers floor(L/d) or ceil(L/d) of
// the group's datagrams, depending on where it starts: H = floor(L/d) plus one
// with probability (L mod d)/d. Bursts that miss the group (H = 0) thin the
// Poisson count; the total is compound Poisson, and Panjer's recursion gives its
// distribution.
func burstTail(g int, p, b float64, d, j int) float64 {
	if p <= 0 {
		return 0
	}
	var hits [maxGroup + 2]float64 // P(H = h) for one burst
	b = max(b, 1)
	q := 1 - 1/b
	pl := 1 / b // P(L = 1)
	for l := 1; l <= 4096 && pl > 1e-15; l++ {
		lo, frac := l/d, float64(l%d)/float64(d)
		if lo <= j+1 {
			hits[lo] += pl * (1 - frac)
		}
		if lo+1 <= j+1 {
			hits[lo+1] += pl * frac
		}
		pl *= q
	}
	lambda := float64(d*g) * p / b * (1 - hits[0])
	if lambda <= 0 {
		return 0
	}
	norm := 1 / (1 - hits[0])
	var pmf [maxGroup + 2]float64
	pmf[0] = math.Exp(-lambda)
	cdf := pmf[0]
	for x := 1; x <= j; x++ {
		var sum float64
		for h := 1; h <= x; h++ {
			sum += float64(h) * hits[h] * norm * pmf[x-h]
		}
		pmf[x] = lambda / float64(x) * sum
		cdf += pmf[x]
	}
	return max(1-cdf, 0)
}

// windowedMin is the minimum of a quantity over the last one to two windows, so
// that it can rise again when the path changes.
type windowedMin struct {
	cur, prev time.Duration
	epoch     int64
}

const minRTTWindow = 60 * time.Second

func (w *windowedMin) add(v, now time.Duration) {
	if ep := int64(now / minRTTWindow); ep != w.epoch {
		w.prev, w.cur, w.epoch = w.cur, 0, ep
	}
	if w.cur == 0 || v < w.cur {
		w.cur = v
	}
}

func (w *windowedMin) get(now time.Duration) time.Duration {
	if ep := int64(now / minRTTWindow); ep > w.epoch+1 {
		return 0
	}
	switch {
	case w.prev == 0:
		return w.cur
	case w.cur == 0:
		return w.prev
	}
	return min(w.cur, w.prev)
}
