package contender

import (
	"context"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseStatCPU(t *testing.T) {
	// The command name may hold spaces and parentheses; fields count from the last ')'.
	stat := "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 123 4096 100 0 0 0"
	got, err := parseStatCPU([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if got != 3.25 {
		t.Fatalf("cpu = %v s, want 3.25 (utime 250 + stime 75 ticks at 100 Hz)", got)
	}
	for _, bad := range []string{"", "4242 no paren", "1 (x) S 1 2"} {
		if _, err := parseStatCPU([]byte(bad)); err == nil {
			t.Errorf("parseStatCPU(%q) accepted malformed input", bad)
		}
	}
}

func TestProcessCPUAndStop(t *testing.T) {
	// A busy shell loop uses CPU; it ends only when stopped.
	p, err := StartProcess("busy", exec.Command("sh", "-c", "while :; do :; done"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var cpu float64
	for cpu < 0.1 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		if cpu, err = p.CPUSeconds(); err != nil {
			t.Fatal(err)
		}
	}
	if cpu < 0.1 {
		t.Fatalf("busy loop used only %v CPU seconds", cpu)
	}
	if p.Failure() != nil {
		t.Fatalf("running process reported as failed: %v", p.Failure())
	}
	p.Stop()
	p.Stop() // idempotent
	final, err := p.CPUSeconds()
	if err != nil || final < cpu {
		t.Fatalf("after exit: cpu %v (was %v), err %v", final, cpu, err)
	}
}

func TestProcessFailureCarriesOutput(t *testing.T) {
	p, err := StartProcess("doomed", exec.Command("sh", "-c", "echo bind: address already in use >&2; exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	f := p.Failure()
	if f == nil || !strings.Contains(f.Error(), "address already in use") || !strings.Contains(f.Error(), "doomed") {
		t.Fatalf("Failure() = %v", f)
	}
}

func TestProcessWaitTimeoutStops(t *testing.T) {
	p, err := StartProcess("sleeper", exec.Command("sleep", "30"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := p.Wait(100 * time.Millisecond); err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("Wait = %v", err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("a stopped sleeper took too long to end")
	}
}

func TestStartProcessMissingBinary(t *testing.T) {
	if _, err := StartProcess("ghost", exec.Command("/nonexistent/quictun-server")); err == nil {
		t.Fatal("started a binary that does not exist")
	}
}

func TestNewKnowsEveryContender(t *testing.T) {
	for _, name := range []string{"tcp-cubic", "tcp-bbr"} {
		c, err := New(name, Config{})
		if err != nil || c.Name() != name {
			t.Fatalf("New(%s) = %v, %v", name, c, err)
		}
		path, err := c.Start(context.Background(), nil, mustAddrPort("198.18.0.2:5201"))
		if err != nil || path.Dial.String() != "198.18.0.2:5201" || path.Congestion != strings.TrimPrefix(name, "tcp-") || len(path.Endpoints) != 0 {
			t.Fatalf("direct path %+v, %v", path, err)
		}
	}
	if _, err := New("quictun", Config{}); err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("quictun without binaries: %v", err)
	}
	if _, err := New("quictun", Config{QuictunServer: "/nonexistent/s", QuictunClient: "/nonexistent/c"}); err == nil {
		t.Fatal("quictun with missing binaries accepted")
	}
	if _, err := New("wireguard", Config{}); err == nil || !strings.Contains(err.Error(), "unknown contender") {
		t.Fatalf("unknown contender: %v", err)
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }
