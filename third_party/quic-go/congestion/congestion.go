// Package congestion lets a program run a congestion controller of its own
// in quic-go. It is part of quictun's patch set (third_party/README.md):
// stock quic-go always runs its Reno sender.
package congestion

import (
	"time"

	"github.com/quic-go/quic-go/internal/congestion"
	"github.com/quic-go/quic-go/internal/monotime"
	"github.com/quic-go/quic-go/internal/protocol"
)

type (
	// ByteCount is a number of bytes.
	ByteCount = protocol.ByteCount
	// PacketNumber is a QUIC packet number.
	PacketNumber = protocol.PacketNumber
	// Time is quic-go's monotonic clock reading.
	Time = monotime.Time
	// SendAlgorithm is what quic-go asks of a congestion controller.
	SendAlgorithm = congestion.SendAlgorithmWithDebugInfos
)

// RTTStats are the connection's round-trip estimates, as quic-go keeps them.
type RTTStats interface {
	MinRTT() time.Duration
	SmoothedRTT() time.Duration
	LatestRTT() time.Duration
}

// New makes the controller of a connection (and of each new path it
// migrates to), starting with packets of initialMaxDatagramSize bytes.
type New func(rtt RTTStats, initialMaxDatagramSize ByteCount) SendAlgorithm

// Now is the time on quic-go's clock.
func Now() Time { return monotime.Now() }
