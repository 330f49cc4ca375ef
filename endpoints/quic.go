package endpoints

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

// maxStreamsPerSession is the most concurrent tunnels a peer may open on one
// session at the QUIC level (quic-go's default of 100 would block the 101st).
// The server lowers it to its tunnel limit per session (see serverQUICConfig).
const maxStreamsPerSession = 1 << 16

// probePeriod is how often the client sends a liveness probe on an otherwise
// quiet session, and probeSize its size: a restarted server answers a packet
// of an unknown session with a stateless reset only when the packet is larger
// than a reset could be (quic-go: 42 bytes), which QUIC's own keep-alive PINGs
// are not. A probe of probeSize bytes is, so a tunnel with nothing in flight
// learns within probePeriod that its server restarted instead of hanging until
// the idle timeout.
const (
	probePeriod = 5 * time.Second
	probeSize   = 64
)

// quicConfig is the QUIC configuration of both endpoints.
func quicConfig() *quic.Config {
	return &quic.Config{
		HandshakeIdleTimeout: 5 * time.Second,
		MaxIdleTimeout:       30 * time.Second,
		KeepAlivePeriod:      10 * time.Second,
		// For the client's liveness probes, see probePeriod.
		EnableDatagrams:                true,
		InitialStreamReceiveWindow:     initialStreamWindow,
		MaxStreamReceiveWindow:         maxStreamWindow,
		InitialConnectionReceiveWindow: initialConnectionWindow,
		MaxConnectionReceiveWindow:     maxConnectionWindow,
		MaxIncomingStreams:             maxStreamsPerSession,
		MaxIncomingUniStreams:          -1,
	}
}
