package endpoints

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/internal/quicconf"
	"github.com/quictun/quictun/netem"
)

// stuckBed is one session with tunnels whose applications stopped reading: on
// the server side (the client application keeps sending) and on the client
// side (the server application keeps sending). Their unread bytes pile up in
// quic-go's receive buffers and count against the receiving endpoint's
// connection window, which all tunnels of the session share.
//
// The applications are on UNIX sockets: a loopback TCP socket of an endpoint
// grows its send buffer to 4 MiB however little its application reads, so 128
// stuck tunnels would first swallow half a GiB of kernel buffers before quic-go
// held a byte (under -race on a busy machine, longer than the test waited:
// the "stuck" tunnels were still moving, and the healthy one had a 1/129 share
// of a busy session). A UNIX socket's buffer stays at its 208 KiB.
type stuckBed struct {
	p       *pair
	srvApp  *app
	block   chan struct{}
	writers sync.WaitGroup
	conns   []net.Conn
	sent    atomic.Int64   // bytes the stuck tunnels' senders got rid of, both sides
	stuck   map[int64]bool // stream IDs of the stuck tunnels: true when stuck on the server side
}

// smallSocketBuffer is the socket buffer of the applications of stuck
// tunnels: what piles up in the kernel is not what this measures, and small
// buffers keep the test quick.
const smallSocketBuffer = 16 << 10

type bufferedConn interface {
	SetReadBuffer(int) error
	SetWriteBuffer(int) error
}

func newStuckBed(t *testing.T) *stuckBed { return newStuckBedOn(t, netem.Model{}) }

// newStuckBedOn is a stuckBed whose session runs over link (both directions).
func newStuckBedOn(t *testing.T, link netem.Model) *stuckBed {
	b := &stuckBed{block: make(chan struct{}), stuck: map[int64]bool{}}
	dir := t.TempDir()
	target := address.Address{Network: "unix", Addr: filepath.Join(dir, "app.sock")}
	b.srvApp = startApp(t, target, func(c net.Conn) {
		var kind [1]byte
		if _, err := io.ReadFull(c, kind[:]); err != nil {
			return
		}
		switch kind[0] {
		case 'u': // the server application stops reading
			c.(bufferedConn).SetReadBuffer(smallSocketBuffer)
			<-b.block
		case 'd': // the server application sends until the tunnel breaks
			c.(bufferedConn).SetWriteBuffer(smallSocketBuffer)
			sendForever(c, &b.sent, b.block)
		case 'e':
			c.Write(kind[:])
			io.Copy(c, c)
		}
	})
	var seed atomic.Int64
	wrap := func(pc net.PacketConn) net.PacketConn { return netem.NewPacketConn(pc, link, seed.Add(1)) }
	if link == (netem.Model{}) {
		wrap = nil
	}
	b.p = startPair(t, pairOptions{token: b.srvApp.addr.String(),
		listenOn:   address.Address{Network: "unix", Addr: filepath.Join(dir, "client.sock")},
		serverMods: func(c *ServerConfig) { c.WrapUDP = wrap },
		clientMods: func(c *ClientConfig) { c.WrapUDP = wrap }})
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

// flow is what both endpoints counted of one tunnel.
type flow struct{ cliUp, cliDown, srvUp, srvDown uint64 }

// since is how many bytes the counters of f moved since the earlier e.
func (f flow) since(e flow) uint64 {
	return f.cliUp - e.cliUp + f.cliDown - e.cliDown + f.srvUp - e.srvUp + f.srvDown - e.srvDown
}

// stuckSlack is what a stuck tunnel may move in all while it is stuck: the
// rest of its stream window and of its application's socket buffer.
const stuckSlack = 1 << 20

// held is what the receiving endpoint's quic-go (or its pump's buffer) holds
// of the tunnel: what the sending endpoint wrote into the stream and the
// receiving one did not hand to its application.
func (f flow) held(serverSide bool) int64 {
	if serverSide {
		return int64(f.cliUp) - int64(f.srvUp)
	}
	return int64(f.srvDown) - int64(f.cliDown)
}

// flows reads both endpoints' counters by stream ID, the receivers' first, so
// that a receiver never seems ahead of its sender.
func (b *stuckBed) flows() map[int64]flow {
	srv, cli := b.p.server.Registry().Snapshots(), b.p.client.Registry().Snapshots()
	fs := map[int64]flow{}
	for _, s := range srv {
		f := fs[s.Info.StreamID]
		f.srvUp, f.srvDown = s.BytesUp, s.BytesDown
		fs[s.Info.StreamID] = f
	}
	for _, s := range cli {
		f := fs[s.Info.StreamID]
		f.cliUp, f.cliDown = s.BytesUp, s.BytesDown
		fs[s.Info.StreamID] = f
	}
	return fs
}

// stuckHeld sums what the stuck tunnels hold in the receiving endpoints, and
// gives the least any one holds.
func (b *stuckBed) stuckHeld(fs map[int64]flow) (server, client, least int64) {
	least = -1
	for id, serverSide := range b.stuck {
		h := fs[id].held(serverSide)
		if serverSide {
			server += h
		} else {
			client += h
		}
		if least < 0 || h < least {
			least = h
		}
	}
	return server, client, least
}

// stuckHolds is what each stuck tunnel holds at least once it is stuck: quic-go
// gives a stream new credit when a quarter of its window was read, so a stuck
// stream holds three quarters of its initial window or more, less a pump's
// chunk that was sent but not yet counted (quicconf starts streams at 256 KiB).
const stuckHolds = 256<<10*3/4 - 64<<10

// stick opens up tunnels stuck on the server side and down stuck on the client
// side, and returns once every one of them is stuck: its receiving endpoint
// holds stuckHolds or more of it, and no counter of either endpoint moved for
// a second.
func (b *stuckBed) stick(t *testing.T, up, down int) error {
	for i := range up + down {
		c := dialApp(t, b.p.client.Addr())
		b.conns = append(b.conns, c)
		if i < up {
			c.(bufferedConn).SetWriteBuffer(smallSocketBuffer)
			c.Write([]byte("u"))
			b.writers.Go(func() { sendForever(c, &b.sent, b.block) })
		} else {
			c.(bufferedConn).SetReadBuffer(smallSocketBuffer)
			c.Write([]byte("d")) // and never read
		}
	}
	return b.waitStuck(up + down)
}

// waitStuck returns once the n tunnels of the bed are stuck: each holds
// stuckHolds or more in its receiving endpoint, and no counter of either
// endpoint moved for a second. It gives up when they stop moving before that:
// the session stalled while they were still filling their windows.
func (b *stuckBed) waitStuck(n int) error {
	// Which tunnel is which shows in their counters: a client application
	// sends more than its 'u', or the server application sends.
	deadline := time.Now().Add(60 * time.Second)
	var last map[int64]flow
	since := time.Now()
	for ; ; time.Sleep(100 * time.Millisecond) {
		fs := b.flows()
		if !maps.Equal(fs, last) {
			last, since = fs, time.Now()
		}
		for id, f := range fs {
			if f.cliUp > 1 {
				b.stuck[id] = true
			} else if f.srvDown > 0 {
				b.stuck[id] = false
			}
		}
		_, _, least := b.stuckHeld(fs)
		if len(b.stuck) == n && least >= stuckHolds && time.Since(since) >= time.Second {
			return nil
		}
		if time.Since(since) > 10*time.Second || time.Now().After(deadline) {
			srv, cli, least := b.stuckHeld(fs)
			return fmt.Errorf("the stuck tunnels never stuck: %d of %d moved data; they hold %d KiB at the server, %d KiB at the client, the least %d KiB",
				len(b.stuck), n, srv>>10, cli>>10, least>>10)
		}
	}
}

// runThenStick opens n tunnels one after another whose client applications
// each read fast bytes as fast as they can, alone on the session, and then
// stop reading while their server applications keep sending: each stuck
// tunnel holds the stream window it grew while it ran.
func (b *stuckBed) runThenStick(t *testing.T, n, fast int) error {
	for i := range n {
		c := dialApp(t, b.p.client.Addr())
		b.conns = append(b.conns, c)
		c.Write([]byte("d"))
		start := time.Now()
		c.SetReadDeadline(start.Add(60 * time.Second))
		if got, err := io.CopyN(io.Discard, c, int64(fast)); err != nil {
			return fmt.Errorf("tunnel %d of %d, to run fast, read %.1f of %d MiB: %w", i+1, n, float64(got)/(1<<20), fast>>20, err)
		}
		t.Logf("tunnel %d ran fast: %d MiB in %v", i+1, fast>>20, time.Since(start).Round(time.Millisecond))
	}
	return b.waitStuck(n)
}

// healthy echoes size bytes through a new tunnel of the same session and
// returns how long that took, or an error if it did not finish within limit.
// It fails the test if a stuck tunnel ran meanwhile: then it was not stuck,
// and the echo shared the session with it. A stuck one may still move up to
// stuckSlack (a sender that had not yet used all its credit when waitStuck
// saw no counter move for a second, on a busy machine).
func (b *stuckBed) healthy(t *testing.T, size int, limit time.Duration) (time.Duration, error) {
	before := b.flows()
	defer func() {
		after := b.flows()
		for id := range b.stuck {
			if after[id].since(before[id]) > stuckSlack {
				t.Errorf("a stuck tunnel ran during the echo: %+v, then %+v", before[id], after[id])
				return
			}
		}
	}()
	c := dialApp(t, b.p.client.Addr())
	defer c.Close()
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{3}).Read(data)
	start := time.Now()
	if err := echoThrough(c, 'e', data, limit); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// stallAfter is how long a tunnel may move no byte at all before a test calls
// it stalled. A stall behind a full connection window is for ever; a machine
// busy with other work (and -race) slows a tunnel, but does not stop it.
const stallAfter = 10 * time.Second

// echoThrough sends kind and then data on c, whose far end echoes them, and
// checks the echo. It fails when no echoed byte arrives for stallAfter, or the
// whole echo is not back within limit.
func echoThrough(c net.Conn, kind byte, data []byte, limit time.Duration) error {
	end := time.Now().Add(limit)
	var wg sync.WaitGroup
	defer wg.Wait()
	c.SetWriteDeadline(end)
	wg.Go(func() { c.Write([]byte{kind}); c.Write(data) })
	got := make([]byte, 1+len(data))
	for n := 0; n < len(got); {
		dl := time.Now().Add(stallAfter)
		if dl.After(end) {
			dl = end
		}
		c.SetReadDeadline(dl)
		m, err := c.Read(got[n:])
		n += m
		if err != nil {
			c.SetWriteDeadline(time.Now()) // the writer is let go
			return fmt.Errorf("echoed %d of %d bytes in %v: %w", n, len(got), limit-time.Until(end), err)
		}
	}
	if got[0] != kind || !bytes.Equal(got[1:], data) {
		return fmt.Errorf("echo differs")
	}
	return nil
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
	if err := b.stick(t, 64, 64); err != nil {
		t.Fatal(err)
	}
	took, err := b.healthy(t, 8<<20, 60*time.Second)
	if err != nil {
		t.Fatalf("a tunnel stalled behind 64 stuck applications on each side: %v", err)
	}
	t.Logf("8 MiB echoed in %v past 64+64 stuck tunnels (%.0f MiB pushed into them)", took.Round(time.Millisecond), float64(b.sent.Load())/(1<<20))
}

// TestStuckAfterRunningFast measures a session on a 100 Mbit/s link with a
// 200 ms round trip past tunnels that stopped reading after each ran alone at
// full speed (QUICTUN_STUCK=1, QUICTUN_STUCK_FAST=how many, default
// quicconf.StuckTolerance; not part of the normal run, and without -race): a
// new tunnel must still echo 8 MiB, at most twice as slowly as on the same
// session before.
func TestStuckAfterRunningFast(t *testing.T) {
	if os.Getenv("QUICTUN_STUCK") == "" {
		t.Skip("measurement: set QUICTUN_STUCK=1")
	}
	n, _ := strconv.Atoi(os.Getenv("QUICTUN_STUCK_FAST"))
	if n == 0 {
		n = quicconf.StuckTolerance
	}
	b := newStuckBedOn(t, netem.Model{Delay: 100 * time.Millisecond, RateBps: 100e6})
	defer b.close()
	alone, err := b.healthy(t, 8<<20, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.runThenStick(t, n, 48<<20); err != nil {
		t.Fatal(err)
	}
	_, held, least := b.stuckHeld(b.flows())
	t.Logf("%d stuck after running fast hold %.1f MiB at the client, the least %.1f MiB", n, float64(held)/(1<<20), float64(least)/(1<<20))
	took, err := b.healthy(t, 8<<20, 60*time.Second)
	if err != nil {
		t.Fatalf("a tunnel stalled behind %d that stopped after running fast: %v", n, err)
	}
	t.Logf("8 MiB echoed in %v past them, %v before", took.Round(time.Millisecond), alone.Round(time.Millisecond))
	if took > 2*alone {
		t.Errorf("the echo took %v past %d stuck tunnels, %v before: more than twice as long", took.Round(time.Millisecond), n, alone.Round(time.Millisecond))
	}
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
			up, down := n, 0
			if side == "client" {
				up, down = 0, n
			}
			err := b.stick(t, up, down)
			var took time.Duration
			if err == nil {
				took, err = b.healthy(t, 8<<20, 10*time.Second)
			}
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
