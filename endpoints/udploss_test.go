package endpoints

import (
	"encoding/binary"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/netem"
	"github.com/quictun/quictun/recovery"
)

// TestUDPResidualLoss measures (QUICTUN_UDPLOSS=LOSS, e.g. 0.05, without
// -race; QUICTUN_UDPMBPS, default 50; QUICTUN_UDPLOSS_PLAIN=1 for --fec off)
// what a paced stream of 1200-byte datagrams loses through a udp: forward
// over 100 Mbit/s and RTT 50 ms with that random loss each way, and where:
// quic-go's congestion window over the run, the drop counters of both
// endpoints and the recovery layer's. Here, at 5% and 50 Mbit/s, the layer
// left 0-2 datagrams unrepaired of 41660 while the machine's load was 6-8;
// what was lost beyond that (0-15% from run to run) overflowed the client
// flow's queue while quic-go's window stayed at 1 MB (BDP 312 KB). With the
// BBR-style sender (congestion/) and the 2048-datagram queue: 0.30-0.37%
// lost, all in the first second (startup flushing the backlog its ramp from
// 32 packets built: losses the layer classes congestion, unrepaired), p99
// 212-215 ms for the same reason, 34-38 ms after the first second.
func TestUDPResidualLoss(t *testing.T) {
	if os.Getenv("QUICTUN_UDPLOSS") == "" {
		t.Skip("measurement: set QUICTUN_UDPLOSS=1")
	}
	var got atomic.Int64
	var mu sync.Mutex
	var delays []time.Duration
	// Delays of the datagrams written after the stream's first second, and the
	// worst of each 250 ms before: the start (the window ramping from quic-go's
	// 32 packets under a backlog) apart from the cruise.
	var steady []time.Duration
	var steadyFrom atomic.Int64
	steadyFrom.Store(1 << 62)
	var startWorst [4]time.Duration
	base := time.Now()
	target := startUDPApp(t, func(b []byte) []byte {
		got.Add(1)
		if len(b) >= 16 {
			d := time.Since(base) - time.Duration(binary.BigEndian.Uint64(b[8:]))
			written := int64(binary.BigEndian.Uint64(b[8:]))
			mu.Lock()
			delays = append(delays, d)
			if from := steadyFrom.Load(); written >= from {
				steady = append(steady, d)
			} else if since := written - (from - int64(time.Second)); since >= 0 {
				i := since / int64(250*time.Millisecond)
				startWorst[i] = max(startWorst[i], d)
			}
			mu.Unlock()
		}
		return nil
	})
	defer target.close()
	loss, _ := strconv.ParseFloat(os.Getenv("QUICTUN_UDPLOSS"), 64)
	mbps, _ := strconv.ParseFloat(os.Getenv("QUICTUN_UDPMBPS"), 64)
	if mbps == 0 {
		mbps = 50
	}
	link := netem.Model{RateBps: 100e6, Delay: 25 * time.Millisecond, Loss: loss}
	var seed atomic.Int64
	wrap := func(pc net.PacketConn) net.PacketConn { return netem.NewPacketConn(pc, link, seed.Add(1)) }
	p := startPair(t, pairOptions{listenOn: address.Address{Network: address.UDP, Addr: "127.0.0.1:0"}, token: target.token(),
		serverMods: func(c *ServerConfig) { c.WrapUDP = wrap },
		clientMods: func(c *ClientConfig) {
			c.WrapUDP = wrap
			if os.Getenv("QUICTUN_UDPLOSS_PLAIN") != "" {
				c.Recovery = &recovery.Config{Mode: recovery.Off}
			}
		}})
	defer p.stop()
	c := dialUDP(t, p.client.Addr())
	defer c.Close()
	c.SetWriteBuffer(4 << 20)
	msg := make([]byte, 1200)
	c.Write(msg)
	waitFor(t, 5*time.Second, "the flow", func() bool { return got.Load() > 0 })
	got.Store(0)
	mu.Lock()
	delays = nil
	mu.Unlock()
	rate := mbps * 1e6 / 8 / 1200 // datagrams per second
	const d = 8 * time.Second
	start := time.Now()
	steadyFrom.Store(int64(start.Sub(base) + time.Second))
	var sent int64
	conn := p.client.sessions.live()[0]
	nextLog := time.Now()
	for time.Since(start) < d {
		if time.Now().After(nextLog) {
			st := conn.ConnectionStats()
			full := gather(t, p.client)[`quictun_udp_datagrams_dropped_total{endpoint="client",reason="queue full"}`]
			t.Logf("%5.1fs cwnd %d srtt %v sent %d lost %d; client queue full so far %.0f", time.Since(start).Seconds(), st.CongestionWindow, st.SmoothedRTT, st.PacketsSent, st.PacketsLost, full)
			nextLog = nextLog.Add(500 * time.Millisecond)
		}
		due := int64(time.Since(start).Seconds() * rate)
		for ; sent < due; sent++ {
			binary.BigEndian.PutUint64(msg, uint64(sent))
			binary.BigEndian.PutUint64(msg[8:], uint64(time.Since(base)))
			c.Write(msg)
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(time.Second)
	n := got.Load()
	mu.Lock()
	sort.Slice(delays, func(i, j int) bool { return delays[i] < delays[j] })
	p50, p99 := delays[len(delays)/2], delays[len(delays)*99/100]
	slices.Sort(steady)
	t.Logf("sent %d, received %d: lost %.3f%%; one-way delay p50 %v p99 %v; after the first second p99 %v; in its four quarters the worst %v",
		sent, n, 100*(1-float64(n)/float64(sent)), p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond),
		steady[len(steady)*99/100].Round(100*time.Microsecond), startWorst)
	mu.Unlock()
	for k, v := range gather(t, p.client, p.server) {
		if v != 0 && (strings.Contains(k, "udp_") || strings.Contains(k, "recovery")) {
			t.Logf("%s %v", k, v)
		}
	}
}
