package netem

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseModel(t *testing.T) {
	burst, err := NewBurstLoss(0.02, 3)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		in   string
		want Model
	}{
		{"", Model{}},
		{"none", Model{}},
		{"delay=25ms", Model{Delay: 25 * time.Millisecond}},
		{"delay=25ms, jitter=2ms, loss=1%, rate=100mbit, queue=256KiB",
			Model{Delay: 25 * time.Millisecond, Jitter: 2 * time.Millisecond, Loss: 0.01, RateBps: 100e6, QueueBytes: 256 << 10}},
		{"loss=0.05,rate=1g,qdelay=50ms,reorder", Model{Loss: 0.05, RateBps: 1e9, QueueDelay: 50 * time.Millisecond, Reorder: true}},
		{"rate=500kbps,queue=3000", Model{RateBps: 500e3, QueueBytes: 3000}},
		{"rate=1500000", Model{RateBps: 1.5e6}},
		{"reorder=false,burst=2%/3", Model{Burst: burst}},
	}
	for _, c := range cases {
		got, err := ParseModel(c.in)
		if err != nil {
			t.Errorf("ParseModel(%q): %v", c.in, err)
			continue
		}
		if got.String() != c.want.String() {
			t.Errorf("ParseModel(%q) = %s, want %s", c.in, got, c.want)
		}
	}
}

func TestParseModelErrors(t *testing.T) {
	cases := []struct{ in, wantErr string }{
		{"delay", "want key=value"},
		{"delay=fast", "delay="},
		{"delay=-1s", "delay -1s out of range"},
		{"delay=2h", "out of range"},
		{"loss=1.5", "not in [0, 1]"},
		{"loss=NaN", "not in [0, 1]"},
		{"loss=-1%", "not in [0, 1]"},
		{"rate=-5m", "rate"},
		{"rate=fast", "rate"},
		{"queue=10KiB", "needs a rate"},
		{"rate=1m,queue=lots", "queue="},
		{"burst=2%", "AVGLOSS/MEANBURST"},
		{"burst=2%/0.5", "mean burst length"},
		{"burst=90%/1", "> 1"},
		{"color=red", `unknown key "color"`},
		{"reorder=maybe", "want true or false"},
	}
	for _, c := range cases {
		_, err := ParseModel(c.in)
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("ParseModel(%q) error = %v, want it to mention %q", c.in, err, c.wantErr)
		}
	}
}

func TestValidate(t *testing.T) {
	bad := []Model{
		{Loss: math.NaN()},
		{Jitter: -time.Millisecond},
		{RateBps: -1},
		{RateBps: 1e6, QueueBytes: -1},
		{Burst: &GilbertElliott{P: 0.1, R: 0, LossBad: 1}},
		{Burst: &GilbertElliott{P: 2}},
	}
	for _, m := range bad {
		if err := m.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil, want an error", m)
		}
	}
	if err := (Link{Up: Model{Loss: 0.1}, Down: Model{Loss: 2}}).Validate(); err == nil || !strings.HasPrefix(err.Error(), "down:") {
		t.Errorf("Link.Validate error = %v, want one naming the down direction", err)
	}
}

func TestQueueLimitDerivation(t *testing.T) {
	cases := []struct {
		m    Model
		want int64
	}{
		{Model{}, 0},
		{Model{RateBps: 100e6, QueueBytes: 1000}, 1000},
		{Model{RateBps: 100e6, QueueDelay: 10 * time.Millisecond}, 125000},
		{Model{RateBps: 100e6, Delay: 25 * time.Millisecond}, 625000},        // one BDP at RTT 50 ms
		{Model{RateBps: 1e6, Delay: time.Millisecond}, DefaultMinQueueBytes}, // floor
		{Model{RateBps: 1e6, QueueDelay: time.Microsecond}, 1500},            // at least one packet
	}
	for _, c := range cases {
		if got := c.m.queueLimit(); got != c.want {
			t.Errorf("queueLimit(%s) = %d, want %d", c.m, got, c.want)
		}
	}
}

func TestBurstLossStationary(t *testing.T) {
	g, err := NewBurstLoss(0.05, 4)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(g.AverageLoss()-0.05) > 1e-12 || g.R != 0.25 {
		t.Errorf("NewBurstLoss(0.05, 4) = %+v, average %v", g, g.AverageLoss())
	}
}
