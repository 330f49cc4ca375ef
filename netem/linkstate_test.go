package netem

import (
	"math"
	"testing"
	"time"
)

// These tests drive the decision logic with synthetic times, so every tolerance below
// is about randomness (fixed seed), never about the machine's timing.

func TestRandomLossRate(t *testing.T) {
	const n = 200_000
	for _, loss := range []float64{0.001, 0.01, 0.05, 0.3} {
		s := newLinkState(Model{Loss: loss}, 1)
		lost := 0
		for i := range n {
			if _, v := s.admit(time.Duration(i), 1200); v == verdictLost {
				lost++
			}
		}
		got := float64(lost) / n
		// 4 standard deviations of a binomial proportion.
		tol := 4 * math.Sqrt(loss*(1-loss)/n)
		if math.Abs(got-loss) > tol {
			t.Errorf("loss %v: measured %v, tolerance %v", loss, got, tol)
		}
	}
}

func TestBurstLossMeanBurst(t *testing.T) {
	const n = 500_000
	g, err := NewBurstLoss(0.02, 3)
	if err != nil {
		t.Fatal(err)
	}
	s := newLinkState(Model{Burst: g}, 7)
	lost, bursts, run := 0, 0, 0
	for i := range n {
		_, v := s.admit(time.Duration(i), 1200)
		if v == verdictLost {
			lost++
			run++
			continue
		}
		if run > 0 {
			bursts++
			run = 0
		}
	}
	avg := float64(lost) / n
	mean := float64(lost) / float64(bursts)
	if math.Abs(avg-0.02) > 0.002 {
		t.Errorf("average loss %v, want 0.02 +- 0.002", avg)
	}
	if math.Abs(mean-3) > 0.15 {
		t.Errorf("mean burst %v packets, want 3 +- 0.15", mean)
	}
}

func TestDelayWithoutRate(t *testing.T) {
	s := newLinkState(Model{Delay: 25 * time.Millisecond}, 1)
	for _, now := range []time.Duration{0, time.Millisecond, time.Second} {
		at, v := s.admit(now, 1500)
		if v != verdictDeliver || at != now+25*time.Millisecond {
			t.Errorf("sent at %v: arrival %v verdict %v, want %v", now, at, v, now+25*time.Millisecond)
		}
	}
}

func TestJitterBoundsAndFIFO(t *testing.T) {
	const delay, jitter = 20 * time.Millisecond, 5 * time.Millisecond
	// Sparse: packets 20 ms apart never meet, so each delay is exactly delay +- jitter.
	s := newLinkState(Model{Delay: delay, Jitter: jitter}, 3)
	var minD, maxD time.Duration = time.Hour, 0
	for i := range 10_000 {
		now := time.Duration(i) * 20 * time.Millisecond
		at, _ := s.admit(now, 1200)
		minD, maxD = min(minD, at-now), max(maxD, at-now)
	}
	if minD < delay-jitter || minD > delay-jitter+100*time.Microsecond ||
		maxD > delay+jitter || maxD < delay+jitter-100*time.Microsecond {
		t.Errorf("delays span [%v, %v], want [%v, %v]", minD, maxD, delay-jitter, delay+jitter)
	}
	// Dense: 0.1 ms apart, jitter would reorder; FIFO holds a packet back behind its
	// predecessor instead, and never delivers one early.
	s = newLinkState(Model{Delay: delay, Jitter: jitter}, 3)
	var last time.Duration
	for i := range 10_000 {
		now := time.Duration(i) * 100 * time.Microsecond
		at, v := s.admit(now, 1200)
		if v != verdictDeliver || at < last || at-now < delay-jitter {
			t.Fatalf("packet %d sent %v: arrival %v (verdict %v), predecessor %v", i, now, at, v, last)
		}
		last = at
	}
}

func TestJitterReordersOnlyWhenAsked(t *testing.T) {
	s := newLinkState(Model{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond, Reorder: true}, 3)
	var last time.Duration
	reordered := 0
	for i := range 1000 {
		at, _ := s.admit(time.Duration(i)*100*time.Microsecond, 1200)
		if at < last {
			reordered++
		}
		last = at
	}
	if reordered == 0 {
		t.Error("Reorder set, 5 ms jitter, 0.1 ms spacing: no packet overtook another")
	}
}

func TestRateSerialization(t *testing.T) {
	// 10 Mbit/s: a 1250-byte packet takes exactly 1 ms on the wire.
	s := newLinkState(Model{RateBps: 10e6, QueueBytes: 1 << 30, Delay: 5 * time.Millisecond}, 1)
	for i := range 1000 {
		at, v := s.admit(0, 1250) // a burst at t=0
		want := time.Duration(i+1)*time.Millisecond + 5*time.Millisecond
		if v != verdictDeliver || absDuration(at-want) > time.Microsecond {
			t.Fatalf("packet %d: arrival %v verdict %v, want %v", i, at, v, want)
		}
	}
	// Paced below the rate, packets see no queueing: arrival = send + tx + delay.
	s = newLinkState(Model{RateBps: 10e6}, 1)
	for i := range 100 {
		now := time.Duration(i) * 2 * time.Millisecond
		if at, _ := s.admit(now, 1250); absDuration(at-(now+time.Millisecond)) > time.Microsecond {
			t.Fatalf("paced packet %d: arrival %v, want %v", i, at, now+time.Millisecond)
		}
	}
}

func TestRateThroughputUnderOverload(t *testing.T) {
	// Offer 2x the rate for 1 s; delivered bytes must match the rate within 1%.
	const rate = 100e6
	s := newLinkState(Model{RateBps: rate, QueueDelay: 20 * time.Millisecond}, 1)
	var delivered int64
	var lastArrival time.Duration
	for now := time.Duration(0); now < time.Second; now += 60 * time.Microsecond { // 1500 B / 60 us = 200 Mbit/s
		if at, v := s.admit(now, 1500); v == verdictDeliver {
			delivered += 1500
			lastArrival = at
		}
	}
	got := float64(delivered*8) / lastArrival.Seconds()
	if math.Abs(got/rate-1) > 0.01 {
		t.Errorf("throughput %.2f Mbit/s, want 100 +- 1%%", got/1e6)
	}
}

func TestQueueDropTail(t *testing.T) {
	// 8 Mbit/s = 1 byte/us; queue 15000 bytes = ten 1500-byte packets.
	s := newLinkState(Model{RateBps: 8e6, QueueBytes: 15000}, 1)
	accepted, dropped := 0, 0
	for range 25 {
		if _, v := s.admit(0, 1500); v == verdictQueueFull {
			dropped++
		} else {
			accepted++
		}
	}
	if accepted != 10 || dropped != 15 {
		t.Errorf("burst of 25 into a 10-packet queue: %d accepted, %d dropped", accepted, dropped)
	}
	// After 3 packet times, exactly 3 more fit.
	accepted = 0
	for range 5 {
		if _, v := s.admit(4500*time.Microsecond, 1500); v == verdictDeliver {
			accepted++
		}
	}
	if accepted != 3 {
		t.Errorf("after the queue drained by 3 packets: %d accepted, want 3", accepted)
	}
}

func TestLostPacketsUseCapacity(t *testing.T) {
	s := newLinkState(Model{RateBps: 8e6, QueueBytes: 1 << 20, Loss: 0.5}, 9)
	var arrivals []time.Duration
	for range 100 {
		if at, v := s.admit(0, 1000); v == verdictDeliver {
			arrivals = append(arrivals, at)
		}
	}
	if s.busyUntil != 100*time.Millisecond {
		t.Errorf("serializer busy until %v after 100 x 1 ms packets, want 100ms", s.busyUntil)
	}
	if len(arrivals) == 0 || len(arrivals) == 100 {
		t.Fatalf("%d of 100 delivered at 50%% loss", len(arrivals))
	}
}

func TestDeterministicGivenSeed(t *testing.T) {
	m := Model{Loss: 0.1, Jitter: time.Millisecond, Delay: 5 * time.Millisecond, Burst: &GilbertElliott{P: 0.01, R: 0.3, LossBad: 0.8}}
	run := func(seed int64) []time.Duration {
		s := newLinkState(m, seed)
		var out []time.Duration
		for i := range 2000 {
			at, v := s.admit(time.Duration(i)*time.Millisecond, 1000)
			out = append(out, at+time.Duration(v)) // a lost packet shows as its verdict
		}
		return out
	}
	a, b, c := run(42), run(42), run(43)
	same := func(x, y []time.Duration) bool {
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	if !same(a, b) {
		t.Error("same seed, different outcomes")
	}
	if same(a, c) {
		t.Error("different seeds, identical outcomes")
	}
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}
