package stats

import (
	"math"
	"testing"
)

func TestSummarize(t *testing.T) {
	cases := []struct {
		name    string
		samples []float64
		want    Summary
	}{
		{"empty", nil, Summary{}},
		{"only NaN", []float64{math.NaN()}, Summary{}},
		{"one", []float64{5}, Summary{N: 1, Median: 5, Min: 5, Max: 5, Mean: 5}},
		{"odd unsorted", []float64{9, 1, 5}, Summary{N: 3, Median: 5, Min: 1, Max: 9, Mean: 5, Stddev: 4}},
		{"even", []float64{4, 1, 3, 2}, Summary{N: 4, Median: 2.5, Min: 1, Max: 4, Mean: 2.5, Stddev: math.Sqrt(5.0 / 3)}},
		{"NaN skipped", []float64{2, math.NaN(), 4}, Summary{N: 2, Median: 3, Min: 2, Max: 4, Mean: 3, Stddev: math.Sqrt2}},
		{"outlier does not move median", []float64{90, 91, 3}, Summary{N: 3, Median: 90, Min: 3, Max: 91, Mean: 184.0 / 3, Stddev: 50.52062285}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Summarize(c.samples)
			if got.N != c.want.N || !near(got.Median, c.want.Median) || !near(got.Min, c.want.Min) ||
				!near(got.Max, c.want.Max) || !near(got.Mean, c.want.Mean) || !near(got.Stddev, c.want.Stddev) {
				t.Fatalf("Summarize(%v) = %+v, want %+v", c.samples, got, c.want)
			}
		})
	}
}

func TestSummarizeLeavesInputAlone(t *testing.T) {
	in := []float64{3, 1, 2}
	Summarize(in)
	if in[0] != 3 || in[1] != 1 || in[2] != 2 {
		t.Fatalf("input reordered: %v", in)
	}
}

func TestSpread(t *testing.T) {
	s := Summarize([]float64{80, 100, 90})
	if s.Spread() != 20 {
		t.Fatalf("Spread = %v, want 20", s.Spread())
	}
	if !near(s.RelativeSpread(), 20.0/90) {
		t.Fatalf("RelativeSpread = %v, want %v", s.RelativeSpread(), 20.0/90)
	}
	if (Summary{}).RelativeSpread() != 0 {
		t.Fatal("RelativeSpread of empty summary must be 0")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }
