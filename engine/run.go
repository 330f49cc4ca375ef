package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quictun/quictun/codecs/preamble"
)

// ErrIdle is the cause of a tunnel closed by the idle timeout.
var ErrIdle = errors.New("idle timeout")

// errStuck means a pump did not return after both sides were aborted: a bug in
// a Side, reported rather than hung on.
var errStuck = errors.New("pumps did not stop after abort")

// Run is the tunnel's supervisor. It carries bytes between client (the side
// facing the client application) and server (the side facing the server
// application) until both directions end, then deregisters the tunnel.
//
// A clean end of one direction (EOF) is passed on as a half-close and the other
// direction keeps flowing. The first error, the tunnel's context ending (kill,
// shutdown) or the idle timeout aborts both sides at once; Run then waits for
// both pumps, at most TeardownBound, and for the sniffer actor, at most
// snifferStopBound. Run returns nil after a clean close and otherwise the
// reasons, each tagged with its direction.
func (t *Tunnel) Run(client, server Side) error { return t.run(client, server, nil) }

// RunFlow is Run for a flow of datagrams (UDP): each Read of a side is one
// datagram and each Write sends one, so the pumps count packets too; the
// idle timeout is Config.Flow's (replacing Config.IdleTimeout); the
// datagram sniffers (Config.DatagramSniffers) see its first datagrams each
// way, instead of the stream sniffers.
func (t *Tunnel) RunFlow(client, server Side) error {
	t.datagrams.Store(true)
	return t.run(client, server, &t.reg.cfg.Flow)
}

func (t *Tunnel) run(client, server Side, flow *FlowTimeouts) error {
	defer t.reg.remove(t)
	defer t.kill(nil)
	cfg := &t.reg.cfg

	var abortOnce sync.Once
	abort := func() {
		abortOnce.Do(func() {
			t.closing.Store(true)
			code := uint64(resetCode(context.Cause(t.ctx)))
			client.Abort(code)
			server.Abort(code)
		})
	}
	stopAbort := context.AfterFunc(t.ctx, abort)
	defer stopAbort()

	var tp *tap
	if len(cfg.Sniffers) > 0 && flow == nil {
		tp = newTap(cfg.SniffBytes)
		// Stopped before the tunnel deregisters, but waited for only up to
		// snifferStopBound: a Sniff call that never returns cannot hold the
		// tunnel (see startSniffer).
		defer t.startSniffer(func(ctx context.Context) {
			t.runSniffer(ctx, tp, cfg.Sniffers, cfg.SniffWindow)
		}).stop()
	}
	var dtap *datagramTap
	if len(cfg.DatagramSniffers) > 0 && flow != nil {
		dtap = newDatagramTap(sniffDatagrams)
		defer t.startSniffer(func(ctx context.Context) {
			t.runDatagramSniffer(ctx, dtap, cfg.DatagramSniffers, cfg.SniffWindow)
		}).stop()
	}

	t.lastActivity.Store(time.Now().UnixNano())
	// Sized to its two senders, so neither blocks if Run stops listening early.
	errc := make(chan error, 2)
	up := &pump{dir: upstream, src: client, dst: server, count: &t.bytesUp, t: t, tap: tp, dtap: dtap}
	down := &pump{dir: downstream, src: server, dst: client, count: &t.bytesDown, t: t, tap: tp, dtap: dtap}
	if flow != nil {
		up.packets, down.packets = &t.packetsUp, &t.packetsDown
	}
	go up.routine(errc)
	go down.routine(errc)

	idleAfter := func() time.Duration { return cfg.IdleTimeout }
	check := cfg.IdleTimeout / 4
	if flow != nil {
		idleAfter = func() time.Duration {
			if t.packetsDown.Load() > 0 {
				return flow.Replied
			}
			return flow.Unreplied
		}
		check = min(flow.Unreplied, flow.Replied) / 4
	}
	var idle <-chan time.Time
	if check > 0 {
		ticker := time.NewTicker(check)
		defer ticker.Stop()
		idle = ticker.C
	}
	var errs []error
	var stuck <-chan time.Time
	done := t.ctx.Done()
	for pending := 2; pending > 0; {
		select {
		case err := <-errc:
			pending--
			if err != nil {
				errs = append(errs, err)
				t.kill(err)
			} else {
				t.halfClosed.Store(true)
			}
		case <-done:
			done = nil
			stuck = time.After(cfg.TeardownBound)
		case now := <-idle:
			if now.Sub(time.Unix(0, t.lastActivity.Load())) >= idleAfter() {
				t.kill(ErrIdle)
			}
		case <-stuck:
			return errors.Join(append(errs, errStuck)...)
		}
	}
	cause := context.Cause(t.ctx)
	if cause == nil {
		return errors.Join(client.Close(), server.Close())
	}
	abort()
	if isPumpError(cause) {
		return errors.Join(errs...)
	}
	// Killed, idle or shut down: the pumps' errors are the consequence, the
	// cause is the reason.
	return cause
}

func isPumpError(err error) bool {
	var pe *pumpError
	return errors.As(err, &pe)
}

// resetCode is the application error code a stream is reset with, so that the
// peer can tell an operator's kill from a failure.
func resetCode(cause error) preamble.Code {
	switch {
	case errors.Is(cause, ErrKilled):
		return preamble.CodeKilled
	case errors.Is(cause, ErrShutdown):
		return preamble.CodeShutdown
	default:
		return preamble.CodeInternal
	}
}

// ErrShutdown is the cause of tunnels closed because their endpoint stops.
var ErrShutdown = errors.New("endpoint shutting down")

type direction int

const (
	upstream   direction = iota // client application -> server application
	downstream                  // server application -> client application
)

func (d direction) String() string {
	if d == upstream {
		return "upstream"
	}
	return "downstream"
}

// pumpError tags a data-path failure with its direction and operation.
type pumpError struct {
	dir direction
	op  string
	err error
}

func (e *pumpError) Error() string { return fmt.Sprintf("%s %s: %v", e.dir, e.op, e.err) }
func (e *pumpError) Unwrap() error { return e.err }

// pump copies one direction of a tunnel through one pooled buffer. It is the
// only writer of its counter. The loop is written out rather than io.CopyBuffer,
// which ignores the buffer when the source is a *net.TCPConn (WriterTo).
type pump struct {
	dir      direction
	src, dst Side
	count    *atomic.Uint64
	packets  *atomic.Uint64 // of a flow of datagrams: one per Read; else nil
	t        *Tunnel
	tap      *tap
	dtap     *datagramTap // of a flow of datagrams, or nil
}

// routine is a pump's goroutine: it runs the pump and reports how it ended.
func (p *pump) routine(errc chan<- error) { errc <- p.run() }

func (p *pump) run() error {
	bp := getBuffer()
	defer putBuffer(bp)
	buf := *bp
	prio, _ := p.dst.(Prioritized)
	var pace writePace
	interactive, set := false, false
	for {
		n, rerr := p.src.Read(buf)
		if n > 0 {
			p.tap.offer(p.dir, buf[:n])
			p.dtap.offer(p.dir, buf[:n])
			if prio != nil {
				// Before the write, so that a chunk past the budget goes as bulk.
				budget := interactiveBudget
				if p.t.interactiveProto.Load() {
					budget = interactiveProtoBudget
				}
				if on := pace.write(time.Now(), n, budget); on != interactive || !set {
					prio.SetInteractive(on)
					p.t.interactive.Store(on)
					interactive, set = on, true
				}
			}
			if _, err := p.dst.Write(buf[:n]); err != nil {
				return &pumpError{p.dir, "write", err}
			}
			p.count.Add(uint64(n))
			if p.packets != nil {
				p.packets.Add(1)
			}
			p.t.lastActivity.Store(time.Now().UnixNano())
		}
		if rerr == io.EOF {
			if err := p.dst.CloseWrite(); err != nil {
				return &pumpError{p.dir, "close write", err}
			}
			return nil
		}
		if rerr != nil {
			return &pumpError{p.dir, "read", rerr}
		}
	}
}
