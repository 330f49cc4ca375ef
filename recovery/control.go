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

	// measurement window
	winLost, winTotal, winBursts float64
	winStart                     time.Duration

	applied struct {
		sizing, burst float64
		span          time.Duration
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
	// lossFloor is added to the sizing estimate: the loss may rise before the
	// estimate does.
	lossFloor = 0.0005
)

func newController(cfg Config) controller {
	ct := controller{cfg: cfg, lossSum: priorLoss * priorWeight, totalSum: priorWeight, burstSum: priorLoss * priorWeight}
	ct.loss, ct.burst = priorLoss, 1
	return ct
}

// sizingLoss is the loss rate groups are sized for: the estimate plus two
// standard errors, so a young or noisy estimate errs towards parity.
func (ct *controller) sizingLoss() float64 {
	p := ct.loss
	return p + 2*math.Sqrt(p*(1-p)/ct.totalSum) + lossFloor
}

// onFeedback folds one Feedback in. It reports whether the shape should be
// recomputed.
func (ct *controller) onFeedback(fb *fecframe.Feedback, now time.Duration, rtt time.Duration) bool {
	if rtt > 0 {
		ct.minRTT.add(rtt, now)
		if ct.srtt == 0 {
			ct.srtt = rtt
		} else {
			ct.srtt += (rtt - ct.srtt) / 8
		}
	}
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
	if ct.burstSum > 0 {
		ct.burst = max(1, ct.lossSum/ct.burstSum)
	}
	ct.winLost, ct.winTotal, ct.winBursts, ct.winStart = 0, 0, 0, now
	return ct.spanChanged() || ct.estimateChanged()
}

func (ct *controller) spanChanged() bool {
	return ct.cfg.GroupSpan == 0 && ct.span() != ct.applied.span
}

func (ct *controller) estimateChanged() bool {
	a := ct.applied
	return math.Abs(ct.sizingLoss()-a.sizing) > 0.05*a.sizing || math.Abs(ct.burst-a.burst) > 0.25
}

func (ct *controller) span() time.Duration {
	if ct.cfg.GroupSpan > 0 {
		return ct.cfg.GroupSpan
	}
	if ct.srtt == 0 {
		return initialGroupSpan
	}
	// Round to 0.5 ms so that RTT noise does not reshape groups all the time.
	s := (ct.srtt / 8).Round(500 * time.Microsecond)
	return min(max(s, minGroupSpan), maxGroupSpan)
}

// shape computes the group shape for the current estimate.
func (ct *controller) shape() shape {
	var sh shape
	ct.applied.sizing, ct.applied.burst, ct.applied.span = ct.sizingLoss(), ct.burst, ct.span()
	sh.span = ct.span()
	switch ct.cfg.Mode {
	case Fixed:
		sh.k = ct.cfg.Data
		sh.depth = ct.cfg.Interleave
		for n := 1; n <= sh.k; n++ {
			sh.mFor[n] = uint8(ct.cfg.Parity)
		}
		return sh
	}
	sh.k = ct.cfg.Data
	sh.depth = ct.cfg.Interleave
	if sh.depth == 0 {
		// Spread a burst over as many groups as it is long, so each sees about one.
		sh.depth = min(max(int(math.Round(ct.burst)), 1), 4)
	}
	clump := max(1, ct.burst/float64(sh.depth))
	p := ct.sizingLoss()
	for n := 1; n <= sh.k; n++ {
		sh.mFor[n] = uint8(parityNeeded(n, fecframe.MaxShards-sh.k, p, clump, float64(n)*ct.cfg.TargetResidual))
	}
	return sh
}

// parityNeeded is the least m in 1..maxM such that a group of n data and m parity
// datagrams loses more than m with probability at most target, when losses come
// in clumps of about `clump` datagrams at an overall rate p. The number of clumps
// hitting a group is taken as Poisson.
func parityNeeded(n, maxM int, p, clump, target float64) int {
	for m := 1; m < maxM; m++ {
		lambda := float64(n+m) * p / clump
		if poissonTail(lambda, int(float64(m)/clump)) <= target {
			return m
		}
	}
	return maxM
}

// poissonTail is P(X > j) for X ~ Poisson(lambda).
func poissonTail(lambda float64, j int) float64 {
	if lambda <= 0 {
		return 0
	}
	// Sum the terms above j directly: accurate for the small tails that matter.
	term := math.Exp(-lambda)
	for i := 1; i <= j; i++ {
		term *= lambda / float64(i)
	}
	var sum float64
	for i := j + 1; i < j+1000; i++ {
		term *= lambda / float64(i)
		sum += term
		if term < sum*1e-12 {
			break
		}
	}
	return sum
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
