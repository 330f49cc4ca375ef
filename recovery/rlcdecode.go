package recovery

import (
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/quictun/quictun/codecs/fecframe"
)

// Decoding the sliding-window code (rlc.go).
//
// The decoder keeps the sources a future repair may still cover, and a linear
// system over the missing ones (unknowns). A repair, less the sources it covers
// that are here (its syndrome), is one equation over the unknowns it covers. The
// system stays in reduced row echelon form: every equation has a pivot unknown,
// its oldest, with coefficient 1, and no other equation mentions a pivot. An
// equation left with its pivot alone is solved: its data is the source's shard.
//
// An unknown is given up (it reaches quic-go as a loss) when no equation can
// ever solve it: no future repair covers it (older than the newest repair's
// window) and it is no equation's pivot, or it falls out of the ring. Giving one
// up drops the equations that mention it, whose pivots are then looked at again.
// Everything is bounded: the ring, the unknowns and the equations.

const (
	// rlcRing is how many source numbers the decoder tracks behind the newest,
	// and so the largest window a repair may cover.
	rlcRing = 1024
	// rlcMaxUnknowns bounds the sources the decoder solves for at once: at 10%
	// loss a window of 256 holds about 26. When full, the oldest is given up.
	rlcMaxUnknowns = 128
)

type rlcState uint8

const (
	rlcNone    rlcState = iota
	rlcKnown            // buf holds the shard
	rlcUnknown          // slot is its place in the system
)

type rlcSource struct {
	ssn   uint32
	state rlcState
	slot  uint8
	buf   *buffer
	off   int // the shard is buf.b[off : off+n]
	n     int
}

type rlcUnknownEntry struct {
	used  bool
	ssn   uint32
	row   int           // the equation it is the pivot of, -1 for none
	since time.Duration // when the decoder learnt it was missing
}

// rlcRow is one equation: sum of coef[slot] x unknown(slot) = data.
type rlcRow struct {
	used  bool
	pivot int
	coef  [rlcMaxUnknowns]byte
	buf   *buffer
	off   int
	n     int
}

func (r *rlcRow) data() []byte { return r.buf.b[r.off : r.off+r.n] }

// rlcSolved is a source the decoder rebuilt: its shard (length and payload).
// The buffer stays the decoder's; copy what you need before the next call.
type rlcSolved struct {
	ssn   uint32
	shard []byte
	since time.Duration // when it was found missing
}

// rlcDecoder decodes one direction of one peer. Not safe for concurrent use.
type rlcDecoder struct {
	pool      *bufferPool
	started   bool
	highest   uint32 // newest source number seen or implied by a repair
	coverFrom uint32 // the newest repair's first source: older ones are never covered again
	freedTo   uint32 // the known sources before it have been given back
	src       [rlcRing]rlcSource
	unk       [rlcMaxUnknowns]rlcUnknownEntry
	rows      [rlcMaxUnknowns]rlcRow
	nUnknown  int
	solved    []rlcSolved
	// gaveUp counts the unknowns given up since the caller last reset it.
	gaveUp int
}

func newRLCDecoder(pool *bufferPool) *rlcDecoder { return &rlcDecoder{pool: pool} }

// before reports whether source number a comes before b (serial arithmetic).
func before(a, b uint32) bool { return int32(a-b) < 0 }

// rlcRestart: a source number this far from the newest (either way) means the
// sender started over (it starts at a random number: see newPeer).
const rlcRestart = 1 << 16

// track makes ssn trackable, creating unknowns for the numbers skipped up to it.
// It reports false when ssn is too old to track. A source (not a repair) far
// from the newest starts the decoder over.
func (d *rlcDecoder) track(ssn uint32, now time.Duration, source bool) bool {
	gap := int32(ssn - d.highest)
	if d.started && source && (gap > rlcRestart || gap < -rlcRestart) {
		d.reset()
	}
	if !d.started {
		d.started = true
		d.highest, d.coverFrom, d.freedTo = ssn-1, ssn, ssn
		gap = 1
	}
	switch {
	case gap <= 0:
		return int(-gap) < rlcRing
	case gap > rlcRing && !source:
		return false // a repair of sources far ahead: not ours to trust
	case gap > rlcRing:
		// A loss run longer than the ring: nothing before ssn is worth solving.
		d.reset()
		d.started = true
		d.highest, d.coverFrom, d.freedTo = ssn-1, ssn, ssn
	}
	for s := d.highest + 1; before(s, ssn); s++ {
		d.evict(s)
		d.addUnknown(s, now)
	}
	d.evict(ssn)
	d.highest = ssn
	return true
}

// evict frees ssn's ring slot from whatever older source held it.
func (d *rlcDecoder) evict(ssn uint32) {
	e := &d.src[ssn%rlcRing]
	switch e.state {
	case rlcKnown:
		d.pool.put(e.buf)
	case rlcUnknown:
		d.giveUp(int(e.slot))
	}
	*e = rlcSource{}
}

func (d *rlcDecoder) addUnknown(ssn uint32, now time.Duration) {
	if d.nUnknown == rlcMaxUnknowns {
		oldest := -1
		for i := range d.unk {
			if d.unk[i].used && (oldest < 0 || before(d.unk[i].ssn, d.unk[oldest].ssn)) {
				oldest = i
			}
		}
		d.giveUp(oldest)
	}
	for i := range d.unk {
		if !d.unk[i].used {
			d.unk[i] = rlcUnknownEntry{used: true, ssn: ssn, row: -1, since: now}
			d.nUnknown++
			d.src[ssn%rlcRing] = rlcSource{ssn: ssn, state: rlcUnknown, slot: uint8(i)}
			return
		}
	}
}

// giveUp abandons unknown slot and every equation that mentions it.
func (d *rlcDecoder) giveUp(slot int) {
	u := &d.unk[slot]
	if !u.used {
		return
	}
	for i := range d.rows {
		if r := &d.rows[i]; r.used && r.coef[slot] != 0 {
			d.dropRow(i)
		}
	}
	if e := &d.src[u.ssn%rlcRing]; e.state == rlcUnknown && e.ssn == u.ssn {
		*e = rlcSource{}
	}
	*u = rlcUnknownEntry{}
	d.nUnknown--
	d.gaveUp++
}

func (d *rlcDecoder) dropRow(i int) {
	r := &d.rows[i]
	if d.unk[r.pivot].row == i {
		d.unk[r.pivot].row = -1
	}
	d.pool.put(r.buf)
	r.used, r.buf = false, nil
}

// source takes an arriving source's shard, buf.b[off:off+n]. It reports whether
// the decoder kept buf (then it is the decoder's until released to the pool), and
// whether the source was here already (received or rebuilt).
func (d *rlcDecoder) source(ssn uint32, buf *buffer, off, n int, now time.Duration) (kept, dup bool) {
	if !d.track(ssn, now, true) {
		return false, false
	}
	e := &d.src[ssn%rlcRing]
	switch {
	case e.state == rlcKnown:
		return false, true
	case e.state == rlcUnknown:
		// Late (reordered or resent): substitute it into the system.
		d.substitute(int(e.slot), buf.b[off:off+n])
	}
	if before(ssn, d.coverFrom) {
		*e = rlcSource{}
		d.expire()
		return false, false // no repair will cover it again
	}
	*e = rlcSource{ssn: ssn, state: rlcKnown, buf: buf, off: off, n: n}
	d.expire()
	return true, false
}

// giveUpBefore gives up the unknowns found missing before t: a rebuild that late
// is worth nothing to quic-go, and the loss must be counted. It returns when the
// oldest remaining unknown was found missing (0 for none).
func (d *rlcDecoder) giveUpBefore(t time.Duration) (oldest time.Duration) {
	for slot := range d.unk {
		if u := &d.unk[slot]; u.used && u.since < t {
			d.giveUp(slot)
		}
	}
	d.expire()
	for _, u := range d.unk {
		if u.used && (oldest == 0 || u.since < oldest) {
			oldest = u.since
		}
	}
	return oldest
}

// substitute removes unknown slot from the system now that its shard is known.
func (d *rlcDecoder) substitute(slot int, shard []byte) {
	u := &d.unk[slot]
	pivotRow := u.row
	for i := range d.rows {
		r := &d.rows[i]
		if !r.used || r.coef[slot] == 0 {
			continue
		}
		d.grow(r, len(shard))
		gf.GalMulSliceXor(r.coef[slot], shard, r.data())
		r.coef[slot] = 0
	}
	*u = rlcUnknownEntry{}
	d.nUnknown--
	if pivotRow >= 0 {
		// Its equation now speaks of the other unknowns only: put it back in
		// as a new one.
		r := d.rows[pivotRow]
		d.rows[pivotRow].used = false
		d.insert(r)
	}
}

// grow extends row r's data to n bytes with zeros.
func (d *rlcDecoder) grow(r *rlcRow, n int) {
	if n > r.n {
		clear(r.buf.b[r.off+r.n : r.off+n])
		r.n = n
	}
}

// repair takes repair id over the count sources from first, with its data in
// buf.b[off:off+n]. It reports whether the decoder kept buf.
func (d *rlcDecoder) repair(id, first uint32, count int, buf *buffer, off, n int, now time.Duration) (kept bool) {
	if count <= 0 || count > rlcRing || off+fecframe.MaxShardLen > bufSize || n > fecframe.MaxShardLen {
		return false
	}
	last := first + uint32(count) - 1
	newest := !d.started || before(d.highest, last)
	if !d.track(last, now, false) || before(first, d.highest-rlcRing+1) {
		return false
	}
	if newest {
		d.addUnknown(last, now) // lost, or overtaken by this repair
	}
	// Coverage first: a repair that needs a source no longer here is of no use,
	// and one that covers nothing missing has nothing to say; neither is worth
	// combining.
	covers := false
	for s := first; ; s++ {
		e := &d.src[s%rlcRing]
		if e.ssn != s || e.state == rlcNone {
			return false // a source this repair needs is gone: it cannot be used
		}
		covers = covers || e.state == rlcUnknown
		if s == last {
			break
		}
	}
	// A repair of one source (the sender's copy of a small one) says nothing
	// of where its window starts.
	if count > 1 && !before(first, d.coverFrom) {
		d.coverFrom = first
	}
	if !covers {
		d.expire()
		return false
	}
	var r rlcRow
	r.buf, r.off, r.n = buf, off, n
	data := r.data()
	for s := first; ; s++ {
		e := &d.src[s%rlcRing]
		c := rlcCoefficient(id, s)
		if e.state == rlcKnown {
			gf.GalMulSliceXor(c, e.buf.b[e.off:e.off+min(e.n, n)], data)
		} else {
			r.coef[e.slot] ^= c
		}
		if s == last {
			break
		}
	}
	kept = d.insert(r)
	d.expire()
	return kept
}

// insert reduces equation r against the system and adds it, solving what it can.
// It reports whether r's buffer was kept.
func (d *rlcDecoder) insert(r rlcRow) bool {
	for i := range d.rows {
		q := &d.rows[i]
		if !q.used {
			continue
		}
		if c := r.coef[q.pivot]; c != 0 {
			d.grow(&r, q.n)
			gf.GalMulSliceXor(c, q.coef[:], r.coef[:])
			gf.GalMulSliceXor(c, q.data(), r.data())
		}
	}
	pivot := -1
	for slot, c := range r.coef {
		if c != 0 && (pivot < 0 || before(d.unk[slot].ssn, d.unk[pivot].ssn)) {
			pivot = slot
		}
	}
	if pivot < 0 {
		d.pool.put(r.buf) // a combination of what the system already knew
		return true
	}
	if inv := reedsolomon.Inv(r.coef[pivot]); inv != 1 {
		gf.GalMulSlice(inv, r.coef[:], r.coef[:])
		gf.GalMulSlice(inv, r.data(), r.data())
	}
	idx := -1
	for i := range d.rows {
		if !d.rows[i].used {
			idx = i
			break
		}
	}
	if idx < 0 { // cannot happen: no more equations than unknowns
		d.pool.put(r.buf)
		return true
	}
	r.used, r.pivot = true, pivot
	d.rows[idx] = r
	d.unk[pivot].row = idx
	nr := &d.rows[idx]
	for i := range d.rows {
		q := &d.rows[i]
		if i == idx || !q.used {
			continue
		}
		if c := q.coef[pivot]; c != 0 {
			d.grow(q, nr.n)
			gf.GalMulSliceXor(c, nr.coef[:], q.coef[:])
			gf.GalMulSliceXor(c, nr.data(), q.data())
		}
	}
	d.collectSolved()
	return true
}

// collectSolved turns every equation left with its pivot alone into a known source.
func (d *rlcDecoder) collectSolved() {
	for i := range d.rows {
		r := &d.rows[i]
		if !r.used || !onlyPivot(r) {
			continue
		}
		slot := r.pivot
		ssn, since := d.unk[slot].ssn, d.unk[slot].since
		d.unk[slot] = rlcUnknownEntry{}
		d.nUnknown--
		d.src[ssn%rlcRing] = rlcSource{ssn: ssn, state: rlcKnown, buf: r.buf, off: r.off, n: r.n}
		d.solved = append(d.solved, rlcSolved{ssn: ssn, shard: r.data(), since: since})
		r.used, r.buf = false, nil
	}
}

func onlyPivot(r *rlcRow) bool {
	for slot, c := range r.coef {
		if c != 0 && slot != r.pivot {
			return false
		}
	}
	return true
}

// expire releases the sources no repair will cover again and gives up the
// unknowns nothing can solve any more.
func (d *rlcDecoder) expire() {
	for changed := d.nUnknown > 0; changed; {
		changed = false
		for slot := range d.unk {
			u := &d.unk[slot]
			if u.used && u.row < 0 && before(u.ssn, d.coverFrom) {
				d.giveUp(slot)
				changed = true
			}
		}
	}
	// Known sources before coverFrom are never read again: give their buffers
	// back (each number is passed once; one solved later than that waits for
	// its ring slot to be reused).
	if before(d.freedTo, d.highest-rlcRing+1) {
		d.freedTo = d.highest - rlcRing + 1
	}
	for ; before(d.freedTo, d.coverFrom); d.freedTo++ {
		if e := &d.src[d.freedTo%rlcRing]; e.ssn == d.freedTo && e.state == rlcKnown {
			d.pool.put(e.buf)
			*e = rlcSource{}
		}
	}
}

// releaseSources gives back every source buffer the decoder holds: the peer has
// been quiet for longer than any repair would come after its sources. Unknowns and
// equations stay (giveUpBefore ends them).
func (d *rlcDecoder) releaseSources() {
	for i := range d.src {
		if e := &d.src[i]; e.state == rlcKnown {
			d.pool.put(e.buf)
			*e = rlcSource{}
		}
	}
}

// take returns the sources solved since the last take. Their shards stay valid
// until the next call that changes the decoder.
func (d *rlcDecoder) take() []rlcSolved {
	s := d.solved
	d.solved = d.solved[:0]
	return s
}

// reset gives everything back.
func (d *rlcDecoder) reset() {
	for i := range d.src {
		if e := &d.src[i]; e.state == rlcKnown {
			d.pool.put(e.buf)
		}
		d.src[i] = rlcSource{}
	}
	for i := range d.rows {
		if d.rows[i].used {
			d.pool.put(d.rows[i].buf)
		}
		d.rows[i] = rlcRow{}
	}
	d.unk = [rlcMaxUnknowns]rlcUnknownEntry{}
	d.nUnknown = 0
	d.started = false
	d.solved = d.solved[:0]
}
