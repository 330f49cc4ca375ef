package api

import (
	"time"

	"github.com/quictun/quictun/engine"
)

// tunnelJSON is one tunnel as the API shows it. The first fields are those of
// the original quic-tun, with the same names, so existing tooling keeps
// working; the rest are what operators asked for since.
type tunnelJSON struct {
	UUID               string            `json:"uuid"`
	StreamID           int64             `json:"streamId"`
	Endpoint           string            `json:"endpoint"`
	Forward            string            `json:"forward,omitempty"`
	Direction          string            `json:"direction"` // forward or reverse
	ClientAppAddr      string            `json:"clientAppAddr,omitempty"`
	ServerAppAddr      string            `json:"serverAppAddr"`
	RemoteEndpointAddr string            `json:"remoteEndpointAddr"`
	Identity           string            `json:"identity,omitempty"`
	CreatedAt          string            `json:"createdAt"`
	Protocol           string            `json:"protocol"`
	ProtocolProperties map[string]string `json:"protocolProperties"`

	State          string  `json:"state"`
	BytesUp        uint64  `json:"bytesUp"`
	BytesDown      uint64  `json:"bytesDown"`
	RateUpBps      float64 `json:"rateUpBytesPerSecond"`
	RateDownBps    float64 `json:"rateDownBytesPerSecond"`
	LastActivityAt string  `json:"lastActivityAt"`
	// Interactive: this endpoint sends the tunnel ahead of bulk ones (it
	// writes small and rarely).
	Interactive bool `json:"interactive"`

	// Of a UDP flow only (protocol "udp"): datagrams each way, and those lost
	// on the way through quictun (queues full, a fragment lost, too large).
	PacketsUp   *uint64 `json:"packetsUp,omitempty"`
	PacketsDown *uint64 `json:"packetsDown,omitempty"`
	Drops       *uint64 `json:"drops,omitempty"`
}

func toJSON(s engine.Snapshot) tunnelJSON {
	j := tunnelJSON{
		UUID: s.ID.String(), StreamID: s.Info.StreamID, Endpoint: string(s.Info.Endpoint),
		Forward: s.Info.Forward, Direction: "forward",
		ClientAppAddr: s.Info.ClientAppAddr, ServerAppAddr: s.Info.ServerAppAddr,
		RemoteEndpointAddr: s.Info.RemoteEndpointAddr, Identity: s.Info.Identity,
		CreatedAt: s.CreatedAt.Format(time.RFC3339Nano),
		Protocol:  s.Protocol, ProtocolProperties: s.Props,
		State: string(s.State), BytesUp: s.BytesUp, BytesDown: s.BytesDown,
		RateUpBps: s.UpBps, RateDownBps: s.DownBps, Interactive: s.Interactive,
	}
	if s.Info.Direction != "" {
		j.Direction = s.Info.Direction
	}
	if s.Datagrams {
		j.PacketsUp, j.PacketsDown, j.Drops = &s.PacketsUp, &s.PacketsDown, &s.Dropped
	}
	if !s.LastActivity.IsZero() {
		j.LastActivityAt = s.LastActivity.Format(time.RFC3339Nano)
	}
	return j
}
