//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/quictun/quictun/bench"
	"github.com/quictun/quictun/bench/contender"
	"github.com/quictun/quictun/bench/report"
	"github.com/quictun/quictun/bench/runner"
)

type runCmd struct {
	Suite      []string `default:"quick" help:"Suites to run, comma separated: report, wan, latency, scale, interactive, udp, quick, or all (every suite but quick)."`
	Out        string   `default:"bench/results" help:"Folder for the results: <timestamp>/ per run, and latest.md, latest.json, latest-charts/ with each suite's latest complete results (merged by suite)."`
	Scenarios  []string `type:"existingfile" help:"Extra suite files (TOML); a suite of the same name replaces the built-in one."`
	Contenders []string `help:"Run only these contenders (default: each scenario's own list)."`
	Backend    string   `enum:"auto,tun,tc-netem,loopback" default:"auto" help:"Link emulation: auto picks tc-netem where the kernel's netem qdisc works (no user-space forwarding), else tun (a user-space forwarder between TUN devices); loopback runs unimpaired scenarios without namespaces."`
	QuictunBin string   `type:"existingdir" help:"Folder with quictun-server and quictun-client (default: built from this module)."`
	// The probe is what lets the report tell a slow forwarder from a slow contender.
	EmulatorProbe time.Duration `default:"3s" help:"First measure what the link emulator forwards unimpaired with one iperf3 flow this long; ceilings use it where it is below a scenario's rate (0 skips it)."`
	List          bool          `help:"List the selected scenarios and exit."`
	NetnsPrefix   string        `default:"qtbench" help:"Names of the network namespaces of the emulated links start with this (at most 7 characters a-z, 0-9); leftovers with it are removed at start, so two runs at once on one machine need different ones."`
}

func (c runCmd) Run(ctx context.Context) error {
	suites, err := bench.DefaultSuites()
	if err != nil {
		return err
	}
	var extra []bench.Suite
	for _, file := range c.Scenarios {
		data, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		s, err := bench.ParseSuite(data, file)
		if err != nil {
			return err
		}
		extra = append(extra, s)
	}
	selected, err := bench.Select(bench.Merge(suites, extra), splitList(c.Suite))
	if err != nil {
		return err
	}
	only := splitList(c.Contenders)
	for _, name := range only {
		if _, err := contender.New(name, contender.Config{}); err != nil && !errors.Is(err, contender.ErrUnavailable) {
			return err
		}
	}
	if c.List {
		for _, s := range selected {
			fmt.Printf("suite %s: %s\n", s.Name, s.Description)
			for _, sc := range s.Scenarios {
				fmt.Printf("  %-32s %-9s %s; %d x %v\n", sc.Name, sc.Kind, sc.Describe(), sc.Repetitions, sc.Contenders)
			}
		}
		return nil
	}
	if err := checkRoot(c.Backend); err != nil {
		return err
	}
	if missing := missingTools(selected, only, c.Backend, c.QuictunBin, c.EmulatorProbe > 0); len(missing) > 0 {
		return missingError(missing)
	}
	newBed, err := bedFactory(ctx, c.Backend, c.NetnsPrefix)
	if err != nil {
		return err
	}

	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own binary for the load generator: %w", err)
	}
	work, err := os.MkdirTemp("", "quictun-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cfg := runner.Config{
		Suites:    selected,
		Self:      self,
		NewBed:    newBed,
		Only:      only,
		Progress:  os.Stderr,
		Contender: contender.Config{StateDir: work},
	}
	if c.Backend != "loopback" {
		cfg.EmulatorProbe = c.EmulatorProbe
	}
	var notes []string
	if slices.ContainsFunc(contenders(selected, only), isQuictun) {
		if server, client, err := quictunBinaries(ctx, c.QuictunBin, work); err != nil {
			notes = append(notes, "quictun: "+err.Error())
			fmt.Fprintf(os.Stderr, "bench: quictun contenders will be skipped: %v\n", err)
		} else {
			cfg.Contender.QuictunServer, cfg.Contender.QuictunClient = server, client
		}
	}
	if err := checkContenders(selected, only, cfg.Contender); err != nil {
		return err
	}
	notes = append(notes, ensureBBR(ctx)...)
	version := quictunVersion(ctx, c.QuictunBin, cfg.Contender.QuictunServer)

	started := time.Now()
	res, runErr := runner.Run(ctx, cfg)
	if res == nil {
		return runErr
	}
	res.Notes = append(notes, res.Notes...)
	env := runner.Environment(cfg, res, started, time.Now())
	env.Command = commandLine(os.Args, os.Getenv(viaEnv))
	env.Versions["quictun"] = version
	written, err := report.Write(c.Out, env, res.Records, res.Samples, res.Interrupted)
	if err != nil {
		return errors.Join(runErr, fmt.Errorf("write report: %w", err))
	}
	if written.Dir != "" {
		fmt.Fprintf(os.Stderr, "bench: report of this run: %s\n", filepath.Join(written.Dir, "report.md"))
	}
	if written.Latest != "" {
		fmt.Fprintf(os.Stderr, "bench: %s now has suites %s from this run\n", written.Latest, strings.Join(written.Suites, ", "))
	}
	if written.Note != "" {
		fmt.Fprintf(os.Stderr, "bench: %s\n", written.Note)
	}
	if runErr != nil {
		return exitCode{code: 130, err: fmt.Errorf("interrupted: %w", runErr)}
	}
	return nil
}

// quictunBinaries finds quictun-server and quictun-client in dir, or builds them from
// this module into work.
func quictunBinaries(ctx context.Context, dir, work string) (server, client string, err error) {
	if dir != "" {
		server, client = filepath.Join(dir, "quictun-server"), filepath.Join(dir, "quictun-client")
		for _, b := range []string{server, client} {
			if _, err := os.Stat(b); err != nil {
				return "", "", err
			}
		}
		return server, client, nil
	}
	bin := filepath.Join(work, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return "", "", err
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(bctx, "go", "build", "-o", bin+string(filepath.Separator), "./cmd/quictun-server", "./cmd/quictun-client")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("go build ./cmd/quictun-server ./cmd/quictun-client (run from the module root): %v: %s", err, strings.TrimSpace(string(out)))
	}
	return filepath.Join(bin, "quictun-server"), filepath.Join(bin, "quictun-client"), nil
}

// ensureBBR loads the bbr module when the kernel lacks it, without touching the default
// congestion control: the TCP contenders set theirs per connection.
func ensureBBR(ctx context.Context) []string {
	const avail = "/proc/sys/net/ipv4/tcp_available_congestion_control"
	have := func() bool {
		b, err := os.ReadFile(avail)
		return err == nil && strings.Contains(" "+strings.TrimSpace(string(b))+" ", " bbr ")
	}
	if have() {
		return nil
	}
	if out, err := exec.CommandContext(ctx, "modprobe", "tcp_bbr").CombinedOutput(); err != nil || !have() {
		return []string{fmt.Sprintf("tcp-bbr: the kernel has no bbr and `modprobe tcp_bbr` failed (%v %s); its runs will fail", err, strings.TrimSpace(string(out)))}
	}
	return []string{"loaded kernel module tcp_bbr (the default congestion control is unchanged)"}
}

func splitList(items []string) []string {
	var out []string
	for _, item := range items {
		for _, part := range strings.Split(item, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}
