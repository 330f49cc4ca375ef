//go:build linux

// Package runner runs benchmark suites: for each scenario it sets up the two test hosts
// with the scenario's link, runs every contender Repetitions times (contenders
// interleaved within a repetition, so a disturbance on this shared machine hits all of
// them alike rather than one), shows progress, and summarises the samples into records.
package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/quictun/quictun/bench"
	"github.com/quictun/quictun/bench/contender"
)

// Config is one run of the harness.
type Config struct {
	Suites []bench.Suite
	// Self is the bench binary; the runner starts its hidden `loadgen` subcommands on
	// the test hosts.
	Self      string
	Contender contender.Config
	NewBed    BedFactory
	// Only, when not empty, restricts every scenario to these contenders.
	Only []string
	// Progress receives one line per run (scenario i of N, elapsed, ETA); nil discards.
	Progress io.Writer
	// EmulatorProbe, when positive, first measures what the link emulator forwards
	// unimpaired with one iperf3 flow of this length (see measureEmulator); every
	// ceiling then takes it into account. Zero skips it (the loopback bed has no
	// emulator to measure).
	EmulatorProbe time.Duration
}

// Result is what a run produced.
type Result struct {
	Records       []bench.Record
	Samples       []bench.Sample
	Backend       string
	BackendReason string
	Tuning        map[string]string
	Notes         []string
	Interrupted   bool
	// Incomplete lists the suites with a planned scenario that did not finish.
	Incomplete []string
	// Emulator is the probe's measurement; nil when not made or failed (see Notes).
	Emulator *bench.EmulatorSpeed
}

// Run executes every scenario of cfg.Suites. It returns the records gathered so far
// along with ctx's error when cancelled; a failing repetition is recorded, not fatal.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.NewBed == nil {
		return nil, errors.New("runner: no bed factory")
	}
	if cfg.Progress == nil {
		cfg.Progress = io.Discard
	}
	res := &Result{Tuning: map[string]string{}}
	contenders, unavailable := resolveContenders(cfg, res)
	plan := makePlan(cfg, contenders)
	if cfg.EmulatorProbe > 0 && len(plan.scenarios) > 0 {
		measureEmulatorFirst(ctx, cfg, res)
	}
	prog := newProgress(cfg.Progress, plan)

	finished := map[string]bool{} // scenario IDs
	for _, item := range plan.scenarios {
		if ctx.Err() != nil {
			break
		}
		samples := runScenario(ctx, cfg, item, contenders, prog, res)
		res.Samples = append(res.Samples, samples...)
		// Only a cancel cuts a scenario short: every other failure is a sample.
		interrupted := len(samples) < len(item.contenders)*item.scenario.Repetitions
		for _, name := range item.contenders {
			var mine []bench.Sample
			for _, s := range samples {
				if s.Contender == name {
					mine = append(mine, s)
				}
			}
			if interrupted && len(mine) == 0 {
				continue // nothing measured: no record, rather than "0 runs"
			}
			r := bench.Summarize(item.scenario, name, mine)
			r.Interrupted = interrupted
			res.Records = append(res.Records, r)
		}
		if interrupted {
			continue
		}
		finished[item.scenario.ID()] = true
		for _, name := range item.skipped {
			r := bench.Summarize(item.scenario, name, nil)
			r.Note = unavailable[name]
			res.Records = append(res.Records, r)
		}
	}
	for _, suite := range cfg.Suites {
		for _, item := range plan.scenarios {
			if item.scenario.Suite == suite.Name && !finished[item.scenario.ID()] {
				res.Incomplete = append(res.Incomplete, suite.Name)
				break
			}
		}
	}
	bench.FillRatios(res.Records)
	bench.FillAddedDelay(res.Records)
	if res.Emulator != nil {
		bench.LimitCeilings(res.Records, res.Emulator.LinkMbps)
	}
	prog.finish()
	if err := ctx.Err(); err != nil {
		res.Interrupted = true
		return res, err
	}
	return res, nil
}

// resolveContenders builds each contender named anywhere in the suites once; the ones
// that cannot run here are noted with the reason.
func resolveContenders(cfg Config, res *Result) (map[string]contender.Contender, map[string]string) {
	built := map[string]contender.Contender{}
	unavailable := map[string]string{}
	for _, suite := range cfg.Suites {
		for _, s := range suite.Scenarios {
			for _, name := range s.Contenders {
				if _, done := built[name]; done {
					continue
				}
				if _, done := unavailable[name]; done {
					continue
				}
				c, err := contender.New(name, cfg.Contender)
				if err != nil {
					unavailable[name] = err.Error()
					res.Notes = append(res.Notes, fmt.Sprintf("%s skipped: %v", name, err))
					continue
				}
				built[name] = c
				res.Tuning[name] = c.Tuning()
			}
		}
	}
	return built, unavailable
}

type planItem struct {
	scenario   bench.Scenario
	contenders []string // to run
	skipped    []string // named but unavailable
}

type plan struct {
	scenarios []planItem
	runs      int
}

func makePlan(cfg Config, available map[string]contender.Contender) plan {
	var p plan
	for _, suite := range cfg.Suites {
		for _, s := range suite.Scenarios {
			item := planItem{scenario: s}
			for _, name := range s.Contenders {
				if len(cfg.Only) > 0 && !contains(cfg.Only, name) {
					continue
				}
				if _, ok := available[name]; ok {
					item.contenders = append(item.contenders, name)
				} else {
					item.skipped = append(item.skipped, name)
				}
			}
			if len(item.contenders)+len(item.skipped) == 0 {
				continue
			}
			p.scenarios = append(p.scenarios, item)
			p.runs += len(item.contenders) * s.Repetitions
		}
	}
	return p
}

func runScenario(ctx context.Context, cfg Config, item planItem, contenders map[string]contender.Contender, prog *progress, res *Result) []bench.Sample {
	s := item.scenario
	var samples []bench.Sample
	if len(item.contenders) == 0 {
		return nil
	}
	bed, err := cfg.NewBed(ctx, s)
	if err != nil {
		// Every planned run of this scenario fails with the same reason.
		for rep := 1; rep <= s.Repetitions; rep++ {
			for _, name := range item.contenders {
				prog.skip(s)
				samples = append(samples, bench.Sample{Scenario: s, Contender: name, Repetition: rep, Err: "test hosts: " + err.Error()})
			}
		}
		return samples
	}
	defer func() {
		if err := bed.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: closing test hosts of %s: %v\n", s.ID(), err)
		}
	}()
	res.Backend, res.BackendReason = bed.Backend(), bed.BackendReason()
	for rep := 1; rep <= s.Repetitions; rep++ {
		for _, name := range item.contenders {
			if ctx.Err() != nil {
				return samples
			}
			prog.start(s, name, rep)
			sample := bench.Sample{Scenario: s, Contender: name, Repetition: rep, CPUClientS: -1, CPUServerS: -1, EmulatorLateMs: -1}
			m := measurement{bed: bed, scenario: s, contender: contenders[name], self: cfg.Self}
			late, _ := bed.(lateReporter)
			if late != nil {
				late.TakeWorstLate() // what the settling and the previous run left
			}
			if err := m.run(ctx, &sample); err != nil {
				if ctx.Err() != nil {
					return samples // interrupted: not a result
				}
				sample.Err = oneLine(err.Error())
			}
			if late != nil {
				if w, ok := late.TakeWorstLate(); ok {
					sample.EmulatorLateMs = float64(w) / float64(time.Millisecond)
				}
			}
			prog.done(sample)
			samples = append(samples, sample)
			settle(ctx, s)
		}
	}
	return samples
}

// settle lets the link's queues drain so that one run's tail does not start the next.
func settle(ctx context.Context, s bench.Scenario) {
	select {
	case <-ctx.Done():
	case <-time.After(300*time.Millisecond + 2*s.RTT):
	}
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " | ")
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	return s
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
