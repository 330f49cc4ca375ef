package endpoints

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quictun/quictun/netem"
)

// stuckBed is one session with tunnels whose applications stopped reading: on
// the server side (the client application keeps sending) and on the client
// side (the server application keeps sending). Their unread bytes pile up in
// quic-go's receive buffers and count against the receiving endpoint's
// connection window, which all tunnels of the session share.
type stuckBed struct {
	p       *pair
	srvApp  *app
	block   chan struct{}
	writers sync.WaitGroup
	conns   []net.Conn
	sent    atomic.Int64 // bytes the stuck tunnels' senders got rid of, both sides
}

// smallSocketBuffer is the socket buffer of the applications of stuck
// tunnels: what piles up in the kernel is not what this measures, and small
// buffers keep the test quick.
const smallSocketBuffer = 16 << 10

func newStuckBed(t *testing.T) *stuckBed {
	b := &stuckBed{block: make(chan struct{})}
	b.srvApp = startApp(t, loopbackTCP(), func(c net.Conn) {
		var kind [1]byte
		if _, err := io.ReadFull(c, kind[:]); err != nil {
			return
		}
		switch kind[0] {
		case 'u': // the server application stops reading
			c.(*net.TCPConn).SetReadBuffer(smallSocketBuffer)
			<-b.block
		case 'd': // the server application sends until the tunnel breaks
			c.(*net.TCPConn).SetWriteBuffer(smallSocketBuffer)
			sendForever(c, &b.sent, b.block)
		case 'e':
			c.Write(kind[:])
			io.Copy(c, c)
		}
	})
	b.p = startPair(t, pairOptions{token: b.srvApp.addr.String()})
	return b
}

// sendForever writes to c until a write fails or stop closes.
func sendForever(c net.Conn, sent *atomic.Int64, stop chan struct{}) {
	chunk := make([]byte, 64<<10)
	for {
		select {
		case <-stop:
			return
		default:
		}
		c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Write(chunk)
		sent.Add(int64(n))
		if err != nil && !os.IsTimeout(err) {
			return
		}
	}
}

// stick opens up tunnels stuck on the server side and down stuck on the client
// side, and returns once no more bytes move on any of them.
func (b *stuckBed) stick(t *testing.T, up, down int) {
	for i := range up + down {
		c := dialApp(t, b.p.client.Addr())
		b.conns = append(b.conns, c)
		if i < up {
			c.(*net.TCPConn).SetWriteBuffer(smallSocketBuffer)
			c.Write([]byte("u"))
			b.writers.Go(func() { sendForever(c, &b.sent, b.block) })
		} else {
			c.(*net.TCPConn).SetReadBuffer(smallSocketBuffer)
			c.Write([]byte("d")) // and never read
		}
	}
	last, still := int64(-1), time.Time{}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stuck tunnels never stopped moving")
		}
		now := b.sent.Load()
		if now != last {
			last, still = now, time.Now()
			continue
		}
		if time.Since(still) > 500*time.Millisecond {
			return
		}
	}
}

// healthy echoes size bytes through a new tunnel of the same session and
// returns how long that took, or an error if it did not finish within limit.
func (b *stuckBed) healthy(t *testing.T, size int, limit time.Duration) (time.Duration, error) {
	c := dialApp(t, b.p.client.Addr())
	defer c.Close()
	start := time.Now()
	c.SetDeadline(start.Add(limit))
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{3}).Read(data)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { c.Write([]byte("e")); c.Write(data) })
	got := make([]byte, 1+size)
	if n, err := io.ReadFull(c, got); err != nil {
		return 0, fmt.Errorf("echoed %d of %d bytes: %w", n, 1+size, err)
	}
	if !bytes.Equal(got[1:], data) {
		return 0, fmt.Errorf("echo differs")
	}
	return time.Since(start), nil
}

func (b *stuckBed) close() {
	close(b.block)
	for _, c := range b.conns {
		c.Close()
	}
	b.writers.Wait()
	b.p.stop()
	b.srvApp.close()
}

// Applications that stop reading, 64 on each side of one session, do not
// stall another tunnel of that session: each holds at most its stream window
// in quic-go, and the connection window has room for all of them and more.
func TestStuckApplicationsDoNotStallTheSession(t *testing.T) {
	if testing.Short() {
		t.Skip("128 stuck tunnels: not in -short")
	}
	b := newStuckBed(t)
	defer b.close()
	b.stick(t, 64, 64)
	took, err := b.healthy(t, 8<<20, 20*time.Second)
	if err != nil {
		t.Fatalf("a tunnel stalled behind 64 stuck applications on each side: %v", err)
	}
	t.Logf("8 MiB echoed in %v past 64+64 stuck tunnels (%.0f MiB pushed into them)", took.Round(time.Millisecond), float64(b.sent.Load())/(1<<20))
}

// TestStuckThreshold measures how many stuck tunnels of one kind stall a
// session (QUICTUN_STUCK=1; not part of the normal run).
func TestStuckThreshold(t *testing.T) {
	if os.Getenv("QUICTUN_STUCK") == "" {
		t.Skip("measurement: set QUICTUN_STUCK=1")
	}
	max, _ := strconv.Atoi(os.Getenv("QUICTUN_STUCK_MAX"))
	if max == 0 {
		max = 256
	}
	for _, side := range []string{"server", "client"} {
		for n := 1; n <= max; n *= 2 {
			b := newStuckBed(t)
			if side == "server" {
				b.stick(t, n, 0)
			} else {
				b.stick(t, 0, n)
			}
			took, err := b.healthy(t, 8<<20, 10*time.Second)
			t.Logf("%s side: %3d stuck (%.0f MiB into them): healthy 8 MiB echo %v %v", side, n, float64(b.sent.Load())/(1<<20), took.Round(time.Millisecond), err)
			b.close()
			if err != nil {
				if n <= 64 {
					t.Errorf("%s side: %d stuck tunnels stall the session", side, n)
				}
				break
			}
		}
	}
}

// TestLongFatLink measures one tunnel on a 100 Mbit/s link with a 200 ms round
// trip (QUICTUN_LFN=1; not part of the normal run): how fast the windows open,
// and the goodput they allow once open (QUICTUN_LFN=loopback: the same on
// plain loopback). Run it without -race.
func TestLongFatLink(t *testing.T) {
	if os.Getenv("QUICTUN_LFN") == "" {
		t.Skip("measurement: set QUICTUN_LFN=1")
	}
	link := netem.Model{RateBps: 100e6, Delay: 100 * time.Millisecond}
	var seed atomic.Int64
	wrap := func(pc net.PacketConn) net.PacketConn { return netem.NewPacketConn(pc, link, seed.Add(1)) }
	if os.Getenv("QUICTUN_LFN") == "loopback" { // for comparison: no emulated link
		wrap = nil
	}
	stop := make(chan struct{})
	var sent atomic.Int64
	srvApp := startApp(t, loopbackTCP(), func(c net.Conn) { sendForever(c, &sent, stop) })
	defer srvApp.close()
	p := startPair(t, pairOptions{token: srvApp.addr.String(),
		serverMods: func(c *ServerConfig) { c.WrapUDP = wrap },
		clientMods: func(c *ClientConfig) { c.WrapUDP = wrap }})
	defer p.stop()
	defer close(stop)
	c := dialApp(t, p.client.Addr())
	defer c.Close()
	buf := make([]byte, 256<<10)
	start := time.Now()
	var total, mark, atThree int64
	for second := 1; second <= 12; second++ {
		if second == 4 {
			atThree = total
		}
		c.SetReadDeadline(start.Add(time.Duration(second) * time.Second))
		for {
			n, err := c.Read(buf)
			total += int64(n)
			if err != nil {
				break
			}
		}
		t.Logf("second %2d: %5.1f Mbit/s", second, float64(total-mark)*8/1e6)
		mark = total
	}
	t.Logf("12 s: %.1f MiB, %.1f Mbit/s on average", float64(total)/(1<<20), float64(total)*8/1e6/12)
	if os.Getenv("QUICTUN_LFN") != "loopback" {
		if rate := float64(total-atThree) * 8 / 1e6 / 9; rate < 90 {
			t.Errorf("%.1f Mbit/s from the fourth second on, want at least 90 of the 100", rate)
		}
	}
}
