package engine

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/quictun/quictun/codecs/sniff"
)

// tap hands the sniffer copies of the first bytes of each direction. It never
// blocks a pump: when the sniffer's channel is full the chunk is dropped and
// that direction stops being tapped, so the sniffer's view is always a true
// prefix of the stream (with a gap, a parser would misread what follows).
type tap struct {
	ch     chan tapChunk
	active atomic.Bool
	// budget is what each direction may still copy; budget[d] is touched only by
	// the pump of direction d.
	budget [2]int
}

type tapChunk struct {
	dir direction
	b   []byte
}

func newTap(limit int) *tap {
	tp := &tap{ch: make(chan tapChunk, 64), budget: [2]int{limit, limit}}
	tp.active.Store(true)
	return tp
}

func (tp *tap) offer(d direction, b []byte) {
	if tp == nil || tp.budget[d] <= 0 {
		return
	}
	if !tp.active.Load() {
		tp.budget[d] = 0
		return
	}
	n := min(len(b), tp.budget[d])
	select {
	case tp.ch <- tapChunk{dir: d, b: bytes.Clone(b[:n])}:
		tp.budget[d] -= n
	default:
		tp.budget[d] = 0
	}
}

// runSniffer is the tunnel's sniffer actor. It runs the candidate sniffers on
// the captured prefixes after each chunk until one has learnt all it can, none
// is left, the window closes, or the tunnel ends.
func (t *Tunnel) runSniffer(ctx context.Context, tp *tap, sniffers []sniff.Sniffer, window time.Duration) {
	defer tp.active.Store(false)
	timeout := time.NewTimer(window)
	defer timeout.Stop()

	var seen [2][]byte
	candidates := slices.Clone(sniffers)
	var matched sniff.Sniffer
	var props map[string]string
	for {
		select {
		case c := <-tp.ch:
			seen[c.dir] = append(seen[c.dir], c.b...)
		case <-ctx.Done():
			return
		case <-timeout.C:
			return
		}
		// Coalesce whatever else is queued before parsing again.
		for drained := false; !drained; {
			select {
			case c := <-tp.ch:
				seen[c.dir] = append(seen[c.dir], c.b...)
			default:
				drained = true
			}
		}
		var res sniff.Result
		if matched == nil {
			for i := 0; i < len(candidates) && matched == nil; {
				res = candidates[i].Sniff(seen[upstream], seen[downstream])
				switch res.Verdict {
				case sniff.NotMine:
					candidates = slices.Delete(candidates, i, i+1)
				case sniff.Match:
					matched = candidates[i]
				default:
					i++
				}
			}
			if matched == nil {
				if len(candidates) == 0 {
					return
				}
				continue
			}
		} else {
			res = matched.Sniff(seen[upstream], seen[downstream])
		}
		if props == nil || !maps.Equal(props, res.Props) {
			props = maps.Clone(res.Props)
			if props == nil {
				props = map[string]string{}
			}
			t.SetProtocol(matched.Name(), props)
		}
		if res.Done {
			return
		}
	}
}
