//go:build linux

package runner

import (
	"fmt"
	"io"
	"time"

	"github.com/quictun/quictun/bench"
)

// progress prints one line when a run starts and one when it ends, with the position in
// the plan, the time spent and an estimate of the time left. The estimate adds each
// remaining run's own traffic time to a per-run overhead (starting endpoints, iperf3,
// settling) learned from the runs so far.
type progress struct {
	w        io.Writer
	total    int
	finished int
	started  time.Time
	// remaining is the estimated traffic time of the runs not yet finished.
	remaining time.Duration
	overhead  time.Duration // per run, learned
	runStart  time.Time
	current   bench.Scenario
}

// initialOverhead is the per-run overhead guessed before any run finished.
const initialOverhead = 3 * time.Second

func newProgress(w io.Writer, p plan) *progress {
	pr := &progress{w: w, total: p.runs, started: time.Now(), overhead: initialOverhead}
	for _, item := range p.scenarios {
		pr.remaining += time.Duration(len(item.contenders)*item.scenario.Repetitions) * trafficTime(item.scenario)
	}
	fmt.Fprintf(w, "bench: %d runs planned in %d scenarios, about %s\n", p.runs, len(p.scenarios), round(pr.eta()))
	return pr
}

// trafficTime estimates how long the traffic of one run lasts.
func trafficTime(s bench.Scenario) time.Duration {
	switch s.Kind {
	case bench.Latency:
		return time.Duration(s.Requests) * (s.RTT + 100*time.Microsecond)
	case bench.Scale:
		rate := s.RateMbps
		if rate <= 0 {
			rate = 1000
		}
		return time.Duration(float64(s.TotalBytes) * 8 / (rate * 1e6) * float64(time.Second))
	case bench.Interactive:
		// Alone, then beside after the stuck connections ran, at about half the rate.
		rate := max(s.RateMbps, 10)
		stuck := float64(s.Stuck) * float64(s.StuckBytes) * 8 / (rate * 0.5e6)
		return 2*(s.Warmup+s.Duration) + time.Duration(stuck*float64(time.Second))
	}
	return s.Warmup + s.Duration
}

func (p *progress) eta() time.Duration {
	return p.remaining + time.Duration(p.total-p.finished)*p.overhead
}

func (p *progress) start(s bench.Scenario, contender string, rep int) {
	p.runStart, p.current = time.Now(), s
	pct := 0
	if p.total > 0 {
		pct = p.finished * 100 / p.total
	}
	fmt.Fprintf(p.w, "[%d/%d %3d%%] %s  %s  rep %d/%d  (%s)  elapsed %s, %d left after this, ETA %s\n",
		p.finished+1, p.total, pct, s.ID(), contender, rep, s.Repetitions, s.Describe(),
		round(time.Since(p.started)), p.total-p.finished-1, round(p.eta()))
}

func (p *progress) done(x bench.Sample) {
	took := time.Since(p.runStart)
	traffic := trafficTime(x.Scenario)
	p.remaining -= traffic
	p.finished++
	// Running mean of the overhead over finished runs.
	p.overhead += (max(took-traffic, 0) - p.overhead) / time.Duration(p.finished)
	if x.Err != "" {
		fmt.Fprintf(p.w, "           failed after %s: %s\n", round(took), x.Err)
		return
	}
	switch x.Scenario.Kind {
	case bench.Latency:
		fmt.Fprintf(p.w, "           first echo %.1f ms, %d round trips in %.0f ms\n", x.FirstEchoMs, x.RoundTrips, x.TotalMs)
	case bench.Fairness:
		fmt.Fprintf(p.w, "           %.1f Mbit/s beside tcp-cubic's %.1f\n", x.GoodputMbps, x.CompetitorMbps)
	case bench.Scale:
		fmt.Fprintf(p.w, "           %.1f Mbit/s, %d/%d tunnels verified\n", x.GoodputMbps, x.Verified, x.Tunnels)
	case bench.Interactive:
		fmt.Fprintf(p.w, "           echo p50 %.1f p99 %.1f max %.1f ms; bulk %.1f Mbit/s beside, %.1f alone\n", x.P50Ms, x.P99Ms, x.MaxMs, x.GoodputMbps, x.AloneMbps)
	default:
		fmt.Fprintf(p.w, "           %.1f Mbit/s\n", x.GoodputMbps)
	}
}

// skip accounts for a run that cannot happen (its test hosts failed).
func (p *progress) skip(s bench.Scenario) {
	p.remaining -= trafficTime(s)
	p.finished++
}

func (p *progress) finish() {
	fmt.Fprintf(p.w, "bench: %d runs done in %s\n", p.finished, round(time.Since(p.started)))
}

func round(d time.Duration) time.Duration { return d.Round(time.Second) }
