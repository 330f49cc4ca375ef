package report

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/quictun/quictun/bench"
)

// Written says where a report went.
type Written struct {
	Dir    string // results/<timestamp>
	Latest string // results/latest.md
}

// Write stores a run under out/<timestamp>/ (report.md, results.json with the records,
// samples.json with every repetition, environment.json, charts/) and refreshes
// out/latest.md, out/latest.json and out/latest-charts/.
func Write(out string, env bench.Environment, records []bench.Record, samples []bench.Sample, interrupted bool) (Written, error) {
	stamp := env.Started.UTC().Format("20060102T150405Z")
	dir := filepath.Join(out, stamp)
	if err := os.MkdirAll(filepath.Join(dir, "charts"), 0o755); err != nil {
		return Written{}, err
	}
	charts := Charts(records)
	for _, c := range charts {
		if err := c.Save(filepath.Join(dir, "charts")); err != nil {
			return Written{}, err
		}
	}
	if records == nil {
		records = []bench.Record{} // latest.json is always an array
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

	// latest: replace the charts folder wholesale so no chart of an older run lingers.
	latestCharts := filepath.Join(out, "latest-charts")
	if err := os.RemoveAll(latestCharts); err != nil {
		return Written{}, err
	}
	if err := os.MkdirAll(latestCharts, 0o755); err != nil {
		return Written{}, err
	}
	for _, c := range charts {
		for _, ext := range []string{".png", ".svg"} {
			if err := copyFile(filepath.Join(dir, "charts", c.Name+ext), filepath.Join(latestCharts, c.Name+ext)); err != nil {
				return Written{}, err
			}
		}
	}
	if err := writeJSON(filepath.Join(out, "latest.json"), records); err != nil {
		return Written{}, err
	}
	latest := filepath.Join(out, "latest.md")
	md := Markdown(env, records, charts, "latest-charts", interrupted) +
		fmt.Sprintf("Full results of this run: [%s/](%s/)\n", stamp, stamp)
	if err := os.WriteFile(latest, []byte(md), 0o644); err != nil {
		return Written{}, err
	}
	return Written{Dir: dir, Latest: latest}, nil
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}
