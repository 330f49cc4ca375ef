package congestion

import (
	"sort"
	"time"

	qcc "github.com/quic-go/quic-go/congestion"
)

// pacer is a token bucket: it refills at the pacing rate and holds at most a
// burst of about a millisecond of sending (10 packets at least), as quic-go's
// own pacer does.
type pacer struct {
	mss      qcc.ByteCount
	left     qcc.ByteCount // budget at the last send
	lastSent qcc.Time
}

const (
	burstPackets = 10
	burstTime    = 2 * time.Millisecond
	// pacingTick is the shortest wait quic-go is asked for; shorter gaps are sent
	// as bursts (its timers do not go finer).
	pacingTick = time.Millisecond
)

func (p *pacer) maxBurst(rate float64) qcc.ByteCount {
	return max(qcc.ByteCount(rate*burstTime.Seconds()), burstPackets*p.mss)
}

func (p *pacer) budget(now qcc.Time, rate float64) qcc.ByteCount {
	if p.lastSent == 0 {
		return p.maxBurst(rate)
	}
	b := float64(p.left)
	if d := now.Sub(p.lastSent); d > 0 {
		b += rate * d.Seconds()
	}
	return qcc.ByteCount(min(b, float64(p.maxBurst(rate))))
}

func (p *pacer) sent(now qcc.Time, bytes qcc.ByteCount, rate float64) {
	p.left = max(p.budget(now, rate)-bytes, 0)
	p.lastSent = now
}

// timeUntilSend is when the budget next holds a packet; 0 for now.
func (p *pacer) timeUntilSend(rate float64) qcc.Time {
	if p.lastSent == 0 || p.left >= p.mss || rate <= 0 {
		return 0
	}
	wait := time.Duration(float64(p.mss-p.left) / rate * float64(time.Second))
	return p.lastSent.Add(max(wait+1, pacingTick))
}

// maxFilter is the largest sample of the last few rounds (Kathleen Nichols'
// windowed min/max, as BBR keeps it): the best, second and third best samples
// in the window, so that the maximum ages out in steps rather than at once.
type maxFilter struct {
	s [3]struct {
		v     float64
		round int64
	}
}

func (f *maxFilter) get() float64 { return f.s[0].v }

// reset forgets every sample but v.
func (f *maxFilter) reset(v float64, round int64) {
	for i := range f.s {
		f.s[i].v, f.s[i].round = v, round
	}
}

func (f *maxFilter) update(v float64, round, window int64) {
	type sample = struct {
		v     float64
		round int64
	}
	n := sample{v, round}
	if v >= f.s[0].v || round-f.s[2].round > window {
		f.s = [3]sample{n, n, n}
		return
	}
	if v >= f.s[1].v {
		f.s[1], f.s[2] = n, n
	} else if v >= f.s[2].v {
		f.s[2] = n
	}
	// Age the best out, a quarter and a half of the window on.
	if round-f.s[0].round > window {
		f.s[0], f.s[1], f.s[2] = f.s[1], f.s[2], n
		if round-f.s[0].round > window {
			f.s[0], f.s[1] = f.s[1], f.s[2]
		}
		return
	}
	if dt := round - f.s[0].round; f.s[1].round == f.s[0].round && dt > window/4 {
		f.s[1], f.s[2] = n, n
	} else if f.s[2].round == f.s[1].round && dt > window/2 {
		f.s[2] = n
	}
}

// sentPacket is what a rate sample needs of a packet in flight.
type sentPacket struct {
	pn            qcc.PacketNumber
	sent          qcc.Time
	delivered     qcc.ByteCount
	deliveredTime qcc.Time
	firstSentTime qcc.Time
	appLimited    bool
	done          bool
}

// sentLog holds the packets in flight in the order they were sent (packet
// numbers grow, with gaps): a slice from the oldest not yet acked or lost, so
// its memory follows what is in flight.
type sentLog struct {
	packets []sentPacket
	head    int
}

func (l *sentLog) add(p sentPacket) {
	if l.head > 0 && l.head*2 >= len(l.packets) {
		n := copy(l.packets, l.packets[l.head:])
		l.packets = l.packets[:n]
		l.head = 0
	}
	l.packets = append(l.packets, p)
}

func (l *sentLog) remove(pn qcc.PacketNumber) (sentPacket, bool) {
	live := l.packets[l.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].pn >= pn })
	if i == len(live) || live[i].pn != pn || live[i].done {
		return sentPacket{}, false
	}
	p := live[i]
	live[i].done = true
	for l.head < len(l.packets) && l.packets[l.head].done {
		l.head++
	}
	if l.head == len(l.packets) {
		l.packets, l.head = l.packets[:0], 0
	}
	return p, true
}
