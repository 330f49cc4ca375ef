package recovery

import (
	"fmt"
	"sync"

	"github.com/klauspost/reedsolomon"
)

// codecs caches one Reed-Solomon codec per (k, m). Building a codec inverts a
// matrix, far too slow for the packet path, and the sender moves between only a
// handful of shapes, so the cache stays small; it is cleared if a misbehaving peer
// makes it grow past its bound. A reedsolomon.Encoder is safe for concurrent use.
type codecs struct {
	mu sync.Mutex
	m  map[codecShape]reedsolomon.Encoder
}

type codecShape struct{ k, m uint8 }

// maxCachedCodecs bounds the cache; a peer can name any (k, m) in its parity headers.
const maxCachedCodecs = 64

func (c *codecs) get(k, m int) (reedsolomon.Encoder, error) {
	shape := codecShape{uint8(k), uint8(m)}
	c.mu.Lock()
	defer c.mu.Unlock()
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
	}
	c.m[shape] = enc
	return enc, nil
}
