//go:build linux

package runner

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quictun/quictun/bench"
	"github.com/quictun/quictun/bench/contender"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var built struct {
	once sync.Once
	dir  string
	err  error
}

// buildBinaries builds the bench binary (for its loadgen subcommand) and, when their
// sources exist, the quictun binaries, once per test process.
func buildBinaries(t *testing.T) (self string, cfg contender.Config) {
	t.Helper()
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "quictun-bench-test-")
		if built.err != nil {
			return
		}
		out, err := exec.Command("go", "build", "-o", built.dir+"/", "github.com/quictun/quictun/cmd/quictun-bench").CombinedOutput()
		if err != nil {
			built.err = &buildError{string(out)}
			return
		}
		// quictun is optional here: it lands separately.
		exec.Command("go", "build", "-o", built.dir+"/", "github.com/quictun/quictun/cmd/quictun-server", "github.com/quictun/quictun/cmd/quictun-client").Run()
	})
	if built.err != nil {
		t.Fatalf("build: %v", built.err)
	}
	cfg.StateDir = t.TempDir()
	if _, err := os.Stat(filepath.Join(built.dir, "quictun-client")); err == nil {
		cfg.QuictunServer, cfg.QuictunClient = filepath.Join(built.dir, "quictun-server"), filepath.Join(built.dir, "quictun-client")
	}
	return filepath.Join(built.dir, "quictun-bench"), cfg
}

type buildError struct{ out string }

func (e *buildError) Error() string { return e.out }

func requireIperf3(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("iperf3"); err != nil {
		t.Skip("iperf3 is not installed (apt-get install -y iperf3); skipping")
	}
}

func scenario(name string, kind bench.Kind, contenders ...string) bench.Scenario {
	return bench.Scenario{Suite: "test", Name: name, Kind: kind, QueueBDP: 1, Duration: time.Second, Repetitions: 1,
		Contenders: contenders, Requests: 20, MessageBytes: 32, Tunnels: 20, TotalBytes: 2 << 20}
}

func available(names ...string) []string {
	var out []string
	for _, n := range names {
		if _, err := contender.New(n, contender.Config{QuictunServer: "quictun-server", QuictunClient: "quictun-client"}); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// The loopback bed runs every kind of measurement end to end without root: real
// iperf3, real kcptun and hysteria (when installed), the real load generator.
func TestLoopbackRunsEveryKind(t *testing.T) {
	requireIperf3(t)
	self, ccfg := buildBinaries(t)
	tunnels := available("kcptun", "hysteria-bbr")
	suite := bench.Suite{Name: "test", Scenarios: []bench.Scenario{
		scenario("bulk", bench.Goodput, append([]string{"tcp-cubic"}, tunnels...)...),
		scenario("echo", bench.Latency, append([]string{"tcp-cubic"}, tunnels...)...),
		scenario("many", bench.Scale, append([]string{"tcp-cubic"}, tunnels...)...),
		scenario("fair", bench.Fairness, "tcp-bbr"),
	}}
	var progress bytes.Buffer
	res, err := Run(context.Background(), Config{Suites: []bench.Suite{suite}, Self: self, Contender: ccfg, NewBed: Loopback, Progress: &progress})
	if err != nil {
		t.Fatal(err)
	}
	if res.Backend != "loopback" {
		t.Errorf("backend %q", res.Backend)
	}
	if len(res.Records) != 3*(1+len(tunnels))+1 {
		t.Fatalf("%d records: %+v", len(res.Records), res.Records)
	}
	for _, r := range res.Records {
		if r.Runs != 1 || r.Failed != 0 {
			t.Errorf("%s/%s: runs %d, errors %v", r.Scenario, r.Contender, r.Runs, r.Errors)
			continue
		}
		switch r.Kind {
		case bench.Goodput:
			if r.GoodputMbps < 10 {
				t.Errorf("%s on loopback moved only %.1f Mbit/s", r.Contender, r.GoodputMbps)
			}
			if r.Contender != "tcp-cubic" && (r.CPUClientSPerGB == nil || *r.CPUClientSPerGB <= 0) {
				t.Errorf("%s endpoint CPU not measured: %v", r.Contender, r.CPUClientSPerGB)
			}
			if r.Contender == "tcp-cubic" && r.RatioCubic != 1 {
				t.Errorf("tcp-cubic ratio to itself %v", r.RatioCubic)
			}
		case bench.Latency:
			if r.RoundTrips != 20 || r.FirstEchoMs <= 0 || r.TotalMs < r.FirstEchoMs {
				t.Errorf("latency record %+v", r)
			}
		case bench.Scale:
			if !r.AllVerified || r.Tunnels != 20 || r.GoodputMbps <= 0 {
				t.Errorf("scale record %+v", r)
			}
		case bench.Fairness:
			if r.CompetitorMbps <= 0 || r.Share <= 0 || r.Share >= 1 {
				t.Errorf("fairness record %+v", r)
			}
		}
	}
	out := progress.String()
	for _, want := range []string{"runs planned", "[1/", "ETA", "elapsed", "runs done"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q:\n%s", want, out)
		}
	}
}

func TestLoopbackRefusesImpairedLinks(t *testing.T) {
	s := scenario("lossy", bench.Goodput, "tcp-cubic")
	s.Loss = 0.01
	res, err := Run(context.Background(), Config{Suites: []bench.Suite{{Name: "test", Scenarios: []bench.Scenario{s}}}, NewBed: Loopback})
	if err != nil {
		t.Fatal(err)
	}
	r := res.Records[0]
	if r.Runs != 0 || r.Failed != 1 || !strings.Contains(r.Errors[0], "needs link emulation") {
		t.Fatalf("record %+v", r)
	}
}

func TestUnavailableContenderIsNoted(t *testing.T) {
	s := scenario("bulk", bench.Goodput, "quictun")
	res, err := Run(context.Background(), Config{Suites: []bench.Suite{{Name: "test", Scenarios: []bench.Scenario{s}}}, NewBed: Loopback})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Records) != 1 || res.Records[0].Note == "" || len(res.Notes) != 1 {
		t.Fatalf("records %+v, notes %v", res.Records, res.Notes)
	}
}

// Ctrl-C: a cancelled run returns promptly with what it has and leaves no process.
func TestCancelStopsPromptly(t *testing.T) {
	requireIperf3(t)
	self, ccfg := buildBinaries(t)
	s := scenario("long", bench.Goodput, "tcp-cubic")
	s.Duration, s.Repetitions = 60*time.Second, 3
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(1500*time.Millisecond, cancel)
	start := time.Now()
	res, err := Run(ctx, Config{Suites: []bench.Suite{{Name: "test", Scenarios: []bench.Scenario{s}}}, Self: self, Contender: ccfg, NewBed: Loopback})
	if err == nil || !res.Interrupted {
		t.Fatalf("err %v, interrupted %v", err, res.Interrupted)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Fatalf("cancel took %s to stop the run", took)
	}
	if len(res.Records) != 0 || strings.Join(res.Incomplete, ",") != "test" {
		t.Fatalf("records %+v (want none: nothing finished), incomplete %v", res.Records, res.Incomplete)
	}
	if out, _ := exec.Command("pgrep", "-f", "iperf3 -c 127.0.0.1 .* -t 60").Output(); len(out) > 0 {
		t.Fatalf("iperf3 client still running: %s", out)
	}
}

func TestLinkFromScenario(t *testing.T) {
	s := bench.Scenario{Suite: "t", Name: "x", RateMbps: 100, RTT: 50 * time.Millisecond, Loss: 0.01, QueueBDP: 1}
	l, err := Link(s)
	if err != nil {
		t.Fatal(err)
	}
	if l.Up != l.Down {
		t.Fatal("link not symmetric")
	}
	m := l.Up
	if m.Delay != 25*time.Millisecond || m.RateBps != 100_000_000 || m.Loss != 0.01 || m.QueueBytes != 625_000 || m.Burst != nil {
		t.Fatalf("model %+v", m)
	}
	s.Burst = 3
	l, err = Link(s)
	if err != nil {
		t.Fatal(err)
	}
	if l.Up.Loss != 0 || l.Up.Burst == nil || l.Up.Burst.AverageLoss() < 0.0099 || l.Up.Burst.AverageLoss() > 0.0101 || l.Up.Burst.R != 1.0/3 {
		t.Fatalf("bursty model %+v %+v", l.Up, l.Up.Burst)
	}
	s.Burst, s.RateMbps = 0, 0
	l, _ = Link(s)
	if l.Up.RateBps != 0 || l.Up.QueueBytes != 0 {
		t.Fatalf("unlimited link has rate or queue: %+v", l.Up)
	}
}

// cancelOn is a progress writer that cancels the run when a line contains marker:
// a Ctrl-C at a known point of the plan rather than after a guessed delay.
type cancelOn struct {
	marker string
	cancel context.CancelFunc
	mu     sync.Mutex
	out    bytes.Buffer
}

func (c *cancelOn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.Contains(string(p), c.marker) {
		c.cancel()
	}
	return c.out.Write(p)
}

// Ctrl-C in the middle of a suite: the scenarios that finished keep their records, the
// one cut short keeps what it measured, marked interrupted, a contender that measured
// nothing there has no record (not "0 runs"), and the suite is reported incomplete.
func TestInterruptedScenario(t *testing.T) {
	requireIperf3(t)
	self, ccfg := buildBinaries(t)
	first := scenario("echo", bench.Latency, "tcp-cubic")
	second := scenario("bulk", bench.Goodput, "tcp-cubic", "tcp-bbr")
	third := scenario("never", bench.Goodput, "tcp-cubic")
	other := bench.Suite{Name: "other", Scenarios: []bench.Scenario{scenario("done", bench.Latency, "tcp-cubic")}}
	other.Scenarios[0].Suite = "other"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	progress := &cancelOn{marker: "test/bulk  tcp-bbr", cancel: cancel}
	res, err := Run(ctx, Config{
		Suites: []bench.Suite{other, {Name: "test", Scenarios: []bench.Scenario{first, second, third}}},
		Self:   self, Contender: ccfg, NewBed: Loopback, Progress: progress,
	})
	if err == nil || !res.Interrupted {
		t.Fatalf("err %v, interrupted %v", err, res.Interrupted)
	}
	type key struct{ scenario, contender string }
	got := map[key]bench.Record{}
	for _, r := range res.Records {
		got[key{r.Scenario, r.Contender}] = r
	}
	if len(got) != 3 {
		t.Fatalf("records %+v, want other/done, echo and bulk's tcp-cubic", res.Records)
	}
	if r := got[key{"done", "tcp-cubic"}]; r.Runs != 1 || r.Interrupted {
		t.Errorf("finished scenario of a finished suite: %+v", r)
	}
	if r := got[key{"echo", "tcp-cubic"}]; r.Runs != 1 || r.Interrupted {
		t.Errorf("finished scenario: %+v", r)
	}
	if r := got[key{"bulk", "tcp-cubic"}]; r.Runs != 1 || !r.Interrupted || r.GoodputMbps <= 0 {
		t.Errorf("scenario cut short: %+v", r)
	}
	if _, ok := got[key{"bulk", "tcp-bbr"}]; ok {
		t.Error("a contender that measured nothing has a record")
	}
	if strings.Join(res.Incomplete, ",") != "test" {
		t.Errorf("incomplete suites %v, want [test]", res.Incomplete)
	}
}
