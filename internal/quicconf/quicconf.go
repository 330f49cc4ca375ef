// Package quicconf is the quic-go configuration of quictun's sessions, in one
// place: the endpoints run it, and the loss-recovery layer's tests and
// benchmarks measure it (recovery must not import endpoints). An endpoint over
// the recovery layer adds recovery.TuneQUICConfig; the server sets its
// handshake timeout and stream limit from its own settings.
package quicconf

import (
	"time"

	"github.com/quic-go/quic-go"
)

// Flow-control windows. A stream must be able to keep a bandwidth-delay
// product in flight (1 Gbit/s x 50 ms = 6 MB; 100 Mbit/s x 200 ms = 2.5 MB):
// quic-go grows a stream's window from the initial size, doubling each round
// trip while its application keeps up, to maxStreamWindow.
//
// The connection window is shared: every byte a tunnel's application has not
// read yet counts against it, so tunnels whose applications stop reading can
// stall the others of their session (measured with the old 1 MiB stream and
// 2 MiB connection windows: two such tunnels did). A stuck tunnel holds its
// stream window, which stays at the initial size unless it ran fast before,
// so the initial stream window is small and the connection window starts
// large: about 128 tunnels that stopped reading fill it (measured: 64 on
// each side leave a session working, 128 stall it), as do 4 that stopped
// after running at full speed with 16 MiB windows. The connection window is
// also what bounds the memory the tunnels of one session can pin on the
// receiver; the price of starting it large is that a peer can make the
// server hold 32 MiB from its first round trip (2 MiB before), also before it
// has proved its secret (which it must within the handshake timeout). The
// bound for a server stays MaxSessions x maxConnectionWindow.
//
// A slower start for one tunnel it is not: on a 100 Mbit/s link with a
// 200 ms round trip, one tunnel reaches 95 Mbit/s in its third second with
// these windows as with 1 MiB/2 MiB ones (slow start sets the pace), and
// moves the same 118 MiB in 12 s (TestLongFatLink).
const (
	initialStreamWindow     = 256 << 10
	maxStreamWindow         = 16 << 20
	initialConnectionWindow = 32 << 20
	maxConnectionWindow     = 64 << 20
)

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
		InitialStreamReceiveWindow:     initialStreamWindow,
		MaxStreamReceiveWindow:         maxStreamWindow,
		InitialConnectionReceiveWindow: initialConnectionWindow,
		MaxConnectionReceiveWindow:     maxConnectionWindow,
		MaxIncomingStreams:             MaxStreamsPerSession,
		MaxIncomingUniStreams:          -1,
	}
}
