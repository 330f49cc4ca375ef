package recovery

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/quictun/quictun/codecs/fecframe"
)

func TestParseConfig(t *testing.T) {
	good := []struct {
		in   string
		want Config
	}{
		{"off", Config{Mode: Off}},
		{"OFF", Config{Mode: Off}},
		{"auto", Config{Mode: Auto}},
		{"", Config{Mode: Auto}},
		{"10,3", Config{Mode: Fixed, Data: 10, Parity: 3}},
		{" 20 , 5 ", Config{Mode: Fixed, Data: 20, Parity: 5}},
		{"255,1", Config{Mode: Fixed, Data: 255, Parity: 1}},
	}
	for _, g := range good {
		got, err := ParseConfig(g.in)
		if err != nil {
			t.Fatalf("ParseConfig(%q): %v", g.in, err)
		}
		if got != g.want {
			t.Fatalf("ParseConfig(%q) = %+v, want %+v", g.in, got, g.want)
		}
		if g.want.Mode != Auto || g.in == "auto" {
			if again, err := ParseConfig(got.String()); err != nil || again != got {
				t.Fatalf("%q does not round-trip through String: %q", g.in, got.String())
			}
		}
	}
	bad := []struct{ in, want string }{
		{"on", "want off, auto, or K,M"},
		{"10", "want off, auto, or K,M"},
		{"x,3", `data count "x"`},
		{"10,y", `parity count "y"`},
		{"0,3", "data count 0"},
		{"10,0", "parity count 0"},
		{"200,57", "data+parity = 257"},
		{"-1,2", "data count -1"},
	}
	for _, b := range bad {
		_, err := ParseConfig(b.in)
		if err == nil {
			t.Fatalf("ParseConfig(%q) accepted", b.in)
		}
		if !strings.Contains(err.Error(), b.want) || !strings.Contains(err.Error(), b.in) {
			t.Fatalf("ParseConfig(%q): error %q should name the value and say %q", b.in, err, b.want)
		}
	}
}

func TestValidateNamesTheSetting(t *testing.T) {
	bad := []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: Mode(7)}, "mode 7"},
		{Config{Mode: Auto, Data: 200}, "largest auto group"},
		{Config{Mode: Auto, GroupSpan: -1}, "group span"},
		{Config{Mode: Auto, TargetResidual: 0.5}, "target residual"},
		{Config{Mode: Auto, MaxPeers: -1}, "max peers"},
	}
	for _, b := range bad {
		err := b.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Fatalf("Validate(%+v) = %v, want an error about %q", b.cfg, err, b.want)
		}
		if _, err := NewConn(nil, b.cfg); err == nil {
			t.Fatal("NewConn accepted a nil PacketConn")
		}
	}
}

// poissonTail is P(X > j) for X ~ Poisson(lambda): the reference burstTail must
// match when there are no bursts.
func poissonTail(lambda float64, j int) float64 {
	if lambda <= 0 {
		return 0
	}
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

func TestPoissonTail(t *testing.T) {
	// P(X > 0) = 1 - e^-l; P(X > 2) for l = 1 is 1 - e^-1 (1 + 1 + 1/2).
	if got, want := poissonTail(0.5, 0), 1-math.Exp(-0.5); math.Abs(got-want) > 1e-12 {
		t.Fatalf("P(X>0 | 0.5) = %v, want %v", got, want)
	}
	if got, want := poissonTail(1, 2), 1-math.Exp(-1)*2.5; math.Abs(got-want) > 1e-12 {
		t.Fatalf("P(X>2 | 1) = %v, want %v", got, want)
	}
	if poissonTail(0, 3) != 0 {
		t.Fatal("no loss, no tail")
	}
}

func TestParityNeeded(t *testing.T) {
	// More loss, more parity; the chosen m meets the target and m-1 does not.
	prev := 0
	for _, p := range []float64{0.001, 0.01, 0.05, 0.1, 0.2} {
		m := parityNeeded(64, 192, p, 1, 1, 64e-5)
		if m < prev {
			t.Fatalf("parity %d at loss %v is less than %d at a lower loss", m, p, prev)
		}
		prev = m
		if burstTail(64+m, p, 1, 1, m) > 64e-5 {
			t.Fatalf("loss %v: m=%d misses the target", p, m)
		}
		if m > 1 && burstTail(64+m-1, p, 1, 1, m-1) <= 64e-5 {
			t.Fatalf("loss %v: m=%d is more than needed", p, m)
		}
	}
	// Small groups need relatively more parity.
	if small, big := float64(parityNeeded(8, 200, 0.05, 1, 1, 8e-5))/8, float64(parityNeeded(64, 192, 0.05, 1, 1, 64e-5))/64; small <= big {
		t.Fatalf("overhead of a group of 8 (%.2f) is not above that of 64 (%.2f)", small, big)
	}
	// Bursts need more parity than the same loss spread evenly; interleaving
	// gives some of it back.
	even := parityNeeded(64, 192, 0.02, 1, 1, 64e-5)
	bursty := parityNeeded(64, 192, 0.02, 3, 1, 64e-5)
	spread := parityNeeded(64, 192, 0.02, 3, 3, 64e-5)
	if !(bursty > even && spread < bursty) {
		t.Fatalf("2%% loss: even %d, bursts of 3 %d, interleaved by 3 %d", even, bursty, spread)
	}
	if m := parityNeeded(64, 10, 0.9, 1, 1, 1e-9); m != 10 {
		t.Fatalf("parity %d is not capped at 10", m)
	}
}

// TestBurstTail: without bursts the tail is Poisson's; with bursts of fixed
// geometric length it matches a simulation.
func TestBurstTail(t *testing.T) {
	for _, c := range []struct {
		g, j int
		p    float64
	}{{70, 3, 0.01}, {86, 22, 0.1}, {10, 0, 0.05}} {
		got, want := burstTail(c.g, c.p, 1, 1, c.j), poissonTail(float64(c.g)*c.p, c.j)
		if math.Abs(got-want) > 1e-9+1e-6*want {
			t.Fatalf("g=%d j=%d p=%v: %v, Poisson says %v", c.g, c.j, c.p, got, want)
		}
	}
	// Simulate a Gilbert channel (bursts of mean 3, 2% loss) feeding 3
	// interleaved groups of 40, and count groups with more than 6 losses.
	rng := rand.New(rand.NewPCG(7, 7))
	const d, g, j, runs = 3, 40, 6, 200000
	r := 1.0 / 3
	pGB := 0.02 * r / 0.98
	bad := false
	var over int
	for range runs {
		var losses [d]int
		for i := range d * g {
			if bad {
				bad = rng.Float64() >= r
			} else {
				bad = rng.Float64() < pGB
			}
			if bad {
				losses[i%d]++
			}
		}
		if losses[0] > j {
			over++
		}
	}
	sim := float64(over) / runs
	model := burstTail(g, 0.02, 3, d, j)
	if sim == 0 || model < sim/3 || model > sim*3 {
		t.Fatalf("P(more than %d lost): model %.2e, simulation %.2e", j, model, sim)
	}
}

func TestSeqTracker(t *testing.T) {
	var tr seqTracker
	steps := []struct {
		seq  uint32
		want int
	}{
		{100, 0},
		{101, 0},
		{104, 2},  // 102, 103 missing
		{103, -1}, // late
		{103, 0},  // duplicate
		{105, 0},
		{105 + seqWindow, seqWindow - 1},
	}
	for _, s := range steps {
		if got := tr.arrive(s.seq); got != s.want {
			t.Fatalf("arrive(%d) = %d, want %d", s.seq, got, s.want)
		}
	}
	// A sender that starts over far behind is followed, not ignored.
	restart := tr.highest - 100000
	if got := tr.arrive(restart); got != 0 || tr.highest != restart {
		t.Fatalf("restart: gap %d, highest %d", got, tr.highest)
	}
	if got := tr.arrive(restart + 2); got != 1 {
		t.Fatalf("after a restart: %d missing, want 1", got)
	}
	// Wrap-around of the 32-bit space is a step like any other.
	var w seqTracker
	w.arrive(math.MaxUint32 - 1)
	if got := w.arrive(1); got != 2 {
		t.Fatalf("across the wrap: %d missing, want 2", got)
	}
}

// TestPathMonitor: random loss on an empty queue is random; a loss while the queue
// has sat at its ceiling, deep against the round trip, for a round trip is
// congestion; a short spike is not.
func TestPathMonitor(t *testing.T) {
	const minRTT = 50 * time.Millisecond
	var m pathMonitor
	now := time.Second
	ts := uint32(0)
	// feed samples with queueing delay q for d, one every 100 µs
	feed := func(q, d time.Duration) queueState {
		var st queueState
		for end := now + d; now < end; now += 100 * time.Microsecond {
			ts = stamp(now) - uint32(q/time.Microsecond) - 7 // the sender's clock is offset
			st = m.sample(ts, now, minRTT)
		}
		return st
	}
	if st := feed(0, 200*time.Millisecond); st != queueClear {
		t.Fatalf("empty queue: state %v", st)
	}
	// A machine stall: 40 ms of delay for 10 ms.
	if st := feed(40*time.Millisecond, 10*time.Millisecond); st == queueFull {
		t.Fatal("a 10 ms spike passed for a full queue")
	}
	feed(0, 100*time.Millisecond)
	// The queue fills to 50 ms and stays there.
	feed(25*time.Millisecond, 200*time.Millisecond)
	if st := feed(50*time.Millisecond, 100*time.Millisecond); st != queueFull {
		t.Fatalf("queue at its ceiling for 100 ms: state %v", st)
	}
	// Half-way down it is clear again.
	if st := feed(20*time.Millisecond, 100*time.Millisecond); st != queueClear {
		t.Fatalf("queue at 40%% of its ceiling: state %v", st)
	}
	// Without a known round trip nothing is congestion.
	var fresh pathMonitor
	for i := range 1000 {
		now += 100 * time.Microsecond
		if st := fresh.sample(stamp(now)-uint32(i*50), now, 0); st == queueFull {
			t.Fatal("congestion without a round-trip estimate")
		}
	}
}

func TestShapeFollowsEstimate(t *testing.T) {
	ct := newController(Config{Mode: Auto}.withDefaults())
	prior := ct.shape()
	if prior.k != untrainedData || prior.span != initialGroupSpan {
		t.Fatalf("prior shape k=%d span=%v", prior.k, prior.span)
	}
	for n := 2; n <= prior.k; n++ {
		if prior.mFor[n] < prior.mFor[n-1] {
			t.Fatalf("parity for %d data (%d) below that for %d (%d)", n, prior.mFor[n], n-1, prior.mFor[n-1])
		}
	}
	// Feed 10% loss in runs of 3 until the estimate settles.
	var fb fecframe.Feedback
	now := time.Duration(0)
	var sent uint64
	ct.onFeedback(&fb, now, 40*time.Millisecond, sent)
	for range 100 {
		now += 25 * time.Millisecond
		sent += 250 // 10000 datagrams a second
		fb.Sampled += 225
		fb.Received += 225
		fb.Lost += 25
		fb.Bursts += 8
		ct.onFeedback(&fb, now, 40*time.Millisecond, sent)
	}
	if math.Abs(ct.loss-0.1) > 0.01 || math.Abs(ct.burst-3.1) > 0.2 || math.Abs(ct.rate-10000) > 500 {
		t.Fatalf("estimate loss %.3f burst %.2f rate %.0f/s, want 0.1, 3.1 and 10000/s", ct.loss, ct.burst, ct.rate)
	}
	sh := ct.shape()
	// Repairs for 10% loss in bursts of 3: at least 1.5 x 3 x the sizing loss.
	if want := 1 / (rlcMargin * 3 * ct.sizingLoss() / (1 - ct.sizingLoss())); sh.every > want*1.1 {
		t.Fatalf("a repair every %.1f sources at 10%% loss in bursts of 3, want at most %.1f", sh.every, want)
	}
	if sh.span != 5*time.Millisecond {
		t.Fatalf("span %v for a 40 ms round trip", sh.span)
	}
	if m := sh.mFor[sh.k]; m <= prior.mFor[prior.k] {
		t.Fatalf("parity %d at 10%% loss is not above the prior's %d", m, prior.mFor[prior.k])
	}
	// Once the peer says it has trained our quic-go, groups may be longer and
	// stay open for a quarter of the round trip.
	fb.Flags = fecframe.FeedbackTrained
	now += 25 * time.Millisecond
	if !ct.onFeedback(&fb, now, 40*time.Millisecond, sent) {
		t.Fatal("a trained peer does not reshape the groups")
	}
	tr := ct.shape()
	if tr.k != defaultAutoData || tr.span != 10*time.Millisecond {
		t.Fatalf("trained shape k=%d span=%v, want k=%d span=10ms", tr.k, tr.span, defaultAutoData)
	}
	// The point of longer groups: less parity per datagram for the same residual.
	if long, short := float64(tr.mFor[tr.k])/float64(tr.k), float64(tr.mFor[64])/64; long >= short {
		t.Fatalf("parity per datagram %.3f for %d, %.3f for 64", long, tr.k, short)
	}
	// On a LAN the shortest span is longer than a quarter of the round trip, so a
	// longer group would make its repairs too late even for a trained quic-go.
	lan := newController(Config{Mode: Auto}.withDefaults())
	lan.onFeedback(&fecframe.Feedback{Flags: fecframe.FeedbackTrained}, 0, time.Millisecond, 0)
	if k := lan.shape().k; k != untrainedData {
		t.Fatalf("trained LAN peer: groups of %d, want %d", k, untrainedData)
	}
	fixed := newController(Config{Mode: Fixed, Data: 10, Parity: 3}.withDefaults())
	fs := fixed.shape()
	if fs.k != 10 || fs.mFor[10] != 3 || fs.mFor[1] != 3 || math.Abs(fs.every-10.0/3) > 1e-9 {
		t.Fatalf("fixed shape %+v", fs)
	}
}

func TestTrainerHoldsAFewDatagramsOnceTheFlowIsUnderWay(t *testing.T) {
	const rtt = 40 * time.Millisecond
	short := []byte{0x40, 1, 2, 3} // a QUIC 1-RTT packet
	long := []byte{0xc0, 1, 2, 3}  // a handshake packet
	var tr trainer
	if h := tr.hold(short, 0, 0); h != 0 {
		t.Fatalf("held %v without a round-trip estimate", h)
	}
	// Busy traffic (a datagram every 100 us) from t=0: nothing is held during the
	// first trainAfter, then exactly trainRounds datagrams, far enough apart.
	var holds []time.Duration
	now := time.Duration(0)
	for ; now < 5*time.Second; now += 100 * time.Microsecond {
		if h := tr.hold(short, now, rtt); h > 0 {
			if h != time.Duration(trainHold*float64(rtt)) {
				t.Fatalf("held for %v, want %v", h, time.Duration(trainHold*float64(rtt)))
			}
			holds = append(holds, now)
		}
	}
	if len(holds) != trainRounds {
		t.Fatalf("%d rounds, want %d", len(holds), trainRounds)
	}
	if holds[0] < trainAfter {
		t.Fatalf("first round at %v, before the flow is %v old", holds[0], trainAfter)
	}
	for i := 1; i < len(holds); i++ {
		if gap := holds[i] - holds[i-1]; gap < time.Duration(trainHold*float64(rtt))+2*rtt {
			t.Fatalf("rounds %d and %d only %v apart", i-1, i, gap)
		}
	}
	if !tr.trained(now) {
		t.Fatal("not trained after every round")
	}
	// A new connection (its handshake) starts over.
	if h := tr.hold(long, now, rtt); h != 0 || tr.trained(now) {
		t.Fatalf("handshake packet held %v, trained %v", h, tr.trained(now))
	}
	// A trickle (one datagram per round trip, an idle ssh session) is never held:
	// nothing behind the held datagram would make quic-go declare it lost.
	for end := now + 10*time.Second; now < end; now += rtt {
		if h := tr.hold(short, now, rtt); h != 0 {
			t.Fatalf("held %v on a trickle", h)
		}
	}
}

// TestRampGuardEndsAnOvershootingSlowStart: the guard drops one datagram once a
// flow that is still ramping up on a large path builds a lasting queue, and
// never on a flow at a steady rate, on a small path, on a stall's passing
// backlog, or after quic-go has seen a loss.
func TestRampGuardEndsAnOvershootingSlowStart(t *testing.T) {
	const rtt = 200 * time.Millisecond
	short := []byte{0x40, 1, 2, 3} // a QUIC 1-RTT packet
	long := []byte{0xc0, 1, 2, 3}  // a handshake packet
	// run feeds rounds of one rtt each; perRound(r) datagrams arrive evenly spread
	// in round r and meet the queueing delay queue(r, i) (i-th of the round). It
	// returns the round and index of every drop.
	type at struct{ round, i int }
	run := func(g *slowStartGuard, rounds int, perRound func(int) int, queue func(r, i int) time.Duration, lossAt int) []at {
		var drops []at
		for r := range rounds {
			if r == lossAt {
				g.lossShown()
			}
			n := perRound(r)
			for i := range n {
				now := time.Duration(r)*rtt + time.Duration(i)*rtt/time.Duration(n)
				if g.drop(short, queue(r, i), now, rtt) {
					drops = append(drops, at{r, i})
				}
			}
		}
		return drops
	}
	// Slow start doubles from 32 a round until the path (capacity per round) is
	// full; from then on the queue grows by 0.1 ms a datagram.
	slowStart := func(capacity int) (func(int) int, func(r, i int) time.Duration) {
		per := func(r int) int { return min(32<<r, capacity) }
		q := func(r, i int) time.Duration {
			if 32<<r < capacity {
				return 0
			}
			full := 0
			for 32<<full < capacity {
				full++
			}
			return time.Duration((r-full)*capacity+i) * 100 * time.Microsecond
		}
		return per, q
	}
	never := -1

	var g slowStartGuard
	per, q := slowStart(1500)
	drops := run(&g, 12, per, q, never)
	if len(drops) != 1 {
		t.Fatalf("slow start on a large path: drops at %v, want one", drops)
	}
	// rampQueue(200 ms) is 16 ms, reached at the 160th datagram of the full
	// round and held for 16 ms (120 datagrams at 1500 a round) after that.
	if d := drops[0]; d.round != 6 || d.i < 160+120 || d.i > 160+130 {
		t.Fatalf("dropped at round %d datagram %d, want round 6 datagram ~280", d.round, d.i)
	}
	// A new connection arms it again.
	g.drop(long, 0, 12*rtt, rtt)
	if drops := run(&g, 12, per, q, never); len(drops) != 1 {
		t.Fatalf("after a reconnection: drops at %v, want one", drops)
	}

	// quic-go saw a loss before the queue built up: slow start is over already.
	g = slowStartGuard{}
	if drops := run(&g, 12, per, q, 3); len(drops) != 0 {
		t.Fatalf("after a loss: drops at %v", drops)
	}

	// A small path: an overshoot stays under quic-go's gap limit.
	g = slowStartGuard{}
	per, q = slowStart(400)
	if drops := run(&g, 12, per, q, never); len(drops) != 0 {
		t.Fatalf("on a path of 400 datagrams a round: drops at %v", drops)
	}

	// A steady flow whose queue builds (congestion avoidance, or a flow that left
	// slow start on its own): not the guard's business.
	g = slowStartGuard{}
	steady := func(int) int { return 1500 }
	if drops := run(&g, 12, steady, func(r, i int) time.Duration { return time.Duration(r*1500+i) * 10 * time.Microsecond }, never); len(drops) != 0 {
		t.Fatalf("steady flow: drops at %v", drops)
	}

	// A ramp held at a plateau (the sender's flow-control window, not its congestion
	// window, stops it a little above the path): the queue holds still at 20 ms, and
	// a cut would only shrink the window below the path. When the window opens
	// again, the queue grows and the guard drops.
	g = slowStartGuard{}
	per, _ = slowStart(1500)
	plateau := func(r, i int) time.Duration {
		switch {
		case r < 6:
			return 0
		case r < 9:
			return 20 * time.Millisecond
		}
		return 20*time.Millisecond + time.Duration((r-9)*1500+i)*100*time.Microsecond
	}
	drops = run(&g, 12, per, plateau, never)
	if len(drops) != 1 || drops[0].round != 9 {
		t.Fatalf("a plateau, then growth: drops at %v, want one in round 9", drops)
	}

	// A stall in the middle of a ramp: 200 datagrams come in late by up to 50 ms
	// all at once (1 us apart), then the delay is gone.
	g = slowStartGuard{}
	per, _ = slowStart(1500)
	stalled := func(r, i int) time.Duration {
		if r == 5 && i >= 500 && i < 700 {
			return time.Duration(700-i) * 250 * time.Microsecond
		}
		return 0
	}
	var stallDrops []at
	for r := range 8 {
		n := per(r)
		for i := range n {
			now := time.Duration(r)*rtt + time.Duration(i)*rtt/time.Duration(n)
			if r == 5 && i >= 500 && i < 700 {
				now = time.Duration(r)*rtt + 500*rtt/time.Duration(n) + time.Duration(i-500)*time.Microsecond
			}
			if g.drop(short, stalled(r, i), now, rtt) {
				stallDrops = append(stallDrops, at{r, i})
			}
		}
	}
	if len(stallDrops) != 0 {
		t.Fatalf("a stall's backlog: drops at %v", stallDrops)
	}
}
