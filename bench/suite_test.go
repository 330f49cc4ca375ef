package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDefaultSuitesLoad(t *testing.T) {
	suites, err := DefaultSuites()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"report": true, "wan": true, "latency": true, "scale": true, "quick": true, "interactive": true, "udp": true, "reverse": true}
	for _, s := range suites {
		if !want[s.Name] {
			t.Errorf("unexpected suite %q", s.Name)
		}
		delete(want, s.Name)
		if len(s.Scenarios) == 0 {
			t.Errorf("suite %s has no scenarios", s.Name)
		}
	}
	if len(want) != 0 {
		t.Fatalf("missing suites: %v", want)
	}
}

// The quick suite is a promise: at most two minutes with every contender.
func TestQuickSuiteFitsTwoMinutes(t *testing.T) {
	suites, err := DefaultSuites()
	if err != nil {
		t.Fatal(err)
	}
	quick, err := Select(suites, []string{"quick"})
	if err != nil {
		t.Fatal(err)
	}
	var flow time.Duration
	for _, s := range quick[0].Scenarios {
		if len(s.Contenders) != len(defaultContenders(s.Kind)) {
			t.Errorf("%s runs %v, want every contender", s.ID(), s.Contenders)
		}
		flow += s.Duration * time.Duration(s.Repetitions*len(s.Contenders))
	}
	// Each run also spends a second or two starting endpoints and iperf3.
	if flow > 90*time.Second {
		t.Fatalf("quick suite spends %s in flows alone; it must stay within two minutes", flow)
	}
}

func TestWANSuiteMatchesSpec(t *testing.T) {
	suites, _ := DefaultSuites()
	wan, err := Select(suites, []string{"wan"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Scenario{}
	for _, s := range wan[0].Scenarios {
		got[s.Name] = s
	}
	for _, rtt := range []string{"50", "200"} {
		for _, loss := range []string{"0", "0.5", "1", "2", "5", "10"} {
			name := "rate100-rtt" + rtt + "-loss" + loss
			s, ok := got[name]
			if !ok {
				t.Errorf("wan lacks %s", name)
				continue
			}
			if s.RateMbps != 100 || s.Kind != Goodput {
				t.Errorf("%s: rate %v kind %s", name, s.RateMbps, s.Kind)
			}
		}
	}
	ge, ok := got["rate100-rtt50-loss2-burst3"]
	if !ok || ge.Burst != 3 || ge.Loss != 0.02 {
		t.Errorf("Gilbert-Elliott scenario: %+v", ge)
	}
	for _, loss := range []string{"1", "5", "10"} {
		name := "rtt200-q50ms-30s-loss" + loss
		s, ok := got[name]
		if !ok || s.RTT != 200*time.Millisecond || s.QueueBytes() != 625000 || s.Duration != 30*time.Second || !slices.Contains(s.Contenders, HysteriaBrutal) {
			t.Errorf("long path %s: %+v", name, s)
		}
	}
	fair, ok := got["fairness"]
	if !ok || fair.Kind != Fairness || fair.Loss != 0 {
		t.Errorf("fairness scenario: %+v", fair)
	}
}

// The interactive suite is issue 20's matrix: 20 and 100 Mbit/s, RTT 50 and
// 200 ms, 0 and 1% loss, two bulk flows and a 64-byte echo every 50 ms, plus 4
// stuck after running fast on 100 Mbit/s x 200 ms, against every tunnel and
// direct TCP.
func TestInteractiveSuiteMatchesSpec(t *testing.T) {
	suites, _ := DefaultSuites()
	sel, err := Select(suites, []string{"interactive"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Scenario{}
	var traffic time.Duration
	for _, s := range sel[0].Scenarios {
		got[s.Name] = s
		for _, c := range []string{TCPBBR, Quictun, Kcptun, HysteriaBBR, HysteriaBrutal} {
			if !slices.Contains(s.Contenders, c) {
				t.Errorf("%s lacks %s", s.Name, c)
			}
		}
		if s.Kind != Interactive || s.EchoInterval != 50*time.Millisecond || s.MessageBytes != 64 || s.QueueDelay != 50*time.Millisecond {
			t.Errorf("%s: %+v", s.Name, s)
		}
		traffic += time.Duration(s.Repetitions*len(s.Contenders)) * 2 * (s.Warmup + s.Duration)
	}
	for _, rate := range []string{"20", "100"} {
		for _, rtt := range []string{"50", "200"} {
			for _, loss := range []string{"0", "1"} {
				if s, ok := got["rate"+rate+"-rtt"+rtt+"-loss"+loss]; !ok || s.Bulk != 2 || s.Stuck != 0 {
					t.Errorf("rate%s-rtt%s-loss%s: %+v", rate, rtt, loss, s)
				}
			}
		}
	}
	stuck := got["stuck4"]
	if stuck.Stuck != 4 || stuck.Bulk != 1 || stuck.StuckBytes != 48<<20 || stuck.RateMbps != 100 || stuck.RTT != 200*time.Millisecond {
		t.Errorf("stuck4: %+v", stuck)
	}
	// Short enough to run beside other work: the suite says about 20 minutes.
	if traffic > 15*time.Minute {
		t.Errorf("interactive suite moves traffic for %s", traffic)
	}
}

func TestSelect(t *testing.T) {
	suites, _ := DefaultSuites()
	all, err := Select(suites, []string{"all"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range all {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "interactive,latency,report,scale,udp,wan" {
		t.Fatalf("all = %v; want every suite but quick", names)
	}
	two, err := Select(suites, []string{"wan", "quick", "wan"})
	if err != nil || len(two) != 2 {
		t.Fatalf("Select(wan, quick, wan) = %d suites, %v", len(two), err)
	}
	if _, err := Select(suites, []string{"nope"}); err == nil || !strings.Contains(err.Error(), `unknown suite "nope"`) {
		t.Fatalf("unknown suite error = %v", err)
	}
}

func TestParseSuiteExpandsAxes(t *testing.T) {
	suite, err := ParseSuite([]byte(`
suite = "t"
[defaults]
rate_mbps = 10
duration = "2s"
repetitions = 2
contenders = ["tcp-cubic", "quictun"]
[[scenario]]
rtt_ms = [10, 20]
loss = [0, 0.01, 0.1]
[[scenario]]
name = "named"
rtt_ms = 5.5
jitter_ms = 1
queue_ms = 2.5
warmup = "3s"
[[scenario]]
name = "many"
kind = "scale"
tunnels = [1, 100]
total_bytes = 1000
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range suite.Scenarios {
		names = append(names, s.Name)
	}
	want := "rate10-rtt10-loss0,rate10-rtt10-loss1,rate10-rtt10-loss10,rate10-rtt20-loss0,rate10-rtt20-loss1,rate10-rtt20-loss10,named,many-tunnels1,many-tunnels100"
	if strings.Join(names, ",") != want {
		t.Fatalf("names = %v\nwant    %s", names, want)
	}
	s := suite.Scenarios[4]
	if s.RTT != 20*time.Millisecond || s.Loss != 0.01 || s.RateMbps != 10 || s.Duration != 2*time.Second || s.Repetitions != 2 {
		t.Fatalf("expanded scenario = %+v", s)
	}
	if s.CeilingMbps() != 9.9 {
		t.Fatalf("ceiling = %v, want 9.9", s.CeilingMbps())
	}
	named := suite.Scenarios[6]
	if named.RTT != 5500*time.Microsecond || named.Jitter != time.Millisecond || named.Warmup != 3*time.Second || s.Warmup != 0 ||
		named.QueueDelay != 2500*time.Microsecond || s.QueueDelay != 0 || !strings.HasSuffix(named.Describe(), ", queue 2.5 ms") {
		t.Fatalf("named scenario = %+v", named)
	}
	many := suite.Scenarios[8]
	if many.Kind != Scale || many.Tunnels != 100 || many.TotalBytes != 1000 {
		t.Fatalf("scale scenario = %+v", many)
	}
}

func TestQueueBytes(t *testing.T) {
	s := Scenario{RateMbps: 100, RTT: 50 * time.Millisecond, QueueBDP: 1}
	if got := s.QueueBytes(); got != 625000 {
		t.Fatalf("1 BDP at 100 Mbit/s, 50 ms = %d bytes, want 625000", got)
	}
	// A queue given in time holds that much at the rate, whatever the RTT.
	long := Scenario{RateMbps: 100, RTT: 200 * time.Millisecond, QueueBDP: 1, QueueDelay: 50 * time.Millisecond}
	if got := long.QueueBytes(); got != 625000 {
		t.Fatalf("50 ms at 100 Mbit/s = %d bytes, want 625000", got)
	}
	s.RTT = time.Millisecond
	if got := s.QueueBytes(); got != MinQueueBytes {
		t.Fatalf("tiny BDP = %d, want the floor %d", got, MinQueueBytes)
	}
	s.RateMbps = 0
	if got := s.QueueBytes(); got != 0 {
		t.Fatalf("unlimited link queue = %d, want 0", got)
	}
}

func TestParseSuiteErrorsNameTheKey(t *testing.T) {
	head := "suite = \"t\"\n[defaults]\nrate_mbps = 10\n"
	cases := []struct{ name, toml, want string }{
		{"unknown key", head + "[[scenario]]\nlos = 0.1\n", "unknown key(s): scenario.los"},
		{"loss out of range", head + "[[scenario]]\nloss = 1.5\n", "loss 1.5 must be a fraction in [0, 1)"},
		{"loss not a number", head + "[[scenario]]\nloss = \"1%\"\n", "key loss: 1% (string) is not a number"},
		{"empty list", head + "[[scenario]]\nloss = []\n", "key loss: empty list"},
		{"negative rate", "suite = \"t\"\n[[scenario]]\nrate_mbps = -1\n", "rate_mbps -1 must be in"},
		{"bad duration", head + "[[scenario]]\nduration = \"ten\"\n", `key duration: "ten" is not a duration`},
		{"negative queue", head + "[[scenario]]\nqueue_ms = -5\n", "key queue_ms: -5 must be in [0, 10000]"},
		{"bad warmup", head + "[[scenario]]\nwarmup = \"soon\"\n", `key warmup: "soon" is not a duration`},
		{"fractional warmup", head + "[[scenario]]\nwarmup = \"1.5s\"\n", "warmup 1.5s must be whole seconds"},
		{"bad kind", head + "[[scenario]]\nkind = \"speed\"\n", `kind "speed" is not one of`},
		{"unknown contender", head + "[[scenario]]\ncontenders = [\"wireguard\"]\n", `contenders: "wireguard" is not one of`},
		{"duplicate contender", head + "[[scenario]]\ncontenders = [\"quictun\", \"quictun\"]\n", `"quictun" listed twice`},
		{"fairness against itself", head + "[[scenario]]\nkind = \"fairness\"\ncontenders = [\"tcp-cubic\"]\n", "do not list tcp-cubic"},
		{"burst without loss", head + "[[scenario]]\nburst = 3\n", "burst 3 needs a loss > 0"},
		{"fractional tunnels", head + "[[scenario]]\nkind = \"scale\"\ntunnels = 1.5\n", "tunnels: 1.5 is not a whole number"},
		{"too many tunnels", head + "[[scenario]]\nkind = \"scale\"\ntunnels = 20000\n", "tunnels 20000 must be in"},
		{"no echo period", head + "[[scenario]]\nkind = \"interactive\"\necho_ms = 0\n", "echo_ms 0 must be in [1, 10000]"},
		{"negative bulk", head + "[[scenario]]\nkind = \"interactive\"\nbulk = -1\n", "bulk -1 must be in [0, 64]"},
		{"too many stuck", head + "[[scenario]]\nkind = \"interactive\"\nstuck = 1000\n", "stuck 1000 must be in [0, 256]"},
		{"huge stuck bytes", head + "[[scenario]]\nkind = \"interactive\"\nstuck_mib = 5000\n", "key stuck_mib: 5000 must be in [0, 1024]"},
		{"huge echo", head + "[[scenario]]\nkind = \"interactive\"\nmessage_bytes = 100000\n", "message_bytes 100000 must be in [1, 65536]"},
		{"duplicate names", head + "[[scenario]]\nname = \"a\"\n[[scenario]]\nname = \"a\"\n", `scenario name "a" appears in entries 1 and 2`},
		{"no scenarios", head, "has no [[scenario]]"},
		{"no suite name", "[[scenario]]\n", "key suite"},
		{"reserved name", "suite = \"all\"\n[[scenario]]\n", "reserved"},
		{"syntax", "suite = \n", "line 1"},
		{"huge expansion", head + "[[scenario]]\nrtt_ms = [" + strings.Repeat("1,", 40) + "1]\nloss = [" + strings.Repeat("0,", 40) + "0]\n", "more than 1000 scenarios"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseSuite([]byte(c.toml), "t.toml")
			if err == nil {
				t.Fatalf("no error, want one containing %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "t.toml: ") {
				t.Fatalf("error = %q, want it to start with the file and contain %q", err, c.want)
			}
		})
	}
}

func TestMergeReplacesByName(t *testing.T) {
	base, _ := DefaultSuites()
	extra, err := ParseSuite([]byte("suite = \"quick\"\n[[scenario]]\nrate_mbps = 5\ncontenders = [\"tcp-cubic\"]\n"), "x.toml")
	if err != nil {
		t.Fatal(err)
	}
	merged := Merge(base, []Suite{extra})
	if len(merged) != len(base) {
		t.Fatalf("merge grew from %d to %d suites", len(base), len(merged))
	}
	q, _ := Select(merged, []string{"quick"})
	if q[0].Scenarios[0].RateMbps != 5 {
		t.Fatalf("quick not replaced: %+v", q[0].Scenarios[0])
	}
}

func FuzzParseSuite(f *testing.F) {
	f.Add([]byte("suite = \"t\"\n[[scenario]]\nloss = [0, 0.1]\n"))
	f.Add([]byte("suite = \"t\"\n[[scenario]]\ntunnels = 1e300\nkind = \"scale\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		suite, err := ParseSuite(data, "fuzz.toml")
		if err != nil {
			return
		}
		for _, s := range suite.Scenarios {
			if err := s.Validate(); err != nil {
				t.Fatalf("ParseSuite returned an invalid scenario: %v", err)
			}
		}
	})
}
