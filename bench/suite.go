package bench

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// Suite is a named list of scenarios, loaded from one TOML file.
type Suite struct {
	Name        string
	Description string
	// InAll says whether `--suite all` runs this suite; `quick` is a subset of the
	// others and stays out.
	InAll     bool
	Scenarios []Scenario
}

//go:embed scenarios/*.toml
var embedded embed.FS

// DefaultSuites returns the suites shipped in scenarios/*.toml, sorted by name.
func DefaultSuites() ([]Suite, error) {
	files, err := fs.Glob(embedded, "scenarios/*.toml")
	if err != nil {
		return nil, err
	}
	var suites []Suite
	for _, name := range files {
		data, err := embedded.ReadFile(name)
		if err != nil {
			return nil, err
		}
		suite, err := ParseSuite(data, path.Base(name))
		if err != nil {
			return nil, err
		}
		suites = append(suites, suite)
	}
	sort.Slice(suites, func(i, j int) bool { return suites[i].Name < suites[j].Name })
	return suites, nil
}

// Merge adds extra suites to base; a suite in extra replaces the one of the same name.
func Merge(base, extra []Suite) []Suite {
	out := slices.Clone(base)
	for _, s := range extra {
		i := slices.IndexFunc(out, func(b Suite) bool { return b.Name == s.Name })
		if i >= 0 {
			out[i] = s
		} else {
			out = append(out, s)
		}
	}
	return out
}

// Select picks suites by name; "all" stands for every suite with InAll set.
func Select(suites []Suite, names []string) ([]Suite, error) {
	var out []Suite
	add := func(s Suite) {
		if !slices.ContainsFunc(out, func(o Suite) bool { return o.Name == s.Name }) {
			out = append(out, s)
		}
	}
	for _, name := range names {
		name = strings.TrimSpace(name)
		if name == "all" {
			for _, s := range suites {
				if s.InAll {
					add(s)
				}
			}
			continue
		}
		i := slices.IndexFunc(suites, func(s Suite) bool { return s.Name == name })
		if i < 0 {
			known := make([]string, 0, len(suites)+1)
			for _, s := range suites {
				known = append(known, s.Name)
			}
			known = append(known, "all")
			return nil, fmt.Errorf("unknown suite %q (known: %s)", name, strings.Join(known, ", "))
		}
		add(suites[i])
	}
	if len(out) == 0 {
		return nil, errors.New("no suite selected")
	}
	return out, nil
}

// suiteFile is the TOML shape of one suite. A [[scenario]] entry may give a list for
// any axis (rate_mbps, rtt_ms, loss, burst, tunnels); it then expands to one scenario
// per combination. Keys missing from an entry come from [defaults].
type suiteFile struct {
	Suite       string  `toml:"suite"`
	Description string  `toml:"description"`
	InAll       *bool   `toml:"in_all"`
	Defaults    entry   `toml:"defaults"`
	Scenario    []entry `toml:"scenario"`
}

type entry struct {
	Name         *string  `toml:"name"`
	Kind         *string  `toml:"kind"`
	RateMbps     any      `toml:"rate_mbps"`
	RTTms        any      `toml:"rtt_ms"`
	Loss         any      `toml:"loss"`
	Burst        any      `toml:"burst"`
	Tunnels      any      `toml:"tunnels"`
	JitterMs     *float64 `toml:"jitter_ms"`
	QueueBDP     *float64 `toml:"queue_bdp"`
	QueueMs      *float64 `toml:"queue_ms"`
	Duration     *string  `toml:"duration"`
	Warmup       *string  `toml:"warmup"`
	Repetitions  *int     `toml:"repetitions"`
	Contenders   []string `toml:"contenders"`
	Requests     *int     `toml:"requests"`
	MessageBytes *int     `toml:"message_bytes"`
	TotalBytes   *int64   `toml:"total_bytes"`
	Bulk         *int     `toml:"bulk"`
	EchoMs       *float64 `toml:"echo_ms"`
	Stuck        *int     `toml:"stuck"`
	StuckMiB     *int64   `toml:"stuck_mib"`
	UDPMbps      *float64 `toml:"udp_mbps"`
	DatagramByte *int     `toml:"datagram_bytes"`
	WireGuardMTU *int     `toml:"wireguard_mtu"`
}

// maxScenariosPerEntry bounds the expansion of one entry's axis lists.
const maxScenariosPerEntry = 1000

// ParseSuite reads one suite from TOML; origin names the file in errors.
func ParseSuite(data []byte, origin string) (Suite, error) {
	var file suiteFile
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&file); err != nil {
		return Suite{}, fmt.Errorf("%s: %s", origin, describeTOMLError(err))
	}
	if file.Suite == "" || strings.ContainsAny(file.Suite, "/ \t\n,") {
		return Suite{}, fmt.Errorf("%s: key suite: %q must be a non-empty name without spaces, commas or slashes", origin, file.Suite)
	}
	if file.Suite == "all" {
		return Suite{}, fmt.Errorf("%s: key suite: %q is reserved", origin, file.Suite)
	}
	if len(file.Scenario) == 0 {
		return Suite{}, fmt.Errorf("%s: suite %s has no [[scenario]]", origin, file.Suite)
	}
	suite := Suite{Name: file.Suite, Description: file.Description, InAll: file.InAll == nil || *file.InAll}
	names := map[string]int{}
	for i, e := range file.Scenario {
		expanded, err := expand(file.Suite, file.Defaults, e)
		if err != nil {
			return Suite{}, fmt.Errorf("%s: suite %s, scenario %d: %w", origin, file.Suite, i+1, err)
		}
		for _, s := range expanded {
			if err := s.Validate(); err != nil {
				return Suite{}, fmt.Errorf("%s: %w", origin, err)
			}
			if first, dup := names[s.Name]; dup {
				return Suite{}, fmt.Errorf("%s: suite %s: scenario name %q appears in entries %d and %d; set distinct names", origin, file.Suite, s.Name, first, i+1)
			}
			names[s.Name] = i + 1
			suite.Scenarios = append(suite.Scenarios, s)
		}
	}
	return suite, nil
}

func describeTOMLError(err error) string {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var keys []string
		for _, e := range strict.Errors {
			keys = append(keys, strings.Join(e.Key(), "."))
		}
		return "unknown key(s): " + strings.Join(keys, ", ")
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, col := de.Position()
		return fmt.Sprintf("line %d, column %d: %s", row, col, de.Error())
	}
	return err.Error()
}

// axis is one list-valued parameter of an entry.
type axis struct {
	key    string
	values []float64
	// varies is true when the entry gave a list of more than one value: those axes go
	// into the generated names.
	varies bool
}

func expand(suite string, defaults, e entry) ([]Scenario, error) {
	pick := func(key string, own, def any, fallback float64) (axis, error) {
		v := own
		if v == nil {
			v = def
		}
		if v == nil {
			return axis{key: key, values: []float64{fallback}}, nil
		}
		values, err := numbers(v)
		if err != nil {
			return axis{}, fmt.Errorf("key %s: %w", key, err)
		}
		return axis{key: key, values: values, varies: len(values) > 1}, nil
	}
	var axes [5]axis
	var err error
	specs := []struct {
		key      string
		own, def any
		fallback float64
	}{
		{"rate_mbps", e.RateMbps, defaults.RateMbps, 0},
		{"rtt_ms", e.RTTms, defaults.RTTms, 0},
		{"loss", e.Loss, defaults.Loss, 0},
		{"burst", e.Burst, defaults.Burst, 0},
		{"tunnels", e.Tunnels, defaults.Tunnels, 1},
	}
	total := 1
	for i, sp := range specs {
		if axes[i], err = pick(sp.key, sp.own, sp.def, sp.fallback); err != nil {
			return nil, err
		}
		total *= len(axes[i].values)
		if total > maxScenariosPerEntry {
			return nil, fmt.Errorf("axis lists expand to more than %d scenarios", maxScenariosPerEntry)
		}
	}

	base := Scenario{
		Suite:         suite,
		Kind:          Kind(first(e.Kind, defaults.Kind, string(Goodput))),
		QueueBDP:      first(e.QueueBDP, defaults.QueueBDP, 1),
		Repetitions:   first(e.Repetitions, defaults.Repetitions, 3),
		Requests:      first(e.Requests, defaults.Requests, 1000),
		MessageBytes:  first(e.MessageBytes, defaults.MessageBytes, 64),
		TotalBytes:    first(e.TotalBytes, defaults.TotalBytes, 256<<20),
		Bulk:          first(e.Bulk, defaults.Bulk, 2),
		Stuck:         first(e.Stuck, defaults.Stuck, 0),
		UDPMbps:       first(e.UDPMbps, defaults.UDPMbps, 50),
		DatagramBytes: first(e.DatagramByte, defaults.DatagramByte, 1200),
		WireGuardMTU:  first(e.WireGuardMTU, defaults.WireGuardMTU, 1280),
		Contenders:    e.Contenders,
	}
	if base.Contenders == nil {
		base.Contenders = defaults.Contenders
	}
	if base.Contenders == nil {
		base.Contenders = defaultContenders(base.Kind)
	}
	base.Contenders = slices.Clone(base.Contenders)
	jitter := first(e.JitterMs, defaults.JitterMs, 0)
	if math.IsNaN(jitter) || jitter < 0 || jitter > 10_000 {
		return nil, fmt.Errorf("key jitter_ms: %v must be in [0, 10000]", jitter)
	}
	base.Jitter = millis(jitter)
	queue := first(e.QueueMs, defaults.QueueMs, 0)
	if math.IsNaN(queue) || queue < 0 || queue > 10_000 {
		return nil, fmt.Errorf("key queue_ms: %v must be in [0, 10000]", queue)
	}
	base.QueueDelay = millis(queue)
	echo := first(e.EchoMs, defaults.EchoMs, 50)
	if math.IsNaN(echo) || echo < 0 || echo > 10_000 {
		return nil, fmt.Errorf("key echo_ms: %v must be in [1, 10000]", echo)
	}
	base.EchoInterval = millis(echo)
	stuckMiB := first(e.StuckMiB, defaults.StuckMiB, 48)
	if stuckMiB < 0 || stuckMiB > 1024 {
		return nil, fmt.Errorf("key stuck_mib: %d must be in [0, 1024]", stuckMiB)
	}
	base.StuckBytes = stuckMiB << 20
	durText := first(e.Duration, defaults.Duration, "10s")
	if base.Duration, err = time.ParseDuration(durText); err != nil {
		return nil, fmt.Errorf("key duration: %q is not a duration like \"10s\"", durText)
	}
	warmText := first(e.Warmup, defaults.Warmup, "0s")
	if base.Warmup, err = time.ParseDuration(warmText); err != nil {
		return nil, fmt.Errorf("key warmup: %q is not a duration like \"20s\"", warmText)
	}

	var out []Scenario
	var walk func(i int, s Scenario, parts []string)
	walk = func(i int, s Scenario, parts []string) {
		if i == len(axes) {
			s.Name = scenarioName(e.Name, s, parts)
			out = append(out, s)
			return
		}
		for _, v := range axes[i].values {
			next := s
			switch axes[i].key {
			case "rate_mbps":
				next.RateMbps = v
			case "rtt_ms":
				next.RTT = millis(v)
			case "loss":
				next.Loss = v
			case "burst":
				next.Burst = v
			case "tunnels":
				next.Tunnels = int(v)
			}
			p := parts
			if e.Name == nil || axes[i].varies {
				p = append(slices.Clone(parts), namePart(axes[i].key, v, next))
			}
			walk(i+1, next, p)
		}
	}
	walk(0, base, nil)
	for i, a := range axes {
		if a.key == "tunnels" {
			for _, v := range axes[i].values {
				if v != math.Trunc(v) {
					return nil, fmt.Errorf("key tunnels: %v is not a whole number", v)
				}
			}
		}
	}
	return out, nil
}

func scenarioName(given *string, s Scenario, parts []string) string {
	var nonEmpty []string
	if given != nil {
		nonEmpty = append(nonEmpty, *given)
	}
	for _, p := range parts {
		if p != "" {
			nonEmpty = append(nonEmpty, p)
		}
	}
	if len(nonEmpty) == 0 {
		return string(s.Kind)
	}
	return strings.Join(nonEmpty, "-")
}

// namePart is the piece of a generated scenario name for one axis value; axes at their
// neutral value (no burst, one tunnel outside the scale kind) add nothing.
func namePart(key string, v float64, s Scenario) string {
	switch key {
	case "rate_mbps":
		if v == 0 {
			return "hostspeed"
		}
		return "rate" + formatNumber(v)
	case "rtt_ms":
		return "rtt" + formatNumber(v)
	case "loss":
		return "loss" + formatNumber(v*100)
	case "burst":
		if v <= 1 {
			return ""
		}
		return "burst" + formatNumber(v)
	case "tunnels":
		if s.Kind != Scale {
			return ""
		}
		return "tunnels" + strconv.Itoa(int(v))
	}
	return ""
}

// numbers accepts a TOML number or an array of numbers.
func numbers(v any) ([]float64, error) {
	one := func(x any) (float64, error) {
		switch n := x.(type) {
		case int64:
			return float64(n), nil
		case float64:
			if math.IsNaN(n) || math.IsInf(n, 0) {
				return 0, fmt.Errorf("%v is not a finite number", n)
			}
			return n, nil
		default:
			return 0, fmt.Errorf("%v (%T) is not a number", x, x)
		}
	}
	if list, ok := v.([]any); ok {
		if len(list) == 0 {
			return nil, errors.New("empty list")
		}
		out := make([]float64, 0, len(list))
		for _, x := range list {
			n, err := one(x)
			if err != nil {
				return nil, err
			}
			out = append(out, n)
		}
		return out, nil
	}
	n, err := one(v)
	if err != nil {
		return nil, err
	}
	return []float64{n}, nil
}

func first[T any](own, def *T, fallback T) T {
	if own != nil {
		return *own
	}
	if def != nil {
		return *def
	}
	return fallback
}

func millis(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }
