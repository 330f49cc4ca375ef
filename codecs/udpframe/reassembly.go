package udpframe

// Reassembler rebuilds one flow's fragmented datagrams (one direction).
//
// Its state is bounded: at most MaxPartial datagrams are in the making, each
// of at most its maxSize bytes, so a flow pins at most MaxPartial x maxSize
// bytes whatever its peer sends. A new datagram that finds every slot taken
// evicts the oldest, which is then lost whole; so does a fragment that
// contradicts what came before (another count, or too many bytes). A fragment
// of a datagram older than the StaleWindow newest is dropped, so a late piece
// of an evicted datagram cannot evict a live one. It does not wait: time does
// not enter, a datagram is complete or it is eventually pushed out.
//
// A Reassembler is not safe for concurrent use: one flow's receiver owns it.
type Reassembler struct {
	maxSize int
	slots   [MaxPartial]partial
	newest  uint64 // the highest seq seen
	seen    bool
}

// MaxPartial is how many fragmented datagrams of a flow may be incomplete at
// once: fragments of a few datagrams may interleave when they are reordered.
const MaxPartial = 4

// StaleWindow is how far behind the newest seq a fragment may be.
const StaleWindow = 64

type partial struct {
	used   bool
	seq    uint64
	count  uint8
	got    int
	size   int
	pieces [MaxFragments][]byte
}

// NewReassembler makes a reassembler of datagrams of at most maxSize bytes.
func NewReassembler(maxSize int) *Reassembler { return &Reassembler{maxSize: maxSize} }

// Add takes one fragment (its header and payload, which the reassembler keeps
// until the datagram is complete or dropped: the caller must not reuse it).
// It returns the whole datagram once its last fragment came, in a new slice,
// and how many datagrams it gave up on meanwhile (evicted, contradicted, too
// large or stale).
func (r *Reassembler) Add(h Header, payload []byte) (whole []byte, dropped int) {
	if !h.Fragmented() {
		return payload, 0
	}
	if r.seen && h.Seq+StaleWindow < r.newest {
		return nil, 1
	}
	if !r.seen || h.Seq > r.newest {
		r.newest, r.seen = h.Seq, true
	}
	p := r.find(h.Seq)
	if p == nil {
		p, dropped = r.take(), 0
		if p.used {
			dropped = 1
		}
		*p = partial{used: true, seq: h.Seq, count: h.Count}
	}
	if p.count != h.Count || p.size+len(payload) > r.maxSize {
		p.reset()
		return nil, dropped + 1
	}
	if p.pieces[h.Index] != nil {
		return nil, dropped // a duplicate
	}
	p.pieces[h.Index] = payload
	p.got++
	p.size += len(payload)
	if p.got < int(p.count) {
		return nil, dropped
	}
	whole = make([]byte, 0, p.size)
	for _, piece := range p.pieces[:p.count] {
		whole = append(whole, piece...)
	}
	p.reset()
	return whole, dropped
}

// Pending is how many datagrams are incomplete.
func (r *Reassembler) Pending() int {
	n := 0
	for i := range r.slots {
		if r.slots[i].used {
			n++
		}
	}
	return n
}

func (r *Reassembler) find(seq uint64) *partial {
	for i := range r.slots {
		if p := &r.slots[i]; p.used && p.seq == seq {
			return p
		}
	}
	return nil
}

// take is a free slot, or else the oldest one.
func (r *Reassembler) take() *partial {
	oldest := &r.slots[0]
	for i := range r.slots {
		p := &r.slots[i]
		if !p.used {
			return p
		}
		if p.seq < oldest.seq {
			oldest = p
		}
	}
	return oldest
}

func (p *partial) reset() {
	clear(p.pieces[:p.count])
	p.used, p.got, p.size = false, 0, 0
}
