package quicconf

import "testing"

// The windows keep the promise their comment makes: four tunnels of a
// session stuck at the full stream window (issue 20: stopped after running
// fast on a long fat link) leave another tunnel a full stream window of
// connection credit from the initial connection window alone (quic-go may
// never grow it).
func TestWindowsLeaveRoomPastStuckTunnels(t *testing.T) {
	c := Tunnel()
	if StuckTolerance < 4 {
		t.Errorf("%d tunnels stuck at %d MiB stall a session, want at least 4", StuckTolerance+1, MaxStreamWindow>>20)
	}
	// quic-go stops granting connection credit once unread bytes reach three
	// quarters of the window.
	if left := int64(c.InitialConnectionReceiveWindow)*3/4 - StuckTolerance*int64(c.MaxStreamReceiveWindow); left < int64(c.MaxStreamReceiveWindow) {
		t.Errorf("past %d stuck tunnels a new one gets %d KiB of credit, want a stream window (%d KiB)", StuckTolerance, left>>10, c.MaxStreamReceiveWindow>>10)
	}
	if c.InitialStreamReceiveWindow > c.MaxStreamReceiveWindow || c.InitialConnectionReceiveWindow > c.MaxConnectionReceiveWindow {
		t.Errorf("windows out of order: stream %d..%d, connection %d..%d", c.InitialStreamReceiveWindow, c.MaxStreamReceiveWindow, c.InitialConnectionReceiveWindow, c.MaxConnectionReceiveWindow)
	}
}
