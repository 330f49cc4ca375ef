package report

import (
	"fmt"
	"slices"
	"strings"

	"github.com/quictun/quictun/bench"
)

// udpTable shows the udp kind: what iperf3 -u lost across each contender against
// the bare link's loss, and the probe's one-way delay beside it.
func udpTable(b *strings.Builder, rows []bench.Record) {
	b.WriteString("### UDP: iperf3 -u across each contender, and the one-way delay of a probe beside it\n\n")
	b.WriteString("Lost: iperf3's count at the receiver (median over runs; each run in brackets). Delay: one way, of 200 timestamped datagrams a second sent beside iperf3 on their own flow; added: p99 less the direct contender's (the bare link) in the same run; past 1 s: the same over the probes sent after iperf3's first second (a tunnel's start, while its window grows, left out). Both include the emulator's own lateness, listed below per run.\n\n")
	b.WriteString("| scenario | link | iperf3 -u | contender | lost % | datagrams | jitter ms | delay p50 ms | p99 ms | added p99 ms | added p99 past 1 s ms | probe lost % | runs |\n")
	b.WriteString("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if r.Runs == 0 || r.UDP == nil {
			fmt.Fprintf(b, "| %s | %s | | %s | - | | | | | | | | %s |\n", r.Scenario, link(r), r.Contender, notRun(r))
			continue
		}
		u := r.UDP
		each := make([]string, len(u.LostRuns))
		for i, v := range u.LostRuns {
			each[i] = fmt.Sprintf("%.3g", v)
		}
		added := ""
		if u.AddedP99Ms != nil {
			added = fmt.Sprintf("%+.1f", *u.AddedP99Ms)
		}
		steady := ""
		if u.AddedP99SteadyMs != nil {
			steady = fmt.Sprintf("%+.1f", *u.AddedP99SteadyMs)
		}
		fmt.Fprintf(b, "| %s | %s | %g Mbit/s of %d B | %s | %.3g (%s) | %d | %.2f | %.1f | %.1f | %s | %s | %.3g | %s |\n",
			r.Scenario, link(r), u.Mbps, u.DatagramBytes, r.Contender, u.LostPercent, strings.Join(each, ", "), u.Datagrams, u.JitterMs,
			u.DelayP50Ms, u.DelayP99Ms, added, steady, u.ProbeLostPercent, runs(r))
	}
	b.WriteString("\n")
	countersList(b, rows, func(r bench.Record) []map[string]float64 {
		if r.UDP == nil {
			return nil
		}
		return r.UDP.Counters
	})
}

// countersList lists each run's tunnel counters of the rows that have them.
func countersList(b *strings.Builder, rows []bench.Record, counters func(bench.Record) []map[string]float64) {
	var lines []string
	for _, r := range rows {
		for i, c := range counters(r) {
			keys := make([]string, 0, len(c))
			for k := range c {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			parts := make([]string, len(keys))
			for j, k := range keys {
				parts[j] = fmt.Sprintf("%s %.0f", strings.TrimPrefix(strings.ReplaceAll(k, "quictun_", ""), " "), c[k])
			}
			lines = append(lines, fmt.Sprintf("- %s / %s, run %d: %s", r.Scenario, r.Contender, i+1, escape(strings.Join(parts, "; "))))
		}
	}
	if len(lines) > 0 {
		b.WriteString("Where the datagrams went inside quictun (its endpoints' counters at the end of each run: datagrams taken in up, dropped by reason, lost on the link, repaired, left unrepaired):\n\n" + strings.Join(lines, "\n") + "\n\n")
	}
}

// wireguardTable shows the wireguard kind: one TCP flow inside WireGuard whose UDP
// each contender carries.
func wireguardTable(b *strings.Builder, rows []bench.Record) {
	b.WriteString("### TCP inside WireGuard, its UDP carried by each contender\n\n")
	b.WriteString("| scenario | link | WireGuard MTU | contender | goodput Mbit/s | spread | link ceiling Mbit/s | of ceiling | CPU s/GB client | CPU s/GB server | runs |\n")
	b.WriteString("| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, r := range rows {
		if r.Runs == 0 {
			fmt.Fprintf(b, "| %s | %s | | %s | - | | %s | | | | %s |\n", r.Scenario, link(r), r.Contender, ceiling(r), notRun(r))
			continue
		}
		fmt.Fprintf(b, "| %s | %s | %d | %s | %.1f | %s | %s | %s | %s | %s | %s |\n",
			r.Scenario, link(r), r.WireGuardMTU, r.Contender, r.GoodputMbps, spread(r), ceiling(r), percent(r.RatioCeiling),
			cpu(r.CPUClientSPerGB), cpu(r.CPUServerSPerGB), runs(r))
	}
	b.WriteString("\n")
	countersList(b, rows, func(r bench.Record) []map[string]float64 { return r.Counters })
}
