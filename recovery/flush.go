package recovery

import (
	"math"
	"sync/atomic"
	"time"
)

// flusher is the one goroutine a Conn owns. It does what no datagram triggers:
// it closes spans that ran out on a slow flow, sends Feedback, gives up sources
// that can no longer be rebuilt, gives back a quiet flow's windows and forgets
// idle peers. It sleeps until the earliest of those deadlines, so it costs
// nothing on an idle Conn and wakes a few hundred times a second on a busy one;
// there is no timer per datagram.
type flusher struct {
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}
	// planned is when (Conn clock, ns) the flusher will next run. Whoever creates an
	// earlier deadline kicks it. While it is scanning, planned is MaxInt64, so
	// deadlines created during the scan kick it again.
	planned atomic.Int64
	peers   []*peer // scratch
}

// idleCheck is how often the flusher looks for idle peers when nothing else is due.
const idleCheck = 5 * time.Second

func (f *flusher) start(c *Conn) {
	f.kick = make(chan struct{}, 1)
	f.done = make(chan struct{})
	f.stopped = make(chan struct{})
	f.planned.Store(math.MaxInt64)
	go f.routineFlush(c)
}

// wake makes sure the flusher runs by deadline.
func (f *flusher) wake(deadline time.Duration) {
	if int64(deadline) < f.planned.Load() {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

func (f *flusher) stop() {
	close(f.done)
	<-f.stopped
}

func (f *flusher) routineFlush(c *Conn) {
	defer close(f.stopped)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		f.planned.Store(math.MaxInt64)
		now := c.now()
		next := f.service(c, now)
		if next == 0 {
			f.planned.Store(math.MaxInt64)
			timer.Stop()
		} else {
			f.planned.Store(int64(next))
			timer.Reset(max(next-c.now(), 0))
		}
		select {
		case <-f.done:
			return
		case <-f.kick:
		case <-timer.C:
		}
	}
}

// service runs every peer's due work and returns the next deadline, 0 if none.
func (f *flusher) service(c *Conn, now time.Duration) time.Duration {
	var next time.Duration
	earliest := func(t time.Duration) {
		if t != 0 && (next == 0 || t < next) {
			next = t
		}
	}
	f.peers = c.peers.snapshot(f.peers[:0])
	for i, p := range f.peers {
		f.peers[i] = nil
		if idle := now - time.Duration(p.lastActive.Load()); idle > c.cfg.PeerIdle {
			c.peers.remove(c, p)
			continue
		}
		if p.proven() {
			earliest(p.send.flushDue(c, p, now))
			earliest(p.recv.service(c, now))
		}
		earliest(now + min(idleCheck, c.cfg.PeerIdle/2))
	}
	return next
}
