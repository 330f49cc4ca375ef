package report

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/quictun/quictun/bench"
)

// Written says what Write did.
type Written struct {
	Dir    string // results/<run ID>; "" when the run had no record to keep
	Latest string // results/latest.md; "" when latest.* was left alone
	// Suites are the suites whose records in latest.* now come from this run.
	Suites []string
	// Note says why latest.* was left alone or which suites kept earlier records.
	Note string
}

// Write stores a run under out/<run ID>/ (report.md, results.json with the records,
// samples.json with every repetition, environment.json, charts/) and merges it into
// out/latest.json, out/latest.md and out/latest-charts/:
//
//   - A run without any record writes nothing at all (Ctrl-C before the first
//     scenario finished).
//   - latest.* is left alone unless the run has a complete record (one of a scenario
//     that was not cut short).
//   - A suite of which every run failed replaces nothing.
//   - Merge by suite: the suites of this run replace their records in latest.json;
//     the records of other suites stay. A suite the run did not finish (Environment.
//     Incomplete) replaces nothing: its partial records go to latest only where latest
//     had none of that suite.
//
// latest.md then names, per suite, the run its records come from, links that run's
// folder and shows the environment of every run it draws on (read from their
// environment.json).
func Write(out string, env bench.Environment, records []bench.Record, samples []bench.Sample, interrupted bool) (Written, error) {
	if len(records) == 0 {
		return Written{Note: "no scenario finished: nothing written, latest.* unchanged"}, nil
	}
	id := env.RunID()
	records = slices.Clone(records)
	for i := range records {
		records[i].FromRun = id
	}
	dir := filepath.Join(out, id)
	if err := os.MkdirAll(filepath.Join(dir, "charts"), 0o755); err != nil {
		return Written{}, err
	}
	charts := Charts(records)
	if err := saveCharts(charts, filepath.Join(dir, "charts")); err != nil {
		return Written{}, err
	}
	files := map[string]any{"results.json": records, "samples.json": samples, "environment.json": env}
	for name, v := range files {
		if err := writeJSON(filepath.Join(dir, name), v); err != nil {
			return Written{}, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "report.md"), []byte(Markdown(env, records, charts, "charts", interrupted)), 0o644); err != nil {
		return Written{}, err
	}
	w := Written{Dir: dir}

	previous, err := readLatest(filepath.Join(out, "latest.json"))
	if err != nil {
		return w, fmt.Errorf("%w; latest.* left alone (this run is in %s)", err, dir)
	}
	merged, taken, kept, failed := mergeLatest(previous, records, env.Incomplete)
	var notes []string
	if len(kept) > 0 {
		notes = append(notes, fmt.Sprintf("suites %s did not finish: latest.* keeps their records of an earlier run", strings.Join(kept, ", ")))
	}
	if len(failed) > 0 {
		notes = append(notes, fmt.Sprintf("every run of suites %s failed: latest.* keeps what it had of them (see %s)", strings.Join(failed, ", "), filepath.Join(dir, "report.md")))
	}
	w.Note = strings.Join(notes, "; ")
	if len(taken) == 0 {
		if w.Note == "" {
			w.Note = "no complete record: latest.* unchanged"
		}
		return w, nil
	}
	w.Suites = taken

	// latest: replace the charts folder wholesale so no chart of an older run lingers;
	// the charts of kept suites are drawn again from their records.
	latestCharts := filepath.Join(out, "latest-charts")
	if err := os.RemoveAll(latestCharts); err != nil {
		return w, err
	}
	if err := os.MkdirAll(latestCharts, 0o755); err != nil {
		return w, err
	}
	mergedCharts := Charts(merged)
	if err := saveCharts(mergedCharts, latestCharts); err != nil {
		return w, err
	}
	if err := writeJSON(filepath.Join(out, "latest.json"), merged); err != nil {
		return w, err
	}
	latest := filepath.Join(out, "latest.md")
	md := MarkdownLatest(runsOf(out, merged, env), merged, mergedCharts, "latest-charts")
	if err := os.WriteFile(latest, []byte(md), 0o644); err != nil {
		return w, err
	}
	w.Latest = latest
	return w, nil
}

// readLatest reads the records of latest.json; none when it does not exist.
func readLatest(path string) ([]bench.Record, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var records []bench.Record
	if err := json.Unmarshal(data, &records); err != nil {
		return nil, fmt.Errorf("%s is not an array of records: %w", path, err)
	}
	return records, nil
}

// mergeLatest merges a run's records into the previous latest records by suite (see
// Write). taken lists the suites this run replaces (or adds), kept the suites it ran
// but did not finish and whose earlier records stay, failed the suites of which not
// one run succeeded (every contender failed: a machine without iperf3, say), which
// replace nothing. Suites come out sorted by name, the records of each in their own
// order.
func mergeLatest(previous, run []bench.Record, incomplete []string) (merged []bench.Record, taken, kept, failed []string) {
	had := map[string]bool{}
	for _, r := range previous {
		had[r.Suite] = true
	}
	for _, suite := range suiteOrder(run) {
		complete, finishedOne, succeeded := !slices.Contains(incomplete, suite), false, false
		for _, r := range run {
			if r.Suite == suite {
				complete = complete && !r.Interrupted
				finishedOne = finishedOne || !r.Interrupted
				succeeded = succeeded || r.Runs > 0
			}
		}
		switch {
		case !succeeded:
			failed = append(failed, suite)
		case complete || (finishedOne && !had[suite]):
			taken = append(taken, suite)
		case had[suite]:
			kept = append(kept, suite)
		}
	}
	for _, r := range previous {
		if !slices.Contains(taken, r.Suite) {
			merged = append(merged, r)
		}
	}
	for _, r := range run {
		if slices.Contains(taken, r.Suite) {
			merged = append(merged, r)
		}
	}
	sort.SliceStable(merged, func(i, j int) bool { return merged[i].Suite < merged[j].Suite })
	return merged, taken, kept, failed
}

// runsOf lists the runs the merged records come from, this run first, each with its
// environment (this run's from memory, others' from their folder's environment.json).
func runsOf(out string, records []bench.Record, current bench.Environment) []Run {
	var runs []Run
	seen := map[string]bool{}
	add := func(id string) {
		if seen[id] {
			return
		}
		seen[id] = true
		if id == current.RunID() {
			env := current
			runs = append(runs, Run{ID: id, Env: &env})
			return
		}
		var env *bench.Environment
		if id != "" {
			if data, err := os.ReadFile(filepath.Join(out, id, "environment.json")); err == nil {
				var e bench.Environment
				if json.Unmarshal(data, &e) == nil {
					env = &e
				}
			}
		}
		runs = append(runs, Run{ID: id, Env: env})
	}
	for _, r := range records {
		if r.FromRun == current.RunID() {
			add(r.FromRun)
		}
	}
	for _, r := range records {
		add(r.FromRun)
	}
	return runs
}

func saveCharts(charts []Chart, dir string) error {
	for _, c := range charts {
		if err := c.Save(dir); err != nil {
			return err
		}
	}
	return nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}
