package recovery

import (
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// codecs caches one Reed-Solomon codec per (k, m). Building a codec inverts a
// matrix (~0.7 ms for 64+2), far too slow for the packet path, and the sender
// moves between only a handful of shapes, so the cache stays small; it is
// cleared if a misbehaving peer makes it grow past its bound. A
// reedsolomon.Encoder is safe for concurrent use.
//
// Each codec also caches the decoding matrix of every loss pattern it has
// rebuilt, without limit: a k x k matrix per pattern, and with random loss in
// groups of 64 nearly every pattern with two or more losses is new. Over a
// lossy link that is megabytes a minute, forever (the soak test's heap crept
// 50 MiB in 10 minutes, nearly all of it there), and a peer that sends
// crafted parity could grow it at will. The cache still pays for the common
// patterns (a rebuild that hits it takes ~6 us instead of ~35 us), so it is
// kept but charged: once the rebuilds since the last clear could have cached
// rebuildBudget bytes of matrices, all codecs are dropped and built afresh.
type codecs struct {
	mu      sync.Mutex
	m       map[codecShape]reedsolomon.Encoder
	charged int // bytes of decoding matrices the codecs may hold
}

type codecShape struct{ k, m uint8 }

const (
	// maxCachedCodecs bounds the cache; a peer can name any (k, m) in its
	// parity headers.
	maxCachedCodecs = 64
	// rebuildBudget bounds the decoding matrices all codecs of a Conn hold:
	// ~1800 rebuilds of 64-shard groups between clears, so the codecs'
	// construction (a few per clear) costs well under 1 us per rebuild.
	rebuildBudget = 8 << 20
)

func (c *codecs) get(k, m int) (reedsolomon.Encoder, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.getLocked(k, m)
}

func (c *codecs) getLocked(k, m int) (reedsolomon.Encoder, error) {
	shape := codecShape{uint8(k), uint8(m)}
	if enc, ok := c.m[shape]; ok {
		return enc, nil
	}
	// One goroutine: shards are ~1.4 KB, far below where splitting work pays, and
	// the packet path must not fan out.
	enc, err := reedsolomon.New(k, m, reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return nil, fmt.Errorf("reed-solomon codec %d+%d: %w", k, m, err)
	}
	if c.m == nil || len(c.m) >= maxCachedCodecs {
		c.m = make(map[codecShape]reedsolomon.Encoder)
		c.charged = 0
	}
	c.m[shape] = enc
	return enc, nil
}

// reconstructData rebuilds the missing data shards of a k+m group (nil or
// zero-length entries, as reedsolomon.Encoder.ReconstructData), charging the
// decoding matrix the codec may cache for it.
func (c *codecs) reconstructData(k, m int, shards [][]byte) error {
	c.mu.Lock()
	// A k x k matrix, and the inversion tree's node with a child slot per shard.
	c.charged += k*k + 8*(k+m) + 64
	if c.charged > rebuildBudget {
		c.m = nil // getLocked builds afresh, and starts the charge over
	}
	enc, err := c.getLocked(k, m)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return enc.ReconstructData(shards)
}
