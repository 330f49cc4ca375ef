package endpoints

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable prints the result as a short table and what it means.
func (r *SpeedTestResult) WriteTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "speed test to %s, %s each way per run\n\n", r.Server, r.Duration)
	tw := tabwriter.NewWriter(&b, 0, 0, 3, ' ', 0)
	row := func(name string, f func(SpeedTestRun) string) {
		fmt.Fprint(tw, name)
		for _, run := range r.Runs {
			fmt.Fprint(tw, "\t", f(run))
		}
		fmt.Fprintln(tw)
	}
	row("", func(run SpeedTestRun) string {
		if run.Recovery {
			return "with recovery layer"
		}
		return "plain QUIC (--fec off)"
	})
	row("RTT min / avg", func(run SpeedTestRun) string { return ms(run.RTTMin) + " / " + ms(run.RTTAvg) })
	row("goodput up", func(run SpeedTestRun) string { return mbits(run.UpBps) })
	row("goodput down", func(run SpeedTestRun) string { return mbits(run.DownBps) })
	row("path loss up / down", func(run SpeedTestRun) string { return pct(run.PathLossUp) + " / " + pct(run.PathLossDown) })
	row("loss QUIC saw up / down", func(run SpeedTestRun) string { return pct(run.QUICLossUp) + " / " + pct(run.QUICLossDown) })
	row("repair overhead up / down", func(run SpeedTestRun) string {
		if !run.Recovery {
			return "-"
		}
		return pct(run.Overhead) + " / " + pct(run.OverheadDown)
	})
	row("repaired / lost down", func(run SpeedTestRun) string {
		if !run.Recovery {
			return "-"
		}
		return fmt.Sprintf("%d / %d", run.Repaired, run.Lost)
	})
	tw.Flush()
	b.WriteString("\n")
	for _, line := range r.Meaning() {
		b.WriteString(line + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// Meaning says in a few sentences what the figures mean for choosing --fec.
func (r *SpeedTestResult) Meaning() []string {
	if len(r.Runs) != 2 {
		return nil
	}
	with, plain := r.Runs[0], r.Runs[1]
	loss := max(with.PathLossUp, with.PathLossDown, plain.PathLossUp, plain.PathLossDown)
	gain := func(a, b float64) float64 {
		if b <= 0 {
			return 0
		}
		return a / b
	}
	up, down := gain(with.UpBps, plain.UpBps), gain(with.DownBps, plain.DownBps)
	var out []string
	switch {
	case loss < 0.001:
		out = append(out, fmt.Sprintf("The path lost (almost) nothing: the recovery layer had nothing to repair and cost %s of extra datagrams up.", pct(with.Overhead)))
		if up < 0.9 || down < 0.9 {
			out = append(out, "Plain QUIC was faster here; on a clean, fast path --fec off saves that cost, while auto keeps tunnels fast should loss appear.")
		} else {
			out = append(out, "Both ran alike; --fec auto (the default) keeps tunnels fast should loss appear.")
		}
	case up > 1.5 || down > 1.5:
		out = append(out, fmt.Sprintf("The path loses packets (up to %s) and the recovery layer hides that loss from QUIC: %.1fx the goodput up, %.1fx down. Keep --fec auto.", pct(loss), up, down))
	default:
		out = append(out, fmt.Sprintf("The path loses packets (up to %s), but plain QUIC kept up (recovery %.1fx up, %.1fx down): the loss may come from congestion, which no repair hides.", pct(loss), up, down))
	}
	if with.QUICLossUp > 0.005 || with.QUICLossDown > 0.005 {
		out = append(out, fmt.Sprintf("QUIC still saw %s up and %s down through the recovery layer: loss in bursts or from a full queue.", pct(with.QUICLossUp), pct(with.QUICLossDown)))
	}
	if with.RTTMin > 100*time.Millisecond {
		out = append(out, fmt.Sprintf("The RTT is long (%s): each tunnel still opens with no extra round trip, but TCP over this path would suffer more from any loss.", ms(with.RTTMin)))
	}
	return out
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func pct(f float64) string {
	if f < 0 {
		return "?"
	}
	return fmt.Sprintf("%.2f %%", 100*f)
}

func mbits(bps float64) string { return fmt.Sprintf("%.1f Mbit/s", 8*bps/1e6) }
