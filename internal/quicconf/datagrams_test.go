package quicconf

import (
	"context"
	"net"
	"testing"
	"time"
)

// quic-go keeps at most 128 received datagrams for the application, or as
// many as SetDatagramReceiveQueue says (the endpoints' DatagramReceiveQueue
// for a proven peer); what arrives beyond while nobody reads is discarded,
// and the patch set counts it (ConnectionStats.DatagramsDropped,
// quictun_session_datagrams_dropped_total).
func TestUnreadDatagramsBeyondTheQueueAreCounted(t *testing.T) {
	for _, queue := range []int{0, 512} {
		s := newSession(t, Tunnel())
		kept := 128
		if queue > 0 {
			s.srv.SetDatagramReceiveQueue(queue)
			kept = queue
		}
		const n = 1000
		for i := range n {
			if err := s.cli.SendDatagram([]byte{byte(i), byte(i >> 8)}); err != nil {
				t.Fatal(err)
			}
		}
		// The server reads none: once they are in, all but the queue's are
		// dropped (a few may be lost on a busy loopback, never more counted
		// than that).
		want := uint64(n - kept)
		deadline := time.Now().Add(10 * time.Second)
		for s.srv.ConnectionStats().DatagramsDropped < want-50 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := s.srv.ConnectionStats().DatagramsDropped; got < want-50 || got > want {
			t.Errorf("queue %d: %d of %d unread datagrams counted as dropped, want %d (a few fewer if lost)", kept, got, n, want)
		}
		if got := s.cli.ConnectionStats().DatagramsDropped; got != 0 {
			t.Errorf("queue %d: the sender counted %d dropped", kept, got)
		}
		s.stop()
	}
}

// A sender that hands quic-go datagrams faster than its congestion window
// lets them out waits for room in the send queue (32): counted, with the
// time it waited, so that a flow's delay can be told from the link's. 1000
// datagrams of 1000 bytes are 20 initial windows: a loop that only copies
// them is always ahead of a sender that must wait for acks.
func TestDatagramSendWaitsAreCounted(t *testing.T) {
	s := newSession(t, Tunnel())
	defer s.stop()
	msg := make([]byte, 1000)
	for range 1000 {
		if err := s.cli.SendDatagram(msg); err != nil {
			t.Fatal(err)
		}
	}
	st := s.cli.ConnectionStats()
	if st.DatagramsSendWaits == 0 || st.DatagramsSendWait <= 0 {
		t.Fatalf("%d waits of %v in all counted, want some", st.DatagramsSendWaits, st.DatagramsSendWait)
	}
	if st.DatagramsSendWaits > 1000-32 {
		t.Fatalf("%d waits counted for 1000 datagrams, at most %d can have waited", st.DatagramsSendWaits, 1000-32)
	}
	if st.DatagramsSendDropped != 0 {
		t.Fatalf("%d datagrams dropped unsent", st.DatagramsSendDropped)
	}
}

// duplicating sends every packet twice.
type duplicating struct{ net.PacketConn }

func (d duplicating) WriteTo(p []byte, addr net.Addr) (int, error) {
	if _, err := d.PacketConn.WriteTo(p, addr); err != nil {
		return 0, err
	}
	return d.PacketConn.WriteTo(p, addr)
}

// A packet quic-go has already seen is dropped and counted: the counter that
// tells a recovery layer's repair that came too late from a datagram lost
// further up.
func TestDuplicatePacketsAreCounted(t *testing.T) {
	s := newWrappedSession(t, Tunnel(), func(c net.PacketConn) net.PacketConn { return duplicating{c} })
	defer s.stop()
	// One datagram at a time, each read before the next is sent: the server
	// handles packets in the order they came, so once the second datagram is
	// read, the copy of the first one's packet has been handled.
	for i := range 2 {
		if err := s.cli.SendDatagram([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := s.srv.ReceiveDatagram(ctx)
		cancel()
		if err != nil {
			t.Fatalf("datagram %d did not arrive: %v", i, err)
		}
	}
	if st := s.srv.ConnectionStats(); st.PacketsDroppedDuplicate == 0 {
		t.Fatalf("no duplicate counted of %d packets received, each sent twice", st.PacketsReceived)
	}
}
