//go:build linux

package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/quictun/quictun/bench"
	"github.com/quictun/quictun/bench/contender"
	"github.com/quictun/quictun/bench/loadgen"
)

// measurement is one repetition of one contender; it fills sample or returns an error.
type measurement struct {
	bed       Bed
	scenario  bench.Scenario
	contender contender.Contender
	self      string // the bench binary, for the load generator subcommands
}

func (m measurement) run(ctx context.Context, sample *bench.Sample) error {
	switch m.scenario.Kind {
	case bench.Goodput:
		return m.goodput(ctx, sample)
	case bench.Fairness:
		return m.fairness(ctx, sample)
	case bench.Latency:
		return m.latency(ctx, sample)
	case bench.Scale:
		return m.scale(ctx, sample)
	case bench.Interactive:
		return m.interactive(ctx, sample)
	case bench.UDP:
		return m.udp(ctx, sample)
	case bench.WireGuard:
		return m.wireguard(ctx, sample)
	}
	return fmt.Errorf("unknown kind %q", m.scenario.Kind)
}

// flowTimeout bounds a bulk flow: its duration plus time to drain what the tunnels
// buffered and to start and stop.
func (m measurement) flowTimeout() time.Duration {
	return m.scenario.Warmup + m.scenario.Duration + 60*time.Second
}

func (m measurement) goodput(ctx context.Context, sample *bench.Sample) error {
	server, target, err := iperfServer(ctx, m.bed)
	if err != nil {
		return err
	}
	defer server.Stop()
	path, err := m.contender.Start(ctx, m.bed, m.scenario, target)
	if err != nil {
		return err
	}
	defer path.Stop()
	cpu := startCPU(path)
	client, err := startIperfClient(ctx, m.bed, path.Dial, path.Congestion, m.scenario.Duration, m.scenario.Warmup)
	if err != nil {
		return err
	}
	mbps, n, err := client.finish(m.flowTimeout())
	if err != nil {
		return withEndpointFailure(err, path)
	}
	if err := path.Failure(); err != nil {
		return err
	}
	sample.GoodputMbps, sample.Bytes = mbps, n
	sample.CPUClientS, sample.CPUServerS = cpu.used()
	return nil
}

// fairness runs the contender's flow and a direct TCP cubic flow at the same time over
// the same link.
func (m measurement) fairness(ctx context.Context, sample *bench.Sample) error {
	server, target, err := iperfServer(ctx, m.bed)
	if err != nil {
		return err
	}
	defer server.Stop()
	rivalServer, rivalTarget, err := iperfServer(ctx, m.bed)
	if err != nil {
		return err
	}
	defer rivalServer.Stop()
	path, err := m.contender.Start(ctx, m.bed, m.scenario, target)
	if err != nil {
		return err
	}
	defer path.Stop()
	cpu := startCPU(path)
	client, err := startIperfClient(ctx, m.bed, path.Dial, path.Congestion, m.scenario.Duration, m.scenario.Warmup)
	if err != nil {
		return err
	}
	rival, err := startIperfClient(ctx, m.bed, rivalTarget, "cubic", m.scenario.Duration, m.scenario.Warmup)
	if err != nil {
		client.proc.Stop()
		return err
	}
	mbps, n, err := client.finish(m.flowTimeout())
	rivalMbps, _, rivalErr := rival.finish(m.flowTimeout())
	if err != nil {
		return withEndpointFailure(err, path)
	}
	if rivalErr != nil {
		return fmt.Errorf("competing tcp-cubic flow: %w", rivalErr)
	}
	sample.GoodputMbps, sample.Bytes, sample.CompetitorMbps = mbps, n, rivalMbps
	sample.CPUClientS, sample.CPUServerS = cpu.used()
	return nil
}

// interactive runs the bulk flows alone, then on a new path the stuck connections,
// the same bulk flows and the echo beside them: each phase has its own contender
// endpoints, so that the second does not start with what the first taught a
// tunnel's congestion controller.
func (m measurement) interactive(ctx context.Context, sample *bench.Sample) error {
	s := m.scenario
	if s.Bulk > 0 {
		var alone loadgen.InteractiveResult
		if err := m.interactivePhase(ctx, &alone, "--bulk", strconv.Itoa(s.Bulk)); err != nil {
			return fmt.Errorf("bulk alone: %w", err)
		}
		sample.AloneMbps = alone.BulkMbps
	}
	var res loadgen.InteractiveResult
	err := m.interactivePhase(ctx, &res, "--bulk", strconv.Itoa(s.Bulk), "--echo",
		"--echo-interval", s.EchoInterval.String(), "--message-bytes", strconv.Itoa(s.MessageBytes),
		"--stuck", strconv.Itoa(s.Stuck), "--stuck-bytes", strconv.FormatInt(s.StuckBytes, 10))
	if err != nil {
		return err
	}
	sample.GoodputMbps, sample.Bytes = res.BulkMbps, res.BulkBytes
	sample.P50Ms, sample.P99Ms, sample.MaxMs, sample.RoundTrips = res.EchoP50Ms, res.EchoP99Ms, res.EchoMaxMs, res.Echoes
	sample.CPUClientS, sample.CPUServerS = -1, -1
	return nil
}

func (m measurement) interactivePhase(ctx context.Context, res *loadgen.InteractiveResult, args ...string) error {
	path, server, err := m.echoPath(ctx, "--mixed")
	if err != nil {
		return err
	}
	defer path.Stop()
	defer server.Stop()
	s := m.scenario
	// Each stuck connection may take a slow start and its bytes at a tenth of the rate.
	rate := max(s.RateMbps, 10)
	stuck := time.Duration(s.Stuck) * (10*time.Second + time.Duration(float64(s.StuckBytes)*8/(rate*1e5)*float64(time.Second)))
	timeout := 60*time.Second + s.Warmup + s.Duration + stuck
	args = append([]string{"interactive", "--target", path.Dial.String(),
		"--warmup", s.Warmup.String(), "--duration", s.Duration.String(),
		"--timeout", timeout.String(), "--congestion", path.Congestion}, args...)
	if err := m.loadgen(ctx, timeout+10*time.Second, res, args...); err != nil {
		return withEndpointFailure(err, path)
	}
	return path.Failure()
}

func (m measurement) latency(ctx context.Context, sample *bench.Sample) error {
	path, echo, err := m.echoPath(ctx)
	if err != nil {
		return err
	}
	defer path.Stop()
	defer echo.Stop()
	s := m.scenario
	// Every round trip may cost a retransmission timeout on a lossy link.
	timeout := 60*time.Second + time.Duration(s.Requests)*(2*s.RTT+10*time.Millisecond)
	var res loadgen.LatencyResult
	err = m.loadgen(ctx, timeout, &res, "latency",
		"--target", path.Dial.String(),
		"--requests", strconv.Itoa(s.Requests),
		"--message-bytes", strconv.Itoa(s.MessageBytes),
		"--timeout", timeout.String(),
		"--congestion", path.Congestion)
	if err != nil {
		return withEndpointFailure(err, path)
	}
	sample.FirstEchoMs, sample.TotalMs, sample.P50Ms, sample.P99Ms = res.FirstEchoMs, res.TotalMs, res.P50Ms, res.P99Ms
	sample.RoundTrips = res.RoundTrips
	sample.CPUClientS, sample.CPUServerS = -1, -1
	return nil
}

func (m measurement) scale(ctx context.Context, sample *bench.Sample) error {
	path, echo, err := m.echoPath(ctx)
	if err != nil {
		return err
	}
	defer path.Stop()
	defer echo.Stop()
	s := m.scenario
	rate := s.RateMbps
	if rate <= 0 {
		rate = 1000
	}
	expected := time.Duration(float64(s.TotalBytes) * 8 / (rate * 1e6) * float64(time.Second))
	timeout := 60*time.Second + 5*expected
	cpu := startCPU(path)
	var res loadgen.ScaleResult
	err = m.loadgen(ctx, timeout+10*time.Second, &res, "scale",
		"--target", path.Dial.String(),
		"--tunnels", strconv.Itoa(s.Tunnels),
		"--total-bytes", strconv.FormatInt(s.TotalBytes, 10),
		"--timeout", timeout.String(),
		"--congestion", path.Congestion)
	if err != nil {
		return withEndpointFailure(err, path)
	}
	sample.GoodputMbps, sample.Bytes = res.GoodputMbps, res.BytesVerified
	sample.Tunnels, sample.Verified = res.Tunnels, res.Verified
	sample.CPUClientS, sample.CPUServerS = cpu.used()
	if res.Failed > 0 {
		// Keep the numbers, but the run does not count as a success.
		return fmt.Errorf("%d of %d tunnels failed verification; first: %s", res.Failed, res.Tunnels, res.FirstError)
	}
	return path.Failure()
}

// echoPath starts the contender towards a port on the server host, then the load
// generator's echo server on that port. The echo server sends every byte back, so for
// direct TCP its sockets use the contender's congestion control too (set on the
// listener, inherited by accepted sockets); the contender is started first because
// it says which. No contender connects to its target before an application does.
func (m measurement) echoPath(ctx context.Context, serverFlags ...string) (*contender.Path, *contender.Process, error) {
	port, err := m.bed.FreePort(contender.ServerSide, "tcp")
	if err != nil {
		return nil, nil, err
	}
	target := netip.AddrPortFrom(m.bed.Addr(contender.ServerSide), uint16(port))
	path, err := m.contender.Start(ctx, m.bed, m.scenario, target)
	if err != nil {
		return nil, nil, err
	}
	args := append([]string{"loadgen", "echo", "--listen", target.String()}, serverFlags...)
	if path.Congestion != "" {
		args = append(args, "--congestion", path.Congestion)
	}
	p, err := contender.StartProcess("echo-server", m.bed.Command(ctx, contender.ServerSide, m.self, args...))
	if err != nil {
		path.Stop()
		return nil, nil, err
	}
	if err := m.bed.WaitListening(ctx, contender.ServerSide, "tcp", port, 10*time.Second); err != nil {
		p.Stop()
		path.Stop()
		return nil, nil, fmt.Errorf("echo server: %w: %s", err, p.Output())
	}
	return path, p, nil
}

// loadgen runs a load generator subcommand on the client host and decodes its JSON.
func (m measurement) loadgen(ctx context.Context, timeout time.Duration, result any, args ...string) error {
	cmd := m.bed.Command(ctx, contender.ClientSide, m.self, append([]string{"loadgen"}, args...)...)
	out := &bytes.Buffer{}
	cmd.Stdout = out
	p, err := contender.StartProcess("loadgen-"+args[0], cmd)
	if err != nil {
		return err
	}
	if err := p.Wait(timeout); err != nil {
		return err
	}
	if err := json.Unmarshal(out.Bytes(), result); err != nil {
		return fmt.Errorf("loadgen %s: output is not JSON: %w: %.200q", args[0], err, out.Bytes())
	}
	return nil
}

// withEndpointFailure prefers the story of a dead endpoint over the symptom the
// application saw.
func withEndpointFailure(err error, path *contender.Path) error {
	if f := path.Failure(); f != nil {
		return errors.Join(f, err)
	}
	return err
}

// cpuMeter reads the endpoints' CPU time at the start of a measurement.
type cpuMeter struct {
	path   *contender.Path
	before []float64
}

func startCPU(path *contender.Path) cpuMeter {
	m := cpuMeter{path: path}
	for _, e := range path.Endpoints {
		v, err := e.CPUSeconds()
		if err != nil {
			v = -1
		}
		m.before = append(m.before, v)
	}
	return m
}

// used returns the CPU seconds the client and server endpoints spent since start, or -1
// where there is no such process or it could not be read.
func (m cpuMeter) used() (client, server float64) {
	out := []float64{-1, -1}
	for i, e := range m.path.Endpoints {
		if i >= 2 || m.before[i] < 0 {
			continue
		}
		if v, err := e.CPUSeconds(); err == nil {
			out[i] = v - m.before[i]
		}
	}
	return out[0], out[1]
}

// measureEmulatorFirst runs the emulator probe before the scenarios and reports it; a
// failed probe becomes a note, not a failed run.
func measureEmulatorFirst(ctx context.Context, cfg Config, res *Result) {
	fmt.Fprintf(cfg.Progress, "bench: measuring what the link emulator forwards unimpaired (%s of iperf3)\n", cfg.EmulatorProbe)
	speed, err := measureEmulator(ctx, cfg.NewBed, cfg.EmulatorProbe)
	if err != nil {
		if ctx.Err() == nil {
			res.Notes = append(res.Notes, "emulator speed not measured: "+oneLine(err.Error()))
			fmt.Fprintf(cfg.Progress, "bench: emulator speed not measured: %v\n", err)
		}
		return
	}
	res.Emulator = speed
	fmt.Fprintf(cfg.Progress, "bench: the emulator forwards %.0f Mbit/s of TCP payload (%.0f Mbit/s of IP packets)\n", speed.GoodputMbps, speed.LinkMbps)
}

// measureEmulator measures what the link emulator forwards when it limits nothing: one
// TCP flow (iperf3, cubic) for d across a link without rate limit or loss. The link has
// an RTT of 1 ms (the report suite's LAN link) so that every packet takes the
// emulator's whole path, queue and scheduler: on a perfect link the tun forwarder
// writes packets straight through, which is faster than any scenario gets.
func measureEmulator(ctx context.Context, newBed BedFactory, d time.Duration) (*bench.EmulatorSpeed, error) {
	s := bench.Scenario{Suite: "probe", Name: "emulator", Kind: bench.Goodput, RTT: time.Millisecond, QueueBDP: 1, Duration: d, Repetitions: 1}
	bed, err := newBed(ctx, s)
	if err != nil {
		return nil, err
	}
	defer bed.Close()
	server, target, err := iperfServer(ctx, bed)
	if err != nil {
		return nil, err
	}
	defer server.Stop()
	client, err := startIperfClient(ctx, bed, target, "cubic", d, 0)
	if err != nil {
		return nil, err
	}
	mbps, _, err := client.finish(d + 30*time.Second)
	if err != nil {
		return nil, err
	}
	return &bench.EmulatorSpeed{
		GoodputMbps: mbps,
		LinkMbps:    mbps / bench.TCPPayloadShare,
		How:         fmt.Sprintf("%g s of iperf3, one tcp-cubic flow, RTT 1 ms, no rate limit, no loss (%s backend)", d.Round(time.Second).Seconds(), bed.Backend()),
	}, nil
}
