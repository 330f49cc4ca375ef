package bench

import (
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
}

// Record summarises every repetition of one contender on one scenario: one element of
// latest.json.
type Record struct {
	Suite       string  `json:"suite"`
	Scenario    string  `json:"scenario"`
	Kind        Kind    `json:"kind"`
	Contender   string  `json:"contender"`
	RateMbps    float64 `json:"rate_mbps"` // 0: no limit
	RTTms       float64 `json:"rtt_ms"`
	Loss        float64 `json:"loss"`            // fraction, each direction
	Burst       float64 `json:"burst,omitempty"` // mean loss burst in packets
	Runs        int     `json:"runs"`            // successful repetitions
	Failed      int     `json:"failed,omitempty"`
	CeilingMbps float64 `json:"ceiling_mbps,omitempty"`

	GoodputMbps float64   `json:"goodput_mbps"` // median
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

	FirstEchoMs float64 `json:"first_echo_ms,omitempty"`
	TotalMs     float64 `json:"total_ms,omitempty"`
	P50Ms       float64 `json:"p50_ms,omitempty"`
	P99Ms       float64 `json:"p99_ms,omitempty"`
	RoundTrips  int     `json:"round_trips,omitempty"`

	Tunnels     int  `json:"tunnels,omitempty"`
	AllVerified bool `json:"all_verified,omitempty"` // every byte of every tunnel of every run

	Errors []string `json:"errors,omitempty"`
	// Note says why a contender did not run at all (not installed).
	Note string `json:"note,omitempty"`
}

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
	var goodput, cpuC, cpuS, competitor, share, first, total, p50, p99 []float64
	allVerified := s.Kind == Scale
	for _, x := range samples {
		if x.Err != "" {
			r.Failed++
			r.Errors = append(r.Errors, x.Err)
			allVerified = false
			continue
		}
		r.Runs++
		goodput = append(goodput, x.GoodputMbps)
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
		}
	}
	g := stats.Summarize(goodput)
	r.GoodputMbps, r.GoodputMin, r.GoodputMax, r.Goodputs = g.Median, g.Min, g.Max, goodput
	if r.CeilingMbps > 0 && g.N > 0 {
		r.RatioCeiling = g.Median / r.CeilingMbps
	}
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
	r.FirstEchoMs = stats.Summarize(first).Median
	r.TotalMs = stats.Summarize(total).Median
	r.P50Ms = stats.Summarize(p50).Median
	r.P99Ms = stats.Summarize(p99).Median
	r.AllVerified = allVerified && r.Runs > 0
	return r
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
}
