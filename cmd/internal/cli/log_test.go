package cli

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Durations read as durations in both formats, not as integer nanoseconds.
func TestLogsWriteDurationsAsText(t *testing.T) {
	for _, format := range []string{"json", "text"} {
		var out bytes.Buffer
		log := Logging{LogLevel: "info", LogFormat: format}.Logger(&out)
		log.Info("drained", "for", 1500*time.Millisecond, "count", 3)
		log.With("bound", 10*time.Second).WithGroup("g").Debug("not at info")
		log.WithGroup("g").Info("grouped", "took", 20*time.Millisecond)
		text := out.String()
		if format == "json" {
			lines := strings.Split(strings.TrimSpace(text), "\n")
			if len(lines) != 2 {
				t.Fatalf("json: %d lines:\n%s", len(lines), text)
			}
			var first struct {
				For   any `json:"for"`
				Count any `json:"count"`
			}
			var second struct {
				G struct {
					Took any `json:"took"`
				} `json:"g"`
			}
			if err := json.Unmarshal([]byte(lines[0]), &first); err != nil || first.For != "1.5s" || first.Count != 3.0 {
				t.Errorf("json: %+v, %v in %s", first, err, lines[0])
			}
			if err := json.Unmarshal([]byte(lines[1]), &second); err != nil || second.G.Took != "20ms" {
				t.Errorf("json group: %+v, %v in %s", second, err, lines[1])
			}
			continue
		}
		if !strings.Contains(text, "for=1.5s count=3") || !strings.Contains(text, "g.took=20ms") || strings.Contains(text, "not at info") {
			t.Errorf("text:\n%s", text)
		}
	}
}
