//go:build linux

package runner

import (
	"slices"
	"testing"
	"time"
)

// The steady p99 leaves out the probes sent before from: a slow start must not
// hide in it, and probes sent before measuring never count.
func TestProbeDelaysFrom(t *testing.T) {
	p := newProbe(nil, nil)
	for seq, at := range []time.Duration{time.Second, 1500 * time.Millisecond, 2500 * time.Millisecond} {
		p.measured[uint64(seq)] = at
		p.delay[uint64(seq)] = time.Duration(90-30*seq) * time.Millisecond
	}
	p.delay[7] = time.Millisecond // arrived but sent before measuring
	if got := p.delays(0); !slices.Equal(got, []float64{30, 60, 90}) {
		t.Fatalf("delays(0) = %v", got)
	}
	if got := p.delays(2 * time.Second); !slices.Equal(got, []float64{30}) {
		t.Fatalf("delays(2s) = %v", got)
	}
	if got := percentile([]float64{30, 60, 90}, 99); got != 90 {
		t.Fatalf("p99 = %v", got)
	}
}
