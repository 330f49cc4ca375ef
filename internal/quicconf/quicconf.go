// Package quicconf is the quic-go configuration of quictun's sessions, in one
// place: the endpoints run it, and the loss-recovery layer's tests and
// benchmarks measure it (recovery must not import endpoints). An endpoint over
// the recovery layer adds recovery.TuneQUICConfig; the server sets its
// handshake timeout and stream limit from its own settings.
package quicconf

import (
	"fmt"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/congestion"
)

// Flow-control windows. A stream must be able to keep a bandwidth-delay
// product in flight (100 Mbit/s x 200 ms = 2.5 MB; 1 Gbit/s x 20 ms the same):
// quic-go grows a stream's window from the initial size, doubling each round
// trip while its application keeps up, to MaxStreamWindow.
//
// The connection window is shared: every byte a tunnel's application has not
// read yet counts against it, and quic-go sends the peer new connection credit
// only after a quarter of the window has been read. So once the stuck tunnels
// of a session (applications that stopped reading) hold three quarters of the
// window, every other tunnel of that session stops for good. A stuck tunnel
// holds at most its stream window: the initial one if it stopped early, up to
// MaxStreamWindow if it had run fast before. quic-go grows the connection
// window only while the session reads fast, or to 1.5 x one stream's window,
// never to what its stuck streams hold, so the promise is made on the initial
// connection window alone: StuckTolerance tunnels stuck at the full stream
// window (or some 80 stuck at the initial one) leave a new tunnel a full
// stream window of credit. That caps the stream window: at 16 MiB, two stuck
// tunnels stalled a session.
//
// The connection window is also what bounds the memory that the tunnels of one
// session can pin on the receiver: a server holds at most MaxSessions x
// MaxConnectionWindow there. The server lets it grow past the initial size
// only for an authenticated session (AllowConnectionWindowIncrease): the
// initial size is what a stranger can claim.
//
// A slower start for one tunnel it is not: on a 100 Mbit/s link with a
// 200 ms round trip, one tunnel reaches 95 Mbit/s in its third second
// (slow start sets the pace) and moves 118 MiB in 12 s (TestLongFatLink).
const (
	InitialStreamWindow     = 256 << 10
	MaxStreamWindow         = 4 << 20
	InitialConnectionWindow = 32 << 20
	MaxConnectionWindow     = 64 << 20
)

// StuckTolerance is how many tunnels stuck at MaxStreamWindow a session
// carries while a new tunnel still gets a full stream window of connection
// credit (see the windows above).
const StuckTolerance = (InitialConnectionWindow*3/4 - MaxStreamWindow) / MaxStreamWindow

// MaxStreamsPerSession is the most concurrent tunnels a peer may open on one
// session at the QUIC level (quic-go's default of 100 would block the 101st).
// The server endpoint lowers it to its tunnel limit per session.
const MaxStreamsPerSession = 1 << 16

// Tunnel is a fresh copy of the configuration.
func Tunnel() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout: 5 * time.Second,
		MaxIdleTimeout:       30 * time.Second,
		KeepAlivePeriod:      10 * time.Second,
		// For the client endpoint's liveness probes.
		EnableDatagrams:                true,
		InitialStreamReceiveWindow:     InitialStreamWindow,
		MaxStreamReceiveWindow:         MaxStreamWindow,
		InitialConnectionReceiveWindow: InitialConnectionWindow,
		MaxConnectionReceiveWindow:     MaxConnectionWindow,
		MaxIncomingStreams:             MaxStreamsPerSession,
		MaxIncomingUniStreams:          -1,
		Congestion:                     congestion.New,
	}
}

// Congestion controllers a session's sender may run (--congestion).
const (
	// BBR is quictun's congestion package, the default: it paces at the
	// delivery rate and does not take loss for congestion.
	BBR = "bbr"
	// Reno is quic-go's own sender, which halves its window on each loss.
	Reno = "reno"
)

// SetCongestion makes qc's sender run the named controller ("" for BBR).
func SetCongestion(qc *quic.Config, name string) error {
	switch name {
	case "", BBR:
		qc.Congestion = congestion.New
	case Reno:
		qc.Congestion = nil
	default:
		return fmt.Errorf("congestion controller %q: want %s or %s", name, BBR, Reno)
	}
	return nil
}
