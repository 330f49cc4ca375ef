package quicconf

import (
	"testing"
	"time"
)

// quic-go keeps at most 128 received datagrams for the application; what
// arrives beyond while nobody reads is discarded, and the patch set counts it
// (ConnectionStats.DatagramsDropped, quictun_session_datagrams_dropped_total).
func TestUnreadDatagramsBeyondTheQueueAreCounted(t *testing.T) {
	s := newSession(t, Tunnel())
	defer s.stop()
	const n = 1000
	for i := range n {
		if err := s.cli.SendDatagram([]byte{byte(i), byte(i >> 8)}); err != nil {
			t.Fatal(err)
		}
	}
	// The server reads none: once they are in, all but 128 are dropped (a few
	// may be lost on a busy loopback, never more counted than that).
	deadline := time.Now().Add(10 * time.Second)
	for s.srv.ConnectionStats().DatagramsDropped < n-128-50 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := s.srv.ConnectionStats().DatagramsDropped; got < n-128-50 || got > n-128 {
		t.Fatalf("%d of %d unread datagrams counted as dropped, want %d (a few fewer if lost)", got, n, n-128)
	}
	if got := s.cli.ConnectionStats().DatagramsDropped; got != 0 {
		t.Fatalf("the sender counted %d dropped", got)
	}
}
