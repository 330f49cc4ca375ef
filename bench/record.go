package bench

import (
	"encoding/json"
	"time"

	"github.com/quictun/quictun/bench/stats"
)

// Sample is one repetition of one contender on one scenario.
type Sample struct {
	Scenario   Scenario
	Contender  string
	Repetition int // 1-based
	Err        string

	GoodputMbps float64
	Bytes       int64 // carried, for CPU per GB
	// CPU seconds used by the tunnel endpoints during the measurement; negative when
	// there is no such process (direct TCP).
	CPUClientS, CPUServerS float64

	CompetitorMbps float64 // fairness: the direct TCP cubic flow beside the contender

	FirstEchoMs, TotalMs, P50Ms, P99Ms float64 // latency
	RoundTrips                         int

	Tunnels, Verified int // scale

	// Interactive: the echo's worst round trip, and what the bulk flows got alone
	// (GoodputMbps is what they got beside the echo and the stuck connections).
	MaxMs, AloneMbps float64
	UDP              *UDPSample // udp

	// EmulatorLateMs is the worst lateness of the emulator's own scheduling during
	// the run, both directions (0: within netem.LateThreshold), and -1 when the
	// backend does not report it (tc-netem, loopback). A run whose link stalled
	// this long measured the emulator's hiccup as much as the contender.
	EmulatorLateMs float64
}

// Record summarises every repetition of one contender on one scenario: one element of
// latest.json.
type Record struct {
	Suite     string `json:"suite"`
	Scenario  string `json:"scenario"`
	Kind      Kind   `json:"kind"`
	Contender string `json:"contender"`
	// FromRun names the run the record comes from: its folder under the results
	// (Environment.RunID), where its environment and samples are kept.
	FromRun  string  `json:"from_run,omitempty"`
	RateMbps float64 `json:"rate_mbps"` // 0: no limit
	RTTms    float64 `json:"rtt_ms"`
	Loss     float64 `json:"loss"`            // fraction, each direction
	Burst    float64 `json:"burst,omitempty"` // mean loss burst in packets
	Runs     int     `json:"runs"`            // successful repetitions
	Failed   int     `json:"failed,omitempty"`
	// Interrupted marks a scenario cut short (Ctrl-C): Runs and Failed count the
	// repetitions that finished before.
	Interrupted bool `json:"interrupted,omitempty"`
	// CeilingMbps is the link ceiling: min(rate, what the emulator forwards) x (1 -
	// loss), in bytes of IP packets; TCP payload reaches at most TCPPayloadShare of it.
	CeilingMbps float64 `json:"ceiling_mbps,omitempty"`
	// CeilingLimitedBy is "emulator" when the emulator forwarded less than the
	// scenario's rate at the start of the run, so that it, not the rate, is the ceiling.
	CeilingLimitedBy string `json:"ceiling_limited_by,omitempty"`

	// Goodput (not for latency records, whose JSON has null there): median and spread.
	GoodputMbps float64   `json:"goodput_mbps"`
	GoodputMin  float64   `json:"goodput_min_mbps"`
	GoodputMax  float64   `json:"goodput_max_mbps"`
	Goodputs    []float64 `json:"goodput_runs_mbps,omitempty"`
	// RatioCubic is GoodputMbps over tcp-cubic's median in the same scenario and run.
	RatioCubic   float64 `json:"ratio_to_cubic,omitempty"`
	RatioCeiling float64 `json:"ratio_to_ceiling,omitempty"`

	// CPU seconds per GB carried, for each endpoint process (median over runs); absent
	// for direct TCP, which has no endpoint process.
	CPUClientSPerGB *float64 `json:"cpu_client_s_per_gb,omitempty"`
	CPUServerSPerGB *float64 `json:"cpu_server_s_per_gb,omitempty"`

	CompetitorMbps float64 `json:"competitor_cubic_mbps,omitempty"`
	// Share is the contender's part of the two flows' sum (median over runs).
	Share float64 `json:"share,omitempty"`

	// Latency (medians over runs): connect to first echo, and the whole of RoundTrips
	// request/response round trips from the start of the dial.
	FirstEchoMs   float64   `json:"first_echo_ms,omitempty"`
	TotalMs       float64   `json:"total_ms,omitempty"`
	FirstEchoRuns []float64 `json:"first_echo_runs_ms,omitempty"`
	TotalRuns     []float64 `json:"total_runs_ms,omitempty"`
	P50Ms         float64   `json:"p50_ms,omitempty"`
	P99Ms         float64   `json:"p99_ms,omitempty"`
	RoundTrips    int       `json:"round_trips,omitempty"`

	Tunnels     int  `json:"tunnels,omitempty"`
	AllVerified bool `json:"all_verified,omitempty"` // every byte of every tunnel of every run

	// Interactive (medians over runs; P50Ms, P99Ms and RoundTrips are the echo's):
	// the echo's worst round trip, the bulk flows' goodput alone, and the part of it
	// they kept beside the echo (each run's ratio, then the median).
	Bulk      int     `json:"bulk,omitempty"`
	Stuck     int     `json:"stuck,omitempty"`
	MaxMs     float64 `json:"max_ms,omitempty"`
	AloneMbps float64 `json:"alone_mbps,omitempty"`
	Kept      float64 `json:"kept_of_alone,omitempty"`

	// EmulatorLateRuns is Sample.EmulatorLateMs of each successful run, in the
	// order of Goodputs; absent when the backend does not report it.
	EmulatorLateRuns []float64 `json:"emulator_late_runs_ms,omitempty"`

	UDP          *UDPRecord `json:"udp,omitempty"`           // udp
	WireGuardMTU int        `json:"wireguard_mtu,omitempty"` // wireguard
	// Counters are a wireguard record's tunnel counters of each run, as
	// UDPRecord.Counters are a udp record's.
	Counters []map[string]float64 `json:"counters_runs,omitempty"`

	Errors []string `json:"errors,omitempty"`
	// Note says why a contender did not run at all (not installed).
	Note string `json:"note,omitempty"`
}

// MarshalJSON writes null for the goodput of a latency record: the echo test moves a
// few bytes per round trip, and a goodput of 0 would read as a broken link.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record // without this method
	if r.Kind != Latency {
		return json.Marshal(plain(r))
	}
	return json.Marshal(struct {
		plain
		GoodputMbps *float64 `json:"goodput_mbps"` // shallower than plain's: these win
		GoodputMin  *float64 `json:"goodput_min_mbps"`
		GoodputMax  *float64 `json:"goodput_max_mbps"`
	}{plain: plain(r)})
}

// TCPPayloadShare is the part of a full-size IP packet that is TCP payload at MTU 1500:
// 1448 of 1500 bytes (20 of IP header, 20 of TCP, 12 of timestamps). The link rate
// applies to IP packets, so this is the most TCP goodput can reach of the ceiling.
const TCPPayloadShare = 1448.0 / 1500

// Summarize turns the samples of one scenario and contender into a Record; samples with
// an error count as failed runs.
func Summarize(s Scenario, contender string, samples []Sample) Record {
	r := Record{
		Suite: s.Suite, Scenario: s.Name, Kind: s.Kind, Contender: contender,
		RateMbps: s.RateMbps, RTTms: float64(s.RTT) / float64(time.Millisecond),
		Loss: s.Loss, Burst: s.Burst, CeilingMbps: s.CeilingMbps(),
	}
	if s.Kind == Scale {
		r.Tunnels = s.Tunnels
	}
	if s.Kind == Interactive {
		r.Bulk, r.Stuck = s.Bulk, s.Stuck
	}
	var goodput, cpuC, cpuS, competitor, share, first, total, p50, p99, late, maxes, alone, kept []float64
	allVerified := s.Kind == Scale
	for _, x := range samples {
		if x.Err != "" {
			r.Failed++
			r.Errors = append(r.Errors, x.Err)
			allVerified = false
			continue
		}
		r.Runs++
		if s.Kind != Latency && s.Kind != UDP {
			goodput = append(goodput, x.GoodputMbps)
		}
		if x.EmulatorLateMs >= 0 {
			late = append(late, x.EmulatorLateMs)
		}
		if gb := float64(x.Bytes) / 1e9; gb > 0 {
			if x.CPUClientS >= 0 {
				cpuC = append(cpuC, x.CPUClientS/gb)
			}
			if x.CPUServerS >= 0 {
				cpuS = append(cpuS, x.CPUServerS/gb)
			}
		}
		switch s.Kind {
		case Fairness:
			competitor = append(competitor, x.CompetitorMbps)
			if sum := x.GoodputMbps + x.CompetitorMbps; sum > 0 {
				share = append(share, x.GoodputMbps/sum)
			}
		case Latency:
			first = append(first, x.FirstEchoMs)
			total = append(total, x.TotalMs)
			p50 = append(p50, x.P50Ms)
			p99 = append(p99, x.P99Ms)
			r.RoundTrips = x.RoundTrips
		case Scale:
			if x.Verified != x.Tunnels {
				allVerified = false
			}
		case Interactive:
			p50 = append(p50, x.P50Ms)
			p99 = append(p99, x.P99Ms)
			maxes = append(maxes, x.MaxMs)
			r.RoundTrips = x.RoundTrips
			if x.AloneMbps > 0 {
				alone = append(alone, x.AloneMbps)
				kept = append(kept, x.GoodputMbps/x.AloneMbps)
			}
		}
	}
	g := stats.Summarize(goodput)
	r.GoodputMbps, r.GoodputMin, r.GoodputMax, r.Goodputs = g.Median, g.Min, g.Max, goodput
	r.setRatioCeiling()
	if len(cpuC) > 0 {
		v := stats.Summarize(cpuC).Median
		r.CPUClientSPerGB = &v
	}
	if len(cpuS) > 0 {
		v := stats.Summarize(cpuS).Median
		r.CPUServerSPerGB = &v
	}
	r.CompetitorMbps = stats.Summarize(competitor).Median
	r.Share = stats.Summarize(share).Median
	r.FirstEchoMs, r.FirstEchoRuns = stats.Summarize(first).Median, first
	r.TotalMs, r.TotalRuns = stats.Summarize(total).Median, total
	r.P50Ms = stats.Summarize(p50).Median
	r.P99Ms = stats.Summarize(p99).Median
	r.AllVerified = allVerified && r.Runs > 0
	r.MaxMs = stats.Summarize(maxes).Median
	r.AloneMbps = stats.Summarize(alone).Median
	r.Kept = stats.Summarize(kept).Median
	if len(late) == r.Runs {
		r.EmulatorLateRuns = late
	}
	if s.Kind == UDP || s.Kind == WireGuard {
		summarizeUDP(&r, s, samples)
	}
	return r
}

func (r *Record) setRatioCeiling() {
	r.RatioCeiling = 0
	if r.CeilingMbps > 0 && len(r.Goodputs) > 0 {
		r.RatioCeiling = r.GoodputMbps / r.CeilingMbps
	}
}

// LimitCeilings makes the emulator's own speed part of each record's ceiling:
// forwardMbps is what it carried unimpaired at the start of the run, in bytes of IP
// packets (0: not measured). Where that is below a scenario's rate (or the scenario has
// no rate limit), the ceiling is forwardMbps x (1 - loss), so that the ratio to the
// ceiling judges the contender, not the forwarder.
func LimitCeilings(records []Record, forwardMbps float64) {
	if forwardMbps <= 0 {
		return
	}
	for i := range records {
		r := &records[i]
		if r.RateMbps > 0 && r.RateMbps <= forwardMbps {
			continue
		}
		r.CeilingMbps = forwardMbps * (1 - r.Loss)
		r.CeilingLimitedBy = "emulator"
		r.setRatioCeiling()
	}
}

// FillRatios sets RatioCubic on every record of a scenario that has a tcp-cubic record
// with a positive median.
func FillRatios(records []Record) {
	cubic := map[string]float64{}
	for _, r := range records {
		if r.Contender == TCPCubic && r.Runs > 0 && r.GoodputMbps > 0 {
			cubic[r.Suite+"/"+r.Scenario] = r.GoodputMbps
		}
	}
	for i := range records {
		if c, ok := cubic[records[i].Suite+"/"+records[i].Scenario]; ok && records[i].Runs > 0 {
			records[i].RatioCubic = records[i].GoodputMbps / c
		}
	}
}

// Environment describes where and how a run happened, for the report.
type Environment struct {
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Command  string    `json:"command"`
	Kernel   string    `json:"kernel"`
	CPU      string    `json:"cpu"`
	Cores    int       `json:"cores"`
	Backend  string    `json:"backend"` // link emulation: "tun", "tc-netem", "loopback"
	// BackendReason says why that backend: auto's first choice, or why auto rejected
	// the preferred one (netem/host.Available), or requested on the command line.
	BackendReason string            `json:"backend_reason,omitempty"`
	HostCC        string            `json:"host_congestion_control"`
	Versions      map[string]string `json:"versions"` // go, quic-go, iperf3, kcptun, ...
	Tuning        map[string]string `json:"tuning"`   // contender -> how it was configured
	Notes         []string          `json:"notes,omitempty"`
	SuiteTitles   map[string]string `json:"suites"` // suite -> description
	// Incomplete lists the suites of the run not all of whose scenarios finished
	// (interrupted): their records do not replace a complete earlier run's in latest.
	Incomplete []string `json:"incomplete_suites,omitempty"`
	// Emulator is what the link emulator forwarded unimpaired at the start of the run;
	// nil when not measured.
	Emulator *EmulatorSpeed `json:"emulator_speed,omitempty"`
}

// RunID names a run: the UTC start time, also the name of its folder under the results.
func (e Environment) RunID() string { return e.Started.UTC().Format("20060102T150405Z") }

// EmulatorSpeed is a measurement of the link emulator itself: one TCP flow (iperf3)
// across an unimpaired link.
type EmulatorSpeed struct {
	GoodputMbps float64 `json:"goodput_mbps"` // TCP payload
	// LinkMbps is the same in bytes of IP packets (GoodputMbps / TCPPayloadShare): what
	// the emulator forwards, in the unit of a scenario's rate.
	LinkMbps float64 `json:"link_mbps"`
	How      string  `json:"how"` // e.g. "3 s iperf3, one tcp-cubic flow, RTT 1 ms, no rate limit"
}
