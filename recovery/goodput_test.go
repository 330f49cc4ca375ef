package recovery

import (
	"context"
	"flag"
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quictun/quictun/internal/quicconf"
	"github.com/quictun/quictun/netem"
)

// goodputDuration is how long each goodput benchmark transfers. Slow start is part
// of the figure, as it is for an application.
var (
	goodputCongestion   = flag.String("goodput.congestion", quicconf.BBR, "congestion controller of the goodput benchmarks' quic-go (bbr or reno)")
	goodputDuration     = flag.Duration("goodput.duration", 12*time.Second, "transfer time of each goodput benchmark")
	goodputTrace        = flag.Bool("goodput.trace", false, "log quic-go's and the layer's state every goodput.every of a goodput benchmark")
	goodputEvery        = flag.Duration("goodput.every", time.Second, "trace interval")
	goodputData         = flag.Int("goodput.data", 0, "override Config.Data of the auto runs (experiments)")
	goodputSpan         = flag.Duration("goodput.span", 0, "override Config.GroupSpan of the auto runs (experiments)")
	goodputResidual     = flag.Float64("goodput.residual", 0, "override Config.TargetResidual of the auto runs (experiments)")
	goodputNoTrain      = flag.Bool("goodput.notrain", false, "turn the trainer off in the auto runs (experiments)")
	goodputNoRamp       = flag.Bool("goodput.noramp", false, "turn the slow-start guard off in the auto runs (experiments)")
	goodputStreamWindow = flag.Int("goodput.streamwindow", 0, "override the largest stream window, MiB (experiments)")
	goodputQueue        = flag.Duration("goodput.queue", 0, "drop-tail queue of the wan links, as time at their rate (default: one round trip)")
)

// wanModel is one direction of the wan suite's link: 100 Mbit/s, half the round
// trip as one-way delay, a drop-tail queue of about one bandwidth-delay product
// (or -goodput.queue).
func wanModel(rtt time.Duration, loss float64, burst *netem.GilbertElliott) netem.Model {
	queue := rtt
	if *goodputQueue > 0 {
		queue = *goodputQueue
	}
	return netem.Model{
		Delay:      rtt / 2,
		Loss:       loss,
		Burst:      burst,
		RateBps:    100_000_000,
		QueueDelay: queue,
	}
}

// lanModel is the report suite's link: 1 Gbit/s, RTT 1 ms, a one-BDP queue.
func lanModel(loss float64) netem.Model {
	return netem.Model{Delay: 500 * time.Microsecond, Loss: loss, RateBps: 1_000_000_000, QueueDelay: time.Millisecond}
}

// autoConfig is the Auto config of the benchmarks, with the experiment flags.
func autoConfig() *Config {
	return &Config{Mode: Auto, Data: *goodputData, GroupSpan: *goodputSpan,
		TargetResidual: *goodputResidual, noTrain: *goodputNoTrain, noRamp: *goodputNoRamp}
}

// goodputResult is what one timed transfer measured.
type goodputResult struct {
	mbps           float64
	client, server Stats
	hasStats       bool
}

// measureGoodput runs one client->server stream for d and returns the goodput seen
// by the server over that time.
func measureGoodput(tb testing.TB, m netem.Model, cfg *Config, d time.Duration, seed int64) goodputResult {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	up, down := m, m
	trace := goodputTracer()
	p := dialPairTraced(tb, ctx,
		side{model: &up, recovery: cfg, seed: seed, realtime: true},
		side{model: &down, recovery: cfg, seed: seed + 1000, realtime: true}, trace)
	defer p.close()

	var received atomic.Int64
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		st, err := p.serverConn.AcceptStream(ctx)
		if err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := st.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	st, err := p.clientConn.OpenStreamSync(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	sendCtx, stopSend := context.WithDeadline(ctx, start.Add(d))
	defer stopSend()
	sendDone := make(chan struct{})
	go func() {
		defer close(sendDone)
		buf := make([]byte, 64<<10)
		st.SetWriteDeadline(start.Add(d))
		for sendCtx.Err() == nil {
			if _, err := st.Write(buf); err != nil {
				return
			}
		}
	}()
	traced := traceWhile(tb, sendCtx, p, &received, trace)
	<-sendCtx.Done()
	got := received.Load()
	elapsed := time.Since(start)
	traced()
	<-sendDone
	st.CancelWrite(0)
	p.clientConn.CloseWithError(0, "")
	<-recvDone
	r := goodputResult{mbps: float64(got) * 8 / elapsed.Seconds() / 1e6}
	if p.client.rec != nil {
		r.client, r.server, r.hasStats = p.client.rec.Stats(), p.server.rec.Stats(), true
	}
	return r
}

// BenchmarkGoodput is the in-process goodput benchmark of issue 4: one quic-go
// stream over UDP loopback through the netem link model, recovery off vs auto.
//
//	go test -run '^$' -bench BenchmarkGoodput -benchtime 1x ./recovery/
func BenchmarkGoodput(b *testing.B) {
	ge, err := netem.NewBurstLoss(0.02, 3)
	if err != nil {
		b.Fatal(err)
	}
	links := []struct {
		name string
		m    netem.Model
	}{
		{"rtt50-loss0", wanModel(50*time.Millisecond, 0, nil)},
		{"rtt50-loss1", wanModel(50*time.Millisecond, 0.01, nil)},
		{"rtt50-loss5", wanModel(50*time.Millisecond, 0.05, nil)},
		{"rtt50-loss10", wanModel(50*time.Millisecond, 0.10, nil)},
		{"rtt200-loss1", wanModel(200*time.Millisecond, 0.01, nil)},
		{"rtt200-loss5", wanModel(200*time.Millisecond, 0.05, nil)},
		{"rtt200-loss10", wanModel(200*time.Millisecond, 0.10, nil)},
		{"rtt50-ge2b3", wanModel(50*time.Millisecond, 0, ge)},
	}
	modes := []struct {
		name string
		cfg  *Config
	}{
		{"off", nil},
		{"auto", autoConfig()},
	}
	for _, l := range links {
		for _, md := range modes {
			b.Run(fmt.Sprintf("%s/%s", l.name, md.name), func(b *testing.B) {
				var sum float64
				for i := 0; b.Loop(); i++ {
					r := measureGoodput(b, l.m, md.cfg, *goodputDuration, int64(i+1))
					sum += r.mbps
					if r.hasStats {
						logStats(b, r)
					}
				}
				b.ReportMetric(sum/float64(b.N), "Mbit/s")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

func logStats(tb testing.TB, r goodputResult) {
	c, s := r.client, r.server
	tb.Logf("%.1f Mbit/s | sender: sources %d repairs %d (%.1f%%) rate %d/%d peerloss %.2f%% rtt %v | receiver: lost %d congestion %d repaired %d unrepaired %d withheld %d",
		r.mbps, c.DataSent, c.ParitySent, 100*c.Overhead, c.Parity, c.Data, 100*c.PeerLoss, c.RTT.Round(time.Millisecond),
		s.Lost, s.CongestionLost, s.Repaired, s.Unrepaired, s.Withheld)
}

// goodputTracer is the trace of quic-go's loss recovery for a goodput
// benchmark when -goodput.trace asks for one, else nil.
func goodputTracer() *lossTrace {
	if !*goodputTrace {
		return nil
	}
	return new(lossTrace)
}

// traceWhile runs traceGoodput until ctx ends, when trace is set; the function
// it returns waits for that, so that nothing logs after the benchmark.
func traceWhile(tb testing.TB, ctx context.Context, p *pair, received *atomic.Int64, trace *lossTrace) (wait func()) {
	if trace == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		traceGoodput(tb, ctx, p, received, trace)
	}()
	return func() { <-done }
}

// traceGoodput logs, every second, what quic-go's sender and the layer are doing.
func traceGoodput(tb testing.TB, ctx context.Context, p *pair, received *atomic.Int64, trace *lossTrace) {
	tick := time.NewTicker(*goodputEvery)
	defer tick.Stop()
	var lastBytes int64
	var lastLost, lastSent, lastRcvd, lastLate uint64
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cs := p.clientConn.ConnectionStats()
		n := received.Load()
		ss := p.serverConn.ConnectionStats()
		line := fmt.Sprintf("%5.1f Mbit/s cwnd %4d pkts srtt %v minrtt %v lost(quic) +%d sent +%d rcvd +%d",
			float64(n-lastBytes)*8/1e6/goodputEvery.Seconds(), cs.CongestionWindow/1400, cs.SmoothedRTT.Round(time.Millisecond),
			cs.MinRTT.Round(time.Millisecond), cs.PacketsLost-lastLost, cs.PacketsSent-lastSent, ss.PacketsReceived-lastRcvd)
		lastBytes, lastLost, lastSent, lastRcvd = n, cs.PacketsLost, cs.PacketsSent, ss.PacketsReceived
		if p.client.rec != nil {
			c, s := p.client.rec.Stats(), p.server.rec.Stats()
			line += fmt.Sprintf(" | shape %d+%d peerloss %.2f%% rtt %v | rcv lost %d cong %d amb %d rep %d (delay %v max %v) unrep %d wh %d",
				c.Data, c.Parity, 100*c.PeerLoss, c.RTT.Round(time.Millisecond),
				s.Lost, s.CongestionLost, s.AmbiguousLost, s.Repaired, s.RepairDelay.Round(100*time.Microsecond),
				s.RepairDelayMax.Round(100*time.Microsecond), s.Unrepaired, s.Withheld)
		}
		if p.link != nil {
			es := p.link()
			line += fmt.Sprintf(" | link qdrop %d late +%d maxlate %v", es.DroppedQueue, es.Late-lastLate, es.MaxLate)
			lastLate = es.Late
		}
		tb.Log(line + " | quic " + trace.take())
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCPUPerGB is the clean-link cost of the layer: one quic-go stream over
// plain loopback UDP (no emulator, whose own cost would dilute the ratio), the
// whole process's CPU time per gigabyte delivered. Both ends run in this process,
// so the figure covers sender and receiver. udp: quic-go on the *net.UDPConn
// itself, with GSO and batched reads; off: behind a Conn in Off mode, a plain
// net.PacketConn to quic-go (one syscall per datagram, what any wrapper costs);
// auto: the layer at work.
//
//	go test -run '^$' -bench BenchmarkCPUPerGB -benchtime 1x ./recovery/
func BenchmarkCPUPerGB(b *testing.B) {
	for _, md := range []struct {
		name string
		cfg  *Config
	}{{"udp", nil}, {"off", &Config{Mode: Off}}, {"auto", &Config{Mode: Auto}}} {
		b.Run(md.name, func(b *testing.B) {
			var bytes int64
			var cpu, wall time.Duration
			for b.Loop() {
				n, c, w := cpuTransfer(b, md.cfg, 5*time.Second)
				bytes += n
				cpu += c
				wall += w
			}
			gb := float64(bytes) / 1e9
			b.ReportMetric(cpu.Seconds()/gb, "cpu-s/GB")
			b.ReportMetric(float64(bytes)*8/wall.Seconds()/1e6, "Mbit/s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func cpuTransfer(tb testing.TB, cfg *Config, d time.Duration) (int64, time.Duration, time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	p := dialPair(tb, ctx, side{recovery: cfg}, side{recovery: cfg})
	defer p.close()
	var received atomic.Int64
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		st, err := p.serverConn.AcceptStream(ctx)
		if err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := st.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	st, err := p.clientConn.OpenStreamSync(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	// Warm up past slow start and the negotiation, then measure.
	buf := make([]byte, 64<<10)
	for received.Load() < 64<<20 {
		if _, err := st.Write(buf); err != nil {
			tb.Fatal(err)
		}
	}
	cpu0, start, n0 := cpuTime(), time.Now(), received.Load()
	for time.Since(start) < d {
		if _, err := st.Write(buf); err != nil {
			tb.Fatal(err)
		}
	}
	n, cpu, wall := received.Load()-n0, cpuTime()-cpu0, time.Since(start)
	st.CancelWrite(0)
	p.clientConn.CloseWithError(0, "")
	<-recvDone
	return n, cpu, wall
}
