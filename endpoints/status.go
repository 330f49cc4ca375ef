package endpoints

import (
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/recovery"
)

// Status is what an endpoint reports about its sessions and its loss-recovery
// layer, for the API's /sessions.
type Status struct {
	Sessions []SessionStatus `json:"sessions"`
	// Recovery is nil when the endpoint runs without the loss-recovery layer.
	Recovery *RecoveryStatus `json:"recovery"`
}

// SessionStatus is one QUIC session as quic-go sees it.
type SessionStatus struct {
	Remote           string  `json:"remoteEndpointAddr"`
	SmoothedRTTMs    float64 `json:"smoothedRttMs"`
	MinRTTMs         float64 `json:"minRttMs"`
	CongestionWindow uint64  `json:"congestionWindowBytes"`
	PacketsSent      uint64  `json:"packetsSent"`
	PacketsLost      uint64  `json:"packetsLost"`
	PacketsReceived  uint64  `json:"packetsReceived"`
}

// RecoveryStatus is the loss-recovery layer's counters.
type RecoveryStatus struct {
	DatagramsSent     uint64  `json:"datagramsSent"`
	DatagramsReceived uint64  `json:"datagramsReceived"`
	ParitySent        uint64  `json:"paritySent"`
	LostRandom        uint64  `json:"lostRandom"`
	LostCongestion    uint64  `json:"lostCongestion"`
	LostAmbiguous     uint64  `json:"lostAmbiguous"`
	Repaired          uint64  `json:"repaired"`
	Unrepaired        uint64  `json:"unrepaired"`
	Overhead          float64 `json:"overhead"`
	PeerLoss          float64 `json:"peerLoss"`
	RepairDelayMs     float64 `json:"repairDelayMs"`
	GroupData         int     `json:"groupData"`
	GroupParity       int     `json:"groupParity"`
	FramedPeers       int     `json:"framedPeers"`
}

func status(conns []*quic.Conn, rec *recovery.Conn) Status {
	st := Status{Sessions: make([]SessionStatus, 0, len(conns))}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, c := range conns {
		cs := c.ConnectionStats()
		st.Sessions = append(st.Sessions, SessionStatus{
			Remote: c.RemoteAddr().String(), SmoothedRTTMs: ms(cs.SmoothedRTT), MinRTTMs: ms(cs.MinRTT),
			CongestionWindow: cs.CongestionWindow, PacketsSent: cs.PacketsSent,
			PacketsLost: cs.PacketsLost, PacketsReceived: cs.PacketsReceived,
		})
	}
	if rec != nil {
		r := rec.Stats()
		st.Recovery = &RecoveryStatus{
			DatagramsSent: r.DatagramsSent, DatagramsReceived: r.DatagramsReceived,
			ParitySent: r.ParitySent,
			LostRandom: r.Lost, LostCongestion: r.CongestionLost, LostAmbiguous: r.AmbiguousLost,
			Repaired: r.Repaired, Unrepaired: r.Unrepaired, Overhead: r.Overhead, PeerLoss: r.PeerLoss,
			RepairDelayMs: ms(r.RepairDelay), GroupData: r.Data, GroupParity: r.Parity, FramedPeers: r.FramedPeers,
		}
	}
	return st
}

// Status reports the server's sessions and loss-recovery layer.
func (s *Server) Status() any { return status(s.liveSessions(), s.rec) }

// Status reports the client's session and loss-recovery layer.
func (c *Client) Status() any { return status(c.sessions.live(), c.rec) }
