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
// iperf3, real kcptun (when installed), the real load generator.
func TestLoopbackRunsEveryKind(t *testing.T) {
	requireIperf3(t)
	self, ccfg := buildBinaries(t)
	tunnels := available("kcptun")
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
			if r.Contender == "kcptun" && (r.CPUClientSPerGB == nil || *r.CPUClientSPerGB <= 0) {
				t.Errorf("kcptun endpoint CPU not measured: %v", r.CPUClientSPerGB)
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
