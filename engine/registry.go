package engine

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/quictun/quictun/codecs/sniff"
)

// Config is how an endpoint wants its tunnels run.
type Config struct {
	// Sniffers classify the protocol inside each tunnel; nil runs none.
	Sniffers []sniff.Sniffer
	// DatagramSniffers classify the protocol of each flow of datagrams (RunFlow)
	// from its first datagrams each way; nil runs none.
	DatagramSniffers []sniff.DatagramSniffer
	// SniffBytes bounds how much of each direction the sniffer sees (default 64 KiB).
	SniffBytes int
	// SniffWindow bounds how long after a tunnel opens the sniffer keeps looking
	// (default 30 s).
	SniffWindow time.Duration
	// IdleTimeout closes a tunnel that carried no byte either way for this long;
	// zero keeps idle tunnels open forever.
	IdleTimeout time.Duration
	// TeardownBound is how long teardown waits for the pumps after it aborted both
	// sides (default 5 s).
	TeardownBound time.Duration
	// RateInterval is how often the registry samples every tunnel's counters
	// to derive its rates (default 1 s).
	RateInterval time.Duration
	// Flow is the idle timeouts of flows of datagrams (RunFlow): by default
	// conntrack's for UDP, 30 s unreplied and 120 s once replied.
	Flow FlowTimeouts
}

// FlowTimeouts are the idle timeouts of a datagram flow, as conntrack keeps
// them for UDP: a flow that was never answered ends sooner than one that was.
type FlowTimeouts struct {
	Unreplied time.Duration // no datagram from the server application yet
	Replied   time.Duration // once one came
}

func (c *Config) setDefaults() {
	if c.SniffBytes <= 0 {
		c.SniffBytes = 64 << 10
	}
	if c.SniffWindow <= 0 {
		c.SniffWindow = 30 * time.Second
	}
	if c.TeardownBound <= 0 {
		c.TeardownBound = 5 * time.Second
	}
	if c.RateInterval <= 0 {
		c.RateInterval = time.Second
	}
	if c.Flow.Unreplied <= 0 {
		c.Flow.Unreplied = 30 * time.Second
	}
	if c.Flow.Replied <= 0 {
		c.Flow.Replied = 120 * time.Second
	}
}

// Registry owns the tunnel table of one endpoint. Tunnels register when they
// open and deregister when Run returns; the API reads snapshots without ever
// blocking a pump (pumps do not take the registry lock).
//
// While any tunnel is live, the registry runs its rate sampler (see
// runSampler): one goroutine that it starts with the first tunnel and stops,
// and waits for, when the last one deregisters.
type Registry struct {
	cfg Config

	mu      sync.RWMutex
	tunnels map[uuid.UUID]*Tunnel
	sampler *sampler      // nil while no tunnel is live
	empty   chan struct{} // closed while no tunnel is live

	opened atomic.Uint64
	bytes  struct{ up, down atomic.Uint64 } // of tunnels that have closed
	// sniffers counts sniffer actors that teardown abandoned (see
	// snifferStopBound): in all, and those still inside their Sniff call.
	sniffers struct {
		abandoned atomic.Uint64
		stuck     atomic.Int64
	}
}

// NewRegistry makes an empty registry that runs tunnels with cfg.
func NewRegistry(cfg Config) *Registry {
	cfg.setDefaults()
	empty := make(chan struct{})
	close(empty)
	return &Registry{cfg: cfg, tunnels: make(map[uuid.UUID]*Tunnel), empty: empty}
}

// Open registers a new tunnel whose life is bounded by ctx. The caller must call
// Run on it; Run deregisters it when it ends.
func (r *Registry) Open(ctx context.Context, info Info) *Tunnel {
	t := &Tunnel{ID: uuid.New(), Info: info, CreatedAt: time.Now(), reg: r}
	t.ctx, t.kill = context.WithCancelCause(ctx)
	r.mu.Lock()
	r.tunnels[t.ID] = t
	if r.sampler == nil {
		r.sampler = r.startSampler()
		r.empty = make(chan struct{})
	}
	r.mu.Unlock()
	r.opened.Add(1)
	return t
}

func (r *Registry) remove(t *Tunnel) {
	// Under the lock, so that Bytes never sees a tunnel both live and closed.
	r.mu.Lock()
	delete(r.tunnels, t.ID)
	r.bytes.up.Add(t.bytesUp.Load())
	r.bytes.down.Add(t.bytesDown.Load())
	var idle *sampler
	if len(r.tunnels) == 0 {
		idle, r.sampler = r.sampler, nil
		close(r.empty)
	}
	r.mu.Unlock()
	if idle != nil {
		// Outside the lock: a sampling round takes it.
		idle.stop()
	}
}

// sampler is the handle on a running rate sampler.
type sampler struct {
	quit chan struct{}
	done chan struct{}
}

// startSampler starts the rate sampler; the caller holds mu.
func (r *Registry) startSampler() *sampler {
	s := &sampler{quit: make(chan struct{}), done: make(chan struct{})}
	go r.runSampler(s)
	return s
}

func (s *sampler) stop() {
	close(s.quit)
	<-s.done
}

// runSampler is the registry's rate sampler: every RateInterval it reads the
// counters of every live tunnel and sets each tunnel's rates to what it
// carried since the previous round. Rates are thus the same whoever reads
// them and however often, and the pumps only ever add to their atomics.
func (r *Registry) runSampler(s *sampler) {
	defer close(s.done)
	tick := time.NewTicker(r.cfg.RateInterval)
	defer tick.Stop()
	var live []*Tunnel
	for {
		select {
		case <-s.quit:
			return
		case now := <-tick.C:
			live = r.sample(now, live[:0])
			clear(live[:cap(live)]) // hold no tunnel between rounds
		}
	}
}

// sample runs one sampling round at now, using buf for the list of tunnels.
func (r *Registry) sample(now time.Time, buf []*Tunnel) []*Tunnel {
	r.mu.RLock()
	for _, t := range r.tunnels {
		buf = append(buf, t)
	}
	r.mu.RUnlock()
	for _, t := range buf {
		t.sampleRate(now)
	}
	return buf
}

// Get finds a live tunnel.
func (r *Registry) Get(id uuid.UUID) (*Tunnel, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.tunnels[id]
	return t, ok
}

// Kill closes a live tunnel; it reports whether the tunnel was found.
func (r *Registry) Kill(id uuid.UUID) bool {
	t, ok := r.Get(id)
	if ok {
		t.Kill()
	}
	return ok
}

// Len is the number of live tunnels.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.tunnels)
}

// CountWhere is the number of live tunnels whose Info satisfies match.
func (r *Registry) CountWhere(match func(Info) bool) int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, t := range r.tunnels {
		if match(t.Info) {
			n++
		}
	}
	return n
}

// Empty returns a channel that is closed once no tunnel is live (at once if
// none is): shutdown waits on it to drain.
func (r *Registry) Empty() <-chan struct{} {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.empty
}

// Opened is the number of tunnels opened since the registry was made.
func (r *Registry) Opened() uint64 { return r.opened.Load() }

// SniffersAbandoned is the number of sniffer actors that did not stop within
// their bound when their tunnel ended, since the registry was made.
func (r *Registry) SniffersAbandoned() uint64 { return r.sniffers.abandoned.Load() }

// SniffersStuck is the number of abandoned sniffer actors still inside a
// Sniff call: goroutines that a registered sniffer holds.
func (r *Registry) SniffersStuck() int64 { return r.sniffers.stuck.Load() }

// Bytes is the total carried up and down by all tunnels, live and closed.
func (r *Registry) Bytes() (up, down uint64) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	up, down = r.bytes.up.Load(), r.bytes.down.Load()
	for _, t := range r.tunnels {
		up += t.bytesUp.Load()
		down += t.bytesDown.Load()
	}
	return up, down
}

// Tunnels lists the live tunnels, oldest first. It copies only pointers, so a
// caller can snapshot them one at a time (the API streams /tunnels that way).
func (r *Registry) Tunnels() []*Tunnel {
	r.mu.RLock()
	ts := make([]*Tunnel, 0, len(r.tunnels))
	for _, t := range r.tunnels {
		ts = append(ts, t)
	}
	r.mu.RUnlock()
	slices.SortFunc(ts, func(a, b *Tunnel) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return ts
}

// Snapshots copies every live tunnel, oldest first.
func (r *Registry) Snapshots() []Snapshot {
	ts := r.Tunnels()
	out := make([]Snapshot, len(ts))
	for i, t := range ts {
		out[i] = t.Snapshot()
	}
	return out
}
