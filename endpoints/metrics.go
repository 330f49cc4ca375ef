package endpoints

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"

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
	registry   *prometheus.Registry
	failures   *prometheus.CounterVec
	closed     *prometheus.CounterVec
	hellos     *prometheus.CounterVec
	handshakes *handshakes
}

// Reasons a tunnel failed to start, as counted in quictun_tunnel_failures_total.
const (
	failNoToken   = "no token"
	failNoSession = "no session"
)

func newMetrics(side engine.Endpoint, reg *engine.Registry, sessions func() []*quic.Conn, hs *handshakes, extra ...prometheus.Collector) *metrics {
	constLabels := prometheus.Labels{"endpoint": string(side)}
	m := &metrics{
		handshakes: hs,
		registry:   prometheus.NewRegistry(),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quictun_tunnel_failures_total", ConstLabels: constLabels,
			Help: "Tunnels that failed to start, by reason (the status the server answered, or what the client lacked).",
		}, []string{"reason"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quictun_tunnels_closed_total", ConstLabels: constLabels,
			Help: "Tunnels that ended after they started, by how: clean, error, killed, idle, shutdown, peer (reset by the other endpoint).",
		}, []string{"how"}),
		hellos: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "quictun_hellos_total", ConstLabels: constLabels,
			Help: "Sessions' hellos the server answered, by result (ok, wrong proof, unknown identity, no proof, not a hello, overloaded, lost) and identity (known identities only).",
		}, []string{"result", "identity"}),
	}
	m.registry.MustRegister(m.failures, m.closed, m.hellos, hs,
		&liveCollector{reg: reg, sessions: sessions, constLabels: constLabels},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range extra {
		m.registry.MustRegister(c)
	}
	return m
}

// accepted tells the handshake count that the server accepted conn: its
// handshake did not fail.
func (m *metrics) accepted(conn *quic.Conn) { m.handshakes.accepted(conn) }

// hello counts a session's hello by its result.
func (m *metrics) hello(result, identity string) { m.hellos.WithLabelValues(result, identity).Inc() }

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
	case isPeerReset(err):
		how = "peer"
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
		datagramsDropped, datagramsSendDropped, sendWaits, sendWait            *prometheus.Desc
		packetsDropped                                                         *prometheus.Desc
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
		c.descs.datagramsDropped = d("quictun_session_datagrams_dropped_total",
			"QUIC datagrams each session received and quic-go discarded: its receive queue was full while the session's datagram receiver was behind.", "session")
		c.descs.datagramsSendDropped = d("quictun_session_datagrams_send_dropped_total",
			"QUIC datagrams each session was given to send and quic-go discarded unsent (no longer fit in a packet).", "session")
		c.descs.sendWaits = d("quictun_session_datagram_send_waits_total",
			"Datagrams each session's senders had to wait to hand quic-go: its send queue (32) was full, held by the congestion controller.", "session")
		c.descs.sendWait = d("quictun_session_datagram_send_wait_seconds_total",
			"How long those waits took in all.", "session")
		c.descs.packetsDropped = d("quictun_session_packets_dropped_total",
			"QUIC packets each session received and quic-go discarded, by reason: 256 already waiting for the connection (queue full), or a duplicate (a copy, or a repair too late).", "session", "reason")
		c.descs.sniffersAbandoned = d("quictun_sniffers_abandoned_total", "Sniffer actors that did not stop within their bound when their tunnel ended (a Sniff call that does not return).")
		c.descs.sniffersStuck = d("quictun_sniffers_stuck", "Abandoned sniffer actors still inside their Sniff call (goroutines held by a sniffer).")
	})
}

func (c *liveCollector) Describe(ch chan<- *prometheus.Desc) {
	c.init()
	for _, d := range []*prometheus.Desc{c.descs.open, c.descs.opened, c.descs.bytes, c.descs.sessions,
		c.descs.rtt, c.descs.minRTT, c.descs.cwnd, c.descs.sent, c.descs.lost, c.descs.received, c.descs.datagramsDropped,
		c.descs.datagramsSendDropped, c.descs.sendWaits, c.descs.sendWait, c.descs.packetsDropped,
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
		ch <- prometheus.MustNewConstMetric(c.descs.datagramsDropped, prometheus.CounterValue, float64(st.DatagramsDropped), name)
		ch <- prometheus.MustNewConstMetric(c.descs.datagramsSendDropped, prometheus.CounterValue, float64(st.DatagramsSendDropped), name)
		ch <- prometheus.MustNewConstMetric(c.descs.sendWaits, prometheus.CounterValue, float64(st.DatagramsSendWaits), name)
		ch <- prometheus.MustNewConstMetric(c.descs.sendWait, prometheus.CounterValue, st.DatagramsSendWait.Seconds(), name)
		ch <- prometheus.MustNewConstMetric(c.descs.packetsDropped, prometheus.CounterValue, float64(st.PacketsDroppedQueueFull), name, "queue full")
		ch <- prometheus.MustNewConstMetric(c.descs.packetsDropped, prometheus.CounterValue, float64(st.PacketsDroppedDuplicate), name, "duplicate")
	}
}

// handshakes counts QUIC sessions that failed their handshake, by reason
// (quictun_handshake_failures_total). It exists before the QUIC transport,
// whose ConnContext hook it provides on the server, and is registered with the
// endpoint's other metrics as a collector.
type handshakes struct {
	*prometheus.CounterVec
}

func newHandshakes(side engine.Endpoint) *handshakes {
	return &handshakes{prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "quictun_handshake_failures_total", ConstLabels: prometheus.Labels{"endpoint": string(side)},
		Help: "QUIC sessions that failed their handshake, by reason: on the server every session that closed " +
			"before it was accepted (TLS alerts sent: 'tls local', received: 'tls remote'; timeouts); on the client every failed dial.",
	}, []string{"reason"})}
}

// failed counts a failed handshake.
func (h *handshakes) failed(err error) { h.WithLabelValues(handshakeReason(err)).Inc() }

// handshakeWatch rides in a server session's context until the server
// accepts the session.
type handshakeWatch struct{ accepted atomic.Bool }

type handshakeWatchKey struct{}

// watch is the server transport's ConnContext hook: quic-go calls it for each
// new session and cancels ctx, with the cause, when that session closes, also
// when its handshake failed (nothing else in quic-go hears of those). A
// session that closes before the server accepted it (see accepted) is
// counted. A stalled handshake ends by the handshake's idle timeout, so the
// cause alone would not tell.
func (h *handshakes) watch(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	w := &handshakeWatch{}
	context.AfterFunc(ctx, func() {
		if !w.accepted.Load() {
			h.failed(context.Cause(ctx))
		}
	})
	return context.WithValue(ctx, handshakeWatchKey{}, w), nil
}

// accepted marks a session whose handshake completed: quic-go hands a server
// only those.
func (h *handshakes) accepted(conn *quic.Conn) {
	if w, ok := conn.Context().Value(handshakeWatchKey{}).(*handshakeWatch); ok {
		w.accepted.Store(true)
	}
}

// handshakeReason names why a handshake failed, from a small set of values
// (TLS alerts are named by crypto/tls).
func handshakeReason(err error) string {
	var (
		version   *quic.VersionNegotiationError
		timeout   *quic.HandshakeTimeoutError
		idle      *quic.IdleTimeoutError
		reset     *quic.StatelessResetError
		te        *quic.TransportError
		app       *quic.ApplicationError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		dns       *net.DNSError
		netErr    net.Error
	)
	switch {
	case errors.As(err, &version):
		return "version negotiation"
	case errors.As(err, &timeout), errors.As(err, &idle):
		// Until the handshake completes, quic-go's idle timeout is the
		// handshake's: a peer that fell silent mid-handshake.
		return "handshake timeout"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	// Go's own check of a certificate chain (--ca-file, or the server's
	// check of client certificates under mutual TLS).
	case errors.As(err, &unknownCA):
		return "unknown CA"
	case errors.As(err, &hostname):
		return "certificate name mismatch"
	case errors.As(err, &invalid):
		return "certificate invalid"
	case errors.As(err, &te) && te.ErrorCode.IsCryptoError():
		// The client's own checks of the server's key (endpoints/trust).
		if msg := te.Error(); !te.Remote && strings.Contains(msg, "does not match the pinned fingerprint") {
			return "pin mismatch"
		} else if !te.Remote && strings.Contains(msg, "SERVER KEY CHANGED") {
			return "server key changed"
		}
		side := "tls local: "
		if te.Remote {
			side = "tls remote: "
		}
		return side + strings.TrimPrefix(tls.AlertError(te.ErrorCode-0x100).Error(), "tls: ")
	case errors.As(err, &te):
		return "transport error"
	case errors.As(err, &reset):
		return "stateless reset"
	case errors.As(err, &app):
		return "closed"
	case errors.As(err, &dns):
		return "resolve"
	case errors.As(err, &netErr):
		return "network"
	}
	return "other"
}
