package bench

import (
	"fmt"

	"github.com/quictun/quictun/bench/stats"
)

// The UDP kinds (issue 18): what a tunnel does to datagrams on a lossy link.
const (
	// UDP sends iperf3 -u at UDPMbps with DatagramBytes datagrams across the
	// contender, beside a timestamped probe of 200 datagrams a second on its own
	// flow: the loss iperf3 counts at the receiver, and the probe's one-way delay.
	UDP Kind = "udp"
	// WireGuard runs one TCP flow (iperf3, cubic) inside WireGuard (wireguard-go at
	// MTU WireGuardMTU on both hosts) whose UDP the contender carries.
	WireGuard Kind = "wireguard"
)

// Direct is the bare link for the UDP kinds: the applications send straight across
// it (for TCP kinds the direct contenders are tcp-cubic and tcp-bbr).
const Direct = "direct"

func init() {
	kinds = append(kinds, UDP, WireGuard)
	Contenders = append(Contenders, Direct)
}

// udpContenders can carry datagrams; the TCP-only ones (direct TCP, kcptun) cannot.
var udpContenders = []string{Direct, Quictun, QuictunNoFEC, HysteriaBBR, HysteriaBrutal}

// defaultContenders are a scenario's contenders when its suite names none: those
// that can carry its kind's traffic, but for the variants a suite names to compare
// them (quictun-reno, the reverse forwards).
func defaultContenders(k Kind) []string {
	if k == UDP || k == WireGuard {
		return udpContenders
	}
	var out []string
	for _, c := range Contenders {
		if c != Direct && c != QuictunReno && !contains(reverseContenders, c) {
			out = append(out, c)
		}
	}
	return out
}

// validateUDP checks what the UDP kinds need; other kinds must not name Direct.
func (s Scenario) validateUDP(bad func(string, ...any)) {
	udpKind := s.Kind == UDP || s.Kind == WireGuard
	for _, c := range s.Contenders {
		switch {
		case udpKind && !contains(udpContenders, c):
			bad("contenders: %q carries no UDP; a %s scenario takes %v", c, s.Kind, udpContenders)
		case !udpKind && c == Direct:
			bad("contenders: %q is the bare link of the udp and wireguard kinds; a %s scenario's direct contenders are %s and %s", c, s.Kind, TCPCubic, TCPBBR)
		}
	}
	switch s.Kind {
	case UDP:
		if !(s.UDPMbps > 0 && s.UDPMbps <= 10_000) {
			bad("udp_mbps %v must be in (0, 10000]", s.UDPMbps)
		}
		if s.DatagramBytes < 16 || s.DatagramBytes > 32767 {
			bad("datagram_bytes %d must be in [16, 32767]", s.DatagramBytes)
		}
	case WireGuard:
		if s.WireGuardMTU < 1280 || s.WireGuardMTU > 1420 {
			bad("wireguard_mtu %d must be in [1280, 1420]", s.WireGuardMTU)
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// UDPSample is what one run of the udp kind measured.
type UDPSample struct {
	Datagrams   int64   // iperf3's datagrams sent
	LostPercent float64 // of them, lost as iperf3's receiver counts (after repair, for a tunnel)
	JitterMs    float64 // iperf3's
	// The probe's one-way delay from the client host's application to the server
	// host's, over the datagrams that arrived, and the share that did not.
	DelayP50Ms, DelayP99Ms float64
	// DelayP99SteadyMs leaves out the probes sent in the flow's first SteadyAfter:
	// a tunnel whose window is still growing queues its start, and that is a
	// different fault from a steady-state tail.
	DelayP99SteadyMs float64
	ProbeLostPercent float64
	// Counters are a tunnel's own datagram counters at the end of the run (quictun:
	// taken in, dropped by reason, lost on the link, unrepaired), each named with
	// its side; nil for contenders without them.
	Counters map[string]float64
}

// UDPRecord summarises a udp scenario's runs of one contender (medians over runs).
type UDPRecord struct {
	Mbps          float64   `json:"iperf3_mbps"` // iperf3 -u's rate
	DatagramBytes int       `json:"datagram_bytes"`
	LostPercent   float64   `json:"lost_percent"`
	LostRuns      []float64 `json:"lost_runs_percent,omitempty"`
	Datagrams     int64     `json:"datagrams"`
	JitterMs      float64   `json:"jitter_ms"`
	DelayP50Ms    float64   `json:"delay_p50_ms"`
	DelayP99Ms    float64   `json:"delay_p99_ms"`
	// AddedP99Ms is DelayP99Ms less the direct contender's in the same scenario and
	// run; absent without one.
	AddedP99Ms       *float64 `json:"added_p99_ms,omitempty"`
	DelayP99SteadyMs float64  `json:"delay_p99_steady_ms"`
	AddedP99SteadyMs *float64 `json:"added_p99_steady_ms,omitempty"`
	ProbeLostPercent float64  `json:"probe_lost_percent"`
	// Counters are the tunnel's own counters of each run (UDPSample.Counters).
	Counters []map[string]float64 `json:"counters_runs,omitempty"`
}

// summarizeUDP fills r.UDP from the successful samples of a udp scenario, and a
// wireguard record's MTU.
func summarizeUDP(r *Record, s Scenario, samples []Sample) {
	if s.Kind == WireGuard {
		r.WireGuardMTU = s.WireGuardMTU
		for _, x := range samples {
			if x.Err == "" && x.UDP != nil && x.UDP.Counters != nil {
				r.Counters = append(r.Counters, x.UDP.Counters)
			}
		}
		return
	}

	var lost, jitter, p50, p99, steady, plost, sent []float64
	var counters []map[string]float64
	for _, x := range samples {
		if x.Err != "" || x.UDP == nil {
			continue
		}
		lost = append(lost, x.UDP.LostPercent)
		jitter = append(jitter, x.UDP.JitterMs)
		p50 = append(p50, x.UDP.DelayP50Ms)
		p99 = append(p99, x.UDP.DelayP99Ms)
		steady = append(steady, x.UDP.DelayP99SteadyMs)
		plost = append(plost, x.UDP.ProbeLostPercent)
		sent = append(sent, float64(x.UDP.Datagrams))
		if x.UDP.Counters != nil {
			counters = append(counters, x.UDP.Counters)
		}
	}
	if len(lost) == 0 {
		return
	}
	r.UDP = &UDPRecord{
		Mbps: s.UDPMbps, DatagramBytes: s.DatagramBytes,
		LostPercent: stats.Summarize(lost).Median, LostRuns: lost,
		Datagrams:  int64(stats.Summarize(sent).Median),
		JitterMs:   stats.Summarize(jitter).Median,
		DelayP50Ms: stats.Summarize(p50).Median, DelayP99Ms: stats.Summarize(p99).Median,
		DelayP99SteadyMs: stats.Summarize(steady).Median,
		ProbeLostPercent: stats.Summarize(plost).Median,
		Counters:         counters,
	}
}

// FillAddedDelay sets UDP.AddedP99Ms and AddedP99SteadyMs on every udp record of
// a scenario that has a direct record.
func FillAddedDelay(records []Record) {
	bare := map[string]*UDPRecord{}
	for _, r := range records {
		if r.Contender == Direct && r.UDP != nil {
			bare[r.Suite+"/"+r.Scenario] = r.UDP
		}
	}
	for i := range records {
		r := &records[i]
		if b, ok := bare[r.Suite+"/"+r.Scenario]; ok && r.UDP != nil && r.Contender != Direct {
			added := r.UDP.DelayP99Ms - b.DelayP99Ms
			r.UDP.AddedP99Ms = &added
			// Records of a bench before the steady figure have none to subtract.
			if r.UDP.DelayP99SteadyMs > 0 && b.DelayP99SteadyMs > 0 {
				steady := r.UDP.DelayP99SteadyMs - b.DelayP99SteadyMs
				r.UDP.AddedP99SteadyMs = &steady
			}
		}
	}
}

// describeUDP is the udp kinds' part of Describe.
func (s Scenario) describeUDP() string {
	switch {
	case s.Kind == UDP && s.UDPMbps > 0:
		return fmt.Sprintf(", iperf3 -u %s Mbit/s of %d-byte datagrams", formatNumber(s.UDPMbps), s.DatagramBytes)
	case s.Kind == WireGuard && s.WireGuardMTU > 0:
		return fmt.Sprintf(", TCP inside WireGuard (MTU %d)", s.WireGuardMTU)
	}
	return ""
}
