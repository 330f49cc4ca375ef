package bench

import (
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
