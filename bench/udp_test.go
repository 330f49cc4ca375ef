package bench

import (
	"strings"
	"testing"
)

func TestUDPKindsValidate(t *testing.T) {
	const head = "suite = \"u\"\n[[scenario]]\nrate_mbps = 100\nrtt_ms = 50\nduration = \"5s\"\n"
	for _, c := range []struct{ body, want string }{
		{"kind = \"udp\"\ncontenders = [\"kcptun\"]\n", `"kcptun" carries no UDP`},
		{"kind = \"goodput\"\ncontenders = [\"direct\"]\n", `"direct" is the bare link`},
		{"kind = \"udp\"\nudp_mbps = 0\n", "udp_mbps 0 must be in (0, 10000]"},
		{"kind = \"udp\"\ndatagram_bytes = 40000\n", "datagram_bytes 40000 must be in [16, 32767]"},
		{"kind = \"wireguard\"\nwireguard_mtu = 1500\n", "wireguard_mtu 1500 must be in [1280, 1420]"},
	} {
		_, err := ParseSuite([]byte(head+c.body), "u.toml")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.body, err, c.want)
		}
	}
	s, err := ParseSuite([]byte(head+"kind = \"udp\"\nloss = 0.05\n"), "u.toml")
	if err != nil {
		t.Fatal(err)
	}
	sc := s.Scenarios[0]
	if sc.UDPMbps != 50 || sc.DatagramBytes != 1200 || strings.Join(sc.Contenders, ",") != strings.Join(udpContenders, ",") {
		t.Fatalf("defaults: %+v", sc)
	}
	if d := sc.Describe(); !strings.Contains(d, "iperf3 -u 50 Mbit/s of 1200-byte datagrams") {
		t.Fatalf("Describe = %q", d)
	}
}

func TestUDPRecordsAndAddedDelay(t *testing.T) {
	s := Scenario{Suite: "u", Name: "a", Kind: UDP, UDPMbps: 50, DatagramBytes: 1200, Repetitions: 2}
	sample := func(lost, p99 float64) Sample {
		return Sample{Scenario: s, UDP: &UDPSample{Datagrams: 1000, LostPercent: lost, DelayP50Ms: 25, DelayP99Ms: p99, DelayP99SteadyMs: p99 - 4}}
	}
	records := []Record{
		Summarize(s, Direct, []Sample{sample(5, 30), sample(5.2, 32)}),
		Summarize(s, Quictun, []Sample{sample(0.01, 36), sample(0.03, 40), {Scenario: s, Err: "boom"}}),
	}
	FillAddedDelay(records)
	q := records[1]
	if q.Runs != 2 || q.Failed != 1 || q.UDP == nil || q.UDP.LostPercent != 0.02 || q.UDP.AddedP99Ms == nil || *q.UDP.AddedP99Ms != 7 {
		t.Fatalf("quictun record: %+v %+v", q, q.UDP)
	}
	if q.UDP.AddedP99SteadyMs == nil || *q.UDP.AddedP99SteadyMs != 7 || q.UDP.DelayP99SteadyMs != 34 {
		t.Fatalf("quictun's steady p99: %+v", q.UDP)
	}
	if records[0].UDP.AddedP99Ms != nil || len(q.Goodputs) != 0 {
		t.Fatalf("direct has an added delay, or a udp record has goodputs: %+v", records)
	}
}

// A wireguard record keeps each run's tunnel counters (loss left, drops), and no
// udp figures.
func TestWireGuardRecordKeepsCounters(t *testing.T) {
	s := Scenario{Suite: "u", Name: "wg", Kind: WireGuard, WireGuardMTU: 1280, Repetitions: 2}
	c1 := map[string]float64{`server quictun_recovery_unrepaired_total{endpoint="server"}`: 3}
	r := Summarize(s, Quictun, []Sample{
		{Scenario: s, GoodputMbps: 40, UDP: &UDPSample{Counters: c1}},
		{Scenario: s, GoodputMbps: 50},
		{Scenario: s, Err: "boom", UDP: &UDPSample{Counters: c1}},
	})
	if r.UDP != nil || r.WireGuardMTU != 1280 || len(r.Counters) != 1 || r.Counters[0][`server quictun_recovery_unrepaired_total{endpoint="server"}`] != 3 {
		t.Fatalf("record %+v", r)
	}
}
