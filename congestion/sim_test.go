package congestion

import (
	"math/rand/v2"
	"slices"
	"time"

	qcc "github.com/quic-go/quic-go/congestion"
)

// A path simulated packet by packet on a clock of its own, so that a test's
// verdict depends on the sender alone: a bottleneck of rate bits/s with a
// drop-tail queue, random loss behind it, a one-way delay of rtt/2 each way,
// every packet acked at once, and a packet declared lost when one sent
// lossAfter packets later is acked (quic-go's packet threshold).
type path struct {
	rate      float64 // bits per second
	rtt       time.Duration
	queue     time.Duration // the queue's capacity, in time at rate
	loss      float64
	app       func(now time.Duration) bool // whether the application has data; nil: always
	onSend    func(now time.Duration)      // called with each packet sent, if set
	lossAfter int
	// Every stallEvery the path stalls for stallFor: what arrives meanwhile is
	// delivered at its end (a busy emulator, a Wi-Fi retry), in order.
	stallEvery, stallFor time.Duration
	// jitter delays each packet's arrival by up to this much more, at random
	// (a scheduler, an emulator that forwards in batches); arrivals keep their order.
	jitter time.Duration
	// standing is a queue the sender did not cause (a loss-based sender beside it
	// keeps it full, a route got longer): every packet waits at least this long.
	standing time.Duration

	rng      *rand.Rand
	s        *Sender
	stats    rttStats
	now      time.Duration
	pn       qcc.PacketNumber
	inFlight qcc.ByteCount
	busy     time.Duration      // when the bottleneck is done with what it holds
	events   []event            // acks, by time
	lost     []qcc.PacketNumber // lost packets quic-go has not declared yet

	delivered   qcc.ByteCount // bytes the receiver got
	queueDrops  int
	randomDrops int
	maxQueue    time.Duration
	queueSum    time.Duration // queueing delay of every packet sent, summed
	sent        int
	waits       []time.Duration // each packet's queueing delay, once set non-nil
}

type event struct {
	at    time.Duration
	pn    qcc.PacketNumber
	sent  time.Duration
	bytes qcc.ByteCount
}

const simMSS = 1252

func newPath(rate float64, rtt, queue time.Duration, loss float64) *path {
	p := &path{rate: rate, rtt: rtt, queue: queue, loss: loss, lossAfter: 3, rng: rand.New(rand.NewPCG(1, 2))}
	p.s = New(&p.stats, simMSS).(*Sender)
	return p
}

// clock is the simulated time on quic-go's clock; it starts past 0, which the
// sender reads as never.
func (p *path) clock() qcc.Time { return qcc.Time(p.now + time.Second) }

// run simulates until d has passed.
func (p *path) run(d time.Duration) {
	end := p.now + d
	for p.now < end {
		p.deliverEvents()
		if (p.app == nil || p.app(p.now)) && p.s.CanSend(p.inFlight) && p.s.HasPacingBudget(p.clock()) {
			p.send()
			continue
		}
		next := end
		if len(p.events) > 0 {
			next = min(next, p.events[0].at)
		}
		if p.s.CanSend(p.inFlight) {
			if t := p.s.TimeUntilSend(p.inFlight); t != 0 {
				next = min(next, max(time.Duration(t)-time.Second, p.now+time.Microsecond))
			} else {
				next = min(next, p.now+time.Millisecond)
			}
		}
		p.now = max(next, p.now+time.Microsecond)
	}
}

func (p *path) send() {
	p.pn++
	p.inFlight += simMSS
	p.s.OnPacketSent(p.clock(), p.inFlight, p.pn, simMSS, true)
	p.sent++
	if p.onSend != nil {
		p.onSend(p.now)
	}
	serve := time.Duration(float64(simMSS*8) / p.rate * float64(time.Second))
	start := max(p.busy, p.now, p.now+p.standing)
	wait := start - p.now
	switch {
	case wait > p.queue:
		p.queueDrops++
		p.lost = append(p.lost, p.pn)
		return
	case p.rng.Float64() < p.loss:
		p.randomDrops++
		p.lost = append(p.lost, p.pn)
	default:
		at := p.stall(start + serve + p.rtt)
		if p.jitter > 0 {
			at += time.Duration(p.rng.Int64N(int64(p.jitter)))
			if n := len(p.events); n > 0 {
				at = max(at, p.events[n-1].at)
			}
		}
		p.insert(event{at: at, pn: p.pn, sent: p.now, bytes: simMSS})
	}
	p.busy = start + serve
	p.maxQueue = max(p.maxQueue, wait)
	p.queueSum += wait
	if p.waits != nil {
		p.waits = append(p.waits, wait)
	}
}

func (p *path) stall(at time.Duration) time.Duration {
	if p.stallEvery == 0 {
		return at
	}
	if in := at % p.stallEvery; in < p.stallFor {
		return at + p.stallFor - in
	}
	return at
}

func (p *path) insert(ev event) {
	i := len(p.events)
	for i > 0 && p.events[i-1].at > ev.at {
		i--
	}
	p.events = append(p.events, event{})
	copy(p.events[i+1:], p.events[i:])
	p.events[i] = ev
}

func (p *path) deliverEvents() {
	for len(p.events) > 0 && p.events[0].at <= p.now {
		ev := p.events[0]
		p.events = p.events[1:]
		p.delivered += ev.bytes
		p.stats.update(p.now - ev.sent)
		prior := p.inFlight
		p.inFlight -= ev.bytes
		p.s.OnPacketAcked(ev.pn, ev.bytes, prior, p.clock())
		p.declareLosses(ev.pn, prior)
	}
}

// declareLosses: a lost packet is declared once one sent lossAfter packets
// after it is acked (acks come in order here: one queue, one delay).
func (p *path) declareLosses(acked qcc.PacketNumber, prior qcc.ByteCount) {
	n := 0
	for _, pn := range p.lost {
		if pn > acked-qcc.PacketNumber(p.lossAfter) {
			break
		}
		p.inFlight -= simMSS
		p.s.OnCongestionEvent(pn, simMSS, prior)
		n++
	}
	p.lost = p.lost[n:]
}

// goodput is what the receiver got over d, in bits per second.
func goodput(bytes qcc.ByteCount, d time.Duration) float64 {
	return float64(bytes*8) / d.Seconds()
}

// rttStats is quic-go's RTT bookkeeping as far as the sender reads it.
type rttStats struct{ min, smoothed, latest time.Duration }

func (r *rttStats) MinRTT() time.Duration      { return r.min }
func (r *rttStats) SmoothedRTT() time.Duration { return r.smoothed }
func (r *rttStats) LatestRTT() time.Duration   { return r.latest }

func (r *rttStats) update(sample time.Duration) {
	r.latest = sample
	if r.min == 0 || sample < r.min {
		r.min = sample
	}
	if r.smoothed == 0 {
		r.smoothed = sample
	} else {
		r.smoothed = (7*r.smoothed + sample) / 8
	}
}

// quantile is the q-quantile of ds (sorted in place).
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(int(q*float64(len(ds))), len(ds)-1)]
}
