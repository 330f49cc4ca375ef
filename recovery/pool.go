package recovery

import (
	"sync"
	"sync/atomic"

	"github.com/quictun/quictun/codecs/fecframe"
)

// bufSize holds the largest framed datagram and any plain datagram quic-go reads
// (it reads at most 1452 bytes).
const bufSize = 2048

func init() {
	if fecframe.MaxDatagramLen > bufSize {
		panic("recovery: bufSize is smaller than fecframe.MaxDatagramLen")
	}
}

// buffer is one datagram-sized buffer. Ownership moves with it: the sender keeps a
// source in its window until no repair will cover it, the decoder keeps it while
// a repair may still need it, and whoever holds it last
// returns it exactly once.
type buffer struct {
	b     [bufSize]byte
	n     int        // bytes in use
	owner *allowance // the peer it is charged to, if any
}

// bufferPool is a sync.Pool with a cap on the buffers out, so that memory stays
// bounded whatever peers send: when the cap is reached get fails and the caller
// goes without coding (sends unprotected, or delivers without keeping a copy)
// rather than growing the heap or blocking the packet path.
type bufferPool struct {
	pool sync.Pool
	out  atomic.Int64
	max  int64
}

func newBufferPool(max int) *bufferPool {
	p := &bufferPool{max: int64(max)}
	p.pool.New = func() any { return new(buffer) }
	return p
}

// get returns a buffer, or nil when the cap on buffers out is reached.
func (p *bufferPool) get() *buffer {
	if p.out.Add(1) > p.max {
		p.out.Add(-1)
		return nil
	}
	b := p.pool.Get().(*buffer)
	b.n = 0
	return b
}

// put returns b (nil is ignored), and takes it off the allowance it was
// charged to: whoever frees a peer's buffer need not know whose it was.
func (p *bufferPool) put(b *buffer) {
	if b == nil {
		return
	}
	if b.owner != nil {
		b.owner.out.Add(-1)
		b.owner = nil
	}
	p.out.Add(-1)
	p.pool.Put(b)
}

// allowance is one proven peer's share of the pool: the buffers its sender and
// receiver keep (coding windows, decoder state) count against it, so that no
// peer, however busy or hostile, takes the pool from the others. Buffers that
// pass through (reads, rebuilt deliveries) are the Conn's and are not charged.
type allowance struct {
	out atomic.Int64
	max int64
}

// maxPeerBuffers bounds an allowance: a 100 Mbit/s flow keeps about 256 sources
// on each side and its decoder a few hundred more.
const maxPeerBuffers = 1024

func newAllowance(poolMax int) *allowance {
	return &allowance{max: int64(min(maxPeerBuffers, max(poolMax/2, 1)))}
}

// charge counts b against the allowance. It reports false, and leaves b
// uncharged, when the allowance is spent.
func (a *allowance) charge(b *buffer) bool {
	if a.out.Add(1) > a.max {
		a.out.Add(-1)
		return false
	}
	b.owner = a
	return true
}

// uncharge takes b off the allowance without returning it to the pool (it
// stays with its holder, e.g. the read batch).
func (a *allowance) uncharge(b *buffer) {
	if b.owner == a {
		a.out.Add(-1)
		b.owner = nil
	}
}

// get is a pooled buffer charged to the allowance, nil when either is spent.
func (a *allowance) get(pool *bufferPool) *buffer {
	b := pool.get()
	if b != nil && !a.charge(b) {
		pool.put(b)
		return nil
	}
	return b
}
