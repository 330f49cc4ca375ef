package report

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/quictun/quictun/bench"
)

func scenarioOf(suite, name string, kind bench.Kind, rate float64, rtt time.Duration, loss float64) bench.Scenario {
	return bench.Scenario{Suite: suite, Name: name, Kind: kind, RateMbps: rate, RTT: rtt, Loss: loss, QueueBDP: 1, Repetitions: 2,
		Requests: 200, MessageBytes: 64, Tunnels: 100, TotalBytes: 128 << 20}
}

func testEnv(suites ...string) bench.Environment {
	env := bench.Environment{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Finished: time.Date(2026, 1, 2, 3, 9, 5, 0, time.UTC),
		Command: "quictun-bench --suite x", Kernel: "6.1", CPU: "Test CPU", Cores: 2, Backend: "tun", HostCC: "bbr",
		Versions: map[string]string{"go": "go1.26", "quictun": "abc1234-dirty"}, Tuning: map[string]string{"tcp-cubic": "kernel"},
		SuiteTitles: map[string]string{},
	}
	for _, s := range suites {
		env.SuiteTitles[s] = "Suite " + s + "."
	}
	return env
}

func latencyRecords() []bench.Record {
	s := scenarioOf("latency", "rtt50-loss1", bench.Latency, 100, 50*time.Millisecond, 0.01)
	var records []bench.Record
	for _, c := range []struct {
		contender    string
		first, total [2]float64
	}{
		{"tcp-cubic", [2]float64{101, 103}, [2]float64{10400, 10600}},
		{"quictun", [2]float64{152, 150}, [2]float64{10100, 10300}},
	} {
		var samples []bench.Sample
		for i := range 2 {
			samples = append(samples, bench.Sample{Scenario: s, Contender: c.contender, Repetition: i + 1,
				FirstEchoMs: c.first[i], TotalMs: c.total[i], P50Ms: 50.4, P99Ms: 61.2, RoundTrips: 200, CPUClientS: -1, CPUServerS: -1})
		}
		records = append(records, bench.Summarize(s, c.contender, samples))
	}
	bench.FillRatios(records)
	return records
}

func scaleRecords() []bench.Record {
	s := scenarioOf("scale", "tunnels100", bench.Scale, 100, 10*time.Millisecond, 0)
	ok := func(rep int, mbps float64) bench.Sample {
		return bench.Sample{Scenario: s, Contender: "quictun", Repetition: rep, GoodputMbps: mbps, Bytes: 128 << 20, CPUClientS: 1.5, CPUServerS: 2,
			Tunnels: 100, Verified: 100}
	}
	quictun := bench.Summarize(s, "quictun", []bench.Sample{ok(1, 88), ok(2, 90)})
	partial := bench.Sample{Scenario: s, Contender: "kcptun", Repetition: 1, GoodputMbps: 40, Bytes: 64 << 20, CPUClientS: -1, CPUServerS: -1,
		Tunnels: 100, Verified: 97, Err: "3 of 100 tunnels failed verification; first: tunnel 7: byte 5 differs"}
	kcptun := bench.Summarize(s, "kcptun", []bench.Sample{partial, {Scenario: s, Contender: "kcptun", Repetition: 2, GoodputMbps: 41, Bytes: 128 << 20,
		CPUClientS: -1, CPUServerS: -1, Tunnels: 100, Verified: 99}})
	return []bench.Record{quictun, kcptun}
}

func fairnessRecords() []bench.Record {
	s := scenarioOf("wan", "fairness", bench.Fairness, 100, 50*time.Millisecond, 0)
	var samples []bench.Sample
	for i, g := range []float64{45, 47} {
		samples = append(samples, bench.Sample{Scenario: s, Contender: "quictun", Repetition: i + 1, GoodputMbps: g, CompetitorMbps: 95 - g,
			Bytes: 1e9, CPUClientS: 1, CPUServerS: 1})
	}
	return []bench.Record{bench.Summarize(s, "quictun", samples)}
}

func TestMarkdownLatencyTable(t *testing.T) {
	records := latencyRecords()
	md := Markdown(testEnv("latency"), records, nil, "charts", false)
	for _, want := range []string{
		"## Suite `latency`",
		"### Latency: echo request/response",
		"| scenario | link | contender | connect to first echo ms | 200 round trips ms | round trip p50 ms | p99 ms | runs |",
		"| rtt50-loss1 | 100 Mbit/s, RTT 50 ms, loss 1% | tcp-cubic | 102.0 | 10500 | 50.40 | 61.20 | 2 |",
		"| rtt50-loss1 | 100 Mbit/s, RTT 50 ms, loss 1% | quictun | 151.0 | 10200 | 50.40 | 61.20 | 2 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "### Goodput") || strings.Contains(md, "0.0 |") {
		t.Error("a latency suite shows a goodput table or a zero goodput")
	}
	if t.Failed() {
		t.Log(md)
	}
}

// A latency record has its own fields in JSON and no goodput (null, not 0).
func TestLatencyRecordJSON(t *testing.T) {
	data, err := json.Marshal(latencyRecords()[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"goodput_mbps", "goodput_min_mbps", "goodput_max_mbps"} {
		if v, ok := m[key]; !ok || v != nil {
			t.Errorf("%s = %v (present %v), want null", key, v, ok)
		}
	}
	if _, ok := m["goodput_runs_mbps"]; ok {
		t.Error("goodput_runs_mbps present in a latency record")
	}
	if m["first_echo_ms"] != 151.0 || m["total_ms"] != 10200.0 || m["round_trips"] != 200.0 || m["runs"] != 2.0 {
		t.Errorf("latency fields: %s", data)
	}
	if runs, _ := m["first_echo_runs_ms"].([]any); len(runs) != 2 || runs[0] != 152.0 {
		t.Errorf("first_echo_runs_ms = %v", m["first_echo_runs_ms"])
	}
	if _, ok := m["ratio_to_ceiling"]; ok {
		t.Error("a latency record has a ratio to the goodput ceiling")
	}
	// It reads back (goodput null is 0 in Go), and other kinds keep a numeric goodput.
	var back bench.Record
	if err := json.Unmarshal(data, &back); err != nil || back.FirstEchoMs != 151 || back.Kind != bench.Latency {
		t.Errorf("read back %+v: %v", back, err)
	}
	data, _ = json.Marshal(scaleRecords()[0])
	if !strings.Contains(string(data), `"goodput_mbps":89`) {
		t.Errorf("scale record lost its goodput: %s", data)
	}
}

func TestMarkdownScaleTable(t *testing.T) {
	md := Markdown(testEnv("scale"), scaleRecords(), nil, "charts", false)
	for _, want := range []string{
		"### Scale: concurrent tunnels, every byte echoed and checked",
		"| tunnels100 | 100 Mbit/s, RTT 10 ms, loss 0%, 100 tunnels | quictun | 89.0 | 88.0-90.0 | yes | 11.2 | 14.9 | 2 |",
		"| tunnels100 | 100 Mbit/s, RTT 10 ms, loss 0%, 100 tunnels | kcptun | 41.0 | - | no | - | - | 1 (+1 failed) |",
		"- tunnels100 / kcptun: 3 of 100 tunnels failed verification; first: tunnel 7: byte 5 differs",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}

func TestMarkdownFairnessTable(t *testing.T) {
	md := Markdown(testEnv("wan"), fairnessRecords(), nil, "charts", false)
	for _, want := range []string{
		"### Fairness: each contender beside a direct TCP cubic flow on the same bottleneck",
		"| fairness | 100 Mbit/s, RTT 50 ms, loss 0% | quictun | 46.0 | 49.0 | 48% | 2 |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}

// A scenario cut short by Ctrl-C shows what finished, marked; one that measured
// nothing has no record at all (the runner leaves it out), so no "0 (0 failed)".
func TestMarkdownInterrupted(t *testing.T) {
	records := latencyRecords()
	records[1].Interrupted = true
	scale := scaleRecords()
	scale[0].Interrupted = true
	env := testEnv("latency", "scale")
	env.Incomplete = []string{"latency", "scale"}
	md := Markdown(env, append(records, scale...), nil, "charts", true)
	for _, want := range []string{
		"**Interrupted: this report holds only the runs that finished.**",
		"| rtt50-loss1 | 100 Mbit/s, RTT 50 ms, loss 1% | quictun | 151.0 | 10200 | 50.40 | 61.20 | 2 (interrupted) |",
		"| yes | 11.2 | 14.9 | 2 (interrupted) |",
		"**Interrupted**: only the scenarios that finished.",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "0 (0 failed)") {
		t.Error("report shows an empty record as 0 (0 failed)")
	}
	if t.Failed() {
		t.Log(md)
	}
}

// Where the emulator forwards less than a scenario's rate, the ceiling is its speed,
// and the report says so.
func TestMarkdownEmulatorCeiling(t *testing.T) {
	s := scenarioOf("report", "loss1", bench.Goodput, 1000, time.Millisecond, 0.01)
	slow := scenarioOf("report", "slow-loss1", bench.Goodput, 100, time.Millisecond, 0.01)
	sample := func(s bench.Scenario, g float64) []bench.Sample {
		return []bench.Sample{{Scenario: s, Contender: "tcp-cubic", Repetition: 1, GoodputMbps: g, Bytes: 1e9, CPUClientS: -1, CPUServerS: -1}}
	}
	records := []bench.Record{bench.Summarize(s, "tcp-cubic", sample(s, 594)), bench.Summarize(slow, "tcp-cubic", sample(slow, 95))}
	bench.FillRatios(records)
	bench.LimitCeilings(records, 800)
	env := testEnv("report")
	env.Emulator = &bench.EmulatorSpeed{GoodputMbps: 772.3, LinkMbps: 800, How: "3 s of iperf3, one tcp-cubic flow, RTT 1 ms, no rate limit, no loss (tun backend)"}
	md := Markdown(env, records, nil, "charts", false)
	for _, want := range []string{
		"| emulator speed, unimpaired | 772 Mbit/s of TCP payload, 800 Mbit/s of IP packets (3 s of iperf3, one tcp-cubic flow, RTT 1 ms, no rate limit, no loss (tun backend)) |",
		"**The emulator is the bottleneck here**: at the start of the run it forwarded 800 Mbit/s of IP packets unimpaired, below the rate of loss1.",
		"| loss1 | 1000 Mbit/s, RTT 1 ms, loss 1% | tcp-cubic | 594.0 | - | 1.00x | 792.0 *emulator* | 75% |",
		"| slow-loss1 | 100 Mbit/s, RTT 1 ms, loss 1% | tcp-cubic | 95.0 | - | 1.00x | 99.0 | 96% |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}

// Runs whose emulator stalled are named under the table, with their goodput; runs
// within the threshold and backends that do not report lateness are not.
func TestMarkdownEmulatorHiccups(t *testing.T) {
	s := scenarioOf("wan", "rtt50-loss5", bench.Goodput, 100, 50*time.Millisecond, 0.05)
	run := func(contender string, goodput, lateMs float64) bench.Sample {
		return bench.Sample{Scenario: s, Contender: contender, GoodputMbps: goodput, Bytes: 1e8, CPUClientS: -1, CPUServerS: -1, EmulatorLateMs: lateMs}
	}
	stalled := bench.Summarize(s, "quictun", []bench.Sample{run("quictun", 82.1, 2), run("quictun", 72.4, 112), run("quictun", 81.9, 0)})
	unknown := bench.Summarize(s, "tcp-bbr", []bench.Sample{run("tcp-bbr", 81, -1), run("tcp-bbr", 82, 30)})
	if len(stalled.EmulatorLateRuns) != 3 || unknown.EmulatorLateRuns != nil {
		t.Fatalf("lateness per run: %v and %v", stalled.EmulatorLateRuns, unknown.EmulatorLateRuns)
	}
	md := Markdown(testEnv("wan"), []bench.Record{stalled, unknown}, nil, "charts", false)
	want := "- rtt50-loss5 / quictun (run 2, 72.4 Mbit/s): 112 ms"
	if !strings.Contains(md, want) || strings.Contains(md, "run 1, 82.1") || strings.Contains(md, "tcp-bbr (run") {
		t.Errorf("report lacks %q or names another run:\n%s", want, md)
	}
	clean := bench.Summarize(s, "quictun", []bench.Sample{run("quictun", 82.1, 2)})
	if md := Markdown(testEnv("wan"), []bench.Record{clean}, nil, "charts", false); strings.Contains(md, "emulator itself was late") {
		t.Errorf("a clean run is listed:\n%s", md)
	}
}

func TestMarkdownInteractiveTable(t *testing.T) {
	s := scenarioOf("interactive", "stuck4", bench.Interactive, 100, 200*time.Millisecond, 0)
	s.Bulk, s.Stuck = 1, 4
	ok := bench.Sample{Scenario: s, Contender: "quictun", Repetition: 1, GoodputMbps: 90, AloneMbps: 95, P50Ms: 205, P99Ms: 215.5, MaxMs: 230, RoundTrips: 100, CPUClientS: -1, CPUServerS: -1}
	records := []bench.Record{
		bench.Summarize(s, "quictun", []bench.Sample{ok}),
		bench.Summarize(s, "kcptun", []bench.Sample{{Scenario: s, Contender: "kcptun", Repetition: 1, Err: "bulk download: i/o timeout"}}),
	}
	md := Markdown(testEnv("interactive"), records, nil, "charts", false)
	for _, want := range []string{
		"### Interactive: an echo beside bulk downloads through the same path",
		"| stuck4 | 100 Mbit/s, RTT 200 ms, loss 0%, 1 bulk, 4 stuck | quictun | 205.0 | 215.5 | 230.0 | +15.5 | 90.0 | 90% | 95.0 | 95% | 1 |",
		"| stuck4 | 100 Mbit/s, RTT 200 ms, loss 0%, 1 bulk, 4 stuck | kcptun | - | - | - | - | - | | - | - | 0 (1 failed) |",
		"- stuck4 / kcptun: bulk download: i/o timeout",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}
