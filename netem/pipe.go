package netem

import (
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DeliverFunc receives a packet at its arrival time. b is valid only during the call.
// addr is whatever the sender passed to Send (the datagram's destination for a
// PacketConn, nil for a TUN forwarder).
type DeliverFunc func(b []byte, addr net.Addr) error

// MaxPendingBytes bounds the memory a Pipe holds in flight (queued plus "on the wire"
// during Delay). A rate-limited Pipe is bounded by its queue long before this; an
// unlimited-rate Pipe with a long delay and a fast sender hits it and drops, counted
// as queue drops, instead of growing the heap without bound.
const MaxPendingBytes = 64 << 20

// Stats are the counters of one Pipe (one direction). Every packet offered ends up in
// exactly one of DroppedLoss, DroppedQueue, Delivered, DeliverErrors, or is still
// pending (or was discarded by Close).
type Stats struct {
	Sent           uint64 // packets offered
	SentBytes      uint64
	DroppedLoss    uint64 // lost on the wire (Loss, Burst)
	DroppedQueue   uint64 // dropped at a full queue (or MaxPendingBytes)
	Delivered      uint64 // handed to the DeliverFunc without error
	DeliveredBytes uint64
	DeliverErrors  uint64 // the DeliverFunc returned an error
	// Late counts packets delivered more than LateThreshold after their arrival time,
	// and MaxLate is the worst lateness seen: the emulator's own scheduling error.
	// On a busy machine they grow; a measurement that relies on exact delay and rate
	// should check them.
	Late    uint64
	MaxLate time.Duration
}

// LateThreshold is the lateness above which a delivery counts as Late.
const LateThreshold = time.Millisecond

// Pipe applies a Model to packets offered with Send and hands the survivors to a
// DeliverFunc at their arrival times. It owns one scheduler goroutine (deliverRoutine)
// that sleeps on a single timer (a Go timer, or ppoll on a real-time thread: see
// RealtimeScheduler) until the earliest arrival in a time-ordered queue and
// then delivers every packet that is due, in a batch outside the lock; a timer per
// packet would cost far more at 100 Mbit/s. Close stops and waits for it.
//
// Send may be called from many goroutines. With the perfect model (Model.IsZero) and
// nothing in flight, Send delivers inline in the caller's goroutine, without a copy.
type Pipe struct {
	deliver DeliverFunc
	epoch   time.Time // virtual time 0

	mu struct {
		sync.Mutex
		state     *linkState
		bypass    bool // model is perfect: deliver inline when nothing is in flight
		queue     arrivalQueue
		seq       uint64
		inFlight  int   // packets queued or in the scheduler's current batch
		pending   int64 // bytes queued
		closed    bool
		nextTimer time.Duration // earliest arrival the scheduler is sleeping for; -1 none
	}
	sleeper sleeper // how deliverRoutine waits: Go timer, or a real-time OS thread
	stopped sync.WaitGroup
	opts    pipeOptions

	sent, sentBytes, droppedLoss, droppedQueue atomic.Uint64
	delivered, deliveredBytes, deliverErrors   atomic.Uint64
	late                                       atomic.Uint64
	maxLate                                    atomic.Int64
	worstSinceTake                             atomic.Int64 // see TakeWorstLate
	realtime                                   atomic.Bool
}

// PipeOption tunes how a Pipe runs.
type PipeOption func(*pipeOptions)

type pipeOptions struct {
	realtimePriority int // 0: an ordinary goroutine with a Go timer
}

// RealtimeScheduler runs the Pipe's scheduler on a dedicated OS thread at SCHED_FIFO
// priority prio (1..99), sleeping in ppoll(2) with nanosecond timeouts instead of on a
// Go timer. On a machine busy with other work (the endpoints being measured, compilers)
// an ordinary goroutine is woken tens of milliseconds late, which turns into delay
// spikes and bursts the emulated link does not have; a real-time thread is woken on
// time. It needs Linux and root (or RLIMIT_RTPRIO); without them the scheduler still
// runs on its own thread at normal priority and Realtime reports false.
func RealtimeScheduler(prio int) PipeOption {
	return func(o *pipeOptions) { o.realtimePriority = min(max(prio, 1), 99) }
}

// NewPipe starts a Pipe. The loss and jitter draws are deterministic given seed and the
// sequence of packets.
func NewPipe(m Model, seed int64, deliver DeliverFunc, opts ...PipeOption) (*Pipe, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("netem pipe: %w", err)
	}
	if deliver == nil {
		return nil, fmt.Errorf("netem pipe: nil DeliverFunc")
	}
	p := &Pipe{deliver: deliver, epoch: time.Now()}
	for _, o := range opts {
		o(&p.opts)
	}
	if p.opts.realtimePriority > 0 {
		s, err := newThreadSleeper()
		if err != nil {
			return nil, fmt.Errorf("netem pipe: %w", err)
		}
		p.sleeper = s
	} else {
		p.sleeper = newTimerSleeper()
	}
	p.mu.state = newLinkState(m, seed)
	p.mu.bypass = m.IsZero()
	p.mu.nextTimer = -1
	p.stopped.Add(1)
	started := make(chan struct{})
	go p.deliverRoutine(started)
	<-started
	return p, nil
}

// Realtime reports whether the scheduler runs at real-time priority (see
// RealtimeScheduler).
func (p *Pipe) Realtime() bool { return p.realtime.Load() }

// SetModel changes the impairment for packets sent from now on.
func (p *Pipe) SetModel(m Model) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("netem pipe: %w", err)
	}
	p.mu.Lock()
	p.mu.state.setModel(m)
	p.mu.bypass = m.IsZero()
	p.mu.Unlock()
	return nil
}

// Model is the impairment in force.
func (p *Pipe) Model() Model {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mu.state.model
}

// Stats is a snapshot of the counters.
func (p *Pipe) Stats() Stats {
	return Stats{
		Sent:           p.sent.Load(),
		SentBytes:      p.sentBytes.Load(),
		DroppedLoss:    p.droppedLoss.Load(),
		DroppedQueue:   p.droppedQueue.Load(),
		Delivered:      p.delivered.Load(),
		DeliveredBytes: p.deliveredBytes.Load(),
		DeliverErrors:  p.deliverErrors.Load(),
		Late:           p.late.Load(),
		MaxLate:        time.Duration(p.maxLate.Load()),
	}
}

// Send offers one packet to the link. It copies b (unless delivering inline) and never
// blocks on the link: like a router, a full queue drops. It fails only after Close.
func (p *Pipe) Send(b []byte, addr net.Addr) error {
	now := time.Since(p.epoch)
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return net.ErrClosed
	}
	p.sent.Add(1)
	p.sentBytes.Add(uint64(len(b)))
	if p.mu.bypass && p.mu.inFlight == 0 {
		p.mu.Unlock()
		p.deliverOne(b, addr)
		return nil
	}
	arrival, v := p.mu.state.admit(now, len(b))
	if v == verdictDeliver && p.mu.pending+int64(len(b)) > MaxPendingBytes {
		v = verdictQueueFull
	}
	switch v {
	case verdictLost:
		p.mu.Unlock()
		p.droppedLoss.Add(1)
		return nil
	case verdictQueueFull:
		p.mu.Unlock()
		p.droppedQueue.Add(1)
		return nil
	}
	buf := getBuffer(len(b))
	copy(*buf, b)
	p.mu.seq++
	p.mu.queue.push(arrivalEntry{at: arrival, seq: p.mu.seq, buf: buf, addr: addr})
	p.mu.inFlight++
	p.mu.pending += int64(len(b))
	// Wake the scheduler only if it sleeps past this arrival (or not at all).
	needWake := p.mu.nextTimer < 0 || arrival < p.mu.nextTimer
	if needWake {
		p.mu.nextTimer = arrival
	}
	p.mu.Unlock()
	if needWake {
		p.sleeper.wake()
	}
	return nil
}

func (p *Pipe) deliverOne(b []byte, addr net.Addr) {
	if err := p.deliver(b, addr); err != nil {
		p.deliverErrors.Add(1)
		return
	}
	p.delivered.Add(1)
	p.deliveredBytes.Add(uint64(len(b)))
}

// Close stops the scheduler and waits for it. Packets still in flight are discarded,
// as when a link goes down. Close is idempotent.
func (p *Pipe) Close() error {
	p.mu.Lock()
	if p.mu.closed {
		p.mu.Unlock()
		return nil
	}
	p.mu.closed = true
	p.mu.Unlock()
	p.sleeper.stop()
	p.stopped.Wait()
	p.sleeper.release()
	p.mu.Lock()
	for p.mu.queue.len() > 0 {
		putBuffer(p.mu.queue.pop().buf)
	}
	p.mu.inFlight, p.mu.pending = 0, 0
	p.mu.Unlock()
	return nil
}

// deliverRoutine is the Pipe's scheduler: owned by the Pipe, stopped by Close.
// It closes started once its thread is set up.
func (p *Pipe) deliverRoutine(started chan<- struct{}) {
	defer p.stopped.Done()
	if prio := p.opts.realtimePriority; prio > 0 {
		// The thread stays locked to this goroutine until it exits, so the runtime
		// retires it then instead of reusing a real-time thread for other goroutines.
		runtime.LockOSThread()
		p.realtime.Store(setRealtimePriority(prio) == nil)
	}
	close(started)
	var batch []arrivalEntry
	for {
		now := time.Since(p.epoch)
		var next time.Duration
		batch, next = p.takeDue(batch[:0], now)
		if len(batch) > 0 {
			// The head of the batch is the most overdue, so the on-time case costs one
			// comparison per wake-up, not one per packet.
			p.noteLateness(now-batch[0].at, now, batch)
			for i := range batch {
				e := &batch[i]
				p.deliverOne(*e.buf, e.addr)
				putBuffer(e.buf)
				*e = arrivalEntry{}
			}
			p.mu.Lock()
			p.mu.inFlight -= len(batch)
			p.mu.Unlock()
			// Delivering took time; look again before sleeping.
			continue
		}
		wait := time.Duration(-1)
		if next >= 0 {
			wait = next - now
		}
		if !p.sleeper.wait(wait) {
			return
		}
	}
}

// sleeper is how the scheduler waits for the next arrival or an earlier one.
type sleeper interface {
	// wait blocks until wake, until d has passed (d < 0: no limit), or until stop; it
	// reports false once stop was called.
	wait(d time.Duration) bool
	wake()    // from Send, any goroutine; never blocks
	stop()    // from Close
	release() // after the scheduler has exited
}

// timerSleeper is the portable sleeper: a Go timer and a wake channel.
type timerSleeper struct {
	timer  *time.Timer
	wakeCh chan struct{} // cap 1
	done   chan struct{}
}

func newTimerSleeper() *timerSleeper {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &timerSleeper{timer: t, wakeCh: make(chan struct{}, 1), done: make(chan struct{})}
}

func (s *timerSleeper) wait(d time.Duration) bool {
	var fire <-chan time.Time
	if d >= 0 {
		s.timer.Reset(d)
		fire = s.timer.C
	}
	select {
	case <-s.done:
		return false
	case <-s.wakeCh:
	case <-fire:
	}
	return true
}

func (s *timerSleeper) wake() {
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

func (s *timerSleeper) stop()    { close(s.done) }
func (s *timerSleeper) release() { s.timer.Stop() }

// noteLateness counts the packets of batch that are due more than LateThreshold before
// now, and records the worst lateness.
func (p *Pipe) noteLateness(worst, now time.Duration, batch []arrivalEntry) {
	if worst <= LateThreshold {
		return
	}
	var n uint64
	for i := range batch {
		if now-batch[i].at > LateThreshold {
			n++
		}
	}
	p.late.Add(n)
	raiseTo(&p.maxLate, int64(worst))
	raiseTo(&p.worstSinceTake, int64(worst))
}

// TakeWorstLate returns the worst lateness (above LateThreshold, else 0) since the
// previous call, and starts over: what one measurement on a long-lived Pipe suffered
// from the emulator's own scheduling.
func (p *Pipe) TakeWorstLate() time.Duration {
	return time.Duration(p.worstSinceTake.Swap(0))
}

// raiseTo sets a to v if v is larger.
func raiseTo(a *atomic.Int64, v int64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// takeDue moves every packet due at now into batch and returns the next arrival after
// them (-1 when the queue is empty). It also records that arrival as the time the
// scheduler will wake for, so Send knows when a wake-up is needed.
func (p *Pipe) takeDue(batch []arrivalEntry, now time.Duration) ([]arrivalEntry, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.mu.queue.len() > 0 && p.mu.queue.peek().at <= now {
		e := p.mu.queue.pop()
		p.mu.pending -= int64(len(*e.buf))
		batch = append(batch, e)
	}
	next := time.Duration(-1)
	if p.mu.queue.len() > 0 {
		next = p.mu.queue.peek().at
	}
	if len(batch) > 0 {
		// The scheduler delivers before sleeping; any Send meanwhile must not skip the
		// wake-up on the strength of a timer that is not armed yet.
		p.mu.nextTimer = -1
	} else {
		p.mu.nextTimer = next
	}
	return batch, next
}

// arrivalEntry is one packet on the wire.
type arrivalEntry struct {
	at   time.Duration
	seq  uint64 // ties broken by send order
	buf  *[]byte
	addr net.Addr
}

// arrivalQueue is a binary min-heap by (at, seq), typed to avoid container/heap's
// interface boxing on the per-packet path.
type arrivalQueue struct{ items []arrivalEntry }

func (q *arrivalQueue) len() int            { return len(q.items) }
func (q *arrivalQueue) peek() *arrivalEntry { return &q.items[0] }
func (q *arrivalQueue) less(i, j int) bool {
	a, b := &q.items[i], &q.items[j]
	return a.at < b.at || (a.at == b.at && a.seq < b.seq)
}

func (q *arrivalQueue) push(e arrivalEntry) {
	q.items = append(q.items, e)
	for i := len(q.items) - 1; i > 0; {
		parent := (i - 1) / 2
		if !q.less(i, parent) {
			break
		}
		q.items[i], q.items[parent] = q.items[parent], q.items[i]
		i = parent
	}
}

func (q *arrivalQueue) pop() arrivalEntry {
	top := q.items[0]
	last := len(q.items) - 1
	q.items[0] = q.items[last]
	q.items[last] = arrivalEntry{}
	q.items = q.items[:last]
	for i := 0; ; {
		l, r, small := 2*i+1, 2*i+2, i
		if l < last && q.less(l, small) {
			small = l
		}
		if r < last && q.less(r, small) {
			small = r
		}
		if small == i {
			break
		}
		q.items[i], q.items[small] = q.items[small], q.items[i]
		i = small
	}
	return top
}

// Packet buffers: one pool of MTU-class buffers covers TUN packets and QUIC datagrams;
// anything larger (loopback UDP can carry 64 KiB) is allocated to size.
const pooledBufferSize = 2048

var bufferPool = sync.Pool{New: func() any {
	b := make([]byte, pooledBufferSize)
	return &b
}}

func getBuffer(n int) *[]byte {
	if n > pooledBufferSize {
		b := make([]byte, n)
		return &b
	}
	b := bufferPool.Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

func putBuffer(b *[]byte) {
	if cap(*b) != pooledBufferSize {
		return
	}
	*b = (*b)[:pooledBufferSize]
	bufferPool.Put(b)
}
