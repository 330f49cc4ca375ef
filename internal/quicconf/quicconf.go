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
// product in flight, and on a lossy long path more: a hole that quic-go must
// resend holds the stream's window for two to three round trips (100 Mbit/s x
// 200 ms at 5% loss: 56.9 Mbit/s with 16 MiB, 45.5 with 4 MiB). quic-go grows
// a stream's window from the initial size, doubling each round trip while its
// application keeps up, to MaxStreamWindow.
//
// The connection window is shared: every byte a tunnel's application has not
// read counts against it. quictun's quic-go (third_party, patch set) keeps it
// at the sum of the windows of the streams that can still receive plus two
// MaxStreamWindows, and lets a stream's window grow only while the
// connection window can follow (up to MaxConnectionWindow). So however long
// the stuck tunnels of a session (applications that stopped reading) hold
// their windows, the others keep theirs, and a new tunnel finds a full stream
// window of credit: StuckTolerance tunnels stuck at the full stream window,
// or some 570 stuck at the initial one. Past that, new tunnels keep smaller
// windows (slower on long fat paths); only when the initial windows of the
// stuck tunnels alone near MaxConnectionWindow (some 750) can a session
// stall again.
//
// The connection window is also what bounds the memory that the tunnels of one
// session can pin on the receiver: a server holds at most MaxSessions x
// MaxConnectionWindow there. The server lets it grow past the initial size
// only for an authenticated session (AllowConnectionWindowIncrease): the
// initial size is what a stranger can claim.
//
// A slower start for one tunnel it is not: on a 100 Mbit/s link with a
// 200 ms round trip, one tunnel reaches 72 Mbit/s in its third second and 94
// in its fourth (slow start sets the pace) and moves 112 MiB in 12 s
// (TestLongFatLink); past 9 tunnels stuck after running fast there (138 MiB
// held), a new one echoes 8 MiB in 1.6 s (TestStuckAfterRunningFast).
const (
	InitialStreamWindow     = 256 << 10
	MaxStreamWindow         = 16 << 20
	InitialConnectionWindow = 32 << 20
	MaxConnectionWindow     = 192 << 20
)

// StuckTolerance is how many tunnels stuck at MaxStreamWindow a session
// carries while a new tunnel's window still grows to MaxStreamWindow: a
// stream window grows only while the connection window can stay two stream
// windows above their sum (see the windows above).
const StuckTolerance = MaxConnectionWindow/MaxStreamWindow - 3

// MaxStreamsPerSession is the most concurrent tunnels a peer may open on one
// session at the QUIC level (quic-go's default of 100 would block the 101st).
// The server endpoint lowers it to its tunnel limit per session.
const MaxStreamsPerSession = 1 << 16

// DatagramReceiveQueue is how many received QUIC datagrams quic-go keeps for
// a session's datagram receiver once the peer has proved itself (a server's
// session after its hello, a client's with the server it verified):
// quic-go's own 128 are 25 ms of a 50 Mbit/s UDP flow, and a receiver
// descheduled that long on a busy host dropped WireGuard's datagrams after
// the recovery layer had repaired them. Each holds one packet's payload
// (under 1.5 KiB): at most 1.5 MiB a session. A stranger keeps quic-go's 128.
const DatagramReceiveQueue = 1024

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
