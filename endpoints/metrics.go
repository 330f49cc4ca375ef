package endpoints

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/engine"
)

// metrics is an endpoint's Prometheus view. Counts that the registry already
// keeps (tunnels, bytes) and the sessions' QUIC statistics are read at scrape
// time, so the data path does nothing for a scrape that may never come; only
// events that nothing else counts (refusals, ends by reason) are counters.
type metrics struct {
	registry *prometheus.Registry
	failures *prometheus.CounterVec
	closed   *prometheus.CounterVec
}

// Reasons a tunnel failed to start, as counted in quictun_tunnel_failures_total.
const (
	failNoToken   = "no token"
	failNoSession = "no session"
)

func newMetrics(side engine.Endpoint, reg *engine.Registry, sessions func() []*quic.Conn, extra ...prometheus.Collector) *metrics {
	constLabels := prometheus.Labels{"endpoint": string(side)}
	m := &metrics{
		registry: prometheus.NewRegistry(),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quictun_tunnel_failures_total", ConstLabels: constLabels,
			Help: "Tunnels that failed to start, by reason (the status the server answered, or what the client lacked).",
		}, []string{"reason"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quictun_tunnels_closed_total", ConstLabels: constLabels,
			Help: "Tunnels that ended after they started, by how: clean, error, killed, idle, shutdown.",
		}, []string{"how"}),
	}
	m.registry.MustRegister(m.failures, m.closed,
		&liveCollector{reg: reg, sessions: sessions, constLabels: constLabels},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range extra {
		m.registry.MustRegister(c)
	}
	return m
}

// failed counts a tunnel that did not start.
func (m *metrics) failed(reason string) { m.failures.WithLabelValues(reason).Inc() }

// failedWith counts a refusal by its status code.
func (m *metrics) failedWith(code preamble.Code) { m.failed(code.String()) }

// ended counts a tunnel's end by how it ended.
func (m *metrics) ended(err error) {
	how := "clean"
	switch {
	case err == nil:
	case errors.Is(err, engine.ErrKilled):
		how = "killed"
	case errors.Is(err, engine.ErrIdle):
		how = "idle"
	case errors.Is(err, engine.ErrShutdown):
		how = "shutdown"
	default:
		how = "error"
	}
	m.closed.WithLabelValues(how).Inc()
}

// liveCollector reads the registry and the sessions at scrape time.
type liveCollector struct {
	reg         *engine.Registry
	sessions    func() []*quic.Conn
	constLabels prometheus.Labels
	once        sync.Once
	descs       struct {
		open, opened, bytes, sessions, rtt, minRTT, cwnd, sent, lost, received *prometheus.Desc
		sniffersAbandoned, sniffersStuck                                       *prometheus.Desc
	}
}

func (c *liveCollector) init() {
	c.once.Do(func() {
		d := func(name, help string, labels ...string) *prometheus.Desc {
			return prometheus.NewDesc(name, help, labels, c.constLabels)
		}
		c.descs.open = d("quictun_tunnels_open", "Tunnels open now.")
		c.descs.opened = d("quictun_tunnels_opened_total", "Tunnels opened since start.")
		c.descs.bytes = d("quictun_tunnel_bytes_total", "Application bytes carried, up (client app to server app) and down.", "direction")
		c.descs.sessions = d("quictun_sessions_open", "QUIC sessions open now.")
		c.descs.rtt = d("quictun_session_rtt_seconds", "Smoothed RTT of each session.", "session")
		c.descs.minRTT = d("quictun_session_min_rtt_seconds", "Minimum RTT of each session.", "session")
		c.descs.cwnd = d("quictun_session_congestion_window_bytes", "Congestion window of each session's sender.", "session")
		c.descs.sent = d("quictun_session_packets_sent_total", "QUIC packets sent by each session.", "session")
		c.descs.lost = d("quictun_session_packets_lost_total", "QUIC packets each session's sender declared lost.", "session")
		c.descs.received = d("quictun_session_packets_received_total", "QUIC packets received by each session.", "session")
		c.descs.sniffersAbandoned = d("quictun_sniffers_abandoned_total", "Sniffer actors that did not stop within their bound when their tunnel ended (a Sniff call that does not return).")
		c.descs.sniffersStuck = d("quictun_sniffers_stuck", "Abandoned sniffer actors still inside their Sniff call (goroutines held by a sniffer).")
	})
}

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	c.init()
	for _, d := range []*prometheus.Desc{c.descs.open, c.descs.opened, c.descs.bytes, c.descs.sessions,
		c.descs.rtt, c.descs.minRTT, c.descs.cwnd, c.descs.sent, c.descs.lost, c.descs.received,
		c.descs.sniffersAbandoned, c.descs.sniffersStuck} {
		ch <- d
	}
}

func (c *liveCollector) Collect(ch chan<- prometheus.Metric) {
	c.init()
	ch <- prometheus.MustNewConstMetric(c.descs.open, prometheus.GaugeValue, float64(c.reg.Len()))
	ch <- prometheus.MustNewConstMetric(c.descs.opened, prometheus.CounterValue, float64(c.reg.Opened()))
	up, down := c.reg.Bytes()
	ch <- prometheus.MustNewConstMetric(c.descs.bytes, prometheus.CounterValue, float64(up), "up")
	ch <- prometheus.MustNewConstMetric(c.descs.bytes, prometheus.CounterValue, float64(down), "down")
	ch <- prometheus.MustNewConstMetric(c.descs.sniffersAbandoned, prometheus.CounterValue, float64(c.reg.SniffersAbandoned()))
	ch <- prometheus.MustNewConstMetric(c.descs.sniffersStuck, prometheus.GaugeValue, float64(c.reg.SniffersStuck()))
	conns := c.sessions()
	ch <- prometheus.MustNewConstMetric(c.descs.sessions, prometheus.GaugeValue, float64(len(conns)))
	seen := map[string]bool{}
	for _, conn := range conns {
		name := conn.RemoteAddr().String()
		if seen[name] {
			continue
		}
		seen[name] = true
		st := conn.ConnectionStats()
		ch <- prometheus.MustNewConstMetric(c.descs.rtt, prometheus.GaugeValue, st.SmoothedRTT.Seconds(), name)
		ch <- prometheus.MustNewConstMetric(c.descs.minRTT, prometheus.GaugeValue, st.MinRTT.Seconds(), name)
		ch <- prometheus.MustNewConstMetric(c.descs.cwnd, prometheus.GaugeValue, float64(st.CongestionWindow), name)
		ch <- prometheus.MustNewConstMetric(c.descs.sent, prometheus.CounterValue, float64(st.PacketsSent), name)
		ch <- prometheus.MustNewConstMetric(c.descs.lost, prometheus.CounterValue, float64(st.PacketsLost), name)
		ch <- prometheus.MustNewConstMetric(c.descs.received, prometheus.CounterValue, float64(st.PacketsReceived), name)
	}
}
