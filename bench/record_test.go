package bench

import (
	"math"
	"testing"
	"time"
)

func TestLimitCeilings(t *testing.T) {
	mk := func(rate, loss, goodput float64) Record {
		s := Scenario{Suite: "s", Name: "x", Kind: Goodput, RateMbps: rate, RTT: time.Millisecond, Loss: loss}
		return Summarize(s, TCPCubic, []Sample{{Scenario: s, Contender: TCPCubic, GoodputMbps: goodput, CPUClientS: -1, CPUServerS: -1}})
	}
	records := []Record{mk(1000, 0.01, 500), mk(100, 0, 95), mk(0, 0, 700)}
	if records[0].CeilingMbps != 990 || records[0].RatioCeiling != 500.0/990 || records[2].CeilingMbps != 0 || records[2].RatioCeiling != 0 {
		t.Fatalf("ceilings before: %+v", records)
	}
	LimitCeilings(records, 800)
	if r := records[0]; r.CeilingMbps != 792 || r.CeilingLimitedBy != "emulator" || r.RatioCeiling != 500.0/792 {
		t.Errorf("1000 Mbit/s link behind an 800 Mbit/s emulator: %+v", r)
	}
	if r := records[1]; r.CeilingMbps != 100 || r.CeilingLimitedBy != "" || r.RatioCeiling != 0.95 {
		t.Errorf("100 Mbit/s link: %+v", r)
	}
	if r := records[2]; r.CeilingMbps != 800 || r.CeilingLimitedBy != "emulator" || r.RatioCeiling != 700.0/800 {
		t.Errorf("link without rate limit: %+v", r)
	}
	before := records[1]
	LimitCeilings(records[1:2], 0) // not measured: nothing changes
	if records[1].CeilingMbps != before.CeilingMbps || records[1].CeilingLimitedBy != "" {
		t.Errorf("unmeasured emulator changed a ceiling: %+v", records[1])
	}
}

func TestSummarizeLatencyHasNoGoodput(t *testing.T) {
	s := Scenario{Suite: "latency", Name: "x", Kind: Latency, RateMbps: 100, RTT: 50 * time.Millisecond}
	r := Summarize(s, Quictun, []Sample{
		{Scenario: s, FirstEchoMs: 120, TotalMs: 10_300, RoundTrips: 200, CPUClientS: -1, CPUServerS: -1},
		{Scenario: s, FirstEchoMs: 110, TotalMs: 10_100, RoundTrips: 200, CPUClientS: -1, CPUServerS: -1},
		{Scenario: s, Err: "timeout"},
	})
	if r.Runs != 2 || r.Failed != 1 || r.Goodputs != nil || r.RatioCeiling != 0 {
		t.Errorf("latency record carries goodput: %+v", r)
	}
	if r.FirstEchoMs != 115 || r.TotalMs != 10_200 || len(r.FirstEchoRuns) != 2 || len(r.TotalRuns) != 2 || r.RoundTrips != 200 {
		t.Errorf("latency fields: %+v", r)
	}
}

func TestSummarizeInteractive(t *testing.T) {
	s := Scenario{Suite: "interactive", Name: "x", Kind: Interactive, RateMbps: 20, RTT: 50 * time.Millisecond, Bulk: 2, Stuck: 4}
	r := Summarize(s, Quictun, []Sample{
		{Scenario: s, GoodputMbps: 18, AloneMbps: 20, P50Ms: 60, P99Ms: 70, MaxMs: 80, RoundTrips: 100, CPUClientS: -1, CPUServerS: -1},
		{Scenario: s, GoodputMbps: 16, AloneMbps: 19, P50Ms: 62, P99Ms: 74, MaxMs: 90, RoundTrips: 100, CPUClientS: -1, CPUServerS: -1},
		{Scenario: s, Err: "stalled"},
	})
	if r.Runs != 2 || r.Failed != 1 || r.GoodputMbps != 17 || r.AloneMbps != 19.5 || r.P50Ms != 61 || r.P99Ms != 72 || r.MaxMs != 85 || r.RoundTrips != 100 {
		t.Errorf("interactive record: %+v", r)
	}
	// Kept is the median of each run's own ratio, not a ratio of medians.
	if want := (18.0/20 + 16.0/19) / 2; math.Abs(r.Kept-want) > 1e-12 || r.Bulk != 2 || r.Stuck != 4 || r.RatioCeiling != 17.0/20 {
		t.Errorf("kept %v (want %v), bulk %d, stuck %d, of ceiling %v", r.Kept, want, r.Bulk, r.Stuck, r.RatioCeiling)
	}
}
