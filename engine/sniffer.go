package engine

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"sync/atomic"
	"time"
	"unicode/utf8"

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

// snifferStopBound is how long teardown waits for the sniffer actor once it
// was told to stop. The actor checks for the stop between Sniff calls, and a
// built-in sniffer's call takes microseconds, so a healthy actor is gone long
// before. A registered sniffer whose call never returns cannot be stopped from
// outside: its goroutine is abandoned, counted by the registry (see
// Registry.SniffersAbandoned and SniffersStuck), and ends by itself if the call
// ever returns. The tunnel deregisters and Run returns either way.
const snifferStopBound = 250 * time.Millisecond

// Life of a sniffer actor, as seen by its goroutine and by teardown; whichever
// moves it out of snifferRunning first decides who accounts for it.
const (
	snifferRunning int32 = iota
	snifferFinished
	snifferAbandoned
)

// snifferActor is the handle the supervisor keeps on the tunnel's sniffer.
type snifferActor struct {
	cancel context.CancelFunc
	done   chan struct{}
	state  atomic.Int32
	reg    *Registry
}

// startSniffer starts the tunnel's sniffer actor, which runs sniff (on a
// tap) until it returns or ctx ends.
func (t *Tunnel) startSniffer(sniff func(ctx context.Context)) *snifferActor {
	ctx, cancel := context.WithCancel(t.ctx)
	a := &snifferActor{cancel: cancel, done: make(chan struct{}), reg: t.reg}
	go a.routine(ctx, sniff)
	return a
}

// routine is the sniffer actor's goroutine.
func (a *snifferActor) routine(ctx context.Context, sniff func(ctx context.Context)) {
	defer close(a.done)
	sniff(ctx)
	if !a.state.CompareAndSwap(snifferRunning, snifferFinished) {
		// Teardown gave up on us earlier; we are no longer stuck.
		a.reg.sniffers.stuck.Add(-1)
	}
}

// stop tells the actor to stop and waits for it, at most snifferStopBound.
func (a *snifferActor) stop() {
	a.cancel()
	timer := time.NewTimer(snifferStopBound)
	defer timer.Stop()
	select {
	case <-a.done:
	case <-timer.C:
		if a.state.CompareAndSwap(snifferRunning, snifferAbandoned) {
			a.reg.sniffers.abandoned.Add(1)
			a.reg.sniffers.stuck.Add(1)
		}
	}
}

// runSniffer is the tunnel's sniffer actor. It runs the candidate sniffers on
// the captured prefixes after each chunk until one has learnt all it can, none
// is left, the window closes, or the tunnel ends.
//
// The first Match wins: from then on only that sniffer is asked, and its
// verdict is not taken back. A later NotMine (SSH and RFB read both sides and
// may turn a Match down when the other side proves not to speak the protocol)
// ends sniffing with the protocol and the properties of its last Match; a
// later Undecided (a sniffer bug) changes nothing. So the API never shows a
// protocol without its properties, nor sees one vanish.
func (t *Tunnel) runSniffer(ctx context.Context, tp *tap, sniffers []sniff.Sniffer, window time.Duration) {
	defer tp.active.Store(false)
	timeout := time.NewTimer(window)
	defer timeout.Stop()

	var seen [2][]byte
	j := jury[sniff.Sniffer]{candidates: slices.Clone(sniffers)}
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
		res, show, stop := j.judge(ctx, func(s sniff.Sniffer) sniff.Result { return s.Sniff(seen[upstream], seen[downstream]) })
		if stop {
			return
		}
		if !show {
			continue
		}
		if got := boundProps(res.Props); props == nil || !maps.Equal(props, got) {
			props = got
			t.SetProtocol(j.matched.Name(), props)
		}
		if res.Done {
			return
		}
	}
}

// jury is a sniffer actor's verdict rule, for streams and datagrams alike:
// the candidates in order until one says Match, a NotMine dropping its
// candidate for good; after a Match only the matched sniffer is asked.
type jury[S interface{ Name() string }] struct {
	candidates []S
	matched    S
	decided    bool
}

// judge asks for the verdict on what was seen now. show: res is the matched
// sniffer's Match to show; stop: sniffing ends (no candidate left, the
// matched one turned it down, or ctx ended while a sniffer ran).
func (j *jury[S]) judge(ctx context.Context, ask func(S) sniff.Result) (res sniff.Result, show, stop bool) {
	if j.decided {
		res = ask(j.matched)
		if ctx.Err() != nil {
			return res, false, true
		}
		return res, res.Verdict != sniff.Undecided && res.Verdict != sniff.NotMine, res.Verdict == sniff.NotMine
	}
	for i := 0; i < len(j.candidates); {
		res = ask(j.candidates[i])
		if ctx.Err() != nil {
			return res, false, true // a slow call outlived the tunnel
		}
		switch res.Verdict {
		case sniff.NotMine:
			j.candidates = slices.Delete(j.candidates, i, i+1)
		case sniff.Match:
			j.matched, j.decided = j.candidates[i], true
			return res, true, false
		default:
			i++
		}
	}
	return res, false, len(j.candidates) == 0
}

// boundProps copies what a sniffer reported within the bounds the built-in
// sniffers keep (sniff.MaxProps properties, keys and values of at most
// sniff.MaxValueLen bytes), so that a registered sniffer cannot grow the
// registry or the API's answers either. Past MaxProps, the first keys in
// order are kept. It never returns nil.
func boundProps(in map[string]string) map[string]string {
	keys := slices.Sorted(maps.Keys(in))
	out := make(map[string]string, min(len(keys), sniff.MaxProps))
	for _, k := range keys[:min(len(keys), sniff.MaxProps)] {
		out[cut(k, sniff.MaxValueLen)] = cut(in[k], sniff.MaxValueLen)
	}
	return out
}

// cut shortens s to at most n bytes, at a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// sniffDatagrams is how many datagrams of each direction of a flow the
// datagram sniffers see: the first one decides for every built-in protocol,
// the others are for a flow whose first datagram was lost or not yet told.
const sniffDatagrams = 4

// datagramTap hands the flow's sniffer copies of its first datagrams (at
// most sniff.DatagramPrefix bytes of each, with its size). Like tap it never
// blocks a pump; a datagram the sniffer's channel has no room for is only
// not shown (datagrams are messages of their own: a gap misleads nobody).
type datagramTap struct {
	ch     chan sniff.Datagram
	active atomic.Bool
	// budget is what each direction may still offer; budget[d] is touched
	// only by the pump of direction d.
	budget [2]int
}

func newDatagramTap(perDirection int) *datagramTap {
	tp := &datagramTap{ch: make(chan sniff.Datagram, 2*perDirection), budget: [2]int{perDirection, perDirection}}
	tp.active.Store(true)
	return tp
}

func (tp *datagramTap) offer(d direction, b []byte) {
	if tp == nil || tp.budget[d] <= 0 {
		return
	}
	tp.budget[d]--
	if !tp.active.Load() {
		tp.budget[d] = 0
		return
	}
	dg := sniff.Datagram{Payload: bytes.Clone(b[:min(len(b), sniff.DatagramPrefix)]), Size: len(b), FromClient: d == upstream}
	select {
	case tp.ch <- dg:
	default:
	}
}

// runDatagramSniffer is a flow's sniffer actor. Each datagram is shown to
// the candidates in order until one matches it; a candidate that says
// NotMine of a datagram is not asked again. The first Match names the flow's
// protocol (never taken back, as with streams); later datagrams go to that
// sniffer alone and may add properties, until it is Done or says NotMine.
// It ends then, when no candidate is left, when it has seen every datagram
// the tap offers, or when the window closes or the flow ends.
func (t *Tunnel) runDatagramSniffer(ctx context.Context, tp *datagramTap, sniffers []sniff.DatagramSniffer, window time.Duration) {
	defer tp.active.Store(false)
	timeout := time.NewTimer(window)
	defer timeout.Stop()

	j := jury[sniff.DatagramSniffer]{candidates: slices.Clone(sniffers)}
	var props map[string]string
	for seen := 0; seen < 2*sniffDatagrams; seen++ {
		var d sniff.Datagram
		select {
		case d = <-tp.ch:
		case <-ctx.Done():
			return
		case <-timeout.C:
			return
		}
		res, show, stop := j.judge(ctx, func(s sniff.DatagramSniffer) sniff.Result { return s.SniffDatagram(d) })
		if stop {
			return
		}
		if !show {
			continue
		}
		// A property once shown keeps its value; a later datagram only adds.
		merged := maps.Clone(props)
		if merged == nil {
			merged = map[string]string{}
		}
		got := boundProps(res.Props)
		for _, k := range slices.Sorted(maps.Keys(got)) {
			if _, ok := merged[k]; !ok && len(merged) < sniff.MaxProps {
				merged[k] = got[k]
			}
		}
		if props == nil || !maps.Equal(props, merged) {
			props = merged
			t.SetProtocol(j.matched.Name(), props)
		}
		if res.Done {
			return
		}
	}
}
