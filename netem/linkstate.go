package netem

import (
	"math/rand/v2"
	"time"
)

// verdict is what the link does with one packet.
type verdict uint8

const (
	verdictDeliver   verdict = iota
	verdictLost              // lost on the wire (Loss or Burst)
	verdictQueueFull         // dropped at the tail of a full queue
)

// linkState is the pure decision part of one direction: given the (virtual) time a
// packet is offered and its size, when does it arrive, or why does it not. It keeps no
// clock and starts no goroutine, so tests can drive it with synthetic times and a fixed
// seed and get exact answers.
//
// The rate limiter is a fluid model of a FIFO bottleneck: busyUntil is when the
// serializer finishes everything admitted so far, so the backlog at time now is the
// bytes the rate carries in busyUntil-now. This is O(1) per packet and needs no queue of
// its own; the arrival times it hands out are exactly those of a packet-by-packet FIFO.
type linkState struct {
	model      Model
	queueLimit int64
	txNanosPer float64 // nanoseconds to serialize one byte, 0 without a rate

	rng         *rand.Rand
	burstBad    bool          // Gilbert-Elliott state
	busyUntil   time.Duration // serializer busy until (virtual time)
	lastArrival time.Duration // arrival of the last delivered packet, for FIFO jitter
}

func newLinkState(m Model, seed int64) *linkState {
	s := &linkState{rng: rand.New(rand.NewPCG(uint64(seed), uint64(seed)^0x9e3779b97f4a7c15))}
	s.setModel(m)
	return s
}

// setModel changes the impairment from now on. Packets already admitted keep their
// arrival times; the serializer backlog and the FIFO bound carry over.
func (s *linkState) setModel(m Model) {
	s.model = m
	s.queueLimit = m.queueLimit()
	s.txNanosPer = 0
	if m.RateBps > 0 {
		s.txNanosPer = 8e9 / float64(m.RateBps)
	}
	if m.Burst == nil {
		s.burstBad = false
	}
}

// admit decides the fate of a packet of size bytes offered at time now.
func (s *linkState) admit(now time.Duration, size int) (arrival time.Duration, v verdict) {
	m := &s.model
	departed := now // when its last bit leaves the bottleneck
	if s.txNanosPer > 0 {
		start := max(now, s.busyUntil)
		if backlog := int64(float64(start-now) / s.txNanosPer); backlog+int64(size) > s.queueLimit {
			return 0, verdictQueueFull
		}
		s.busyUntil = start + time.Duration(float64(size)*s.txNanosPer)
		departed = s.busyUntil
	}
	if s.lost() {
		return 0, verdictLost
	}
	delay := m.Delay
	if m.Jitter > 0 {
		delay += time.Duration((s.rng.Float64()*2 - 1) * float64(m.Jitter))
		delay = max(delay, 0)
	}
	arrival = departed + delay
	if !m.Reorder {
		arrival = max(arrival, s.lastArrival)
	}
	s.lastArrival = max(s.lastArrival, arrival)
	return arrival, verdictDeliver
}

// lost draws random and bursty loss for one packet. Either may drop it.
func (s *linkState) lost() bool {
	m := &s.model
	lost := m.Loss > 0 && s.rng.Float64() < m.Loss
	if g := m.Burst; g != nil {
		// Move first, then draw in the new state: a burst's first packet is lost in Bad.
		if s.burstBad {
			if s.rng.Float64() < g.R {
				s.burstBad = false
			}
		} else if s.rng.Float64() < g.P {
			s.burstBad = true
		}
		p := g.LossGood
		if s.burstBad {
			p = g.LossBad
		}
		if p > 0 && s.rng.Float64() < p {
			lost = true
		}
	}
	return lost
}
