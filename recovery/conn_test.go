package recovery

import (
	"bytes"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quictun/quictun/codecs/fecframe"
)

// dropConn is a loopback UDP socket whose writes the test can drop, one decision
// per datagram, so a test chooses exactly which shards of a group get lost.
type dropConn struct {
	*net.UDPConn
	mu   sync.Mutex
	drop func(b []byte) bool
}

func (d *dropConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	d.mu.Lock()
	drop := d.drop != nil && d.drop(b)
	d.mu.Unlock()
	if drop {
		return len(b), nil
	}
	return d.UDPConn.WriteTo(b, addr)
}

func (d *dropConn) setDrop(f func(b []byte) bool) {
	d.mu.Lock()
	d.drop = f
	d.mu.Unlock()
}

func listenLoopback(t testing.TB) *dropConn {
	t.Helper()
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return &dropConn{UDPConn: u}
}

// link is two Conns on loopback sockets, the sender already framing for the
// receiver (negotiation has its own tests), and the receiver's deliveries collected.
type link struct {
	a, b       *Conn
	aSock      *dropConn
	bSock      *dropConn
	delivered  chan []byte
	readerDone chan struct{}
}

func newLink(t *testing.T, acfg, bcfg Config) *link {
	t.Helper()
	l := &link{aSock: listenLoopback(t), bSock: listenLoopback(t), delivered: make(chan []byte, 1024), readerDone: make(chan struct{})}
	var err error
	if l.a, err = NewConn(l.aSock, acfg); err != nil {
		t.Fatal(err)
	}
	if l.b, err = NewConn(l.bSock, bcfg); err != nil {
		t.Fatal(err)
	}
	// b's reader hands every datagram for quic-go to the test.
	go func() {
		defer close(l.readerDone)
		buf := make([]byte, 2048)
		for {
			n, _, err := l.b.ReadFrom(buf)
			if err != nil {
				return
			}
			l.delivered <- append([]byte(nil), buf[:n]...)
		}
	}()
	// a reads too, so Feedback from b reaches a's controller.
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := l.a.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	l.b.Prove(l.aSock.LocalAddr())
	frameFor(l.a, l.bSock.LocalAddr(), l.b.keyFor(keyOf(l.aSock.LocalAddr())))
	return l
}

// frameFor makes c frame what it sends to addr, tagged with key, as a finished
// negotiation with a proven peer would.
func frameFor(c *Conn, addr net.Addr, key [fecframe.KeyLen]byte) *peer {
	c.Prove(addr)
	p := c.peers.lookup(c, keyOf(addr), addr, noCreate, 0)
	p.learnKey(c, key)
	p.state.Store(peerFramed)
	return p
}

func (l *link) close() {
	l.a.Close()
	l.b.Close()
	<-l.readerDone
}

func (l *link) send(t *testing.T, payloads ...[]byte) {
	t.Helper()
	for _, p := range payloads {
		if _, err := l.a.WriteTo(p, l.bSock.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
}

// collect waits for want datagrams (and a little longer, to catch extras).
func (l *link) collect(t *testing.T, want int, wait time.Duration) [][]byte {
	t.Helper()
	var got [][]byte
	deadline := time.After(wait)
	for {
		select {
		case d := <-l.delivered:
			got = append(got, d)
			if len(got) == want {
				// Extras would show up right behind.
				select {
				case d := <-l.delivered:
					got = append(got, d)
				case <-time.After(50 * time.Millisecond):
				}
				return got
			}
		case <-deadline:
			return got
		}
	}
}

func payloads(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{byte('a' + i%26)}, size-i%7) // varied lengths
		copy(out[i], fmt.Sprintf("datagram %d ", i))
	}
	return out
}

func sameSet(t *testing.T, got, want [][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("delivered %d datagrams, want %d", len(got), len(want))
	}
	left := make(map[string]int)
	for _, w := range want {
		left[string(w)]++
	}
	for _, g := range got {
		if left[string(g)] == 0 {
			t.Fatalf("delivered a datagram that was not sent, or twice: %.20q", g)
		}
		left[string(g)]--
	}
}

func TestRebuildsLostData(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := Config{Mode: Fixed, Data: 4, Parity: 2}
	l := newLink(t, cfg, cfg)
	defer l.close()
	l.aSock.setDrop(sourceAt(1, 3))
	want := payloads(4, 1200)
	l.send(t, want...)
	sameSet(t, l.collect(t, 4, 2*time.Second), want)
	if st := l.b.Stats(); st.Repaired != 2 || st.Lost != 2 {
		t.Fatalf("receiver stats %+v, want 2 lost and 2 repaired", st)
	}
	if st := l.a.Stats(); st.DataSent != 4 || st.ParitySent != 2 {
		t.Fatalf("sender stats %+v, want 4 sources and 2 repairs", st)
	}
}

func TestTooManyLostIsCounted(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newLink(t, Config{Mode: Fixed, Data: 4, Parity: 1}, Config{Mode: Off})
	defer l.close()
	// Not the first: the receiver cannot know of a loss before the first source
	// it sees.
	l.aSock.setDrop(sourceAt(1, 2))
	want := payloads(4, 500)
	l.send(t, want...)
	sameSet(t, l.collect(t, 2, time.Second), [][]byte{want[0], want[3]})
	// Given up after giveUpAfter (one repair for two unknowns); only then is
	// the loss final.
	deadline := time.Now().Add(2 * time.Second)
	for l.b.Stats().Unrepaired != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("receiver stats %+v, want 2 unrepaired", l.b.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDuplicateDeliveredOnce(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := Config{Mode: Fixed, Data: 4, Parity: 1}
	l := newLink(t, cfg, cfg)
	defer l.close()
	// Duplicate every source on the wire.
	l.aSock.setDrop(func(b []byte) bool {
		if f, err := fecframe.Decode(b); err == nil && f.Type == fecframe.TypeSource {
			l.aSock.UDPConn.WriteTo(b, l.bSock.LocalAddr())
		}
		return false
	})
	want := payloads(4, 300)
	l.send(t, want...)
	sameSet(t, l.collect(t, 4, time.Second), want)
}

// sourceAt matches the source datagrams at the given offsets from the first
// source seen (source numbers start at a random point).
func sourceAt(offsets ...uint32) func([]byte) bool {
	var mu sync.Mutex
	first, seen := uint32(0), false
	return func(b []byte) bool {
		f, err := fecframe.Decode(b)
		if err != nil || f.Type != fecframe.TypeSource {
			return false
		}
		mu.Lock()
		defer mu.Unlock()
		if !seen {
			first, seen = f.SSN, true
		}
		for _, o := range offsets {
			if f.SSN-first == o {
				return true
			}
		}
		return false
	}
}

func TestSlidingWindowGivesBuffersBackWhenQuiet(t *testing.T) {
	// A flow that pauses must not keep its window of buffers: a server has many
	// peers and one pool.
	defer goleak.VerifyNone(t)
	cfg := Config{Mode: Fixed, Data: 4, Parity: 1}
	l := newLink(t, cfg, cfg)
	defer l.close()
	l.aSock.setDrop(sourceAt(5))
	want := payloads(40, 700)
	l.send(t, want...)
	sameSet(t, l.collect(t, 40, 2*time.Second), want)
	// What stays: each Conn's batch of read buffers.
	idleA, idleB := int64(inBatchSize), int64(inBatchSize)
	if held := l.a.pool.out.Load() + l.b.pool.out.Load() - idleA - idleB; held < 10 {
		t.Fatalf("only %d buffers held right after the flow: the test proves nothing", held)
	}
	deadline := time.Now().Add(2 * time.Second)
	for l.a.pool.out.Load() > idleA || l.b.pool.out.Load() > idleB {
		if time.Now().After(deadline) {
			t.Fatalf("buffers out: sender %d (idle %d), receiver %d (idle %d)", l.a.pool.out.Load(), idleA, l.b.pool.out.Load(), idleB)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOversizedAndPoolExhaustedGoPlain(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := Config{Mode: Fixed, Data: 4, Parity: 1}
	l := newLink(t, cfg, cfg)
	defer l.close()
	big := bytes.Repeat([]byte{0x41}, fecframe.MaxPayload+1) // 0x41: QUIC fixed bit set
	l.send(t, big)
	got := l.collect(t, 1, time.Second)
	sameSet(t, got, [][]byte{big})
	if st := l.a.Stats(); st.DataSent != 0 {
		t.Fatalf("an oversized datagram was framed: %+v", st)
	}

	tiny := Config{Mode: Fixed, Data: 4, Parity: 1, MaxBuffers: 1}
	l2 := newLink(t, tiny, tiny)
	defer l2.close()
	want := payloads(6, 400)
	for i := range want {
		want[i][0] = 0x40 // sent plain when out of buffers: must look like QUIC
	}
	l2.send(t, want...)
	sameSet(t, l2.collect(t, 6, time.Second), want)
}

// TestAutoAdaptsToMeasuredLoss: the sender's shape follows the loss the receiver
// reports, up under loss and back down when the path is clean. Each phase sends
// until the shape has converged, within a generous bound, so a slow machine only
// makes it take longer.
func TestAutoAdaptsToMeasuredLoss(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newLink(t, Config{Mode: Auto}, Config{Mode: Auto})
	defer l.close()
	var mu sync.Mutex
	var count int
	lossy := true
	l.aSock.setDrop(func(b []byte) bool {
		mu.Lock()
		defer mu.Unlock()
		count++
		return lossy && fecframe.IsFramed(b) && count%10 == 0 // 10% of the data and parity
	})
	p := payloads(1, 1200)[0]
	sendUntil := func(done func(Stats) bool) Stats {
		end := time.Now().Add(30 * time.Second)
		for {
			st := l.a.Stats()
			if done(st) || time.Now().After(end) {
				return st
			}
			for range 10 {
				l.send(t, p)
			}
			time.Sleep(2 * time.Millisecond)
		drain:
			for {
				select {
				case <-l.delivered:
				default:
					break drain
				}
			}
		}
	}
	inRange := func(st Stats) bool { return st.PeerLoss >= 0.08 && st.PeerLoss <= 0.12 }
	st := sendUntil(func(st Stats) bool { return inRange(st) && st.Parity >= 8 })
	if !inRange(st) {
		t.Fatalf("peer-reported loss %.3f, want about 0.10 (%+v)", st.PeerLoss, st)
	}
	lossyParity := st.Parity
	if lossyParity < 8 {
		t.Fatalf("parity %d for a full group of %d at 10%% loss: too little", lossyParity, st.Data)
	}
	mu.Lock()
	lossy = false
	mu.Unlock()
	st = sendUntil(func(st Stats) bool { return st.Parity <= 2 })
	if st.Parity > 2 {
		t.Fatalf("parity %d on a clean path, was %d at 10%% loss (%+v)", st.Parity, lossyParity, st)
	}
	if st.RTT <= 0 || st.RTT > time.Second {
		t.Fatalf("round trip %v not measured", st.RTT)
	}
}

func TestCloseIsIdempotentAndStopsReads(t *testing.T) {
	defer goleak.VerifyNone(t)
	c, err := NewConn(listenLoopback(t), DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFrom(make([]byte, 1500))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ReadFrom returned no error after Close")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("ReadFrom still blocked after Close")
	}
}

func TestMalformedFramesAreDropped(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newLink(t, Config{Mode: Fixed, Data: 4, Parity: 1}, DefaultConfig())
	defer l.close()
	junk := [][]byte{
		{0x01, 1, 2},       // data (version 3, gone since 4)
		{0x02, 1, 2, 3},    // parity (version 3, gone since 4)
		{0x06, 1},          // source, truncated
		{0x07, 1, 2},       // repair, truncated
		{0x0f, 0, 0},       // unknown type
		{0x11, 0, 0},       // the old version 1
		{0x21, 0, 0},       // the old version 2
		{0x36, 0, 0},       // the old version 3
		{0x03, 0, 0, 0, 0}, // feedback, truncated
	}
	for _, j := range junk {
		l.aSock.UDPConn.WriteTo(j, l.bSock.LocalAddr())
	}
	want := payloads(4, 100)
	l.send(t, want...)
	sameSet(t, l.collect(t, 4, time.Second), want)
	if st := l.b.Stats(); st.Malformed != uint64(len(junk)) {
		t.Fatalf("malformed %d, want %d", st.Malformed, len(junk))
	}
}

// TestPeerTableBoundedAndExpired: a server keeps coding state for at most
// MaxPeers proven addresses (the rest are served plain) and forgets idle ones.
func TestPeerTableBoundedAndExpired(t *testing.T) {
	defer goleak.VerifyNone(t)
	srv, err := NewConn(listenLoopback(t), Config{Mode: Auto, MaxPeers: 2, PeerIdle: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := srv.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	for range 3 {
		c := listenLoopback(t)
		defer c.Close()
		srv.Prove(c.LocalAddr())
		c.UDPConn.WriteTo(fecframe.AppendHello(nil, 1), srv.LocalAddr())
	}
	if st := srv.Stats(); st.ProvenPeers != 2 || st.Peers != 2 {
		t.Fatalf("%d peers, %d proven, want the bound of 2", st.Peers, st.ProvenPeers)
	}
	deadline := time.Now().Add(5 * time.Second)
	deadline = time.Now().Add(5 * time.Second)
	for srv.Stats().Peers != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.Stats().Peers; n != 0 {
		t.Fatalf("%d peers after they went idle, want 0", n)
	}
	srv.Close()
	<-done
}

// On a path whose round trip is too short for the queueing delay to show
// congestion, a run of losses is a queue overflowing: it is counted as
// congestion and does not raise the parity, while isolated losses still count
// as random loss. On a longer path runs are random loss as before (bursty
// links), left to the delay signal. Synthetic arrivals at a constant one-way
// delay, so that only the rule is tested.
func TestBlindPathCountsLossRunsAsCongestion(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, tc := range []struct {
		name       string
		minRTT     time.Duration
		drop       func(seq int) bool
		congestion bool
	}{
		{"1 ms, isolated", time.Millisecond, func(n int) bool { return n%25 == 0 }, false},
		{"1 ms, runs of 4", time.Millisecond, func(n int) bool { return n%100 >= 96 }, true},
		{"50 ms, runs of 4", 50 * time.Millisecond, func(n int) bool { return n%100 >= 96 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := NewConn(listenLoopback(t), Config{Mode: Auto})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
			c.Prove(addr)
			p := c.peers.lookup(c, keyOf(addr), addr, noCreate, 0)
			p.minRTT.Store(int64(tc.minRTT))
			r := &p.recv
			now := 10 * time.Second
			r.mu.Lock()
			var lost uint64          // those a later arrival reveals
			for seq := range 10002 { // ends with an arrival in every case
				now += 10 * time.Microsecond
				if tc.drop(seq) {
					lost++
					continue
				}
				r.account(c, p, uint32(seq), stamp(now)-500, now)
			}
			r.mu.Unlock()
			if tc.drop(0) {
				lost-- // before the first arrival: nothing to count from
			}
			st := c.Stats()
			if tc.congestion && (st.CongestionLost != lost || st.Lost != 0) {
				t.Fatalf("runs of losses on a blind path: %d counted random, %d congestion, want all %d congestion", st.Lost, st.CongestionLost, lost)
			}
			if !tc.congestion && (st.Lost != lost || st.CongestionLost != 0) {
				t.Fatalf("%d counted random, %d congestion, want all %d random", st.Lost, st.CongestionLost, lost)
			}
		})
	}
}
