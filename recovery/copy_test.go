package recovery

import (
	"bytes"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/quictun/quictun/codecs/fecframe"
)

// windowRepair matches the repairs over more than one source: dropping them
// leaves copies as the only way back.
func windowRepair(b []byte) bool {
	f, err := fecframe.Decode(b)
	return err == nil && f.Type == fecframe.TypeRepair && f.Count > 1
}

func TestSmallSourceIsRebuiltFromItsCopy(t *testing.T) {
	defer goleak.VerifyNone(t)
	l := newLink(t, Config{Mode: Auto}, Config{Mode: Auto})
	defer l.close()
	bulk, small, ack := payloads(4, 1200), bytes.Repeat([]byte("k"), 100), bytes.Repeat([]byte("a"), 40)
	// Lost: the small source (4), a bulk one (6) and an ACK-sized one (7),
	// and every repair over the window.
	lose := sourceAt(4, 6, 7)
	l.aSock.setDrop(func(b []byte) bool { return lose(b) || windowRepair(b) })
	l.send(t, bulk[0], bulk[1], bulk[2], bulk[3], small, bulk[0][:1100], bulk[1][:1000], ack)
	got := l.collect(t, 6, 2*time.Second)
	sameSet(t, got, [][]byte{bulk[0], bulk[1], bulk[2], bulk[3], small, bulk[0][:1100]})
	if st := l.a.Stats(); st.CopiesSent != 1 {
		t.Fatalf("sender stats %+v, want a copy of the small source only", st)
	}
	if st := l.b.Stats(); st.Repaired != 1 {
		t.Fatalf("receiver stats %+v, want the small source rebuilt", st)
	}
}

func TestCopiesAreBudgeted(t *testing.T) {
	// A peer that sends only small datagrams (an ACK stream, a flood of DNS
	// queries) gets copies at copyRate at most. The sender counts as it
	// sends, so the bound holds whatever loopback drops of the burst under
	// load; what arrives is what was sent, once.
	defer goleak.VerifyNone(t)
	l := newLink(t, Config{Mode: Auto}, Config{Mode: Auto})
	defer l.close()
	start := time.Now()
	const n = 400
	sent := payloads(n, 200)
	l.send(t, sent...)
	elapsed := time.Since(start)
	st := l.a.Stats()
	if limit := uint64(copyBurst + copyRate*elapsed.Seconds() + 1); st.CopiesSent < copyBurst || st.CopiesSent > limit {
		t.Fatalf("%d copies for %d small sources in %v, want %d to %d", st.CopiesSent, n, elapsed, copyBurst, limit)
	}
	left := map[string]int{}
	for _, d := range sent {
		left[string(d)]++
	}
	got := l.collect(t, n, 2*time.Second)
	for _, d := range got {
		if left[string(d)] == 0 {
			t.Fatalf("delivered a datagram that was not sent, or twice: %.20q", d)
		}
		left[string(d)]--
	}
	if len(got) == 0 {
		t.Fatalf("none of %d delivered", n)
	}
}

func TestCopyBudgetOnItsClock(t *testing.T) {
	// The bucket alone, on a clock of its own: a flood at one instant gets
	// the burst, and then copyRate a second.
	var b copyBudget
	took := func(now time.Duration, tries int) (n int) {
		for range tries {
			if b.take(now) {
				n++
			}
		}
		return n
	}
	if n := took(time.Second, 1000); n != copyBurst {
		t.Fatalf("a flood at one instant got %d copies, want the burst of %d", n, copyBurst)
	}
	if n := took(time.Second+40*time.Millisecond, 1000); n != copyRate/25 {
		t.Fatalf("40 ms later the flood got %d copies, want %d", n, copyRate/25)
	}
	if n := took(time.Hour, 1000); n != copyBurst {
		t.Fatalf("after a long pause the flood got %d copies, want the burst of %d", n, copyBurst)
	}
}

func TestFixedModeSendsNoCopies(t *testing.T) {
	defer goleak.VerifyNone(t)
	cfg := Config{Mode: Fixed, Data: 8, Parity: 1}
	l := newLink(t, cfg, cfg)
	defer l.close()
	want := payloads(16, 200)
	l.send(t, want...)
	sameSet(t, l.collect(t, 16, 2*time.Second), want)
	if st := l.a.Stats(); st.CopiesSent != 0 || st.ParitySent != 2 {
		t.Fatalf("sender stats %+v, want the fixed rate's 2 repairs and no copy", st)
	}
}
