// Package report turns a run's records into what people and programs read: a markdown
// report with the environment, one table per suite and kind, charts of goodput against
// loss (PNG and SVG), and the records as JSON.
package report

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/quictun/quictun/bench"
)

// Markdown renders the report. chartDir is the folder, relative to the report, that
// holds the charts named in charts.
func Markdown(env bench.Environment, records []bench.Record, charts []Chart, chartDir string, interrupted bool) string {
	var b strings.Builder
	b.WriteString("# quictun benchmark report\n\n")
	if interrupted {
		b.WriteString("**Interrupted: this report holds only the runs that finished.**\n\n")
	}
	fmt.Fprintf(&b, "Run of %s, %s long. Command: `%s`\n\n", env.Started.Format(time.RFC3339), env.Finished.Sub(env.Started).Round(time.Second), env.Command)
	b.WriteString("Goodput is what the receiving application got (iperf3 receiver side, one flow), the median over the repetitions; spread is min to max. ")
	b.WriteString("Ceiling is rate x (1 - loss). Loss applies to each direction. CPU is user+system seconds of each endpoint process per GB carried. ")
	fmt.Fprintf(&b, "The link emulator, the endpoints and iperf3 share this machine's %s: compare contenders within one run, not absolute numbers across runs.\n\n", cores(env.Cores))
	writeEnvironment(&b, env)

	suites := suiteOrder(records)
	for _, suite := range suites {
		fmt.Fprintf(&b, "## Suite `%s`\n\n", suite)
		if d := env.SuiteTitles[suite]; d != "" {
			b.WriteString(d + "\n\n")
		}
		var mine []bench.Record
		for _, r := range records {
			if r.Suite == suite {
				mine = append(mine, r)
			}
		}
		for _, kind := range []bench.Kind{bench.Goodput, bench.Fairness, bench.Latency, bench.Scale} {
			var rows []bench.Record
			for _, r := range mine {
				// Contenders that could not run at all are explained once, in the notes.
				if r.Kind == kind && r.Note == "" {
					rows = append(rows, r)
				}
			}
			if len(rows) == 0 {
				continue
			}
			switch kind {
			case bench.Goodput:
				goodputTable(&b, rows)
				for _, c := range charts {
					if c.Suite == suite {
						fmt.Fprintf(&b, "![%s](%s/%s.png) ([SVG](%s/%s.svg))\n\n", c.Title, chartDir, c.Name, chartDir, c.Name)
					}
				}
			case bench.Fairness:
				fairnessTable(&b, rows)
			case bench.Latency:
				latencyTable(&b, rows)
			case bench.Scale:
				scaleTable(&b, rows)
			}
		}
		failures(&b, mine)
	}
	return b.String()
}

func writeEnvironment(b *strings.Builder, env bench.Environment) {
	b.WriteString("## Environment\n\n| | |\n| --- | --- |\n")
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(b, "| %s | %s |\n", k, escape(v))
		}
	}
	row("kernel", env.Kernel)
	row("CPU", fmt.Sprintf("%s, %d cores", env.CPU, env.Cores))
	row("link emulation", backendDescription(env.Backend))
	row("why this backend", env.BackendReason)
	row("host default TCP congestion control", env.HostCC+" (left unchanged: the TCP contenders set theirs per connection)")
	for _, k := range sortedKeys(env.Versions) {
		row(k, env.Versions[k])
	}
	b.WriteString("\nContenders:\n\n")
	for _, name := range orderedContenders(env.Tuning) {
		fmt.Fprintf(b, "- `%s`: %s\n", name, env.Tuning[name])
	}
	for _, n := range env.Notes {
		fmt.Fprintf(b, "- note: %s\n", escape(n))
	}
	b.WriteString("\n")
}

func backendDescription(backend string) string {
	switch backend {
	case "tun":
		return "tun: two network namespaces joined by TUN devices and a user-space forwarder (on real-time threads) applying the link model"
	case "tc-netem":
		return "tc-netem: two network namespaces on a veth pair with the kernel's netem qdisc on each end"
	case "loopback":
		return "loopback: no emulation, both hosts on this machine's loopback"
	case "":
		return "none (no scenario ran)"
	}
	return backend
}

func goodputTable(b *strings.Builder, rows []bench.Record) {
	b.WriteString("### Goodput\n\n")
	b.WriteString("| scenario | link | contender | goodput Mbit/s | spread | x tcp-cubic | of ceiling | CPU s/GB client | CPU s/GB server | runs |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if r.Runs == 0 {
			fmt.Fprintf(b, "| %s | %s | %s | - | | | | | | %s |\n", r.Scenario, link(r), r.Contender, notRun(r))
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.1f | %s | %s | %s | %s | %s | %s |\n",
			r.Scenario, link(r), r.Contender, r.GoodputMbps, spread(r), ratio(r.RatioCubic), percent(r.RatioCeiling),
			cpu(r.CPUClientSPerGB), cpu(r.CPUServerSPerGB), runs(r))
	}
	b.WriteString("\n")
}

func fairnessTable(b *strings.Builder, rows []bench.Record) {
	b.WriteString("### Fairness: each contender beside a direct TCP cubic flow on the same bottleneck\n\n")
	b.WriteString("| scenario | link | contender | contender Mbit/s | tcp-cubic Mbit/s | contender's share | runs |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if r.Runs == 0 {
			fmt.Fprintf(b, "| %s | %s | %s | - | - | - | %s |\n", r.Scenario, link(r), r.Contender, notRun(r))
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.1f | %.1f | %.0f%% | %s |\n",
			r.Scenario, link(r), r.Contender, r.GoodputMbps, r.CompetitorMbps, r.Share*100, runs(r))
	}
	b.WriteString("\n")
}

func latencyTable(b *strings.Builder, rows []bench.Record) {
	n := 0
	for _, r := range rows {
		n = max(n, r.RoundTrips)
	}
	b.WriteString("### Latency: echo request/response\n\n")
	fmt.Fprintf(b, "| scenario | link | contender | connect to first echo ms | %d round trips ms | round trip p50 ms | p99 ms | runs |\n", n)
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if r.Runs == 0 {
			fmt.Fprintf(b, "| %s | %s | %s | - | - | - | - | %s |\n", r.Scenario, link(r), r.Contender, notRun(r))
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.1f | %.0f | %.2f | %.2f | %s |\n",
			r.Scenario, link(r), r.Contender, r.FirstEchoMs, r.TotalMs, r.P50Ms, r.P99Ms, runs(r))
	}
	b.WriteString("\n")
}

func scaleTable(b *strings.Builder, rows []bench.Record) {
	b.WriteString("### Scale: concurrent tunnels, every byte echoed and checked\n\n")
	b.WriteString("| scenario | link | contender | aggregate goodput Mbit/s | spread | all bytes verified | CPU s/GB client | CPU s/GB server | runs |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | --- | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if r.Runs == 0 {
			fmt.Fprintf(b, "| %s | %s | %s | - | | no | | | %s |\n", r.Scenario, link(r), r.Contender, notRun(r))
			continue
		}
		verified := "no"
		if r.AllVerified {
			verified = "yes"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.1f | %s | %s | %s | %s | %s |\n",
			r.Scenario, link(r), r.Contender, r.GoodputMbps, spread(r), verified, cpu(r.CPUClientSPerGB), cpu(r.CPUServerSPerGB), runs(r))
	}
	b.WriteString("\n")
}

func failures(b *strings.Builder, rows []bench.Record) {
	var lines []string
	for _, r := range rows {
		for _, e := range r.Errors {
			lines = append(lines, fmt.Sprintf("- %s / %s: %s", r.Scenario, r.Contender, escape(e)))
		}
	}
	if len(lines) == 0 {
		return
	}
	b.WriteString("Failed runs:\n\n" + strings.Join(lines, "\n") + "\n\n")
}

func link(r bench.Record) string {
	s := bench.Scenario{RateMbps: r.RateMbps, RTT: time.Duration(r.RTTms * float64(time.Millisecond)), Loss: r.Loss, Burst: r.Burst, Kind: r.Kind, Tunnels: r.Tunnels}
	return s.Describe()
}

func spread(r bench.Record) string {
	if r.Runs < 2 {
		return "-"
	}
	return fmt.Sprintf("%.1f-%.1f", r.GoodputMin, r.GoodputMax)
}

func ratio(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", v)
}

func percent(v float64) string {
	if v == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", v*100)
}

func cpu(v *float64) string {
	if v == nil {
		return "-"
	}
	return fmt.Sprintf("%.1f", *v)
}

func runs(r bench.Record) string {
	if r.Failed > 0 {
		return fmt.Sprintf("%d (+%d failed)", r.Runs, r.Failed)
	}
	return fmt.Sprint(r.Runs)
}

func cores(n int) string {
	switch {
	case n <= 0:
		return "cores"
	case n == 1:
		return "single core"
	}
	return fmt.Sprintf("%d cores", n)
}

func notRun(r bench.Record) string {
	if r.Note != "" {
		return "not run: " + escape(r.Note)
	}
	return fmt.Sprintf("0 (%d failed)", r.Failed)
}

// escape keeps table cells in one piece.
func escape(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}

func suiteOrder(records []bench.Record) []string {
	var out []string
	for _, r := range records {
		if !slices.Contains(out, r.Suite) {
			out = append(out, r.Suite)
		}
	}
	return out
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
