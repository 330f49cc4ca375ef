// Package report turns a run's records into what people and programs read: a markdown
// report with the environment, one table per suite and kind, charts of goodput against
// loss (PNG and SVG), and the records as JSON.
package report

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/quictun/quictun/bench"
)

// Markdown renders the report of one run (report.md in its folder). chartDir is the
// folder, relative to the report, that holds the charts named in charts.
func Markdown(env bench.Environment, records []bench.Record, charts []Chart, chartDir string, interrupted bool) string {
	var b strings.Builder
	b.WriteString("# quictun benchmark report\n\n")
	if interrupted {
		b.WriteString("**Interrupted: this report holds only the runs that finished.**\n\n")
	}
	fmt.Fprintf(&b, "Run %s of %s, %s long. Command: `%s`\n\n", env.RunID(), env.Started.Format(time.RFC3339), env.Finished.Sub(env.Started).Round(time.Second), env.Command)
	definitions(&b)
	b.WriteString("## Environment\n\n")
	writeEnvironment(&b, &env)
	for _, suite := range suiteOrder(records) {
		writeSuite(&b, suite, &env, records, charts, chartDir)
	}
	return b.String()
}

// Run is one run behind the records of a merged report: its folder name (the run ID)
// and its environment, nil when its folder is gone.
type Run struct {
	ID  string
	Env *bench.Environment
}

// MarkdownLatest renders latest.md: each suite's records come from the last run that
// completed it (Record.FromRun), so the report names, per suite, the run and links its
// folder (relative to the report), and shows the environment of every run it draws on.
func MarkdownLatest(runs []Run, records []bench.Record, charts []Chart, chartDir string) string {
	byID := map[string]*bench.Environment{}
	for _, r := range runs {
		byID[r.ID] = r.Env
	}
	var b strings.Builder
	b.WriteString("# quictun benchmark report\n\n")
	b.WriteString("The latest results of each suite: a run replaces the suites it ran to the end and keeps the others.\n\n")
	b.WriteString("| suite | from run | started | command |\n| --- | --- | --- | --- |\n")
	suites := suiteOrder(records)
	for _, suite := range suites {
		id := runOf(records, suite)
		started, command := "unknown", "unknown"
		if env := byID[id]; env != nil {
			started, command = env.Started.Format(time.RFC3339), "`"+escape(env.Command)+"`"
			if slices.Contains(env.Incomplete, suite) {
				started += " (interrupted)"
			}
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", suite, runLink(id), started, command)
	}
	b.WriteString("\n")
	definitions(&b)
	for _, r := range runs {
		var mine []string
		for _, suite := range suites {
			if runOf(records, suite) == r.ID {
				mine = append(mine, "`"+suite+"`")
			}
		}
		if len(runs) == 1 {
			b.WriteString("## Environment\n\n")
		} else {
			fmt.Fprintf(&b, "## Environment of run %s (%s)\n\n", runLink(r.ID), strings.Join(mine, ", "))
		}
		if r.Env == nil {
			b.WriteString("Not recorded: the run's folder (and its environment.json) is not there.\n\n")
			continue
		}
		writeEnvironment(&b, r.Env)
	}
	for _, suite := range suites {
		id := runOf(records, suite)
		fmt.Fprintf(&b, "## Suite `%s`\n\n", suite)
		env := byID[id]
		fmt.Fprintf(&b, "From run %s", runLink(id))
		if env != nil {
			fmt.Fprintf(&b, " of %s", env.Started.Format(time.RFC3339))
			if slices.Contains(env.Incomplete, suite) {
				b.WriteString(", **interrupted**: only the scenarios that finished")
			}
		}
		b.WriteString(".\n\n")
		writeSuiteBody(&b, suite, env, records, charts, chartDir)
	}
	return b.String()
}

// runOf is the run the records of suite come from (all from one, by construction).
func runOf(records []bench.Record, suite string) string {
	for _, r := range records {
		if r.Suite == suite {
			return r.FromRun
		}
	}
	return ""
}

func runLink(id string) string {
	if id == "" {
		return "(an earlier run that did not record its folder)"
	}
	return fmt.Sprintf("[%s](%s/)", id, id)
}

func definitions(b *strings.Builder) {
	b.WriteString("Goodput is what the receiving application got (iperf3 receiver side, one flow, from its first byte: slow start included), the median over the repetitions; spread is min to max. ")
	b.WriteString("The link ceiling is rate x (1 - loss) in bytes of IP packets, or the emulator's own speed x (1 - loss) where that is lower (marked *emulator*); ")
	fmt.Fprintf(b, "TCP payload reaches at most %.1f%% of it (1448 of every 1500 bytes at MTU 1500), tunnels over UDP carry more headers and reach less. ", bench.TCPPayloadShare*100)
	b.WriteString("Loss applies to each direction. CPU is user+system seconds of each endpoint process per GB carried.\n\n")
}

func writeSuite(b *strings.Builder, suite string, env *bench.Environment, records []bench.Record, charts []Chart, chartDir string) {
	fmt.Fprintf(b, "## Suite `%s`\n\n", suite)
	if env != nil && slices.Contains(env.Incomplete, suite) {
		b.WriteString("**Interrupted**: only the scenarios that finished.\n\n")
	}
	writeSuiteBody(b, suite, env, records, charts, chartDir)
}

func writeSuiteBody(b *strings.Builder, suite string, env *bench.Environment, records []bench.Record, charts []Chart, chartDir string) {
	if env != nil {
		if d := env.SuiteTitles[suite]; d != "" {
			b.WriteString(d + "\n\n")
		}
	}
	var mine []bench.Record
	for _, r := range records {
		if r.Suite == suite {
			mine = append(mine, r)
		}
	}
	emulatorLimits(b, env, mine)
	for _, kind := range []bench.Kind{bench.Goodput, bench.Fairness, bench.Latency, bench.Scale, bench.Interactive, bench.UDP, bench.WireGuard} {
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
			goodputTable(b, rows)
			for _, c := range charts {
				if c.Suite == suite {
					fmt.Fprintf(b, "![%s](%s/%s.png) ([SVG](%s/%s.svg))\n\n", c.Title, chartDir, c.Name, chartDir, c.Name)
				}
			}
		case bench.Fairness:
			fairnessTable(b, rows)
		case bench.Latency:
			latencyTable(b, rows)
		case bench.Scale:
			scaleTable(b, rows)
		case bench.Interactive:
			interactiveTable(b, rows)
		case bench.UDP:
			udpTable(b, rows)
		case bench.WireGuard:
			wireguardTable(b, rows)
		}
	}
	emulatorHiccups(b, mine)
	failures(b, mine)
}

// lateNoteMs is the emulator lateness above which a run is listed: more than a
// fifth of the shortest round trip the suites emulate (50 ms over WAN links).
const lateNoteMs = 10

// emulatorHiccups lists the runs during which the emulator's own scheduling was
// late by more than lateNoteMs: a delay spike on the link that no scenario asked
// for, which a contender may read as loss.
func emulatorHiccups(b *strings.Builder, rows []bench.Record) {
	var lines []string
	for _, r := range rows {
		for i, ms := range r.EmulatorLateRuns {
			if ms <= lateNoteMs {
				continue
			}
			run := fmt.Sprintf("run %d", i+1)
			if i < len(r.Goodputs) && r.Kind != bench.Latency {
				run += fmt.Sprintf(", %.1f Mbit/s", r.Goodputs[i])
			}
			lines = append(lines, fmt.Sprintf("- %s / %s (%s): %.0f ms", r.Scenario, r.Contender, run, ms))
		}
	}
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(b, "Runs during which the emulator itself was late by more than %d ms (its scheduling error, worst packet, either direction), so their link had a delay spike the scenario did not ask for:\n\n%s\n\n", lateNoteMs, strings.Join(lines, "\n"))
}

// emulatorLimits says where the emulator, not the scenario's rate, was the ceiling.
func emulatorLimits(b *strings.Builder, env *bench.Environment, records []bench.Record) {
	var names []string
	for _, r := range records {
		if r.CeilingLimitedBy == "emulator" && !slices.Contains(names, r.Scenario) {
			names = append(names, r.Scenario)
		}
	}
	if len(names) == 0 {
		return
	}
	speed := "less than their rate"
	if env != nil && env.Emulator != nil {
		speed = fmt.Sprintf("%.0f Mbit/s of IP packets", env.Emulator.LinkMbps)
	}
	fmt.Fprintf(b, "**The emulator is the bottleneck here**: at the start of the run it forwarded %s unimpaired, below the rate of %s. Their link ceiling is that speed x (1 - loss), so the ratios to it judge the contenders, not the forwarder.\n\n",
		speed, strings.Join(names, ", "))
}

func writeEnvironment(b *strings.Builder, env *bench.Environment) {
	b.WriteString("| | |\n| --- | --- |\n")
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(b, "| %s | %s |\n", k, escape(v))
		}
	}
	row("kernel", env.Kernel)
	row("CPU", fmt.Sprintf("%s, %s", env.CPU, cores(env.Cores)))
	row("link emulation", backendDescription(env.Backend))
	row("why this backend", env.BackendReason)
	if e := env.Emulator; e != nil {
		row("emulator speed, unimpaired", fmt.Sprintf("%.0f Mbit/s of TCP payload, %.0f Mbit/s of IP packets (%s)", e.GoodputMbps, e.LinkMbps, e.How))
	}
	row("host default TCP congestion control", env.HostCC+" (left unchanged: the TCP contenders set theirs per connection, on both ends)")
	for _, k := range sortedKeys(env.Versions) {
		row(k, env.Versions[k])
	}
	fmt.Fprintf(b, "\nThe link emulator, the endpoints and iperf3 share this machine's %s: compare contenders within one run, not absolute numbers across runs.\n", cores(env.Cores))
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
	b.WriteString("| scenario | link | contender | goodput Mbit/s | spread | x tcp-cubic | link ceiling Mbit/s | of ceiling | CPU s/GB client | CPU s/GB server | runs |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if r.Runs == 0 {
			fmt.Fprintf(b, "| %s | %s | %s | - | | | %s | | | | %s |\n", r.Scenario, link(r), r.Contender, ceiling(r), notRun(r))
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.1f | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Scenario, link(r), r.Contender, r.GoodputMbps, spread(r), ratio(r.RatioCubic), ceiling(r), percent(r.RatioCeiling),
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

func interactiveTable(b *strings.Builder, rows []bench.Record) {
	b.WriteString("### Interactive: an echo beside bulk downloads through the same path\n\n")
	b.WriteString("Echo round trips over the measured time (after the warm-up); over RTT is p99 less the link's round trip. Bulk is the downloads' sum beside the echo (and the stuck connections), alone is the same downloads on a path of their own; kept is beside over alone, per run.\n\n")
	b.WriteString("| scenario | link | contender | echo p50 ms | p99 ms | max ms | p99 over RTT ms | bulk Mbit/s | of ceiling | alone Mbit/s | kept | runs |\n")
	b.WriteString("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if r.Runs == 0 {
			fmt.Fprintf(b, "| %s | %s | %s | - | - | - | - | - | | - | - | %s |\n", r.Scenario, link(r), r.Contender, notRun(r))
			continue
		}
		alone, kept := "-", "-"
		if r.AloneMbps > 0 {
			alone, kept = fmt.Sprintf("%.1f", r.AloneMbps), percent(r.Kept)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %.1f | %.1f | %.1f | %+.1f | %.1f | %s | %s | %s | %s |\n",
			r.Scenario, link(r), r.Contender, r.P50Ms, r.P99Ms, r.MaxMs, r.P99Ms-r.RTTms, r.GoodputMbps, percent(r.RatioCeiling), alone, kept, runs(r))
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
	s := bench.Scenario{RateMbps: r.RateMbps, RTT: time.Duration(r.RTTms * float64(time.Millisecond)), Loss: r.Loss, Burst: r.Burst, Kind: r.Kind, Tunnels: r.Tunnels, Bulk: r.Bulk, Stuck: r.Stuck}
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
	var extra []string
	if r.Failed > 0 {
		extra = append(extra, fmt.Sprintf("+%d failed", r.Failed))
	}
	if r.Interrupted {
		extra = append(extra, "interrupted")
	}
	if len(extra) == 0 {
		return fmt.Sprint(r.Runs)
	}
	return fmt.Sprintf("%d (%s)", r.Runs, strings.Join(extra, ", "))
}

// ceiling is the link ceiling cell, marked when the emulator set it.
func ceiling(r bench.Record) string {
	if r.CeilingMbps <= 0 {
		return "-"
	}
	v := strconv.FormatFloat(r.CeilingMbps, 'f', 1, 64)
	if r.CeilingLimitedBy != "" {
		v += " *" + r.CeilingLimitedBy + "*"
	}
	return v
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
	if r.Interrupted {
		return fmt.Sprintf("0 (%d failed, interrupted)", r.Failed)
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
