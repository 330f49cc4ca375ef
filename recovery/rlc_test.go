package recovery

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/reedsolomon"

	"github.com/quictun/quictun/codecs/fecframe"
)

// rlcShard builds a source's coded shard: 2-byte length and payload.
func rlcShard(rng *rand.Rand, maxPayload int) []byte {
	n := 1 + rng.IntN(maxPayload)
	s := make([]byte, 2+n)
	binary.BigEndian.PutUint16(s, uint16(n))
	for i := range s[2:] {
		s[2+i] = byte(rng.Uint32())
	}
	return s
}

// rlcRun drives a sender and a decoder over a lossy channel: nSources sources,
// a repair over the last `window` after every `every` sources, each datagram
// lost with probability loss. It checks every solved shard against what was
// sent. It returns how many sources were lost, solved and given up, each solved
// one's delay in sources, and the most buffers the decoder held at once.
func rlcRun(t *testing.T, seed uint64, nSources, window, every int, loss float64, late func(ssn uint32) bool) (lost, solved, gaveUp int, delays []int, maxHeld int64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 7))
	pool := newBufferPool(1 << 20)
	d := newRLCDecoder(pool)
	const first0 = 0xffffff00 // wraps: serial arithmetic must hold
	sent := make(map[uint32][]byte)
	var lateOnes []uint32
	repairID := uint32(12345)
	now := 0
	check := func() {
		maxHeld = max(maxHeld, pool.out.Load())
		for _, s := range d.take() {
			delays = append(delays, now-int(s.ssn-first0))
			want, ok := sent[s.ssn]
			if !ok {
				t.Fatalf("solved source %d that was never sent", s.ssn)
			}
			if !bytes.Equal(s.shard[:len(want)], want) || bytes.ContainsFunc(s.shard[len(want):], func(r rune) bool { return r != 0 }) {
				t.Fatalf("source %d rebuilt wrong", s.ssn)
			}
			solved++
		}
	}
	for i := range nSources {
		ssn := first0 + uint32(i)
		now = i
		sh := rlcShard(rng, 1400)
		sent[ssn] = sh
		switch {
		case rng.Float64() < loss:
			lost++
			if late != nil && late(ssn) {
				lateOnes = append(lateOnes, ssn)
			}
		default:
			b := pool.get()
			copy(b.b[fecframe.DataShardOffset:], sh)
			if kept, _ := d.source(ssn, b, fecframe.DataShardOffset, len(sh), 0); !kept {
				pool.put(b)
			}
			check()
		}
		if (i+1)%every != 0 {
			continue
		}
		lo := max(0, i+1-window)
		shards := make([][]byte, 0, window)
		L := 0
		for j := lo; j <= i; j++ {
			shards = append(shards, sent[first0+uint32(j)])
			L = max(L, len(sent[first0+uint32(j)]))
		}
		repairID++
		if rng.Float64() < loss {
			continue
		}
		b := pool.get()
		const off = 16
		rlcEncode(b.b[off:off+L], repairID, first0+uint32(lo), shards)
		if !d.repair(repairID, first0+uint32(lo), len(shards), b, off, L, 0) {
			pool.put(b)
		}
		check()
		// Late arrivals (a resend, reordering): delivered a few sources after.
		for len(lateOnes) > 0 && i-int(lateOnes[0]-first0) > 3 {
			s := lateOnes[0]
			lateOnes = lateOnes[1:]
			b := pool.get()
			copy(b.b[fecframe.DataShardOffset:], sent[s])
			if kept, _ := d.source(s, b, fecframe.DataShardOffset, len(sent[s]), 0); !kept {
				pool.put(b)
			}
			check()
		}
	}
	gaveUp = d.gaveUp
	d.reset()
	if out := pool.out.Load(); out != 0 {
		t.Fatalf("%d buffers not returned to the pool", out)
	}
	return lost, solved, gaveUp, delays, maxHeld
}

func TestRLCRebuildsRandomLoss(t *testing.T) {
	for _, tc := range []struct {
		name                string
		window, every       int
		loss                float64
		maxUnsolvedFraction float64
	}{
		// Generous parity: practically everything comes back.
		{"5% loss, 1 in 5", 128, 5, 0.05, 0.002},
		// Tight parity (repairs 10% of sources at 5% loss), as Auto would size it.
		{"5% loss, 1 in 10", 256, 10, 0.05, 0.05},
		{"10% loss, 1 in 4", 256, 4, 0.10, 0.01},
		// Small windows (an untrained peer, a slow path).
		{"1% loss, window 16", 16, 8, 0.01, 0.05},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lost, solved, gaveUp, _, held := rlcRun(t, 1, 20000, tc.window, tc.every, tc.loss, nil)
			t.Logf("lost %d solved %d gave up %d, buffers held at most %d", lost, solved, gaveUp, held)
			// The sources a repair may still cover, and the equations.
			if limit := int64(tc.window + 2*tc.every + rlcMaxUnknowns); held > limit {
				t.Fatalf("the decoder held %d buffers, want at most %d", held, limit)
			}
			if lost == 0 {
				t.Fatal("no loss: the test proves nothing")
			}
			if un := float64(lost-solved) / float64(lost); un > tc.maxUnsolvedFraction {
				t.Fatalf("%.2f%% of the lost sources stayed lost, want at most %.2f%%", 100*un, 100*tc.maxUnsolvedFraction)
			}
			if solved+gaveUp < lost-tc.window { // the tail may still be open at the end
				t.Fatalf("solved %d + gave up %d account for fewer than the %d lost", solved, gaveUp, lost)
			}
		})
	}
}

func TestRLCTakesLateSources(t *testing.T) {
	// Every third lost source turns up late (a resend, reordering): the decoder
	// must substitute it into the equations that already count it unknown, and
	// still solve the others.
	isLate := func(ssn uint32) bool { return ssn%3 == 0 }
	lost, solved, gaveUp, _, _ := rlcRun(t, 3, 20000, 128, 12, 0.05, isLate)
	t.Logf("lost %d solved %d gave up %d", lost, solved, gaveUp)
	if solved < lost/2 || gaveUp > lost/100 {
		t.Fatalf("solved %d and gave up %d of %d lost (a third came late)", solved, gaveUp, lost)
	}
}

func TestRLCBeatsTheBlockCodeAtEqualOverhead(t *testing.T) {
	// The reason for the code: at 5% loss and repairs worth 10% of the sources,
	// count the lost sources that are not back within 384 sources (50 ms at 100
	// Mbit/s, about where quic-go stops taking them) against those a block code
	// of 128+13 (the same overhead) leaves in failed groups.
	const n, loss = 100000, 0.05
	lost, _, _, delays, _ := rlcRun(t, 21, n, 256, 10, loss, nil)
	late := lost - len(delays)
	for _, d := range delays {
		if d > 384 {
			late++
		}
	}
	rng := rand.New(rand.NewPCG(21, 8))
	blockLost, blockFailed := 0, 0
	for range n / 128 {
		dataLost, all := 0, 0
		for i := range 128 + 13 {
			if rng.Float64() < loss {
				all++
				if i < 128 {
					dataLost++
				}
			}
		}
		blockLost += dataLost
		if all > 13 {
			blockFailed += dataLost
		}
	}
	t.Logf("sliding window: %d of %d lost sources late or never; block code: %d of %d", late, lost, blockFailed, blockLost)
	if blockFailed == 0 || late*5 > blockFailed {
		t.Fatalf("sliding window left %d late, block code %d: want at most a fifth", late, blockFailed)
	}
}

func TestRLCEncodeIsLinear(t *testing.T) {
	// A repair over one source is that source times its coefficient: dividing
	// by the coefficient gives the source back (checks the in-place scaling the
	// decoder relies on).
	rng := rand.New(rand.NewPCG(5, 5))
	src := rlcShard(rng, 1400)
	dst := make([]byte, len(src))
	rlcEncode(dst, 77, 1000, [][]byte{src})
	c := rlcCoefficient(77, 1000)
	if c == 0 {
		t.Fatal("zero coefficient")
	}
	gf.GalMulSlice(reedsolomon.Inv(c), dst, dst)
	if !bytes.Equal(dst, src) {
		t.Fatal("scaling in place did not invert the coding")
	}
}

func TestRLCCoefficientsAreNeverZero(t *testing.T) {
	for id := uint32(0); id < 300; id++ {
		for ssn := uint32(0); ssn < 3000; ssn++ {
			if rlcCoefficient(id, ssn) == 0 {
				t.Fatalf("coefficient (%d, %d) is zero", id, ssn)
			}
		}
	}
}

func TestRLCDecoderSurvivesGarbage(t *testing.T) {
	// Repairs with any header and any bytes, sources with any number: no panic,
	// nothing leaked, nothing "solved" that was not a real source.
	rng := rand.New(rand.NewPCG(9, 9))
	pool := newBufferPool(1 << 20)
	d := newRLCDecoder(pool)
	for range 20000 {
		b := pool.get()
		for i := range b.b[:64] {
			b.b[i] = byte(rng.Uint32())
		}
		n := rng.IntN(fecframe.MaxShardLen + 1)
		first := rng.Uint32() % 4096
		if rng.IntN(2) == 0 {
			if kept, _ := d.source(first, b, fecframe.DataShardOffset, min(n, fecframe.MaxShardLen), 0); !kept {
				pool.put(b)
			}
		} else if !d.repair(rng.Uint32(), first, rng.IntN(2*rlcRing), b, 16, n, 0) {
			pool.put(b)
		}
		d.take()
	}
	d.reset()
	if out := pool.out.Load(); out != 0 {
		t.Fatalf("%d buffers not returned", out)
	}
}

func BenchmarkRLC(b *testing.B) {
	// Encode one repair over a window of 256 full-size sources: the sender's cost
	// per repair (MB/s counts the source bytes combined).
	rng := rand.New(rand.NewPCG(1, 1))
	shards := make([][]byte, 256)
	for i := range shards {
		shards[i] = make([]byte, 1402)
		for j := range shards[i] {
			shards[i][j] = byte(rng.Uint32())
		}
	}
	dst := make([]byte, 1402)
	b.SetBytes(256 * 1402)
	id := uint32(0)
	for b.Loop() {
		id++
		rlcEncode(dst, id, 1000+id, shards)
	}
}

func TestRLCCopyKeepsTheWindowsLossesOpen(t *testing.T) {
	// Sources 0..9; 3 is lost. 8 is lost too and its copy (a repair of it
	// alone) rebuilds it at once; that copy must not tell the decoder that no
	// repair covers 3 any more: the window repair after it still does.
	rng := rand.New(rand.NewPCG(5, 5))
	pool := newBufferPool(1 << 10)
	d := newRLCDecoder(pool)
	const first = 1000
	var sent [][]byte
	put := func(id, from uint32, shards [][]byte) {
		L := 0
		for _, s := range shards {
			L = max(L, len(s))
		}
		b := pool.get()
		rlcEncode(b.b[16:16+L], id, from, shards)
		if !d.repair(id, from, len(shards), b, 16, L, 0) {
			pool.put(b)
		}
	}
	for i := range 10 {
		sh := rlcShard(rng, 1200)
		sent = append(sent, sh)
		if i == 3 || i == 8 {
			continue
		}
		b := pool.get()
		copy(b.b[fecframe.DataShardOffset:], sh)
		if kept, _ := d.source(first+uint32(i), b, fecframe.DataShardOffset, len(sh), 0); !kept {
			pool.put(b)
		}
	}
	put(1, first+8, sent[8:9]) // the copy of 8, after 9 arrived
	solved := map[uint32][]byte{}
	rebuilt := func(i int) bool {
		for _, s := range d.take() {
			solved[s.ssn] = s.shard
		}
		got, ok := solved[first+uint32(i)]
		return ok && len(got) >= len(sent[i]) && bytes.Equal(got[:len(sent[i])], sent[i])
	}
	if !rebuilt(8) {
		t.Fatal("the copy did not rebuild its source")
	}
	put(2, first, sent)
	if !rebuilt(3) {
		t.Fatalf("the window repair did not rebuild the older loss (gave up %d)", d.gaveUp)
	}
	d.reset()
	if out := pool.out.Load(); out != 0 {
		t.Fatalf("%d buffers not returned to the pool", out)
	}
}
