//go:build linux

package host

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quictun/quictun/netem"
)

// newPlainVeth joins two fresh namespaces with a bare veth pair: no emulator at all.
// It is the baseline the TUN forwarder is measured against.
func newPlainVeth(t testing.TB) *Testbed {
	t.Helper()
	name := testName(t)
	_ = CleanupStale(name)
	tb := &Testbed{
		ClientNS: name + "-cli", ServerNS: name + "-srv",
		ClientAddr: clientAddr, ServerAddr: serverAddr,
		Backend: "veth", name: name,
		devices: [2]string{name + "-c", name + "-s"},
	}
	t.Cleanup(func() { _ = tb.Close() })
	ctx := context.Background()
	for _, ns := range []string{tb.ClientNS, tb.ServerNS} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		if err := setupNamespace(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.createVeth(ctx); err != nil {
		t.Fatal(err)
	}
	return tb
}

// tcpStream runs one TCP connection across the testbed: the receiver drains and
// counts, the sender writes chunks from the calling goroutine.
type tcpStream struct {
	client, server net.Conn
	received       atomic.Int64
	done           chan struct{}
}

// readSize is the receiver's read buffer: large for throughput, small where the
// counter must follow arrivals closely (16 KiB is 1.3 ms at 100 Mbit/s).
func startTCPStream(t testing.TB, tb *Testbed, readSize int) *tcpStream {
	t.Helper()
	s := &tcpStream{done: make(chan struct{})}
	s.client, s.server = tcpPair(t, tb)
	go func() {
		defer close(s.done)
		buf := make([]byte, readSize)
		for {
			n, err := s.server.Read(buf)
			s.received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	return s
}

// finish half-closes the sender, waits until the receiver has everything, and closes.
func (s *tcpStream) finish() {
	_ = s.client.(*net.TCPConn).CloseWrite()
	<-s.done
	s.client.Close()
	s.server.Close()
}

const chunk = 1 << 20

// BenchmarkTCPThroughput moves 1 MiB per op over one TCP connection between the two
// namespaces: a bare veth pair (baseline), the TUN forwarder on a perfect link (packets
// written inline by the reader), and the TUN forwarder with a 2 Gbit/s rate limit and
// an 8 MiB queue (every packet through the queue and the scheduler goroutine; the
// queue is deep so that the figure is the forwarder's speed, not TCP's reaction to
// drop-tail losses). Compare the Mbit/s of
// each against veth from the same run.
func BenchmarkTCPThroughput(b *testing.B) {
	requireTUN(b)
	for _, c := range []struct {
		name string
		make func(testing.TB) *Testbed
	}{
		{"veth", newPlainVeth},
		{"tun-perfect", func(t testing.TB) *Testbed { return newTestbed(t, netem.Link{}) }},
		{"tun-rate2G", func(t testing.TB) *Testbed {
			return newTestbed(t, netem.Symmetric(netem.Model{RateBps: 2e9, QueueBytes: 8 << 20}))
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			tb := c.make(b)
			s := startTCPStream(b, tb, 256<<10)
			buf := make([]byte, chunk)
			b.SetBytes(chunk)
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.client.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
			s.finish()
			b.StopTimer()
			b.ReportMetric(float64(s.received.Load())*8/b.Elapsed().Seconds()/1e6, "Mbit/s")
			if tb.fwd != nil {
				st, _ := tb.Stats()
				if lost := st.Up.DroppedQueue + st.Up.DroppedLoss + st.Up.DeliverErrors; lost > 0 {
					b.Logf("up: %d packets dropped by the emulator", lost)
				}
			}
		})
	}
}

// BenchmarkEmulated100Mbit measures plain TCP goodput across an emulated 100 Mbit/s,
// 20 ms RTT link (3 s per op, the first second of each excluded as slow start) and
// reports it as a fraction of the link rate. TCP goodput can reach at most
// 1448/1500 = 96.5% of the IP-level rate (40 bytes of IP and TCP header plus 12 of
// timestamps per 1500-byte packet).
func BenchmarkEmulated100Mbit(b *testing.B) {
	requireTUN(b)
	const rate = 100e6
	m := netem.Model{Delay: 10 * time.Millisecond, RateBps: rate}
	tb := newTestbed(b, netem.Symmetric(m))
	var fractions []float64
	for b.Loop() {
		fractions = append(fractions, measureGoodput(b, tb, time.Second, 2*time.Second)/rate)
	}
	var sum float64
	for _, f := range fractions {
		sum += f
	}
	b.ReportMetric(sum/float64(len(fractions))*100, "%rate")
	logEmulator(b, tb)
}

// logEmulator shows the drops and the lateness behind a figure: on a busy machine a
// low goodput with large MaxLate is the emulator's error, not the link's.
func logEmulator(b *testing.B, tb *Testbed) {
	st, err := tb.Stats()
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []struct {
		name string
		s    netem.Stats
	}{{"up", st.Up}, {"down", st.Down}} {
		b.Logf("%s: %d packets, %d dropped at the queue, %d lost, %d late > %v (max %v)",
			d.name, d.s.Sent, d.s.DroppedQueue, d.s.DroppedLoss, d.s.Late, netem.LateThreshold, d.s.MaxLate.Round(time.Microsecond))
	}
}

// measureGoodput runs TCP flat out for warmup+window and returns the receiver's
// goodput in bit/s over the window.
func measureGoodput(t testing.TB, tb *Testbed, warmup, window time.Duration) float64 {
	t.Helper()
	s := startTCPStream(t, tb, 16<<10)
	stop := make(chan struct{})
	senderDone := make(chan struct{})
	go func() {
		defer close(senderDone)
		buf := make([]byte, 128<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.client.Write(buf); err != nil {
				return
			}
		}
	}()
	time.Sleep(warmup)
	from, t0 := s.received.Load(), time.Now()
	time.Sleep(window)
	to, t1 := s.received.Load(), time.Now()
	close(stop)
	// The sender may be blocked in Write on a full window: a deadline frees it.
	_ = s.client.SetWriteDeadline(time.Now())
	<-senderDone
	_ = s.client.SetWriteDeadline(time.Time{})
	s.finish()
	return float64(to-from) * 8 / t1.Sub(t0).Seconds()
}

// TestRateLimitIsNeverExceeded is the half of the 100 Mbit/s accuracy claim a unit test
// can make without depending on the machine's speed: TCP across an emulated 50 Mbit/s
// link never gets more than the link rate (a busy machine can only make it slower; the
// benchmark above measures how close it gets).
func TestRateLimitIsNeverExceeded(t *testing.T) {
	requireTUN(t)
	const rate = 50e6
	tb := newTestbed(t, netem.Symmetric(netem.Model{Delay: 2 * time.Millisecond, RateBps: rate}))
	got := measureGoodput(t, tb, 300*time.Millisecond, time.Second)
	if got > rate*1.01 {
		t.Errorf("TCP goodput %.1f Mbit/s across a %.0f Mbit/s link", got/1e6, rate/1e6)
	}
	t.Logf("goodput %.1f Mbit/s (%.1f%% of the link rate)", got/1e6, got/rate*100)
}

// BenchmarkIperf3Emulated100Mbit is the same measurement with iperf3 (TCP, 3 s with
// the first second omitted) run through Command in the two namespaces, the way the
// bench harness measures. Skipped when iperf3 is not installed.
func BenchmarkIperf3Emulated100Mbit(b *testing.B) {
	requireTUN(b)
	if _, err := exec.LookPath("iperf3"); err != nil {
		b.Skip("skipping: iperf3 not installed")
	}
	const rate = 100e6
	tb := newTestbed(b, netem.Symmetric(netem.Model{Delay: 10 * time.Millisecond, RateBps: rate}))
	var sum float64
	for b.Loop() {
		sum += iperf3Goodput(b, tb) / rate
	}
	logEmulator(b, tb)
	b.ReportMetric(sum/float64(b.N)*100, "%rate")
}

func iperf3Goodput(b *testing.B, tb *Testbed) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	server := tb.Command(ctx, Server, "iperf3", "--server", "--one-off", "--bind", tb.ServerAddr.String(), "--port", "5201")
	if err := server.Start(); err != nil {
		b.Fatal(err)
	}
	defer server.Wait()
	defer server.Process.Kill()
	var out []byte
	var err error
	for attempt := 0; attempt < 50; attempt++ { // until the server listens
		out, err = tb.Command(ctx, Client, "iperf3", "--client", tb.ServerAddr.String(), "--port", "5201",
			"--time", "3", "--omit", "1", "--json").Output()
		if err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		b.Fatalf("iperf3: %v: %s", err, out)
	}
	var report struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &report); err != nil || report.End.SumReceived.BitsPerSecond == 0 {
		b.Fatalf("iperf3 output (%v): %.300s", err, out)
	}
	return report.End.SumReceived.BitsPerSecond
}
