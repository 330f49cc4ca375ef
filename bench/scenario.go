// Package bench holds the benchmark scenarios of `task bench` as data: named suites of
// link conditions (rate, RTT, loss), the measurement to make on each (goodput, fairness,
// latency, scale, interactive) and the contenders to compare. The suites ship embedded from
// scenarios/*.toml so that a run is reproducible from the source tree alone; extra TOML
// files can add or replace suites without a rebuild.
package bench

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Kind is the measurement a scenario makes.
type Kind string

const (
	// Goodput moves one bulk flow (iperf3) per contender and reports its rate.
	Goodput Kind = "goodput"
	// Fairness runs one contender's bulk flow next to a direct TCP cubic flow on the
	// same bottleneck and reports how the link is split.
	Fairness Kind = "fairness"
	// Latency measures connect-to-first-echo and the time of N request/response round
	// trips with the echo load generator.
	Latency Kind = "latency"
	// Scale opens many concurrent tunnels that each echo and verify a share of the bytes.
	Scale Kind = "scale"
	// Interactive times a small echo every EchoInterval beside Bulk bulk downloads
	// through the same path (one forward), after Stuck connections that ran fast and
	// then stopped reading, and compares the bulk goodput with the bulk flows alone.
	Interactive Kind = "interactive"
)

var kinds = []Kind{Goodput, Fairness, Latency, Scale, Interactive}

// Contender names: what is compared in a run.
const (
	TCPCubic     = "tcp-cubic"     // direct kernel TCP, cubic set per connection
	TCPBBR       = "tcp-bbr"       // direct kernel TCP, bbr set per connection
	Quictun      = "quictun"       // quictun with its default settings
	QuictunNoFEC = "quictun-nofec" // quictun with --fec off: plain quic-go underneath
	QuictunReno  = "quictun-reno"  // quictun whose client sends with quic-go's Reno (--congestion reno); only where a suite names it
	Kcptun       = "kcptun"        // the Debian kcptun package, tuned (see contender)
	// hysteria 2 (a prebuilt binary: see contender), with its default BBR, and with its
	// Brutal sender told the scenario's true link rate (its best case).
	HysteriaBBR    = "hysteria-bbr"
	HysteriaBrutal = "hysteria-brutal"
)

// Contenders lists every contender the harness knows, in report order.
var Contenders = []string{TCPCubic, TCPBBR, Quictun, QuictunNoFEC, QuictunReno, Kcptun, HysteriaBBR, HysteriaBrutal}

// Scenario is one link condition with one measurement, run for each of its contenders
// Repetitions times.
type Scenario struct {
	Suite string
	Name  string
	Kind  Kind

	// RateMbps is the bottleneck rate in each direction; 0 means no rate limit (host speed).
	RateMbps float64
	// RTT is the round-trip propagation delay, split evenly over both directions.
	RTT    time.Duration
	Jitter time.Duration // per direction
	// Loss is the mean packet loss probability in each direction, as a fraction.
	Loss float64
	// Burst is the mean length in packets of a loss burst (Gilbert-Elliott); values <= 1
	// mean independent random loss.
	Burst float64
	// QueueBDP sizes the bottleneck's drop-tail queue in bandwidth-delay products.
	QueueBDP float64
	// QueueDelay, when set, sizes the queue instead as this much time at the rate (a
	// path whose buffer is shallower than its round trip: 50 ms at RTT 200 ms).
	QueueDelay time.Duration

	Duration time.Duration // of one bulk flow (goodput, fairness), as measured
	// Warmup runs the bulk flows this long before Duration starts counting (iperf3
	// --omit): slow start, or two flows still finding their shares.
	Warmup      time.Duration
	Repetitions int
	Contenders  []string

	Requests     int // latency: request/response round trips per repetition
	MessageBytes int // latency, interactive: size of one request (and its echo)

	// Interactive: bulk downloads beside the echo, the echo's period, and connections
	// that each download StuckBytes alone at full speed and then stop reading, before.
	Bulk         int
	EchoInterval time.Duration
	Stuck        int
	StuckBytes   int64

	Tunnels    int   // scale: concurrent tunnels
	TotalBytes int64 // scale: bytes sent over all tunnels together, split evenly

	UDPMbps       float64 // udp: iperf3 -u's rate
	DatagramBytes int     // udp: iperf3 -u's datagram size
	WireGuardMTU  int     // wireguard: the MTU of both WireGuard interfaces
}

// ID names the scenario uniquely across suites.
func (s Scenario) ID() string { return s.Suite + "/" + s.Name }

// CeilingMbps is the best goodput the link allows: rate x (1 - loss). Zero when the
// link has no rate limit.
func (s Scenario) CeilingMbps() float64 { return s.RateMbps * (1 - s.Loss) }

// Impaired reports whether the scenario needs link emulation at all.
func (s Scenario) Impaired() bool {
	return s.RateMbps > 0 || s.RTT > 0 || s.Jitter > 0 || s.Loss > 0
}

// QueueBytes is the drop-tail queue of the bottleneck in bytes: QueueDelay at the rate
// when set, else QueueBDP bandwidth-delay products, at least MinQueueBytes so that a
// short-RTT link still holds a few bursts. Zero when the link has no rate limit.
func (s Scenario) QueueBytes() int {
	if s.RateMbps <= 0 {
		return 0
	}
	hold := s.RTT.Seconds() * s.QueueBDP
	if s.QueueDelay > 0 {
		hold = s.QueueDelay.Seconds()
	}
	return max(int(s.RateMbps*1e6/8*hold), MinQueueBytes)
}

// MinQueueBytes is the smallest bottleneck queue: about 44 full-size packets.
const MinQueueBytes = 64 << 10

// Describe is a short human label of the link: "100 Mbit/s, RTT 50 ms, loss 1%".
func (s Scenario) Describe() string {
	var b strings.Builder
	if s.RateMbps > 0 {
		fmt.Fprintf(&b, "%s Mbit/s", formatNumber(s.RateMbps))
	} else {
		b.WriteString("host speed")
	}
	fmt.Fprintf(&b, ", RTT %s ms", formatNumber(float64(s.RTT)/float64(time.Millisecond)))
	fmt.Fprintf(&b, ", loss %s%%", formatNumber(s.Loss*100))
	if s.Burst > 1 {
		fmt.Fprintf(&b, " (bursts of %s)", formatNumber(s.Burst))
	}
	if s.QueueDelay > 0 {
		fmt.Fprintf(&b, ", queue %s ms", formatNumber(float64(s.QueueDelay)/float64(time.Millisecond)))
	}
	if s.Kind == Interactive {
		fmt.Fprintf(&b, ", %d bulk", s.Bulk)
		if s.Stuck > 0 {
			fmt.Fprintf(&b, ", %d stuck", s.Stuck)
		}
	}
	b.WriteString(s.describeUDP())
	if s.Kind == Scale {
		if s.Tunnels == 1 {
			b.WriteString(", 1 tunnel")
		} else {
			fmt.Fprintf(&b, ", %d tunnels", s.Tunnels)
		}
	}
	return b.String()
}

// Validate checks one expanded scenario; errors name the TOML key at fault.
func (s Scenario) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if s.Name == "" || strings.ContainsAny(s.Name, "/ \t\n") {
		bad("name %q must be non-empty without spaces or slashes", s.Name)
	}
	if !validKind(s.Kind) {
		bad("kind %q is not one of %v", s.Kind, kinds)
	}
	if s.RateMbps < 0 || s.RateMbps > 100_000 || math.IsNaN(s.RateMbps) {
		bad("rate_mbps %v must be in [0, 100000] (0 = no limit)", s.RateMbps)
	}
	if s.RTT < 0 || s.RTT > 10*time.Second {
		bad("rtt_ms %v must be in [0, 10000]", s.RTT.Milliseconds())
	}
	if s.Jitter < 0 || s.Jitter > s.RTT/2 {
		bad("jitter_ms %v must be in [0, rtt_ms/2]", s.Jitter.Milliseconds())
	}
	if !(s.Loss >= 0 && s.Loss < 1) {
		bad("loss %v must be a fraction in [0, 1)", s.Loss)
	}
	if s.Burst < 0 || s.Burst > 1000 || math.IsNaN(s.Burst) {
		bad("burst %v must be in [0, 1000] packets", s.Burst)
	}
	if s.Burst > 1 && s.Loss == 0 {
		bad("burst %v needs a loss > 0", s.Burst)
	}
	if s.QueueBDP <= 0 || s.QueueBDP > 100 || math.IsNaN(s.QueueBDP) {
		bad("queue_bdp %v must be in (0, 100]", s.QueueBDP)
	}
	if s.QueueDelay < 0 || s.QueueDelay > 10*time.Second {
		bad("queue_ms %v must be in [0, 10000] (0: use queue_bdp)", s.QueueDelay.Milliseconds())
	}
	if s.Repetitions < 1 || s.Repetitions > 100 {
		bad("repetitions %d must be in [1, 100]", s.Repetitions)
	}
	if len(s.Contenders) == 0 {
		bad("contenders must name at least one of %v", Contenders)
	}
	seen := map[string]bool{}
	for _, c := range s.Contenders {
		if !knownContender(c) {
			bad("contenders: %q is not one of %v", c, Contenders)
		}
		if seen[c] {
			bad("contenders: %q listed twice", c)
		}
		seen[c] = true
	}
	switch s.Kind {
	case Goodput, Fairness, Interactive, UDP, WireGuard:
		if s.Duration < time.Second || s.Duration > 10*time.Minute {
			bad("duration %s must be in [1s, 10m]", s.Duration)
		}
		if s.Warmup < 0 || s.Warmup > 10*time.Minute || s.Warmup%time.Second != 0 {
			bad("warmup %s must be whole seconds in [0s, 10m]", s.Warmup)
		}
	case Latency:
		if s.Requests < 1 || s.Requests > 1_000_000 {
			bad("requests %d must be in [1, 1000000]", s.Requests)
		}
		if s.MessageBytes < 1 || s.MessageBytes > 1<<20 {
			bad("message_bytes %d must be in [1, 1048576]", s.MessageBytes)
		}
	}
	switch s.Kind {
	case Interactive:
		if s.MessageBytes < 1 || s.MessageBytes > 64<<10 {
			bad("message_bytes %d must be in [1, 65536]", s.MessageBytes)
		}
		if s.Bulk < 0 || s.Bulk > 64 {
			bad("bulk %d must be in [0, 64]", s.Bulk)
		}
		if s.EchoInterval < time.Millisecond || s.EchoInterval > 10*time.Second {
			bad("echo_ms %v must be in [1, 10000]", s.EchoInterval.Milliseconds())
		}
		if s.Stuck < 0 || s.Stuck > 256 {
			bad("stuck %d must be in [0, 256]", s.Stuck)
		}
		if s.StuckBytes < 0 || s.StuckBytes > 1<<30 {
			bad("stuck_mib must be in [0, 1024]")
		}
	case Scale:
		if s.Tunnels < 1 || s.Tunnels > 10_000 {
			bad("tunnels %d must be in [1, 10000]", s.Tunnels)
		}
		if s.TotalBytes < int64(s.Tunnels) || s.TotalBytes > 64<<30 {
			bad("total_bytes %d must be at least one byte per tunnel and at most 64 GiB", s.TotalBytes)
		}
	}
	s.validateUDP(bad)
	if s.Kind == Fairness && seen[TCPCubic] {
		bad("contenders: a fairness scenario runs each contender against tcp-cubic; do not list tcp-cubic itself")
	}
	if len(errs) > 0 {
		return fmt.Errorf("scenario %s: %s", s.ID(), strings.Join(errs, "; "))
	}
	return nil
}

func validKind(k Kind) bool {
	for _, known := range kinds {
		if k == known {
			return true
		}
	}
	return false
}

func knownContender(name string) bool {
	for _, known := range Contenders {
		if name == known {
			return true
		}
	}
	return false
}

// formatNumber prints a float without trailing zeros: 0.5, 100, 1.25.
func formatNumber(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
