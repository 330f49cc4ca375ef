//go:build linux

package runner

// The udp and wireguard kinds (issue 18). The udp kind runs iperf3 -u across the
// contender for its loss figure, and beside it a probe of its own for delay: 200
// timestamped datagrams a second on their own flow, sent and received by this
// process from sockets it opens inside the two namespaces, so that both ends read
// one monotonic clock and the delay is one way, exact. The wireguard kind brings
// up wireguard-go on both hosts, its peer endpoint the contender's client port,
// and measures one TCP flow inside it.

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quictun/quictun/bench"
	"github.com/quictun/quictun/bench/contender"
)

// nsRunner is a Bed that can open sockets of this process inside a host.
type nsRunner interface {
	Do(side contender.Side, fn func() error) error
}

func (b *namespaceBed) Do(s contender.Side, fn func() error) error { return b.tb.Do(side(s), fn) }

func (loopback) Do(_ contender.Side, fn func() error) error { return fn() }

// Probe shape: a datagram every probeEvery, probeBytes long, starting probeLead
// before iperf3 so that the probe's own flow is up when measuring begins.
const (
	probeEvery = 5 * time.Millisecond
	probeBytes = 100
	probeLead  = time.Second
	// steadyAfter is how much of the flow's start the steady p99 leaves out: at
	// RTT 50 ms a window grown from quic-go's initial 32 packets reaches 50 Mbit/s
	// within a few hundred ms, so a second covers the ramp with room to spare.
	steadyAfter = time.Second
)

func (m measurement) udp(ctx context.Context, sample *bench.Sample) error {
	carrier, ok := m.contender.(contender.UDPCarrier)
	if !ok {
		return fmt.Errorf("%s carries no UDP", m.contender.Name())
	}
	ns, ok := m.bed.(nsRunner)
	if !ok {
		return errors.New("the test hosts cannot open sockets for the delay probe")
	}
	s := m.scenario
	server, iperfTarget, err := iperfServer(ctx, m.bed)
	if err != nil {
		return err
	}
	defer server.Stop()
	probePort, err := m.bed.FreePort(contender.ServerSide, "udp")
	if err != nil {
		return err
	}
	probeTarget := netip.AddrPortFrom(m.bed.Addr(contender.ServerSide), uint16(probePort))
	var sink *net.UDPConn
	if err := ns.Do(contender.ServerSide, func() (err error) {
		sink, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(probeTarget))
		return err
	}); err != nil {
		return fmt.Errorf("probe receiver: %w", err)
	}
	defer sink.Close()
	path, err := carrier.StartUDP(ctx, m.bed, s, []contender.UDPTarget{{Addr: iperfTarget, TCP: true}, {Addr: probeTarget}})
	if err != nil {
		return err
	}
	defer path.Stop()
	var src *net.UDPConn
	if err := ns.Do(contender.ClientSide, func() (err error) {
		src, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(path.Dials[1]))
		return err
	}); err != nil {
		return fmt.Errorf("probe sender: %w", err)
	}
	defer src.Close()

	p := newProbe(src, sink)
	p.start()
	defer p.stop()
	select {
	case <-time.After(probeLead):
	case <-ctx.Done():
		return ctx.Err()
	}
	from := p.startMeasuring()
	cpu := startCPU(path.Path)
	args := []string{"-c", path.Dials[0].Addr().String(), "-p", strconv.Itoa(int(path.Dials[0].Port())),
		"-u", "-b", strconv.FormatFloat(s.UDPMbps, 'f', -1, 64) + "M", "-l", strconv.Itoa(s.DatagramBytes),
		"-t", strconv.Itoa(int(s.Duration.Round(time.Second).Seconds())), "-J", "--connect-timeout", "10000",
		// 4 MiB socket buffers on both ends (the server takes the client's): a
		// receiver that misses a few scheduling slots on this busy machine must not
		// count as the path's loss.
		"-w", "4M"}
	cmd := m.bed.Command(ctx, contender.ClientSide, "iperf3", args...)
	out := &bytes.Buffer{}
	cmd.Stdout = out
	client, err := contender.StartProcess("iperf3-client", cmd)
	if err != nil {
		return err
	}
	werr := client.Wait(m.flowTimeout())
	p.measuring.Store(false)
	sent := p.sentMeasured()
	// Late probes are delay, not loss: give them a few round trips to land.
	time.Sleep(200*time.Millisecond + 3*s.RTT)
	p.stop()
	counters := scrapeDatagramCounters(ns, path.Metrics)
	res, perr := parseIperfUDP(out.Bytes())
	if perr != nil {
		if werr != nil && out.Len() == 0 {
			return withEndpointFailure(werr, path.Path)
		}
		return withEndpointFailure(perr, path.Path)
	}
	if err := path.Failure(); err != nil {
		return err
	}
	delays := p.delays(0)
	steady := p.delays(from + steadyAfter)
	if len(steady) == 0 {
		steady = delays
	}
	if sent == 0 || len(delays) == 0 {
		return fmt.Errorf("delay probe: %d sent while iperf3 ran, %d arrived", sent, len(delays))
	}
	sample.UDP = &bench.UDPSample{
		Datagrams: res.Packets, LostPercent: res.LostPercent, JitterMs: res.JitterMs,
		DelayP50Ms:       percentile(delays, 50),
		DelayP99Ms:       percentile(delays, 99),
		DelayP99SteadyMs: percentile(steady, 99),
		ProbeLostPercent: 100 * (1 - float64(len(delays))/float64(sent)),
		Counters:         counters,
	}
	sample.GoodputMbps = res.Mbps
	sample.Bytes = res.Bytes
	sample.CPUClientS, sample.CPUServerS = cpu.used()
	return nil
}

// countersOfInterest are the metrics that say where inside a tunnel a datagram
// was lost or held: taken in, dropped by reason, lost on the link and left
// unrepaired, and quic-go's own drops and send waits (session_datagram*
// covers the datagram counters of both directions, packets_dropped those of
// whole packets).
var countersOfInterest = []string{"quictun_udp_datagrams_total", "quictun_udp_datagrams_dropped_total",
	"quictun_recovery_lost_total", "quictun_recovery_parity_sent_total", "quictun_recovery_copies_sent_total", "quictun_recovery_repaired_total", "quictun_recovery_unrepaired_total",
	"quictun_session_datagram", "quictun_session_packets_dropped_total"}

// scrapeDatagramCounters reads the endpoints' /metrics (client, server) from inside
// their hosts and keeps the non-zero countersOfInterest, each named with its side;
// nil when there are none or a read fails (the run still counts).
func scrapeDatagramCounters(ns nsRunner, apis []netip.AddrPort) map[string]float64 {
	out := map[string]float64{}
	for i, api := range apis {
		side := contender.Side(i)
		var body []byte
		err := ns.Do(side, func() error {
			c, err := net.DialTimeout("tcp", api.String(), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write([]byte("GET /metrics HTTP/1.0\r\nHost: " + api.String() + "\r\n\r\n")); err != nil {
				return err
			}
			body, err = io.ReadAll(io.LimitReader(c, 4<<20))
			return err
		})
		if err != nil {
			return nil
		}
		for _, line := range strings.Split(string(body), "\n") {
			// The value follows the last space: label values may hold spaces.
			cut := strings.LastIndexByte(line, ' ')
			if cut < 0 {
				continue
			}
			name, value := line[:cut], line[cut+1:]
			if !slices.ContainsFunc(countersOfInterest, func(c string) bool { return strings.HasPrefix(name, c) }) {
				continue
			}
			if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil && v != 0 {
				out[side.String()+" "+name] = v
			}
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// iperfUDP is the part of an iperf3 -u -J client report the harness reads: its sum
// holds what the server counted.
type iperfUDP struct {
	Packets     int64
	LostPercent float64
	JitterMs    float64
	Mbps        float64
	Bytes       int64
}

func parseIperfUDP(out []byte) (iperfUDP, error) {
	var r struct {
		Error string `json:"error"`
		End   struct {
			Sum struct {
				Packets       int64   `json:"packets"`
				LostPercent   float64 `json:"lost_percent"`
				JitterMs      float64 `json:"jitter_ms"`
				Bytes         int64   `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return iperfUDP{}, fmt.Errorf("iperf3 output is not JSON: %w: %.200q", err, out)
	}
	if r.Error != "" {
		return iperfUDP{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	s := r.End.Sum
	if s.Packets <= 0 {
		return iperfUDP{}, errors.New("iperf3 reported no datagrams")
	}
	return iperfUDP{Packets: s.Packets, LostPercent: s.LostPercent, JitterMs: s.JitterMs, Mbps: s.BitsPerSecond / 1e6, Bytes: s.Bytes}, nil
}

// probe sends numbered, timestamped datagrams from src and reads them at sink. It
// owns two goroutines, which stop ends and waits for.
type probe struct {
	src, sink *net.UDPConn
	base      time.Time
	measuring atomic.Bool // set while iperf3 runs: only those datagrams count

	mu       sync.Mutex
	measured map[uint64]time.Duration // seq sent while measuring -> when, since base
	delay    map[uint64]time.Duration

	quit     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

func newProbe(src, sink *net.UDPConn) *probe {
	return &probe{src: src, sink: sink, base: time.Now(), measured: map[uint64]time.Duration{}, delay: map[uint64]time.Duration{}, quit: make(chan struct{})}
}

func (p *probe) start() {
	p.wg.Go(p.send)
	p.wg.Go(p.receive)
}

func (p *probe) send() {
	tick := time.NewTicker(probeEvery)
	defer tick.Stop()
	buf := make([]byte, probeBytes)
	for seq := uint64(0); ; seq++ {
		select {
		case <-p.quit:
			return
		case <-tick.C:
		}
		at := time.Since(p.base)
		binary.BigEndian.PutUint64(buf, seq)
		binary.BigEndian.PutUint64(buf[8:], uint64(at))
		if p.measuring.Load() {
			p.mu.Lock()
			p.measured[seq] = at
			p.mu.Unlock()
		}
		_, _ = p.src.Write(buf) // a refused send is a lost probe
	}
}

func (p *probe) receive() {
	buf := make([]byte, 2048)
	for {
		n, err := p.sink.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if n < 16 {
			continue
		}
		now := time.Since(p.base)
		seq := binary.BigEndian.Uint64(buf)
		sent := time.Duration(binary.BigEndian.Uint64(buf[8:]))
		p.mu.Lock()
		if _, dup := p.delay[seq]; !dup && len(p.delay) < 1<<20 {
			p.delay[seq] = now - sent
		}
		p.mu.Unlock()
	}
}

// stop ends both goroutines (closing the sink ends the receiver) and waits.
func (p *probe) stop() {
	p.stopOnce.Do(func() {
		close(p.quit)
		p.sink.Close()
		p.wg.Wait()
	})
}

// startMeasuring counts the probes sent from now on and says when that was, since base.
func (p *probe) startMeasuring() time.Duration {
	at := time.Since(p.base)
	p.measuring.Store(true)
	return at
}

func (p *probe) sentMeasured() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.measured)
}

// delays are the one-way delays in ms, sorted, of the probes sent while measuring,
// at or after from (since base), that arrived.
func (p *probe) delays(from time.Duration) []float64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []float64
	for seq, at := range p.measured {
		if at < from {
			continue
		}
		if d, ok := p.delay[seq]; ok {
			out = append(out, float64(d)/float64(time.Millisecond))
		}
	}
	slices.Sort(out)
	return out
}

// percentile is the p-th percentile of sorted, which is not empty.
func percentile(sorted []float64, p int) float64 {
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// WireGuard inner addresses, in the benchmark range like the link's.
var (
	wgClientInner = netip.MustParseAddr("198.19.0.1")
	wgServerInner = netip.MustParseAddr("198.19.0.2")
)

var wgSeq atomic.Int64

func (m measurement) wireguard(ctx context.Context, sample *bench.Sample) error {
	carrier, ok := m.contender.(contender.UDPCarrier)
	if !ok {
		return fmt.Errorf("%s carries no UDP", m.contender.Name())
	}
	s := m.scenario
	wgPort, err := m.bed.FreePort(contender.ServerSide, "udp")
	if err != nil {
		return err
	}
	wgTarget := netip.AddrPortFrom(m.bed.Addr(contender.ServerSide), uint16(wgPort))
	path, err := carrier.StartUDP(ctx, m.bed, s, []contender.UDPTarget{{Addr: wgTarget}})
	if err != nil {
		return err
	}
	defer path.Stop()
	dir, err := os.MkdirTemp("", "qtbench-wg-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srvKey, srvPub, err := wgKeyPair(ctx, dir, "server")
	if err != nil {
		return err
	}
	cliKey, cliPub, err := wgKeyPair(ctx, dir, "client")
	if err != nil {
		return err
	}
	// The UAPI sockets live in one folder for all namespaces: names unique per process and run.
	n := wgSeq.Add(1)
	srvDev := fmt.Sprintf("qtw%ds%d", os.Getpid()%10000, n%100)
	cliDev := fmt.Sprintf("qtw%dc%d", os.Getpid()%10000, n%100)
	srv, err := m.startWireGuard(ctx, contender.ServerSide, srvDev, wgServerInner, s.WireGuardMTU,
		"private-key", srvKey, "listen-port", strconv.Itoa(wgPort), "peer", cliPub, "allowed-ips", wgClientInner.String()+"/32")
	if err != nil {
		return err
	}
	defer srv.Stop()
	cli, err := m.startWireGuard(ctx, contender.ClientSide, cliDev, wgClientInner, s.WireGuardMTU,
		"private-key", cliKey, "peer", srvPub, "allowed-ips", wgServerInner.String()+"/32",
		"endpoint", path.Dials[0].String(), "persistent-keepalive", "1")
	if err != nil {
		return err
	}
	defer cli.Stop()
	if err := m.awaitHandshake(ctx, cliDev); err != nil {
		return withEndpointFailure(err, path.Path)
	}
	port, err := m.bed.FreePort(contender.ServerSide, "tcp")
	if err != nil {
		return err
	}
	server, err := contender.StartProcess("iperf3-server", m.bed.Command(ctx, contender.ServerSide, "iperf3", "-s", "-1", "-B", wgServerInner.String(), "-p", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	defer server.Stop()
	if err := m.bed.WaitListening(ctx, contender.ServerSide, "tcp", port, 10*time.Second); err != nil {
		return fmt.Errorf("iperf3 server inside WireGuard: %w: %s", err, server.Output())
	}
	cpu := startCPU(path.Path)
	client, err := startIperfClient(ctx, m.bed, netip.AddrPortFrom(wgServerInner, uint16(port)), "cubic", s.Duration, s.Warmup)
	if err != nil {
		return err
	}
	mbps, got, err := client.finish(m.flowTimeout())
	if err != nil {
		return withEndpointFailure(err, path.Path)
	}
	if err := path.Failure(); err != nil {
		return err
	}
	// What WireGuard's datagrams met inside the tunnel: loss left after repair
	// and drops (a full flow queue) are what the TCP flow inside them sees.
	if ns, ok := m.bed.(nsRunner); ok {
		if c := scrapeDatagramCounters(ns, path.Metrics); c != nil {
			sample.UDP = &bench.UDPSample{Counters: c}
		}
	}
	sample.GoodputMbps, sample.Bytes = mbps, got
	sample.CPUClientS, sample.CPUServerS = cpu.used()
	return nil
}

// wgKeyPair writes a WireGuard private key to dir and returns its file and public key.
func wgKeyPair(ctx context.Context, dir, name string) (keyFile, pub string, err error) {
	key, err := exec.CommandContext(ctx, "wg", "genkey").Output()
	if err != nil {
		return "", "", fmt.Errorf("wg genkey: %w", err)
	}
	cmd := exec.CommandContext(ctx, "wg", "pubkey")
	cmd.Stdin = bytes.NewReader(key)
	out, err := cmd.Output()
	if err != nil {
		return "", "", fmt.Errorf("wg pubkey: %w", err)
	}
	keyFile = filepath.Join(dir, name+".key")
	if err := os.WriteFile(keyFile, key, 0o600); err != nil {
		return "", "", err
	}
	return keyFile, strings.TrimSpace(string(out)), nil
}

// startWireGuard runs wireguard-go in the foreground on a host with interface dev,
// configures it (`wg set dev wgArgs...`) and brings it up with addr/24 and mtu.
// Stopping the process removes the interface.
func (m measurement) startWireGuard(ctx context.Context, s contender.Side, dev string, addr netip.Addr, mtu int, wgArgs ...string) (*contender.Process, error) {
	cmd := m.bed.Command(ctx, s, "wireguard-go", "-f", dev)
	// Debian's wireguard-go wants to be told that user space is meant on Linux.
	cmd.Env = append(os.Environ(), "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1")
	p, err := contender.StartProcess("wireguard-go-"+s.String(), cmd)
	if err != nil {
		return nil, err
	}
	run := func(name string, args ...string) error {
		out, err := m.bed.Command(ctx, s, name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s on the %s host: %w: %s", name, strings.Join(args, " "), s, err, bytes.TrimSpace(out))
		}
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for run("wg", "show", dev) != nil {
		if f := p.Failure(); f != nil || time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("wireguard-go did not bring up %s on the %s host: %v: %s", dev, s, f, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
	steps := [][]string{
		append([]string{"wg", "set", dev}, wgArgs...),
		{"ip", "addr", "add", addr.String() + "/24", "dev", dev},
		{"ip", "link", "set", dev, "mtu", strconv.Itoa(mtu), "up"},
	}
	for _, st := range steps {
		if err := run(st[0], st[1:]...); err != nil {
			p.Stop()
			return nil, err
		}
	}
	return p, nil
}

// awaitHandshake waits until the client's WireGuard has completed a handshake
// (its keepalive starts one at once), at most 30 s: lost handshake packets are
// retried after 5 s.
func (m measurement) awaitHandshake(ctx context.Context, dev string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := m.bed.Command(ctx, contender.ClientSide, "wg", "show", dev, "latest-handshakes").Output()
		if f := strings.Fields(string(out)); err == nil && len(f) == 2 && f[1] != "0" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no WireGuard handshake on %s within 30 s", dev)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
