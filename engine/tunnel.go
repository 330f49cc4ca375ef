package engine

import (
	"context"
	"errors"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
)

// Endpoint says on which side of the QUIC session a tunnel is seen.
type Endpoint string

const (
	ClientEndpoint Endpoint = "client"
	ServerEndpoint Endpoint = "server"
)

// Info is what is known about a tunnel when it opens. Only the stream can
// change after (see SetStream); Info itself never does.
type Info struct {
	Endpoint           Endpoint
	StreamID           int64
	ClientAppAddr      string // the application connection on the client endpoint ("" on the server)
	ServerAppAddr      string // the server application (target) address
	RemoteEndpointAddr string // the UDP address of the other endpoint
	// Session identifies the QUIC session the tunnel rides on, so tunnels can be
	// grouped and limited per session.
	Session string
	// Forward names the client's forward the application connected to ("" on
	// the server).
	Forward string
	// Identity names the client the server authenticated ("" when it
	// authenticates nobody, and on the client).
	Identity string
	// Direction is DirectionReverse for a tunnel of a reverse forward (the
	// application connected to the server's listener, the target is on the
	// client's side); "" is the forward direction.
	Direction string
}

// DirectionReverse marks a reverse forward's tunnel (Info.Direction).
const DirectionReverse = "reverse"

// State is where a tunnel is in its life.
type State string

const (
	StateOpen      State = "open"        // both directions flowing
	StateHalfClose State = "half-closed" // one direction ended cleanly, the other flows
	StateClosing   State = "closing"     // torn down, waiting for the pumps
)

// Tunnel is one application connection carried on one QUIC stream. Its
// counters are atomics written by the pumps and read by the API without locks.
type Tunnel struct {
	ID        uuid.UUID
	Info      Info
	CreatedAt time.Time

	bytesUp      atomic.Uint64 // client application -> server application
	bytesDown    atomic.Uint64 // server application -> client application
	lastActivity atomic.Int64  // unix nanoseconds of the last chunk either way
	// Of a flow of datagrams (RunFlow): datagrams each way, and those lost
	// on the way (queues full, a fragment missing, too large) as its sides
	// report them.
	datagrams                       atomic.Bool
	packetsUp, packetsDown, dropped atomic.Uint64
	halfClosed                      atomic.Bool
	closing                         atomic.Bool
	// interactive: this endpoint sends the tunnel's stream ahead of bulk
	// (priority.go); interactiveProto: the sniffer found an interactive protocol.
	interactive, interactiveProto atomic.Bool

	// stream is the current stream when it is no longer the one in Info (a
	// client's tunnel replayed on a new session); nil until then.
	stream atomic.Pointer[streamRef]

	sniffed struct {
		sync.Mutex
		protocol string
		props    map[string]string
	}

	rate struct { // set by the registry's sampler, see sampleRate
		sync.Mutex
		at       time.Time // of the previous sample
		up, down uint64    // the counters then
		upBps    float64
		downBps  float64
	}

	// ctx bounds the tunnel's life; kill cancels it with a cause (an operator's
	// kill, the endpoint's shutdown, the first pump error).
	ctx  context.Context
	kill context.CancelCauseFunc
	reg  *Registry
}

// ErrKilled is the cause of a tunnel closed by an operator.
var ErrKilled = errors.New("closed by operator")

// Kill closes the tunnel: both the application and the stream are aborted.
func (t *Tunnel) Kill() { t.kill(ErrKilled) }

// Shut closes the tunnel as Kill does, because its endpoint stops.
func (t *Tunnel) Shut() { t.kill(ErrShutdown) }

// streamRef is the stream a tunnel rides on now.
type streamRef struct {
	id     int64
	remote string
}

// SetStream records that the tunnel now rides on another stream: the client
// replays a tunnel whose session turned out dead on the next one. Snapshots
// show the new stream's ID and remote endpoint address from then on.
func (t *Tunnel) SetStream(streamID int64, remoteEndpointAddr string) {
	t.stream.Store(&streamRef{id: streamID, remote: remoteEndpointAddr})
}

// SetProtocol records what the sniffer found.
func (t *Tunnel) SetProtocol(name string, props map[string]string) {
	t.sniffed.Lock()
	t.sniffed.protocol = name
	t.sniffed.props = maps.Clone(props)
	t.sniffed.Unlock()
	t.interactiveProto.Store(interactiveProtocol(name, props))
}

// Protocol returns the sniffed protocol name ("" until known) and a copy of its
// properties.
func (t *Tunnel) Protocol() (string, map[string]string) {
	t.sniffed.Lock()
	defer t.sniffed.Unlock()
	return t.sniffed.protocol, maps.Clone(t.sniffed.props)
}

// Dropped records n datagrams of a flow lost on the way: its sides call it.
func (t *Tunnel) Dropped(n int) { t.dropped.Add(uint64(n)) }

// Datagrams says whether the tunnel is a flow of datagrams (RunFlow).
func (t *Tunnel) Datagrams() bool { return t.datagrams.Load() }

// Packets are a flow's datagrams carried up and down, and those dropped.
func (t *Tunnel) Packets() (up, down, dropped uint64) {
	return t.packetsUp.Load(), t.packetsDown.Load(), t.dropped.Load()
}

// BytesUp is the count of bytes carried from the client application to the
// server application so far.
func (t *Tunnel) BytesUp() uint64 { return t.bytesUp.Load() }

// BytesDown is the count of bytes carried from the server application to the
// client application so far.
func (t *Tunnel) BytesDown() uint64 { return t.bytesDown.Load() }

// State is the tunnel's current state.
func (t *Tunnel) State() State {
	switch {
	case t.closing.Load():
		return StateClosing
	case t.halfClosed.Load():
		return StateHalfClose
	default:
		return StateOpen
	}
}

// Snapshot is a point-in-time copy of a tunnel for the API.
type Snapshot struct {
	ID           uuid.UUID
	Info         Info
	CreatedAt    time.Time
	State        State
	Protocol     string
	Props        map[string]string
	BytesUp      uint64
	BytesDown    uint64
	UpBps        float64 // bytes per second over the registry's last sampling interval (RateInterval)
	DownBps      float64
	LastActivity time.Time
	// Of a flow of datagrams (Datagrams set): datagrams each way and dropped.
	Datagrams              bool
	PacketsUp, PacketsDown uint64
	Dropped                uint64
	// Interactive: this endpoint sends the tunnel's stream ahead of bulk ones
	// now (it writes small and rarely).
	Interactive bool
}

// sampleRate sets the tunnel's rates to what it carried since the previous
// sample (or since it opened), per second. Only the registry's sampler calls
// it; the lock keeps readers from seeing half an update.
func (t *Tunnel) sampleRate(now time.Time) {
	up, down := t.bytesUp.Load(), t.bytesDown.Load()
	t.rate.Lock()
	defer t.rate.Unlock()
	if t.rate.at.IsZero() {
		t.rate.at = t.CreatedAt
	}
	dt := now.Sub(t.rate.at).Seconds()
	if dt <= 0 {
		return
	}
	t.rate.upBps = float64(up-t.rate.up) / dt
	t.rate.downBps = float64(down-t.rate.down) / dt
	t.rate.at, t.rate.up, t.rate.down = now, up, down
}

// Snapshot copies the tunnel's state. It changes nothing, so any number of
// readers see the same rates.
func (t *Tunnel) Snapshot() Snapshot {
	up, down := t.bytesUp.Load(), t.bytesDown.Load()
	t.rate.Lock()
	upBps, downBps := t.rate.upBps, t.rate.downBps
	t.rate.Unlock()
	proto, props := t.Protocol()
	var last time.Time
	if ns := t.lastActivity.Load(); ns != 0 {
		last = time.Unix(0, ns)
	}
	info := t.Info
	if st := t.stream.Load(); st != nil {
		info.StreamID, info.RemoteEndpointAddr = st.id, st.remote
	}
	return Snapshot{
		ID: t.ID, Info: info, CreatedAt: t.CreatedAt, State: t.State(),
		Protocol: proto, Props: props,
		BytesUp: up, BytesDown: down, UpBps: upBps, DownBps: downBps,
		LastActivity: last,
		Datagrams:    t.datagrams.Load(),
		PacketsUp:    t.packetsUp.Load(), PacketsDown: t.packetsDown.Load(), Dropped: t.dropped.Load(),
		Interactive: t.interactive.Load(),
	}
}
