package endpoints

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"

	"github.com/quic-go/quic-go"
)

// maxPendingHandshakes is how many handshakes the server carries at once
// before it asks new clients to prove their address first.
const maxPendingHandshakes = 64

// handshakeGate bounds what half-open handshakes cost the server. quic-go
// creates a connection (two goroutines and its buffers) for every Initial
// packet from a new address and keeps it until the handshake completes or its
// timeout passes, so a flood of Initials, from spoofed addresses or many
// source ports, would hold thousands. The gate counts the handshakes in
// progress; past maxPendingHandshakes, quic-go answers new attempts with a
// Retry (RFC 9000 section 8.1.2), which costs it no state: only a client that
// receives at its address, and returns the Retry's token, gets a connection.
// A real client pays one extra round trip while the server is crowded.
type handshakeGate struct {
	limit   int64
	log     *slog.Logger
	pending atomic.Int64 // connections created and not yet accepted or ended
	retry   atomic.Bool  // whether the last attempt was sent a Retry, to log changes
}

type handshakeDoneKey struct{}

// started is quic-go's ConnContext: a connection was created for a client.
// It counts until the server accepts it or it ends, whichever comes first.
func (g *handshakeGate) started(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	g.pending.Add(1)
	var once sync.Once
	done := func() { once.Do(func() { g.pending.Add(-1) }) }
	context.AfterFunc(ctx, done)
	return context.WithValue(ctx, handshakeDoneKey{}, done), nil
}

// accepted ends the count of a connection the listener handed over.
func (g *handshakeGate) accepted(conn *quic.Conn) {
	if done, ok := conn.Context().Value(handshakeDoneKey{}).(func()); ok {
		done()
	}
}

// crowded is quic-go's VerifySourceAddress: true sends the attempt a Retry.
func (g *handshakeGate) crowded(net.Addr) bool {
	crowded := g.pending.Load() >= g.limit
	if g.retry.Swap(crowded) != crowded {
		if crowded {
			g.log.Warn("many handshakes in progress: new clients must prove their address first (QUIC Retry)", "pending", g.pending.Load())
		} else {
			g.log.Info("handshakes back to normal: no Retry", "pending", g.pending.Load())
		}
	}
	return crowded
}
