package endpoints

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/internal/quicconf"
)

// Redial backoff of the session keeper: capped exponential with jitter, so a
// fleet of clients does not hammer a restarting server in lockstep.
const (
	minRedialBackoff = 100 * time.Millisecond
	maxRedialBackoff = 10 * time.Second
	dialTimeout      = 10 * time.Second
	// provenLifetime is how long a session must last to count as proven when
	// its hello was not answered OK (a server without hellos).
	provenLifetime = maxRedialBackoff
)

// redialBackoff is the wait before the next dial: drawn at random from the
// upper half of a ceiling that starts at minRedialBackoff and doubles with
// each draw up to maxRedialBackoff. It is reset only by a session that proved
// itself (see sessionKeeper.hold), not by a handshake: a server that accepts
// a session and closes it at once (too many sessions, a wrong secret) is then
// not asked again and again in a tight loop.
type redialBackoff struct{ ceiling time.Duration }

func (b *redialBackoff) next() time.Duration {
	if b.ceiling == 0 {
		b.ceiling = minRedialBackoff
	}
	wait := b.ceiling/2 + rand.N(b.ceiling/2+1)
	b.ceiling = min(2*b.ceiling, maxRedialBackoff)
	return wait
}

func (b *redialBackoff) reset() { b.ceiling = 0 }

// sessionKeeper keeps one warm QUIC session to the server endpoint and redials
// it when it drops. Tunnels ask it for the current session and wait, up to a
// bound, while there is none.
type sessionKeeper struct {
	tr       *quic.Transport
	endpoint string
	tls      *tls.Config
	quic     *quic.Config
	creds    credentials // proved in each session's hello
	log      *slog.Logger
	// dialFailed, when set (before run), is told of each failed dial.
	dialFailed func(error)
	// onSession, when set (before run), serves each session once its hello
	// is answered, until the session ends (reverse forwards).
	onSession func(*quic.Conn)
	// datagrams, when set (before run), is given each QUIC datagram a
	// session receives (UDP flows'), from one goroutine per session.
	datagrams func(*quic.Conn, []byte)

	mu      sync.Mutex
	conn    *quic.Conn    // nil while there is no session
	up      chan struct{} // closed when a session becomes available, or refused is set
	refused error         // why the server refused the last session; nil once a new one is up
}

// credentials are what a client proves in its hello: a secret and the name
// of the server's identity it belongs to.
type credentials struct {
	identity string
	secret   []byte
}

// hello is the hello header of conn: the identity, and the proof of its
// secret bound to this TLS session.
func (c credentials) hello(conn *quic.Conn) (preamble.Header, error) {
	h := preamble.Header{Hello: true, Identity: c.identity}
	if len(c.secret) == 0 {
		return h, nil
	}
	cs := conn.ConnectionState().TLS
	proof, err := preamble.Proof(c.secret, c.identity, cs.ExportKeyingMaterial)
	h.Proof = proof
	return h, err
}

func newSessionKeeper(tr *quic.Transport, endpoint string, tlsConf *tls.Config, qc *quic.Config, creds credentials, log *slog.Logger) *sessionKeeper {
	return &sessionKeeper{tr: tr, endpoint: endpoint, tls: tlsConf, quic: qc, creds: creds, log: log, up: make(chan struct{})}
}

// run is the keeper's routine: dial, hold the session until it ends, wait,
// redial. It returns when ctx ends, after closing the session.
func (k *sessionKeeper) run(ctx context.Context) {
	var backoff redialBackoff
	for {
		conn, err := k.dial(ctx)
		if err == nil {
			again, proven := k.hold(ctx, conn)
			if !again {
				return
			}
			if proven {
				backoff.reset()
			}
		} else if ctx.Err() != nil {
			return
		} else if k.dialFailed != nil {
			k.dialFailed(err)
		}
		wait := backoff.next()
		if err != nil {
			k.log.Warn("cannot reach server endpoint; retrying", "server", k.endpoint, "in", wait.Round(time.Millisecond), "err", err)
		} else {
			k.log.Info("redialling", "server", k.endpoint, "in", wait.Round(time.Millisecond))
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
	}
}

// hold keeps a session until it ends (again: redial) or ctx does, and probes
// it meanwhile (see probePeriod). It sends the session's hello first and
// offers the session to tunnels once the server has answered: a server that
// accepts a handshake may still close the session at once (too many
// sessions, a wrong secret), and a tunnel opened on it would fail where a
// moment's wait for the next session would not. The session is proven when
// its hello was answered OK, or when it lasted provenLifetime (a server that
// does not know hellos).
func (k *sessionKeeper) hold(ctx context.Context, conn *quic.Conn) (again, proven bool) {
	start := time.Now()
	probes := time.NewTicker(probePeriod)
	defer probes.Stop()
	probe := make([]byte, probeSize)
	helloDone := make(chan error, 1)
	refusedOnce := false // logged and recorded from the hello's answer
	var hello, serving sync.WaitGroup
	defer hello.Wait()
	defer serving.Wait() // after the session is closed below: it then returns
	hello.Go(func() { helloDone <- k.hello(conn) })
	if k.datagrams != nil {
		// The server is the one this client chose to trust: its datagrams may
		// queue deeper than a stranger's.
		conn.SetDatagramReceiveQueue(quicconf.DatagramReceiveQueue)
		// Ends with the session, which every way out of hold closes first.
		hello.Go(func() { k.receiveDatagrams(conn) })
	}
	for {
		select {
		case <-probes.C:
			_ = conn.SendDatagram(probe)
		case err := <-helloDone:
			var se *preamble.StatusError
			refused := errors.As(err, &se)
			switch {
			case conn.Context().Err() != nil || sessionGone(err):
				// Lost before the answer: the next case says why.
			case refused && se.Status.Code == preamble.CodeAuthFailed:
				refusedOnce = true
				k.log.Error("the server endpoint refused this client's credentials; check --secret and --identity", "server", k.endpoint)
				k.refuse(fmt.Errorf("server endpoint %s refused this client: %w", k.endpoint, err))
				conn.CloseWithError(quic.ApplicationErrorCode(preamble.CodeAuthFailed), "authentication failed")
			case refused && se.Status.Code == preamble.CodeShutdown:
				k.log.Info("server endpoint is shutting down; waiting for the next session", "server", k.endpoint)
			default:
				if err != nil {
					k.log.Warn("server endpoint did not accept this session's hello; using the session anyway", "server", k.endpoint, "err", err)
				}
				proven = err == nil
				k.log.Info("session established", "server", conn.RemoteAddr().String())
				k.publish(conn)
				if k.onSession != nil {
					serving.Go(func() { k.onSession(conn) })
				}
			}
		case <-conn.Context().Done():
			k.unpublish(conn)
			cause := context.Cause(conn.Context())
			var ae *quic.ApplicationError
			if errors.As(cause, &ae) && ae.Remote && preamble.Code(ae.ErrorCode) == preamble.CodeAuthFailed && !refusedOnce {
				k.log.Error("the server endpoint refused this client's credentials; check --secret and --identity", "server", k.endpoint, "reason", cause)
				k.refuse(fmt.Errorf("server endpoint %s refused this client: %w", k.endpoint, cause))
			}
			k.log.Warn("session lost", "server", k.endpoint, "reason", cause)
			return true, proven || time.Since(start) >= provenLifetime
		case <-ctx.Done():
			k.unpublish(conn)
			conn.CloseWithError(0, "client shutting down")
			return false, proven
		}
	}
}

// receiveDatagrams hands the session's datagrams to the hook until the
// session ends.
func (k *sessionKeeper) receiveDatagrams(conn *quic.Conn) {
	for {
		b, err := conn.ReceiveDatagram(conn.Context())
		if err != nil {
			return
		}
		k.datagrams(conn, b)
	}
}

// hello proves the client's credentials on the session's first stream, right
// after the handshake, and returns the server's answer: nil when it is OK.
// The server reads nothing else from a session before it has answered its
// hello, and closes a session without one within its handshake timeout.
func (k *sessionKeeper) hello(conn *quic.Conn) error {
	ctx, cancel := context.WithTimeout(conn.Context(), dialTimeout)
	defer cancel()
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	h, err := k.creds.hello(conn)
	var hdr []byte
	if err == nil {
		hdr, err = preamble.AppendHeader(nil, h)
	}
	if err != nil {
		st.CancelWrite(quic.StreamErrorCode(preamble.CodeInternal))
		st.CancelRead(quic.StreamErrorCode(preamble.CodeInternal))
		return err
	}
	_ = st.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := st.Write(hdr); err != nil {
		st.CancelRead(quic.StreamErrorCode(preamble.CodeInternal))
		return err
	}
	_ = st.Close()
	status, err := preamble.ReadStatus(st)
	st.CancelRead(0)
	if err != nil {
		return refusal(err)
	}
	return status.Err()
}

// sessionGone says whether err means the whole session ended, which a stream
// may learn a moment before the session's context does.
func sessionGone(err error) bool {
	var (
		app     *quic.ApplicationError
		trans   *quic.TransportError
		idle    *quic.IdleTimeoutError
		reset   *quic.StatelessResetError
		timeout *quic.HandshakeTimeoutError
	)
	return errors.As(err, &app) || errors.As(err, &trans) || errors.As(err, &idle) ||
		errors.As(err, &reset) || errors.As(err, &timeout) || errors.Is(err, quic.ErrTransportClosed)
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
	k.conn, k.refused = conn, nil
	close(k.up)
}

// refuse records that the server refused this client, and wakes every
// application waiting for a session: until the next session is up, they fail
// at once with err instead of waiting out SessionWait for a server that will
// not have them.
func (k *sessionKeeper) refuse(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refused = err
	if k.conn == nil { // else up is closed already, and waiters see this once it is unpublished
		close(k.up)
		k.up = make(chan struct{})
	}
}

func (k *sessionKeeper) unpublish(conn *quic.Conn) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.conn == conn {
		k.conn = nil
		k.up = make(chan struct{})
	}
}

// live lists the current session, for metrics and shutdown.
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
		conn, up, refused := k.conn, k.up, k.refused
		k.mu.Unlock()
		if conn != nil && conn.Context().Err() == nil {
			return conn, nil
		}
		if conn == nil && refused != nil {
			return nil, refused
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
		if conn.Context().Err() == nil && !sessionGone(err) {
			return nil, nil, fmt.Errorf("open stream: %w", err)
		}
		// quic-go fails a closing session's streams a moment before it
		// cancels the session's context: wait for that, so that get does not
		// hand out the same session again.
		select {
		case <-conn.Context().Done():
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("open stream: %w", context.Cause(ctx))
		}
	}
}
