//go:build linux

package runner

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/quictun/quictun/bench"
	"github.com/quictun/quictun/netem/host"
)

// TestNamespaceSmoke runs one short lossy scenario through the real link emulator with
// every contender that can run here. Root only.
func TestNamespaceSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces; skipping the namespace smoke test")
	}
	if backends, why := host.Available(); len(backends) == 0 {
		t.Skipf("no link emulation backend: %v", why)
	}
	requireIperf3(t)
	self, ccfg := buildBinaries(t)
	contenders := []string{"tcp-cubic"}
	if ccfg.QuictunClient != "" {
		contenders = append(contenders, "quictun")
	} else {
		t.Log("quictun binaries not buildable yet; smoke test runs without quictun")
	}
	contenders = append(contenders, available("kcptun", "hysteria-bbr", "hysteria-brutal")...)
	s := bench.Scenario{Suite: "smoke", Name: "rate40-rtt20-loss0.5", Kind: bench.Goodput, RateMbps: 40, RTT: 20 * time.Millisecond,
		Loss: 0.005, QueueBDP: 1, Duration: 3 * time.Second, Repetitions: 1, Contenders: contenders}
	newBed, err := namespacesWithPrefix("qtsmoke", "auto")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Run(ctx, Config{Suites: []bench.Suite{{Name: "smoke", Scenarios: []bench.Scenario{s}}}, Self: self, Contender: ccfg, NewBed: newBed,
		EmulatorProbe: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Backend != "tun" && res.Backend != "tc-netem" || res.BackendReason == "" {
		t.Errorf("backend %q (%q)", res.Backend, res.BackendReason)
	}
	// The emulator forwards far more than 40 Mbit/s: it must not become the ceiling.
	if e := res.Emulator; e == nil || e.LinkMbps < 100 || e.LinkMbps < e.GoodputMbps || !strings.Contains(e.How, res.Backend+" backend") {
		t.Errorf("emulator speed %+v (notes %v)", e, res.Notes)
	} else {
		t.Logf("emulator: %.0f Mbit/s of TCP payload, %.0f of IP packets", e.GoodputMbps, e.LinkMbps)
	}
	for _, r := range res.Records {
		t.Logf("%s: %.1f Mbit/s %v", r.Contender, r.GoodputMbps, r.Errors)
		if r.CeilingMbps != 40*(1-0.005) || r.CeilingLimitedBy != "" {
			t.Errorf("%s: ceiling %v (%q), want the link's", r.Contender, r.CeilingMbps, r.CeilingLimitedBy)
		}
		if r.Runs != 1 {
			t.Errorf("%s failed: %v", r.Contender, r.Errors)
			continue
		}
		// The emulated rate is a hard ceiling: nothing may beat 40 Mbit/s.
		if r.GoodputMbps <= 0.1 || r.GoodputMbps > 40*1.05 {
			t.Errorf("%s: %.1f Mbit/s through a 40 Mbit/s link", r.Contender, r.GoodputMbps)
		}
	}
	// Everything the run created is gone.
	if entries, _ := os.ReadDir("/run/netns"); entries != nil {
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), "qtsmoke") {
				t.Errorf("namespace %s left behind", e.Name())
			}
		}
	}
}
