package endpoints

import (
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quictun/quictun/netem"
)

// TestInteractiveBesideBulk measures (QUICTUN_INTERACTIVE=1; not part of the
// normal run, and without -race) a 64-byte echo every 50 ms beside two bulk
// uploads on the same session, over 20 Mbit/s with a 50 ms round trip and a
// 50 ms drop-tail queue, against issue 20's target: echo p99 at most the base
// round trip + 15 ms. It does not meet it yet. Inside the sender the echo
// goes first (engine/priority.go; TestInteractiveTunnelOvertakesBulk in
// engine), so what it waits behind is the standing queue the bulk flows keep
// at the bottleneck, which only the congestion controller can shorten.
func TestInteractiveBesideBulk(t *testing.T) {
	if os.Getenv("QUICTUN_INTERACTIVE") == "" {
		t.Skip("measurement: set QUICTUN_INTERACTIVE=1")
	}
	rtt := 50 * time.Millisecond
	link := netem.Model{RateBps: 20e6, Delay: rtt / 2, QueueDelay: 50 * time.Millisecond}
	lat := echoBesideBulk(t, link, 2, 10*time.Second)
	slices.Sort(lat)
	p99 := lat[int(0.99*float64(len(lat)-1))]
	t.Logf("%d echoes: p50 %v p99 %v max %v", len(lat), lat[len(lat)/2].Round(100*time.Microsecond),
		p99.Round(100*time.Microsecond), lat[len(lat)-1].Round(100*time.Microsecond))
	if p99 > rtt+15*time.Millisecond {
		t.Errorf("echo p99 %v beside bulk, want at most %v", p99.Round(100*time.Microsecond), rtt+15*time.Millisecond)
	}
}

// echoBesideBulk runs bulk uploads and a small echo every 50 ms through one
// session over link, and returns the echo's round trips after a warm-up.
func echoBesideBulk(t *testing.T, link netem.Model, bulk int, d time.Duration) []time.Duration {
	stop := make(chan struct{})
	srvApp := startApp(t, loopbackTCP(), func(c net.Conn) {
		var kind [1]byte
		if _, err := io.ReadFull(c, kind[:]); err != nil {
			return
		}
		if kind[0] == 'b' {
			io.Copy(io.Discard, c)
			return
		}
		io.Copy(c, c)
	})
	defer srvApp.close()
	var seed atomic.Int64
	wrap := func(pc net.PacketConn) net.PacketConn { return netem.NewPacketConn(pc, link, seed.Add(1)) }
	p := startPair(t, pairOptions{token: srvApp.addr.String(),
		serverMods: func(c *ServerConfig) { c.WrapUDP = wrap },
		clientMods: func(c *ClientConfig) { c.WrapUDP = wrap }})
	defer p.stop()
	var writers sync.WaitGroup
	defer writers.Wait()
	defer close(stop)
	var sent atomic.Int64
	for range bulk {
		c := dialApp(t, p.client.Addr())
		defer c.Close()
		c.Write([]byte("b"))
		writers.Go(func() { sendForever(c, &sent, stop) })
	}
	c := dialApp(t, p.client.Addr())
	defer c.Close()
	c.Write([]byte("e"))
	msg, got := make([]byte, 64), make([]byte, 64)
	var lat []time.Duration
	warm := time.Now().Add(2 * time.Second)
	for end := warm.Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		start := time.Now()
		c.SetDeadline(start.Add(10 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if start.After(warm) {
			lat = append(lat, time.Since(start))
		}
	}
	t.Logf("bulk: %.1f Mbit/s into the tunnels", float64(sent.Load())*8/1e6/(d+2*time.Second).Seconds())
	return lat
}
