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
// data datagram in its coding group until the group's parity is out, the receiver
// keeps it until its group is complete or evicted, and whoever holds it last
// returns it exactly once.
type buffer struct {
	b [bufSize]byte
	n int // bytes in use
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

func (p *bufferPool) put(b *buffer) {
	if b == nil {
		return
	}
	p.out.Add(-1)
	p.pool.Put(b)
}
