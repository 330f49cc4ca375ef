// Package stats summarises the repetitions of one measurement: the median is the figure
// the report quotes (robust against one disturbed run on a shared machine), min and max
// give the spread.
package stats

import (
	"math"
	"slices"
)

// Summary describes a set of samples.
type Summary struct {
	N      int
	Median float64
	Min    float64
	Max    float64
	Mean   float64
	// Stddev is the sample standard deviation (n-1); zero for fewer than two samples.
	Stddev float64
}

// Summarize returns the summary of samples, ignoring NaNs. The zero Summary (N == 0)
// means there was nothing to summarise.
func Summarize(samples []float64) Summary {
	xs := make([]float64, 0, len(samples))
	for _, x := range samples {
		if !math.IsNaN(x) {
			xs = append(xs, x)
		}
	}
	if len(xs) == 0 {
		return Summary{}
	}
	slices.Sort(xs)
	s := Summary{N: len(xs), Min: xs[0], Max: xs[len(xs)-1]}
	mid := len(xs) / 2
	if len(xs)%2 == 1 {
		s.Median = xs[mid]
	} else {
		s.Median = (xs[mid-1] + xs[mid]) / 2
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	s.Mean = sum / float64(len(xs))
	if len(xs) > 1 {
		var sq float64
		for _, x := range xs {
			sq += (x - s.Mean) * (x - s.Mean)
		}
		s.Stddev = math.Sqrt(sq / float64(len(xs)-1))
	}
	return s
}

// Spread is max - min: with the handful of repetitions a benchmark affords, the range
// says more honestly than a standard deviation how far runs disagreed.
func (s Summary) Spread() float64 { return s.Max - s.Min }

// RelativeSpread is the spread as a fraction of the median; zero when the median is zero.
func (s Summary) RelativeSpread() float64 {
	if s.Median == 0 {
		return 0
	}
	return s.Spread() / s.Median
}
