package report

import (
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/quictun/quictun/bench"
)

// Chart is goodput against loss for one suite and link (rate, RTT), one line per
// contender, like the charts of the original quic-tun report.
type Chart struct {
	Name     string // file name without extension
	Title    string
	Suite    string
	RateMbps float64
	RTTms    float64
	Lines    []ChartLine
}

// ChartLine is one contender's medians, sorted by loss.
type ChartLine struct {
	Contender string
	Points    []ChartPoint
}

// ChartPoint is one median, with the spread of the repetitions.
type ChartPoint struct {
	LossPercent, Mbps, Min, Max float64
}

// Charts groups the goodput records by suite, rate and RTT; a group needs at least two
// loss rates to draw a line. Bursty-loss scenarios stay in the tables only, since their
// loss is not comparable on the same axis.
func Charts(records []bench.Record) []Chart {
	type key struct {
		suite     string
		rate, rtt float64
	}
	groups := map[key]map[string][]ChartPoint{}
	losses := map[key]map[float64]bool{}
	for _, r := range records {
		if r.Kind != bench.Goodput || r.Burst > 1 || r.Runs == 0 {
			continue
		}
		k := key{r.Suite, r.RateMbps, r.RTTms}
		if groups[k] == nil {
			groups[k] = map[string][]ChartPoint{}
			losses[k] = map[float64]bool{}
		}
		groups[k][r.Contender] = append(groups[k][r.Contender], ChartPoint{r.Loss * 100, r.GoodputMbps, r.GoodputMin, r.GoodputMax})
		losses[k][r.Loss] = true
	}
	var charts []Chart
	for k, byContender := range groups {
		if len(losses[k]) < 2 {
			continue
		}
		rate := "host speed"
		if k.rate > 0 {
			rate = fmt.Sprintf("%g Mbit/s", k.rate)
		}
		c := Chart{
			Name:  fmt.Sprintf("%s-rate%g-rtt%g", k.suite, k.rate, k.rtt),
			Title: fmt.Sprintf("%s: goodput vs loss, %s, RTT %g ms", k.suite, rate, k.rtt),
			Suite: k.suite, RateMbps: k.rate, RTTms: k.rtt,
		}
		for _, name := range orderedContenders(byContender) {
			pts := byContender[name]
			sort.Slice(pts, func(i, j int) bool { return pts[i].LossPercent < pts[j].LossPercent })
			c.Lines = append(c.Lines, ChartLine{Contender: name, Points: pts})
		}
		charts = append(charts, c)
	}
	sort.Slice(charts, func(i, j int) bool { return charts[i].Name < charts[j].Name })
	return charts
}

// orderedContenders lists the keys in the harness's contender order, unknown ones last.
func orderedContenders[V any](m map[string]V) []string {
	var names []string
	for name := range m {
		names = append(names, name)
	}
	rank := func(n string) int {
		if i := slices.Index(bench.Contenders, n); i >= 0 {
			return i
		}
		return len(bench.Contenders)
	}
	sort.Slice(names, func(i, j int) bool {
		if rank(names[i]) != rank(names[j]) {
			return rank(names[i]) < rank(names[j])
		}
		return names[i] < names[j]
	})
	return names
}

// contenderStyle keeps a contender's colour and glyph the same on every chart.
func contenderStyle(name string) (color.Color, draw.GlyphDrawer, []vg.Length) {
	i := slices.Index(bench.Contenders, name)
	if i < 0 {
		i = len(bench.Contenders)
	}
	return plotutil.Color(i), plotutil.Shape(i), plotutil.Dashes(0)
}

// Plot draws the chart.
func (c Chart) Plot() (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = c.Title
	p.X.Label.Text = "loss each direction (%)"
	p.Y.Label.Text = "goodput (Mbit/s)"
	p.Y.Min = 0
	p.Legend.Top = true
	var maxLoss, maxY float64
	for _, line := range c.Lines {
		xys := make(plotter.XYs, len(line.Points))
		for i, pt := range line.Points {
			xys[i].X, xys[i].Y = pt.LossPercent, pt.Mbps
			maxLoss = math.Max(maxLoss, pt.LossPercent)
			maxY = math.Max(maxY, pt.Max)
		}
		l, s, err := plotter.NewLinePoints(xys)
		if err != nil {
			return nil, fmt.Errorf("chart %s, %s: %w", c.Name, line.Contender, err)
		}
		col, shape, dashes := contenderStyle(line.Contender)
		l.Color, l.Dashes, l.Width = col, dashes, vg.Points(1.5)
		s.Color, s.Shape = col, shape
		p.Add(l, s)
		p.Legend.Add(line.Contender, l, s)
	}
	if c.RateMbps > 0 {
		// The ceiling rate x (1 - loss), the most any contender can carry.
		ceiling := plotter.XYs{{X: 0, Y: c.RateMbps}, {X: maxLoss, Y: c.RateMbps * (1 - maxLoss/100)}}
		l, err := plotter.NewLine(ceiling)
		if err != nil {
			return nil, err
		}
		l.Color, l.Dashes = color.Gray{Y: 140}, []vg.Length{vg.Points(4), vg.Points(3)}
		p.Add(l)
		p.Legend.Add("ceiling", l)
		maxY = math.Max(maxY, c.RateMbps)
	}
	p.Y.Max = maxY * 1.4 // room for the legend above the ceiling
	p.Add(plotter.NewGrid())
	return p, nil
}

// Save writes the chart as dir/Name.png and dir/Name.svg.
func (c Chart) Save(dir string) error {
	p, err := c.Plot()
	if err != nil {
		return err
	}
	for _, ext := range []string{".png", ".svg"} {
		if err := p.Save(18*vg.Centimeter, 11*vg.Centimeter, filepath.Join(dir, c.Name+ext)); err != nil {
			return fmt.Errorf("chart %s%s: %w", c.Name, ext, err)
		}
	}
	return nil
}
