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

// quickRun is a quick-suite run started at start, with tcp-cubic at the given goodput.
func quickRun(start time.Time, cubic float64) (bench.Environment, []bench.Record) {
	env := testEnv("quick")
	env.Started, env.Finished = start, start.Add(90*time.Second)
	env.Command = "task bench:quick (go run ./cmd/quictun-bench --suite quick --out bench/results)"
	var records []bench.Record
	for _, loss := range []float64{0, 0.01} {
		s := scenarioOf("quick", map[float64]string{0: "loss0", 0.01: "loss1"}[loss], bench.Goodput, 100, 50*time.Millisecond, loss)
		for _, c := range []struct {
			name string
			mbps float64
		}{{"tcp-cubic", cubic * (1 - 10*loss)}, {"quictun", 90}} {
			records = append(records, bench.Summarize(s, c.name, []bench.Sample{{Scenario: s, Contender: c.name, Repetition: 1, GoodputMbps: c.mbps, Bytes: 1e8, CPUClientS: -1, CPUServerS: -1}}))
		}
	}
	bench.FillRatios(records)
	return env, records
}

func readRecords(t *testing.T, path string) []bench.Record {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var records []bench.Record
	if err := json.Unmarshal(data, &records); err != nil {
		t.Fatal(err)
	}
	return records
}

func fromRuns(records []bench.Record) map[string]string {
	m := map[string]string{}
	for _, r := range records {
		if prev, ok := m[r.Suite]; ok && prev != r.FromRun {
			m[r.Suite] = "mixed"
			continue
		}
		m[r.Suite] = r.FromRun
	}
	return m
}

// `task bench:quick` after `task bench` replaces the quick suite only: the full
// suites' records stay, and the report says where each suite comes from.
func TestWriteMergesBySuite(t *testing.T) {
	out := t.TempDir()
	full, wanRecords := sampleRun(t) // suite wan, started 2026-01-02T03:04:05Z
	full.Command = "task bench (go run ./cmd/quictun-bench --suite all --out bench/results)"
	quickEnv, quickRecords := quickRun(full.Started.Add(-time.Hour), 93)
	all := append(append([]bench.Record{}, wanRecords...), quickRecords...)
	full.SuiteTitles["quick"] = "Quick."
	if _, err := Write(out, full, all, nil, false); err != nil {
		t.Fatal(err)
	}
	fullID := full.RunID()
	latestJSON := filepath.Join(out, "latest.json")
	if got := fromRuns(readRecords(t, latestJSON)); got["wan"] != fullID || got["quick"] != fullID {
		t.Fatalf("after the full run, latest comes from %v", got)
	}

	quickEnv.Started = full.Started.Add(time.Hour)
	quickEnv.Finished = quickEnv.Started.Add(90 * time.Second)
	w, err := Write(out, quickEnv, quickRecords, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	quickID := quickEnv.RunID()
	if w.Latest == "" || strings.Join(w.Suites, ",") != "quick" {
		t.Fatalf("written %+v", w)
	}
	merged := readRecords(t, latestJSON)
	if got := fromRuns(merged); got["wan"] != fullID || got["quick"] != quickID || len(got) != 2 {
		t.Fatalf("after the quick run, latest comes from %v, want wan from %s and quick from %s", got, fullID, quickID)
	}
	if len(merged) != len(wanRecords)+len(quickRecords) {
		t.Fatalf("%d records in latest, want %d", len(merged), len(wanRecords)+len(quickRecords))
	}
	md, _ := os.ReadFile(filepath.Join(out, "latest.md"))
	for _, want := range []string{
		"| `quick` | [" + quickID + "](" + quickID + "/) | 2026-01-02T04:04:05Z | `task bench:quick (go run ./cmd/quictun-bench --suite quick --out bench/results)` |",
		"| `wan` | [" + fullID + "](" + fullID + "/) | 2026-01-02T03:04:05Z | `task bench (go run ./cmd/quictun-bench --suite all --out bench/results)` |",
		"## Environment of run [" + quickID + "](" + quickID + "/) (`quick`)",
		"## Environment of run [" + fullID + "](" + fullID + "/) (`wan`)",
		"From run [" + fullID + "](" + fullID + "/) of 2026-01-02T03:04:05Z.",
		"From run [" + quickID + "](" + quickID + "/) of 2026-01-02T04:04:05Z.",
		"| iperf3 | iperf 3.12 |", // the full run's environment, read back from its folder
		"A WAN link.",             // and its suite description
		"(latest-charts/wan-rate100-rtt50.png)",
		"(latest-charts/quick-rate100-rtt50.png)",
	} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("latest.md lacks %q", want)
		}
	}
	for _, chart := range []string{"wan-rate100-rtt50.png", "wan-rate100-rtt200.svg", "quick-rate100-rtt50.png"} {
		if _, err := os.Stat(filepath.Join(out, "latest-charts", chart)); err != nil {
			t.Errorf("latest chart: %v", err)
		}
	}
	if t.Failed() {
		t.Logf("%s", md)
	}
}

// latest.* is never touched by a run without a complete record, and a suite a run did
// not finish keeps the earlier complete results.
func TestWriteLeavesLatestAlone(t *testing.T) {
	out := t.TempDir()
	env, records := quickRun(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 93)
	if _, err := Write(out, env, records, nil, false); err != nil {
		t.Fatal(err)
	}
	snapshot := func() string {
		var b strings.Builder
		for _, f := range []string{"latest.json", "latest.md", "latest-charts/quick-rate100-rtt50.svg"} {
			data, err := os.ReadFile(filepath.Join(out, f))
			if err != nil {
				t.Fatal(err)
			}
			b.Write(data)
		}
		return b.String()
	}
	before := snapshot()
	next := func(env bench.Environment, minutes int) bench.Environment {
		env.Started = env.Started.Add(time.Duration(minutes) * time.Minute)
		return env
	}

	// Ctrl-C before the first scenario finished: nothing at all.
	empty := next(env, 10)
	w, err := Write(out, empty, nil, nil, true)
	if err != nil || w.Dir != "" || w.Latest != "" || w.Note == "" {
		t.Fatalf("empty run: %+v, %v", w, err)
	}
	if _, err := os.Stat(filepath.Join(out, empty.RunID())); err == nil {
		t.Error("an empty run left a folder")
	}

	// Ctrl-C during the first scenario: its partial records go to the run's folder only.
	partialEnv, partial := quickRun(next(env, 20).Started, 50)
	partialEnv.Incomplete = []string{"quick"}
	partial = partial[:1]
	partial[0].Interrupted = true
	w, err = Write(out, partialEnv, partial, nil, true)
	if err != nil || w.Dir == "" || w.Latest != "" {
		t.Fatalf("interrupted run: %+v, %v", w, err)
	}
	report, _ := os.ReadFile(filepath.Join(w.Dir, "report.md"))
	if !bytes.Contains(report, []byte("1 (interrupted)")) {
		t.Errorf("the run's own report does not mark the interrupted record:\n%s", report)
	}

	// Ctrl-C in the second scenario: the first one is complete, but the suite is not,
	// and latest has a complete quick suite, which it keeps.
	laterEnv, later := quickRun(next(env, 30).Started, 60)
	laterEnv.Incomplete = []string{"quick"}
	later = later[:2]
	w, err = Write(out, laterEnv, later, nil, true)
	if err != nil || w.Latest != "" || !strings.Contains(w.Note, "quick") {
		t.Fatalf("half a suite: %+v, %v", w, err)
	}
	if snapshot() != before {
		t.Fatal("latest.* changed")
	}

	// A suite latest does not have yet is added even when unfinished, and marked.
	scaleEnv := testEnv("scale")
	scaleEnv.Started = next(env, 40).Started
	scaleEnv.Incomplete = []string{"scale"}
	scale := scaleRecords()
	w, err = Write(out, scaleEnv, scale, nil, true)
	if err != nil || w.Latest == "" || strings.Join(w.Suites, ",") != "scale" {
		t.Fatalf("new unfinished suite: %+v, %v", w, err)
	}
	got := fromRuns(readRecords(t, filepath.Join(out, "latest.json")))
	if got["quick"] != env.RunID() || got["scale"] != scaleEnv.RunID() {
		t.Fatalf("latest comes from %v", got)
	}
	md, _ := os.ReadFile(filepath.Join(out, "latest.md"))
	if !bytes.Contains(md, []byte("(interrupted) |")) || !bytes.Contains(md, []byte("**interrupted**: only the scenarios that finished")) {
		t.Errorf("latest.md does not mark the unfinished suite:\n%s", md)
	}
}

// Records of a latest.json written before runs were recorded per record are kept and
// shown as coming from an unrecorded run.
func TestWriteKeepsRecordsWithoutRun(t *testing.T) {
	out := t.TempDir()
	_, old := sampleRun(t)
	if err := writeJSON(filepath.Join(out, "latest.json"), old); err != nil {
		t.Fatal(err)
	}
	env, records := quickRun(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), 93)
	if _, err := Write(out, env, records, nil, false); err != nil {
		t.Fatal(err)
	}
	got := fromRuns(readRecords(t, filepath.Join(out, "latest.json")))
	if got["wan"] != "" || got["quick"] != env.RunID() {
		t.Fatalf("latest comes from %v", got)
	}
	md, _ := os.ReadFile(filepath.Join(out, "latest.md"))
	if !bytes.Contains(md, []byte("| `wan` | (an earlier run that did not record its folder) | unknown | unknown |")) {
		t.Errorf("latest.md:\n%s", md)
	}
}

func TestWriteRefusesACorruptLatest(t *testing.T) {
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "latest.json"), []byte("{not json"), 0o644)
	env, records := quickRun(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), 93)
	w, err := Write(out, env, records, nil, false)
	if err == nil || w.Dir == "" {
		t.Fatalf("corrupt latest.json: %+v, %v", w, err)
	}
	if data, _ := os.ReadFile(filepath.Join(out, "latest.json")); string(data) != "{not json" {
		t.Error("a corrupt latest.json was overwritten")
	}
}

// A run of which every contender failed (a machine without iperf3) keeps its own folder
// but leaves latest.* as it was, also for a suite latest does not have yet.
func TestWriteIgnoresAllFailedSuite(t *testing.T) {
	out := t.TempDir()
	env, good := quickRun(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), 93)
	if _, err := Write(out, env, good, nil, false); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(out, "latest.json"))
	beforeMD, _ := os.ReadFile(filepath.Join(out, "latest.md"))

	failedRun := func(suite string, start time.Time) (bench.Environment, []bench.Record) {
		env := testEnv(suite)
		env.Started, env.Finished = start, start.Add(time.Minute)
		var records []bench.Record
		s := scenarioOf(suite, "loss0", bench.Goodput, 100, 50*time.Millisecond, 0)
		for _, c := range []string{"tcp-cubic", "quictun"} {
			records = append(records, bench.Summarize(s, c, []bench.Sample{{Scenario: s, Contender: c, Repetition: 1, Err: `exec: "iperf3": executable file not found in $PATH`}}))
		}
		return env, records
	}
	for i, suite := range []string{"quick", "wan"} {
		fenv, records := failedRun(suite, env.Started.Add(time.Duration(i+1)*time.Hour))
		w, err := Write(out, fenv, records, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		if w.Dir == "" || w.Latest != "" || len(w.Suites) != 0 || !strings.Contains(w.Note, "every run of suites "+suite+" failed") {
			t.Fatalf("all-failed %s run: %+v", suite, w)
		}
		if _, err := os.Stat(filepath.Join(w.Dir, "report.md")); err != nil {
			t.Errorf("the failed run has no report of its own: %v", err)
		}
		after, _ := os.ReadFile(filepath.Join(out, "latest.json"))
		afterMD, _ := os.ReadFile(filepath.Join(out, "latest.md"))
		if !bytes.Equal(before, after) || !bytes.Equal(beforeMD, afterMD) {
			t.Fatalf("an all-failed %s run changed latest.*", suite)
		}
	}
}
