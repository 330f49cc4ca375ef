package endpoints

import (
	"time"

	"github.com/quic-go/quic-go"
)

// Flow-control windows sized for long fat links: a stream must be able to keep
// a bandwidth-delay product in flight (1 Gbit/s x 50 ms = 6 MB; 100 Mbit/s x
// 200 ms = 2.5 MB), and the connection window is what bounds the memory all
// tunnels of a session can pin on the receiver when applications read slowly.
const (
	initialStreamWindow     = 1 << 20
	maxStreamWindow         = 16 << 20
	initialConnectionWindow = 2 << 20
	maxConnectionWindow     = 64 << 20
)

// maxStreamsPerSession is the QUIC-level cap of concurrent tunnels a peer may
// open on one session (quic-go's default of 100 would block the 101st). The
// endpoint's own limits are checked below it.
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
