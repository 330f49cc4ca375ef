package endpoints

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/quictun/quictun/recovery"
)

// recoveryCollector exposes the loss-recovery layer's counters.
type recoveryCollector struct {
	rec         *recovery.Conn
	constLabels prometheus.Labels
	descs       map[string]*prometheus.Desc
}

func newRecoveryCollector(rec *recovery.Conn, side string) *recoveryCollector {
	c := &recoveryCollector{rec: rec, constLabels: prometheus.Labels{"endpoint": side}, descs: map[string]*prometheus.Desc{}}
	for name, help := range map[string]string{
		"quictun_recovery_datagrams_sent_total":     "Datagrams quic-go wrote through the loss-recovery layer.",
		"quictun_recovery_datagrams_received_total": "Datagrams handed to quic-go, rebuilt ones included.",
		"quictun_recovery_parity_sent_total":        "Repair datagrams sent, copies included.",
		"quictun_recovery_copies_sent_total":        "Repairs of one small datagram alone (an interactive one's copy).",
		"quictun_recovery_lost_total":               "Datagrams seen missing on arrival, by cause (random, congestion, ambiguous).",
		"quictun_recovery_repaired_total":           "Lost datagrams rebuilt and handed to quic-go.",
		"quictun_recovery_unrepaired_total":         "Lost data datagrams neither received nor rebuilt.",
		"quictun_recovery_malformed_total":          "Framed datagrams that failed to decode.",
		"quictun_recovery_forged_total":             "Frames from a proven address whose tag failed (spoofed).",
		"quictun_recovery_overhead_ratio":           "Repair datagrams per source datagram sent.",
		"quictun_recovery_peer_loss_ratio":          "Random loss the peer measures on what this endpoint sends.",
		"quictun_recovery_repair_delay_seconds":     "Mean time from a datagram found missing to its rebuild.",
		"quictun_recovery_group_data_shards":        "The repair rate last chosen: per this many source datagrams...",
		"quictun_recovery_group_parity_shards":      "...this many repair datagrams.",
		"quictun_recovery_framed_peers":             "Peers this endpoint frames its datagrams for.",
	} {
		var labels []string
		if name == "quictun_recovery_lost_total" {
			labels = []string{"cause"}
		}
		c.descs[name] = prometheus.NewDesc(name, help, labels, c.constLabels)
	}
	return c
}

func (c *recoveryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *recoveryCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.rec.Stats()
	counter := func(name string, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(name string, v float64) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v)
	}
	counter("quictun_recovery_datagrams_sent_total", st.DatagramsSent)
	counter("quictun_recovery_datagrams_received_total", st.DatagramsReceived)
	counter("quictun_recovery_parity_sent_total", st.ParitySent)
	counter("quictun_recovery_copies_sent_total", st.CopiesSent)
	counter("quictun_recovery_lost_total", st.Lost, "random")
	counter("quictun_recovery_lost_total", st.CongestionLost, "congestion")
	counter("quictun_recovery_lost_total", st.AmbiguousLost, "ambiguous")
	counter("quictun_recovery_repaired_total", st.Repaired)
	counter("quictun_recovery_unrepaired_total", st.Unrepaired)
	counter("quictun_recovery_malformed_total", st.Malformed)
	counter("quictun_recovery_forged_total", st.Forged)
	gauge("quictun_recovery_overhead_ratio", st.Overhead)
	gauge("quictun_recovery_peer_loss_ratio", st.PeerLoss)
	gauge("quictun_recovery_repair_delay_seconds", st.RepairDelay.Seconds())
	gauge("quictun_recovery_group_data_shards", float64(st.Data))
	gauge("quictun_recovery_group_parity_shards", float64(st.Parity))
	gauge("quictun_recovery_framed_peers", float64(st.FramedPeers))
}
