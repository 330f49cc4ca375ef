package recovery

import (
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/quictun/quictun/codecs/fecframe"
)

// A sliding-window random linear code (the family of RFC 8681's RLC scheme).
//
// A block code (Reed-Solomon groups, which the layer used before) protects groups:
// a loss early in a group waits for the group's end, and a group fails when it
// loses more than its parity, whatever its neighbours had to spare. Here every repair datagram is a random linear
// combination, over GF(2^8), of the source datagrams sent within the last window
// (a span of time, like a group's), so each repair helps whatever losses are
// still open, and a burst is answered by the repairs that follow it rather than by
// one group's fixed share. In a counting model of a 100 Mbit/s path at 5% loss
// (7700 sources a second), windows of 256 sources with a repair every 10 fail
// about as often as groups of 128+16 (0.05 failures a second) with 2.3% less
// overhead, and a repair lands on average 2-3 ms after the loss instead of about
// half a group's span.
//
// Sources are numbered consecutively (ssn); repair id is the repair's own number.
// The coefficient of source ssn in repair id is rlcCoefficient(id, ssn), never
// zero, so both ends agree without sending coefficients. A source's coded shard
// is its 2-byte length and payload, zero-padded to the repair's length.

// rlcCoefficient is the coefficient of source ssn in repair id: a hash of both,
// never zero.
func rlcCoefficient(id, ssn uint32) byte {
	h := id*0x9e3779b1 ^ ssn*0x85ebca77
	h ^= h >> 15
	h *= 0x2c1b3c6d
	h ^= h >> 12
	h *= 0x297a2d39
	h ^= h >> 15
	if c := byte(h); c != 0 {
		return c
	}
	return byte(h>>8) | 1
}

// gf does the GF(2^8) arithmetic on slices; the library picks its fastest
// kernels (tens of GB/s on this machine's cores).
var gf reedsolomon.LowLevel

// rlcEncode sets dst to repair id over the sources first, first+1, ...: shards
// holds their coded shards in that order, each at most len(dst) long (shorter ones
// count as zero-padded).
func rlcEncode(dst []byte, id, first uint32, shards [][]byte) {
	clear(dst)
	for i, s := range shards {
		gf.GalMulSliceXor(rlcCoefficient(id, first+uint32(i)), s, dst)
	}
}

// rlcEncoder is the sending side of the code: it owns the window of latest
// sources that repairs combine, and the span that tops up a slow flow's repairs
// (see sender). Its buffers are the sources' framed datagrams, kept until they
// fall out of the window. Not safe for concurrent use.
type rlcEncoder struct {
	ssn    uint32                // the next source's number
	ring   [rlcWindowMax]*buffer // by ssn % rlcWindowMax
	sentAt [rlcWindowMax]time.Duration
	have   int     // sources in ring
	credit float64 // repairs earned and not sent
	// The current span: a flow that sends fewer than a group's worth of
	// sources within it gets at its end at least the parity such a group
	// would have, so that a slow flow's losses come back within the span too.
	spanStart   time.Duration
	spanSources int
	spanRepairs int
	shards      [rlcWindowMax][]byte // scratch of encode
}

const (
	// rlcWindowMax bounds the sources one repair combines: 33 ms at 100 Mbit/s.
	rlcWindowMax = 256
	// rlcWindowAge: older sources are left out of repairs; the receiver has long
	// solved or given up what they could help with.
	rlcWindowAge = 50 * time.Millisecond
)

// add keeps buf, a framed source, as the next source, sent now, and returns
// the buffer it displaces from the window (nil if none) for the caller to free.
func (e *rlcEncoder) add(buf *buffer, now time.Duration) (displaced *buffer) {
	i := e.ssn % rlcWindowMax
	displaced = e.ring[i]
	e.ring[i], e.sentAt[i] = buf, now
	e.ssn++
	e.have = min(e.have+1, rlcWindowMax)
	return displaced
}

// windowLen is how many of the latest sources a repair sent now combines: at
// most rlcWindowMax, none older than rlcWindowAge.
func (e *rlcEncoder) windowLen(now time.Duration) int {
	n := 0
	for n < e.have && now-e.sentAt[(e.ssn-1-uint32(n))%rlcWindowMax] <= rlcWindowAge {
		n++
	}
	return n
}

// shardLen is the length of a repair over the window sent now: its longest
// source's shard; 0 for an empty window.
func (e *rlcEncoder) shardLen(now time.Duration) (first uint32, count, n int) {
	count = e.windowLen(now)
	first = e.ssn - uint32(count)
	for k := range count {
		b := e.ring[(first+uint32(k))%rlcWindowMax]
		n = max(n, b.n-fecframe.DataShardOffset)
	}
	return first, count, n
}

// encode sets dst to repair id over the count sources from first (as
// shardLen gave them).
func (e *rlcEncoder) encode(dst []byte, id, first uint32, count int) {
	shards := e.shards[:count]
	for k := range shards {
		b := e.ring[(first+uint32(k))%rlcWindowMax]
		shards[k] = b.b[fecframe.DataShardOffset:b.n]
	}
	rlcEncode(dst, id, first, shards)
	clear(shards)
}

// quietSince is when the newest source was sent, and whether there is one.
func (e *rlcEncoder) quietSince() (time.Duration, bool) {
	if e.have == 0 {
		return 0, false
	}
	return e.sentAt[(e.ssn-1)%rlcWindowMax], true
}

// release gives back every source buffer.
func (e *rlcEncoder) release(pool *bufferPool) {
	for i, b := range e.ring {
		pool.put(b)
		e.ring[i] = nil
	}
	e.have = 0
}
