package recovery

import (
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quictun/quictun/codecs/fecframe"
)

// congestionFeed drives one peer's receiver directly with data frames on a
// made-up clock, so the test sets the queueing delay each datagram saw.
type congestionFeed struct {
	t    *testing.T
	c    *Conn
	p    *peer
	now  time.Duration
	seq  uint32
	ts   uint32
	held int // datagrams the receiver kept from quic-go
}

func newCongestionFeed(t *testing.T, minRTT time.Duration) *congestionFeed {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last, after the Conn is closed
	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewConn(u, Config{Mode: Auto})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	p := c.peers.lookup(c, keyOf(addr), addr, weSpoke, 0)
	p.minRTT.Store(int64(minRTT))
	return &congestionFeed{t: t, c: c, p: p, now: time.Second}
}

// feed delivers datagrams every 100 µs for d, each having waited q in the queue;
// skip leaves out that many sequence numbers first (a loss).
func (f *congestionFeed) feed(q, d time.Duration, skip int) {
	f.t.Helper()
	f.seq += uint32(skip)
	for end := f.now + d; f.now < end; f.now += 100 * time.Microsecond {
		buf := f.c.pool.get()
		if buf == nil {
			f.t.Fatal("pool empty")
		}
		fr := fecframe.Frame{
			Type:      fecframe.TypeData,
			Seq:       f.seq,
			Group:     f.seq / 32,
			Index:     uint8(f.seq % 32),
			Timestamp: stamp(f.now) - uint32(q/time.Microsecond) - 1000, // the sender's clock is offset
		}
		f.seq++
		deliver, kept := f.p.recv.onData(f.c, f.p, &fr, buf, f.now)
		if !deliver {
			f.held++
		}
		if !kept {
			f.c.pool.put(buf)
		}
	}
}

// A loss while the queue is full makes quic-go cut once by itself; the receiver
// then keeps back one datagram sent after that cut, so the congestion episode
// costs quic-go two cuts (0.49, standard TCP's response) instead of one (0.7).
func TestSecondCutOnCongestion(t *testing.T) {
	const minRTT = 50 * time.Millisecond
	f := newCongestionFeed(t, minRTT)
	f.feed(0, 300*time.Millisecond, 0)
	f.feed(25*time.Millisecond, 100*time.Millisecond, 0)
	f.feed(50*time.Millisecond, 200*time.Millisecond, 0) // a full one-BDP queue
	if f.held != 0 {
		t.Fatalf("%d datagrams held back before any loss", f.held)
	}
	f.feed(50*time.Millisecond, 10*time.Millisecond, 3) // the queue overflows
	if f.c.Stats().CongestionLost != 3 {
		t.Fatalf("congestion losses %d, want 3", f.c.Stats().CongestionLost)
	}
	// quic-go's cut applies to what it sends ~1 RTT (100 ms with the queue) after
	// the loss; a datagram held before that would fall in the same epoch.
	f.feed(50*time.Millisecond, 130*time.Millisecond, 2)
	if f.held != 0 {
		t.Fatalf("held a datagram %v after the loss, before quic-go's cut applies", 140*time.Millisecond)
	}
	f.feed(40*time.Millisecond, 50*time.Millisecond, 0)
	if f.held != 1 {
		t.Fatalf("held %d datagrams after quic-go's cut, want 1", f.held)
	}
	// More losses of the same episode do not cut again.
	f.feed(40*time.Millisecond, 100*time.Millisecond, 2)
	f.feed(30*time.Millisecond, 200*time.Millisecond, 0)
	if f.held != 1 {
		t.Fatalf("held %d datagrams in one episode, want 1", f.held)
	}
	if w := f.c.Stats().Withheld; w != 1 {
		t.Fatalf("Stats.Withheld = %d, want 1", w)
	}
	// A later episode gets its own second cut.
	f.feed(0, 500*time.Millisecond, 0)
	f.feed(50*time.Millisecond, 200*time.Millisecond, 0)
	f.feed(50*time.Millisecond, 300*time.Millisecond, 1)
	if f.held != 2 {
		t.Fatalf("held %d datagrams after two episodes, want 2", f.held)
	}
}

// With a queue shallower than the round trip, a second cut would leave the link
// idle (0.49 x (1 + q/RTT) < 0.9 of it), so the loss costs quic-go one cut only.
func TestNoSecondCutOnShallowQueue(t *testing.T) {
	const minRTT = 50 * time.Millisecond
	f := newCongestionFeed(t, minRTT)
	f.feed(0, 300*time.Millisecond, 0)
	f.feed(30*time.Millisecond, 300*time.Millisecond, 0) // a queue of 0.6 RTT, full
	f.feed(30*time.Millisecond, 10*time.Millisecond, 2)
	if f.c.Stats().CongestionLost != 2 {
		t.Fatalf("congestion losses %d, want 2", f.c.Stats().CongestionLost)
	}
	f.feed(30*time.Millisecond, 400*time.Millisecond, 0)
	if f.held != 0 {
		t.Fatalf("held %d datagrams on a shallow queue", f.held)
	}
}

// Random loss on a clear path is repaired and never cut for.
func TestNoSecondCutForRandomLoss(t *testing.T) {
	f := newCongestionFeed(t, 50*time.Millisecond)
	f.feed(0, 100*time.Millisecond, 0)
	for range 20 {
		f.feed(0, 50*time.Millisecond, 1)
	}
	if f.held != 0 || f.c.Stats().Lost != 20 {
		t.Fatalf("held %d, lost %d; want 0 held, 20 lost", f.held, f.c.Stats().Lost)
	}
}
