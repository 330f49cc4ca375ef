package report

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quictun/quictun/bench"
)

func sampleRun(t *testing.T) (bench.Environment, []bench.Record) {
	t.Helper()
	scen := func(name string, loss float64, rtt time.Duration) bench.Scenario {
		return bench.Scenario{Suite: "wan", Name: name, Kind: bench.Goodput, RateMbps: 100, RTT: rtt, Loss: loss, QueueBDP: 1, Repetitions: 3}
	}
	var records []bench.Record
	add := func(s bench.Scenario, contender string, goodputs ...float64) {
		var samples []bench.Sample
		for i, g := range goodputs {
			x := bench.Sample{Scenario: s, Contender: contender, Repetition: i + 1, GoodputMbps: g, Bytes: int64(g * 1e6 / 8 * 10), CPUClientS: -1, CPUServerS: -1}
			if contender == "quictun" {
				x.CPUClientS, x.CPUServerS = 0.5, 0.25
			}
			samples = append(samples, x)
		}
		records = append(records, bench.Summarize(s, contender, samples))
	}
	for _, rtt := range []time.Duration{50 * time.Millisecond, 200 * time.Millisecond} {
		for _, loss := range []float64{0, 0.01} {
			s := scen("rtt"+rtt.String()+"-loss"+map[float64]string{0: "0", 0.01: "1"}[loss], loss, rtt)
			add(s, "tcp-cubic", 90, 94, 93)
			add(s, "quictun", 92, 93, 91)
		}
	}
	// A contender that failed every run, and one not installed.
	fail := scen("rtt50ms-loss1", 0.01, 50*time.Millisecond)
	records = append(records, bench.Summarize(fail, "kcptun", []bench.Sample{{Scenario: fail, Contender: "kcptun", Err: "kcptun-server: exit status 1: bind | failed"}}))
	missing := bench.Summarize(fail, "tcp-bbr", nil)
	missing.Note = "not installed"
	records = append(records, missing)
	bench.FillRatios(records)
	env := bench.Environment{
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Finished: time.Date(2026, 1, 2, 3, 6, 5, 0, time.UTC),
		Command: "quictun-bench --suite wan", Kernel: "6.1", CPU: "Test CPU", Cores: 2, Backend: "tun", HostCC: "bbr",
		BackendReason: "auto: tun because tc-netem: kernel has no usable netem qdisc",
		Versions:      map[string]string{"go": "go1.26", "iperf3": "iperf 3.12"},
		Tuning:        map[string]string{"tcp-cubic": "kernel", "quictun": "default settings"},
		SuiteTitles:   map[string]string{"wan": "A WAN link."},
	}
	return env, records
}

func TestSummarizeAndRatios(t *testing.T) {
	_, records := sampleRun(t)
	q := records[1] // quictun, rtt 50, loss 0
	if q.Contender != "quictun" || q.GoodputMbps != 92 || q.GoodputMin != 91 || q.GoodputMax != 93 || q.Runs != 3 {
		t.Fatalf("quictun record %+v", q)
	}
	if q.RatioCubic != 92.0/93 || q.RatioCeiling != 0.92 {
		t.Fatalf("ratios %v %v", q.RatioCubic, q.RatioCeiling)
	}
	// 0.5 s over 91-93 Mbit/s for 10 s (about 0.115 GB): about 4.3 s/GB.
	if q.CPUClientSPerGB == nil || *q.CPUClientSPerGB < 4.2 || *q.CPUClientSPerGB > 4.5 {
		t.Fatalf("cpu client s/GB = %v", q.CPUClientSPerGB)
	}
	if records[0].CPUClientSPerGB != nil {
		t.Fatal("direct TCP must have no endpoint CPU")
	}
}

func TestMarkdown(t *testing.T) {
	env, records := sampleRun(t)
	charts := Charts(records)
	md := Markdown(env, records, charts, "charts", false)
	for _, want := range []string{
		"# quictun benchmark report",
		"| kernel | 6.1 |",
		"| CPU | Test CPU, 2 cores |",
		"share this machine's 2 cores",
		"| link emulation | tun: ",
		"| why this backend | auto: tun because tc-netem: kernel has no usable netem qdisc |",
		"| iperf3 | iperf 3.12 |",
		"## Suite `wan`",
		"A WAN link.",
		"| rtt50ms-loss0 | 100 Mbit/s, RTT 50 ms, loss 0% | quictun | 92.0 | 91.0-93.0 | 0.99x | 100.0 | 92% | 4.3 | 2.2 | 3 |",
		"| rtt50ms-loss0 | 100 Mbit/s, RTT 50 ms, loss 0% | tcp-cubic | 93.0 | 90.0-94.0 | 1.00x | 100.0 | 93% | - | - | 3 |",
		"| rtt50ms-loss1 | 100 Mbit/s, RTT 50 ms, loss 1% | kcptun | - | | | 99.0 | | | | 0 (1 failed) |",
		"TCP payload reaches at most 96.5% of it",
		"- rtt50ms-loss1 / kcptun: kcptun-server: exit status 1: bind \\| failed",
		"![wan: goodput vs loss, 100 Mbit/s, RTT 50 ms](charts/wan-rate100-rtt50.png)",
		"(charts/wan-rate100-rtt200.svg)",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(md, "| tcp-bbr |") {
		t.Error("a contender that never ran has a table row; the notes explain it")
	}
	env.Cores = 64
	if md64 := Markdown(env, records, charts, "charts", false); !strings.Contains(md64, "share this machine's 64 cores") || strings.Contains(md64, "2-core") {
		t.Error("the report does not take the core count from the environment")
	}
	env.Cores = 2
	if strings.Contains(md, "Interrupted") {
		t.Error("complete run marked interrupted")
	}
	if !strings.Contains(Markdown(env, records, charts, "charts", true), "**Interrupted") {
		t.Error("interrupted run not marked")
	}
	if t.Failed() {
		t.Log(md)
	}
}

func TestChartsGroupByLink(t *testing.T) {
	_, records := sampleRun(t)
	charts := Charts(records)
	if len(charts) != 2 {
		t.Fatalf("%d charts, want one per RTT", len(charts))
	}
	c := charts[0]
	if c.Name != "wan-rate100-rtt200" && c.Name != "wan-rate100-rtt50" {
		t.Fatalf("chart name %q", c.Name)
	}
	if len(c.Lines) != 2 || c.Lines[0].Contender != "tcp-cubic" || c.Lines[1].Contender != "quictun" {
		t.Fatalf("lines %+v", c.Lines)
	}
	if pts := c.Lines[0].Points; len(pts) != 2 || pts[0].LossPercent != 0 || pts[1].LossPercent != 1 {
		t.Fatalf("points %+v", pts)
	}
}

func TestWrite(t *testing.T) {
	env, records := sampleRun(t)
	out := t.TempDir()
	// A chart left by an older run must not survive in latest-charts.
	os.MkdirAll(filepath.Join(out, "latest-charts"), 0o755)
	os.WriteFile(filepath.Join(out, "latest-charts", "old.png"), []byte("x"), 0o644)

	w, err := Write(out, env, records, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	if w.Dir != filepath.Join(out, "20260102T030405Z") {
		t.Fatalf("dir %s", w.Dir)
	}
	for _, f := range []string{"report.md", "results.json", "samples.json", "environment.json", "charts/wan-rate100-rtt50.png", "charts/wan-rate100-rtt50.svg"} {
		if _, err := os.Stat(filepath.Join(w.Dir, f)); err != nil {
			t.Error(err)
		}
	}
	png, _ := os.ReadFile(filepath.Join(out, "latest-charts", "wan-rate100-rtt50.png"))
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Error("latest chart is not a PNG")
	}
	svg, _ := os.ReadFile(filepath.Join(out, "latest-charts", "wan-rate100-rtt200.svg"))
	if !bytes.Contains(svg, []byte("<svg")) {
		t.Error("latest chart is not an SVG")
	}
	if _, err := os.Stat(filepath.Join(out, "latest-charts", "old.png")); err == nil {
		t.Error("stale chart survived")
	}
	md, _ := os.ReadFile(w.Latest)
	if !strings.Contains(string(md), "(latest-charts/wan-rate100-rtt50.png)") || !strings.Contains(string(md), "[20260102T030405Z](20260102T030405Z/)") {
		t.Error("latest.md does not link its charts and run folder")
	}

	// latest.json: an array of records with the agreed fields.
	data, err := os.ReadFile(filepath.Join(out, "latest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var generic []map[string]any
	if err := json.Unmarshal(data, &generic); err != nil {
		t.Fatal(err)
	}
	if len(generic) != len(records) {
		t.Fatalf("%d records in latest.json, want %d", len(generic), len(records))
	}
	for _, key := range []string{"suite", "scenario", "contender", "rate_mbps", "rtt_ms", "loss", "goodput_mbps", "runs"} {
		if _, ok := generic[1][key]; !ok {
			t.Errorf("latest.json record lacks %q", key)
		}
	}
	if generic[1]["loss"].(float64) != 0 || generic[3]["loss"].(float64) != 0.01 {
		t.Errorf("loss must be a fraction: %v, %v", generic[1]["loss"], generic[3]["loss"])
	}
}
