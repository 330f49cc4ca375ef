package quicconf

import (
	"bytes"
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	qcc "github.com/quic-go/quic-go/congestion"

	"github.com/quictun/quictun/congestion"
)

// gate is quictun's sender with a window the test can shut, and the
// ack-eliciting packets it has in flight since tracking began (by number:
// quic-go hands one priorInFlight to every packet an ACK frame acks, and
// drops the handshake's packets with their keys, unannounced).
type gate struct {
	qcc.SendAlgorithm
	shut     *atomic.Bool
	inFlight *flight
}

type flight struct {
	sync.Mutex
	track bool
	pns   map[qcc.PacketNumber]bool
}

func (f *flight) set(pn qcc.PacketNumber, on bool) {
	f.Lock()
	defer f.Unlock()
	if on && f.track {
		f.pns[pn] = true
	} else {
		delete(f.pns, pn)
	}
}

func (f *flight) start() {
	f.Lock()
	defer f.Unlock()
	f.track = true
}

func (f *flight) empty() bool {
	f.Lock()
	defer f.Unlock()
	return len(f.pns) == 0
}

func (g gate) CanSend(b qcc.ByteCount) bool { return !g.shut.Load() && g.SendAlgorithm.CanSend(b) }

func (g gate) OnPacketSent(t qcc.Time, inFlight qcc.ByteCount, pn qcc.PacketNumber, n qcc.ByteCount, retransmittable bool) {
	if retransmittable {
		g.inFlight.set(pn, true)
	}
	g.SendAlgorithm.OnPacketSent(t, inFlight, pn, n, retransmittable)
}

func (g gate) OnPacketAcked(pn qcc.PacketNumber, acked, prior qcc.ByteCount, now qcc.Time) {
	g.inFlight.set(pn, false)
	g.SendAlgorithm.OnPacketAcked(pn, acked, prior, now)
}

func (g gate) OnCongestionEvent(pn qcc.PacketNumber, lost, prior qcc.ByteCount) {
	g.inFlight.set(pn, false)
	g.SendAlgorithm.OnCongestionEvent(pn, lost, prior)
}

// An urgent datagram (SendDatagramUrgent, a flow that sends little) goes
// before the bulk datagrams queued ahead of it, and past a congestion window
// that is full: here shut, with nothing in flight, so no loss timer can send
// anything either; at most 8 such packets until it opens, when the bulk one
// follows.
func TestUrgentDatagramPassesAShutWindow(t *testing.T) {
	var shut atomic.Bool
	inFlight := &flight{pns: map[qcc.PacketNumber]bool{}}
	qc := Tunnel()
	qc.KeepAlivePeriod = 0
	qc.Congestion = func(rtt qcc.RTTStats, mss qcc.ByteCount) qcc.SendAlgorithm {
		return gate{SendAlgorithm: congestion.New(rtt, mss), shut: &shut, inFlight: inFlight}
	}
	s := newSession(t, qc)
	defer s.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	receive := func() []byte {
		t.Helper()
		d, err := s.srv.ReceiveDatagram(ctx)
		if err != nil {
			t.Fatalf("no datagram: %v", err)
		}
		return d
	}
	if err := s.cli.SendDatagram([]byte("warm")); err != nil {
		t.Fatal(err)
	}
	receive()
	// From a 1-RTT packet on: once the tracked ones are acked or lost, so is
	// everything sent before them.
	inFlight.start()
	if err := s.cli.SendDatagram([]byte("warm again")); err != nil {
		t.Fatal(err)
	}
	receive()
	// Nothing in flight: no loss timer is armed that could send anything.
	settled := func() {
		t.Helper()
		for !inFlight.empty() {
			if ctx.Err() != nil {
				t.Fatal("the packets sent were never all acked")
			}
			time.Sleep(time.Millisecond)
		}
	}
	settled()
	shut.Store(true)
	bulk := []byte("bulk")
	if err := s.cli.SendDatagram(bulk); err != nil {
		t.Fatal(err)
	}
	// A sender of urgent datagrams cannot take the window for itself: each
	// goes in a packet of its own (the one before acked), and the ninth waits.
	for i := range 9 {
		urgent := []byte{'u', byte('0' + i)}
		if err := s.cli.SendDatagramUrgent(urgent); err != nil {
			t.Fatal(err)
		}
		if i == 8 {
			break
		}
		if d := receive(); !bytes.Equal(d, urgent) {
			t.Fatalf("got %q while the window was shut, want urgent datagram %d", d, i)
		}
		settled()
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if d, err := s.srv.ReceiveDatagram(short); err == nil {
		t.Fatalf("got %q past the 8 urgent packets a shut window lets through", d)
	}
	shut.Store(false)
	if err := s.cli.SendDatagram([]byte("nudge")); err != nil { // the run loop looks again
		t.Fatal(err)
	}
	if d := receive(); !bytes.Equal(d, []byte("u8")) {
		t.Fatalf("got %q first once the window opened, want the waiting urgent datagram", d)
	}
	if d := receive(); !bytes.Equal(d, bulk) {
		t.Fatalf("got %q once the window opened, want the bulk datagram", d)
	}
}
