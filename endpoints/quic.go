package endpoints

import (
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/internal/quicconf"
)

// maxStreamsPerSession: see quicconf.MaxStreamsPerSession.
const maxStreamsPerSession = quicconf.MaxStreamsPerSession

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

// quicConfig is the QUIC configuration of both endpoints, shared with the
// loss-recovery layer's tests and benchmarks (internal/quicconf, where the
// flow-control windows are explained).
func quicConfig() *quic.Config { return quicconf.Tunnel() }

// quicConfigFor is quicConfig whose sender runs the named congestion controller.
func quicConfigFor(congestion string) (*quic.Config, error) {
	qc := quicconf.Tunnel()
	return qc, quicconf.SetCongestion(qc, congestion)
}
