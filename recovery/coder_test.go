package recovery

import (
	"bytes"
	"math/rand/v2"
	"runtime"
	"testing"
)

// The codecs' memory stays bounded however many distinct loss patterns they
// rebuild: reedsolomon caches a decoding matrix per pattern, and 20000
// rebuilds of random 2-3 losses in 64+4 groups would keep ~90 MB of them;
// the budget (8 MiB) allows about twice that at the moment of a clear.
func TestRebuildMemoryIsBounded(t *testing.T) {
	const k, m, L = 64, 4, 1402
	var cs codecs
	rng := rand.New(rand.NewPCG(3, 3))
	orig := make([][]byte, k+m)
	for i := range orig {
		orig[i] = make([]byte, L)
		if i < k {
			for j := range orig[i] {
				orig[i][j] = byte(rng.Uint32())
			}
		}
	}
	enc, err := cs.get(k, m)
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.Encode(orig); err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	work := make([][]byte, k+m)
	for range 20000 {
		copy(work, orig)
		lost := 2 + rng.IntN(2)
		for range lost {
			work[rng.IntN(k)] = nil
		}
		if err := cs.reconstructData(k, m, work); err != nil {
			t.Fatal(err)
		}
		for i := range k {
			if !bytes.Equal(work[i], orig[i]) {
				t.Fatalf("shard %d rebuilt wrong", i)
			}
		}
	}
	grown := int64(heap()) - int64(before)
	if limit := int64(24 << 20); grown > limit {
		t.Errorf("the codecs grew the heap by %.1f MiB over 20000 rebuilds, want at most %.1f MiB",
			float64(grown)/(1<<20), float64(limit)/(1<<20))
	}
	runtime.KeepAlive(&cs)
}
