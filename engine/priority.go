package engine

import (
	"time"

	"github.com/quic-go/quic-go"
)

// Interactive first (issue 20): inside a session, quic-go sends the streams of
// a lower RFC 9218 urgency strictly first. A tunnel direction that writes
// small and rarely (keystrokes, a cursor, an echo) is sent at
// InteractiveUrgency, everything else at quic-go's default, so a keystroke
// never waits behind other tunnels' bulk data inside the sender. Strict
// priority is safe only for what is small: a direction stays interactive
// while its writes stay within a token bucket of interactiveBudget bytes per
// interactiveWindow (2 Mbit/s), and a protocol the sniffer calls interactive
// (SSH, RFB, SPICE's main, inputs and cursor channels) within four times that;
// past it, it is bulk until it has been quiet for a window.
const (
	// InteractiveUrgency is the urgency of interactive streams; quic-go's
	// default (3) is bulk's.
	InteractiveUrgency int8 = 2
	// BulkUrgency is quic-go's default urgency.
	BulkUrgency int8 = 3

	interactiveBudget      = 64 << 10
	interactiveProtoBudget = 4 * interactiveBudget
	interactiveWindow      = 250 * time.Millisecond
)

// Prioritized is a Side whose sends can be put ahead of the session's other
// streams (a QUIC stream). The pump that writes into it says whether what it
// writes is interactive, each time that changes.
type Prioritized interface {
	SetInteractive(on bool)
}

// SetStreamInteractive sends st at InteractiveUrgency (on) or BulkUrgency.
// Streams stay incremental: streams of one urgency share round-robin.
func SetStreamInteractive(st *quic.Stream, on bool) {
	u := BulkUrgency
	if on {
		u = InteractiveUrgency
	}
	st.SetPriority(u, true)
}

func (s *streamSide) SetInteractive(on bool) { SetStreamInteractive(s.stream, on) }

// interactiveProtocol says whether a sniffed protocol is interactive by
// nature: a shell, a remote desktop's input and control channels.
func interactiveProtocol(name string, props map[string]string) bool {
	switch name {
	case "ssh", "rfb":
		return true
	case "spice":
		switch props["channelType"] {
		case "main", "inputs", "cursor":
			return true
		}
	}
	return false
}

// writePace classifies one direction's writes as interactive or bulk: a token
// bucket of budget bytes refilled over interactiveWindow. A direction starts
// interactive (a new connection's first bytes are latency too), turns bulk on
// the write that overdraws the bucket, and interactive again on a write that
// finds the bucket full (it was quiet for a window). Only its pump touches it.
type writePace struct {
	tokens      float64
	last        time.Time
	bulk        bool
	initialized bool
}

// write accounts for n bytes written at now under budget and says whether
// the direction is interactive for them.
func (w *writePace) write(now time.Time, n int, budget int) bool {
	b := float64(budget)
	if !w.initialized {
		w.tokens, w.last, w.initialized = b, now, true
	}
	if dt := now.Sub(w.last); dt > 0 {
		w.tokens = min(b, w.tokens+b*dt.Seconds()/interactiveWindow.Seconds())
		w.last = now
	}
	if w.bulk && w.tokens >= b {
		w.bulk = false
	}
	w.tokens -= float64(n)
	if w.tokens < 0 {
		w.bulk = true
		w.tokens = max(w.tokens, -b) // a burst is forgotten after two windows at most
	}
	return !w.bulk
}
