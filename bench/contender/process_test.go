package contender

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quictun/quictun/bench"
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
		path, err := c.Start(context.Background(), nil, bench.Scenario{}, mustAddrPort("198.18.0.2:5201"))
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
	if _, err := New("quictun-reverse", Config{}); err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("quictun-reverse without binaries: %v", err)
	}
	for _, name := range []string{"ssh-reverse-cubic", "ssh-reverse-bbr"} {
		c, err := New(name, Config{StateDir: t.TempDir()})
		if err != nil {
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("New(%s): %v", name, err)
			}
			continue // no sshd or socat here: skipped by the runner with that note
		}
		if c.Name() != name || !strings.Contains(c.Tuning(), "TCP_CONGESTION="+strings.TrimPrefix(name, "ssh-reverse-")) {
			t.Fatalf("%s: %q", c.Name(), c.Tuning())
		}
	}
	if _, err := New("wireguard", Config{}); err == nil || !strings.Contains(err.Error(), "unknown contender") {
		t.Fatalf("unknown contender: %v", err)
	}
}

func mustAddrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

func TestHysteriaIsFoundOrSkipped(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no hysteria on PATH
	t.Setenv(HysteriaEnv, "/nonexistent/hysteria")
	if _, err := New(bench.HysteriaBBR, Config{}); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "/nonexistent/hysteria") {
		t.Fatalf("a missing hysteria: %v, want unavailable naming the path", err)
	}
	// The configured path wins over the environment.
	fake := filepath.Join(t.TempDir(), "hysteria")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := New(bench.HysteriaBrutal, Config{Hysteria: fake, StateDir: t.TempDir()})
	if err != nil || c.Name() != bench.HysteriaBrutal {
		t.Fatalf("New with a configured binary: %v, %v", c, err)
	}
	if _, err := c.Start(context.Background(), nil, bench.Scenario{}, mustAddrPort("198.18.0.2:5201")); err == nil || !strings.Contains(err.Error(), "told a link rate") {
		t.Fatalf("Brutal on a link without a rate: %v", err)
	}
}

func TestHysteriaBrutalIsToldTheRate(t *testing.T) {
	s := bench.Scenario{RateMbps: 100}
	target := mustAddrPort("198.18.0.2:5201")
	for _, tc := range []struct {
		brutal bool
		want   any
	}{{false, nil}, {true, map[string]any{"up": "100 mbps", "down": "100 mbps"}}} {
		h := &hysteria{brutal: tc.brutal}
		server, client := h.configs(s, "198.18.0.2:4433", "198.18.0.1:6100", target, "c.pem", "k.pem")
		if got := client["bandwidth"]; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("brutal %v: bandwidth %v, want %v", tc.brutal, got, tc.want)
		}
		fwd := client["tcpForwarding"].([]any)[0].(map[string]any)
		if fwd["remote"] != "198.18.0.2:5201" || fwd["listen"] != "198.18.0.1:6100" || server["listen"] != "198.18.0.2:4433" || client["server"] != "198.18.0.2:4433" {
			t.Errorf("forward %v, server %v", fwd, server)
		}
	}
}
