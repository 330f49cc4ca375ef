// Package netem emulates an impaired network link: one-way delay, jitter, random and
// bursty (Gilbert-Elliott) loss, and a rate limit behind a bounded drop-tail queue.
//
// The impairment of one direction is a [Model]. A [Pipe] applies a Model to a stream of
// packets and hands each survivor to a delivery function at its arrival time; it is the
// one implementation shared by the in-process [PacketConn] (for go test, no root) and
// the host-level emulator in netem/host (TUN devices between network namespaces).
package netem

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Model is the impairment of ONE direction of a link. The zero Model is a perfect link:
// packets pass at once, in order, none lost.
//
// Order of effects for each packet, as on a real path: it joins the drop-tail queue in
// front of the bottleneck (or is dropped when the queue is full), is serialized at
// RateBps, may be lost on the wire (Loss, Burst: lost packets did use link capacity, so
// at most RateBps x (1 - loss) of packets arrive), then arrives Delay +- Jitter later.
//
// RateBps counts the bytes of each packet as the emulator is handed it: whole IP
// packets in netem/host (both backends), datagram payloads in PacketConn (without the
// 28 bytes of IP and UDP header). So across netem/host, TCP payload can reach at most
// 1448/1500 of RateBps at MTU 1500 (20 bytes of IP header, 20 of TCP, 12 of timestamps).
type Model struct {
	Delay  time.Duration // one-way base delay
	Jitter time.Duration // uniform +-Jitter added to Delay; packets stay FIFO unless Reorder
	// Reorder lets jitter reorder packets (a later packet with a smaller draw overtakes).
	// Without it, a packet never arrives before the one sent ahead of it.
	Reorder bool
	Loss    float64         // random loss probability 0..1
	Burst   *GilbertElliott // optional bursty loss, in addition to Loss
	RateBps int64           // bits per second of packet bytes (see above); 0 = unlimited
	// QueueBytes bounds the drop-tail queue in front of the rate limiter. 0 means: derive
	// from QueueDelay, else one bandwidth-delay product (RTT taken as 2 x Delay) but at
	// least DefaultMinQueueBytes. Only meaningful with RateBps > 0.
	QueueBytes int
	QueueDelay time.Duration // the queue limit expressed as time at RateBps (used when QueueBytes is 0)
}

// Link is both directions of a path between a client and a server.
type Link struct {
	Up   Model // client -> server
	Down Model // server -> client
}

// Validate checks both directions.
func (l Link) Validate() error {
	if err := l.Up.Validate(); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := l.Down.Validate(); err != nil {
		return fmt.Errorf("down: %w", err)
	}
	return nil
}

// Symmetric is a Link with the same model in both directions.
func Symmetric(m Model) Link { return Link{Up: m, Down: m} }

// DefaultMinQueueBytes is the smallest derived queue: about 43 full-size packets, so that
// a tiny bandwidth-delay product still leaves room for a TCP burst.
const DefaultMinQueueBytes = 64 << 10

// maxModelDuration bounds delays and jitter; anything longer is a typo, not a link.
const maxModelDuration = time.Minute

// Validate reports the first field that is out of range, by name.
func (m Model) Validate() error {
	switch {
	case m.Delay < 0 || m.Delay > maxModelDuration:
		return fmt.Errorf("delay %v out of range [0, %v]", m.Delay, maxModelDuration)
	case m.Jitter < 0 || m.Jitter > maxModelDuration:
		return fmt.Errorf("jitter %v out of range [0, %v]", m.Jitter, maxModelDuration)
	case !isProbability(m.Loss):
		return fmt.Errorf("loss %v is not a probability in [0, 1]", m.Loss)
	case m.RateBps < 0:
		return fmt.Errorf("rate %d bit/s is negative", m.RateBps)
	case m.QueueBytes < 0:
		return fmt.Errorf("queue %d bytes is negative", m.QueueBytes)
	case m.QueueDelay < 0 || m.QueueDelay > maxModelDuration:
		return fmt.Errorf("queue delay %v out of range [0, %v]", m.QueueDelay, maxModelDuration)
	case m.RateBps == 0 && (m.QueueBytes > 0 || m.QueueDelay > 0):
		return errors.New("a queue limit needs a rate: set RateBps too")
	}
	if m.Burst != nil {
		if err := m.Burst.Validate(); err != nil {
			return fmt.Errorf("burst: %w", err)
		}
	}
	return nil
}

// queueLimit is the drop-tail limit in bytes, 0 when there is no rate (no queue).
func (m Model) queueLimit() int64 {
	if m.RateBps == 0 {
		return 0
	}
	if m.QueueBytes > 0 {
		return int64(m.QueueBytes)
	}
	var limit int64
	if m.QueueDelay > 0 {
		limit = bytesAtRate(m.RateBps, m.QueueDelay)
	} else {
		limit = max(bytesAtRate(m.RateBps, 2*m.Delay), DefaultMinQueueBytes)
	}
	// A queue smaller than one full-size packet would drop every large packet.
	return max(limit, 1500)
}

// bytesAtRate is how many bytes rateBps carries in d.
func bytesAtRate(rateBps int64, d time.Duration) int64 {
	return int64(float64(rateBps) / 8 * d.Seconds())
}

// IsZero reports whether m is a perfect link (no effect at all).
func (m Model) IsZero() bool {
	return m.Delay == 0 && m.Jitter == 0 && m.Loss == 0 && m.Burst == nil && m.RateBps == 0
}

// GilbertElliott is a two-state Markov loss model: a Good state with rare loss and a Bad
// state with heavy loss. It is the configuration only; each Pipe keeps its own state, so
// one value may be shared by both directions of a Link.
type GilbertElliott struct {
	P        float64 // probability Good -> Bad per packet
	R        float64 // probability Bad -> Good per packet
	LossGood float64 // loss probability in Good (1-k in the literature; usually 0)
	LossBad  float64 // loss probability in Bad (1-h; 1 for the simple Gilbert model)
}

// NewBurstLoss is the simple Gilbert model with the given long-run loss rate and mean
// burst length in packets: every packet in Bad is lost, none in Good, R = 1/meanBurst
// and P chosen so that the stationary loss P/(P+R) equals avgLoss.
func NewBurstLoss(avgLoss, meanBurst float64) (*GilbertElliott, error) {
	if !(avgLoss > 0 && avgLoss < 1) {
		return nil, fmt.Errorf("burst average loss %v must be in (0, 1)", avgLoss)
	}
	if !(meanBurst >= 1) || math.IsInf(meanBurst, 0) {
		return nil, fmt.Errorf("mean burst length %v must be a finite number >= 1", meanBurst)
	}
	r := 1 / meanBurst
	p := avgLoss * r / (1 - avgLoss)
	if p > 1 {
		return nil, fmt.Errorf("average loss %v with mean burst %v needs P(good->bad) = %.3f > 1", avgLoss, meanBurst, p)
	}
	return &GilbertElliott{P: p, R: r, LossGood: 0, LossBad: 1}, nil
}

// Validate checks that every field is a probability and that Bad can be left.
func (g *GilbertElliott) Validate() error {
	for _, f := range []struct {
		name string
		v    float64
	}{{"P", g.P}, {"R", g.R}, {"LossGood", g.LossGood}, {"LossBad", g.LossBad}} {
		if !isProbability(f.v) {
			return fmt.Errorf("%s %v is not a probability in [0, 1]", f.name, f.v)
		}
	}
	if g.P > 0 && g.R == 0 {
		return errors.New("R is 0: once in Bad the link would never recover")
	}
	return nil
}

// AverageLoss is the long-run loss rate of the chain.
func (g *GilbertElliott) AverageLoss() float64 {
	if g.P+g.R == 0 {
		return g.LossGood
	}
	bad := g.P / (g.P + g.R)
	return (1-bad)*g.LossGood + bad*g.LossBad
}

func isProbability(v float64) bool { return v >= 0 && v <= 1 } // false for NaN

// ParseModel reads the compact form used by flags and TOML strings: comma-separated
// key=value pairs, all optional, e.g.
//
//	delay=25ms,jitter=2ms,loss=1%,rate=100mbit,queue=256KiB
//	delay=25ms,burst=2%/3,rate=100mbit,qdelay=50ms,reorder
//
// Keys: delay, jitter (durations), loss (fraction or percent), burst=AVG/MEANBURST
// (Gilbert loss, see NewBurstLoss), rate (bit/s with optional k/m/g suffix and "bit"/"bps",
// e.g. 100mbit, 1g, 500000), queue (bytes with optional KiB/MiB/KB/MB), qdelay (duration),
// reorder (flag). An empty string is the perfect link. The result is validated.
func ParseModel(s string) (Model, error) {
	var m Model
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return m, nil
	}
	for field := range strings.SplitSeq(s, ",") {
		field = strings.TrimSpace(field)
		if field == "" {
			continue
		}
		key, val, hasVal := strings.Cut(field, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		val = strings.TrimSpace(val)
		if key == "reorder" {
			if hasVal {
				b, err := strconv.ParseBool(val)
				if err != nil {
					return Model{}, fmt.Errorf("netem model: reorder=%q: want true or false", val)
				}
				m.Reorder = b
			} else {
				m.Reorder = true
			}
			continue
		}
		if !hasVal {
			return Model{}, fmt.Errorf("netem model: %q: want key=value", field)
		}
		var err error
		switch key {
		case "delay":
			m.Delay, err = time.ParseDuration(val)
		case "jitter":
			m.Jitter, err = time.ParseDuration(val)
		case "loss":
			m.Loss, err = ParseFraction(val)
		case "burst":
			avg, mean, ok := strings.Cut(val, "/")
			if !ok {
				err = errors.New("want AVGLOSS/MEANBURST, e.g. 2%/3")
				break
			}
			var a, b float64
			if a, err = ParseFraction(avg); err != nil {
				break
			}
			if b, err = strconv.ParseFloat(strings.TrimSpace(mean), 64); err != nil {
				break
			}
			m.Burst, err = NewBurstLoss(a, b)
		case "rate":
			m.RateBps, err = ParseRate(val)
		case "queue":
			m.QueueBytes, err = parseBytes(val)
		case "qdelay":
			m.QueueDelay, err = time.ParseDuration(val)
		default:
			return Model{}, fmt.Errorf("netem model: unknown key %q (want delay, jitter, loss, burst, rate, queue, qdelay, reorder)", key)
		}
		if err != nil {
			return Model{}, fmt.Errorf("netem model: %s=%q: %w", key, val, err)
		}
	}
	if err := m.Validate(); err != nil {
		return Model{}, fmt.Errorf("netem model %q: %w", s, err)
	}
	return m, nil
}

// String is the ParseModel form of m ("none" for the perfect link).
func (m Model) String() string {
	var parts []string
	if m.Delay != 0 {
		parts = append(parts, "delay="+m.Delay.String())
	}
	if m.Jitter != 0 {
		parts = append(parts, "jitter="+m.Jitter.String())
	}
	if m.Reorder {
		parts = append(parts, "reorder")
	}
	if m.Loss != 0 {
		parts = append(parts, "loss="+strconv.FormatFloat(m.Loss, 'g', -1, 64))
	}
	if g := m.Burst; g != nil {
		parts = append(parts, fmt.Sprintf("burst(p=%g,r=%g,good=%g,bad=%g)", g.P, g.R, g.LossGood, g.LossBad))
	}
	if m.RateBps != 0 {
		parts = append(parts, "rate="+strconv.FormatInt(m.RateBps, 10))
	}
	if m.QueueBytes != 0 {
		parts = append(parts, "queue="+strconv.Itoa(m.QueueBytes))
	}
	if m.QueueDelay != 0 {
		parts = append(parts, "qdelay="+m.QueueDelay.String())
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

// ParseFraction reads "0.01" or "1%" as 0.01; the result must be in [0, 1].
func ParseFraction(s string) (float64, error) {
	s = strings.TrimSpace(s)
	scale := 1.0
	if rest, ok := strings.CutSuffix(s, "%"); ok {
		s, scale = strings.TrimSpace(rest), 0.01
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("not a number: %q", s)
	}
	v *= scale
	if !isProbability(v) {
		return 0, fmt.Errorf("%v is not in [0, 1]", v)
	}
	return v, nil
}

// ParseRate reads a rate in bit/s: "100mbit", "100m", "1gbit", "1g", "500kbps" (bps
// means bit/s here, as in tc), or a plain number of bit/s. Decimal prefixes (k = 1000).
func ParseRate(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	for _, suffix := range []string{"bit/s", "bps", "bit"} {
		if rest, ok := strings.CutSuffix(t, suffix); ok {
			t = rest
			break
		}
	}
	mult := 1.0
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k':
			mult, t = 1e3, t[:n-1]
		case 'm':
			mult, t = 1e6, t[:n-1]
		case 'g':
			mult, t = 1e9, t[:n-1]
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || v < 0 || math.IsInf(v, 0) || v*mult > math.MaxInt64/2 {
		return 0, fmt.Errorf("rate %q: want a non-negative number with optional k/m/g and bit suffix, e.g. 100mbit", s)
	}
	return int64(v * mult), nil
}

func parseBytes(s string) (int, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"KB", 1e3}, {"MB", 1e6}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v < 0 || v*mult > 1<<40 {
		return 0, fmt.Errorf("size %q: want a non-negative byte count with optional KiB/MiB/KB/MB", s)
	}
	return int(v * mult), nil
}
