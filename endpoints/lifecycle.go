package endpoints

import (
	"context"
	"log/slog"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quictun/quictun/engine"
)

// drain waits until reg has no live tunnel or the deadline passes.
func drain(reg *engine.Registry, deadline time.Time) {
	// A UDP flow ends only when idle, and what it carries is best effort: it
	// is not waited for.
	for _, t := range reg.Tunnels() {
		if t.Datagrams() {
			t.Shut()
		}
	}
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-reg.Empty():
	case <-timer.C:
	}
}

// settle gives quic-go time to deliver what the drained tunnels wrote last
// before their sessions are closed: a tunnel ends when both its directions are
// closed, not when the peer has acknowledged the data, and a CONNECTION_CLOSE
// throws away whatever is still unacknowledged (on a lossy link, the tail of a
// transfer). quic-go does not expose bytes in flight; a session whose traffic
// has stopped for four probe timeouts (a lost tail is resent at one, two and
// four of them) has nothing left to deliver. settle returns when every session
// is that quiet, or has ended, or at the deadline.
func settle(sessions []*quic.Conn, deadline time.Time) {
	type progress struct {
		bytes uint64
		since time.Time
	}
	seen := make(map[*quic.Conn]progress, len(sessions))
	for {
		now := time.Now()
		settled := true
		for _, conn := range sessions {
			if conn.Context().Err() != nil {
				continue
			}
			st := conn.ConnectionStats()
			bytes := st.BytesSent + st.BytesReceived
			if p, ok := seen[conn]; !ok || p.bytes != bytes {
				seen[conn] = progress{bytes, now}
				settled = false
				continue
			}
			pto := st.SmoothedRTT + max(4*st.MeanDeviation, time.Millisecond) + 25*time.Millisecond // RFC 9002, quic-go's max ACK delay
			if now.Sub(seen[conn].since) < max(4*pto, 100*time.Millisecond) {
				settled = false
			}
		}
		if settled || !now.Before(deadline) {
			return
		}
		time.Sleep(min(10*time.Millisecond, time.Until(deadline)))
	}
}

func sessionEndReason(conn *quic.Conn, err error) string {
	if cause := context.Cause(conn.Context()); cause != nil {
		return cause.Error()
	}
	return err.Error()
}

func logTunnelEnd(log *slog.Logger, t *engine.Tunnel, err error) {
	attrs := []any{"up", t.BytesUp(), "down", t.BytesDown(), "duration", time.Since(t.CreatedAt).Round(time.Millisecond)}
	if err != nil {
		log.Info("tunnel closed", append(attrs, "reason", err)...)
		return
	}
	log.Info("tunnel closed", attrs...)
}
