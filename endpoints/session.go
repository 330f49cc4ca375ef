package endpoints

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"
)

// Redial backoff of the session keeper: capped exponential with jitter, so a
// fleet of clients does not hammer a restarting server in lockstep.
const (
	minRedialBackoff = 100 * time.Millisecond
	maxRedialBackoff = 10 * time.Second
	dialTimeout      = 10 * time.Second
)

// sessionKeeper keeps one warm QUIC session to the server endpoint and redials
// it when it drops. Tunnels ask it for the current session and wait, up to a
// bound, while there is none.
type sessionKeeper struct {
	tr       *quic.Transport
	endpoint string
	tls      *tls.Config
	quic     *quic.Config
	log      *slog.Logger
	// dialFailed, when set (before run), is told of each failed dial.
	dialFailed func(error)

	mu   sync.Mutex
	conn *quic.Conn    // nil while there is no session
	up   chan struct{} // closed when a session becomes available
}

func newSessionKeeper(tr *quic.Transport, endpoint string, tlsConf *tls.Config, qc *quic.Config, log *slog.Logger) *sessionKeeper {
	return &sessionKeeper{tr: tr, endpoint: endpoint, tls: tlsConf, quic: qc, log: log, up: make(chan struct{})}
}

// run is the keeper's routine: dial, hold the session until it ends, redial.
// It returns when ctx ends, after closing the session.
func (k *sessionKeeper) run(ctx context.Context) {
	backoff := minRedialBackoff
	for {
		conn, err := k.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if k.dialFailed != nil {
				k.dialFailed(err)
			}
			wait := backoff/2 + rand.N(backoff/2+1)
			k.log.Warn("cannot reach server endpoint; retrying", "server", k.endpoint, "in", wait.Round(time.Millisecond), "err", err)
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return
			}
			backoff = min(2*backoff, maxRedialBackoff)
			continue
		}
		backoff = minRedialBackoff
		k.log.Info("session established", "server", conn.RemoteAddr().String())
		k.publish(conn)
		if !k.hold(ctx, conn) {
			return
		}
	}
}

// hold keeps a session until it ends (true: redial) or ctx does (false), and
// probes it meanwhile (see probePeriod).
func (k *sessionKeeper) hold(ctx context.Context, conn *quic.Conn) bool {
	probes := time.NewTicker(probePeriod)
	defer probes.Stop()
	probe := make([]byte, probeSize)
	for {
		select {
		case <-probes.C:
			_ = conn.SendDatagram(probe)
		case <-conn.Context().Done():
			k.unpublish(conn)
			k.log.Warn("session lost; redialling", "server", k.endpoint, "reason", context.Cause(conn.Context()))
			return true
		case <-ctx.Done():
			k.unpublish(conn)
			conn.CloseWithError(0, "client shutting down")
			return false
		}
	}
}

func (k *sessionKeeper) dial(ctx context.Context) (*quic.Conn, error) {
	addr, err := net.ResolveUDPAddr("udp", k.endpoint)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	return k.tr.Dial(ctx, addr, k.tls, k.quic.Clone())
}

func (k *sessionKeeper) publish(conn *quic.Conn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.conn = conn
	close(k.up)
}

func (k *sessionKeeper) unpublish(conn *quic.Conn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn == conn {
		k.conn = nil
		k.up = make(chan struct{})
	}
}

// live lists the current session, for metrics.
func (k *sessionKeeper) live() []*quic.Conn {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn == nil {
		return nil
	}
	return []*quic.Conn{k.conn}
}

// get returns the live session, waiting for one while ctx lasts.
func (k *sessionKeeper) get(ctx context.Context) (*quic.Conn, error) {
	for {
		k.mu.Lock()
		conn, up := k.conn, k.up
		k.mu.Unlock()
		if conn != nil && conn.Context().Err() == nil {
			return conn, nil
		}
		if conn != nil {
			// Dead but not yet noticed by run: wait for run to replace it.
			select {
			case <-time.After(5 * time.Millisecond):
				continue
			case <-ctx.Done():
			}
		} else {
			select {
			case <-up:
				continue
			case <-ctx.Done():
			}
		}
		return nil, fmt.Errorf("no session to server endpoint %s: %w", k.endpoint, context.Cause(ctx))
	}
}

// openStream opens a stream on the live session. A session that breaks between
// get and open is waited out and the open retried, so an application that
// connects during a redial gets the next session rather than an error.
func (k *sessionKeeper) openStream(ctx context.Context) (*quic.Stream, *quic.Conn, error) {
	for {
		conn, err := k.get(ctx)
		if err != nil {
			return nil, nil, err
		}
		st, err := conn.OpenStreamSync(ctx)
		if err == nil {
			return st, conn, nil
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("open stream: %w", context.Cause(ctx))
		}
		if conn.Context().Err() == nil {
			return nil, nil, fmt.Errorf("open stream: %w", err)
		}
	}
}
