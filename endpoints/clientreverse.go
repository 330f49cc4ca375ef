package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/engine"
)

// A reverse forward publishes a service of the client's side on the
// server's: on each session the client asks the server to listen on
// ListenOn (a bind request, see package preamble), keeps the bind's control
// stream open while it wants the listener, and answers each stream the
// server opens for a connection there by dialling Target and sending the
// same status frames a server sends in the forward direction. The server's
// bind rules decide; a refused bind is logged and asked again with backoff
// on the same session (a restarted client gets its port back once the
// server has let the old session's go).

// Bounds of the client's reverse direction.
const (
	reverseDialTimeout = 5 * time.Second
	// reverseHeaderLimit bounds a reverse tunnel's header: the bind address
	// as a token, and the origin.
	reverseHeaderLimit = 1 << 10
	minRebindBackoff   = time.Second
	maxRebindBackoff   = 30 * time.Second
)

// ReverseSpec is one reverse forward as configuration.
type ReverseSpec struct {
	// Name identifies it in logs, metrics and the API, on both sides; empty
	// is ListenOn as written.
	Name string `json:"name"`
	// ListenOn is where the server listens: tcp:IP:PORT or unix:PATH, or
	// udp:IP:PORT where it takes datagrams (each source address a flow),
	// which its --allow-bind rules must permit.
	ListenOn string `json:"listenOn"`
	// Target is what each connection there reaches on the client's side:
	// tcp:HOST:PORT or unix:PATH; udp:HOST:PORT, sent from a socket of the
	// client's own per flow, for a udp: ListenOn.
	Target string `json:"target"`
}

// Named is the spec with its default name filled in.
func (s ReverseSpec) Named() ReverseSpec {
	if s.Name == "" {
		s.Name = s.ListenOn
	}
	return s
}

// Check validates the spec.
func (s ReverseSpec) Check() error {
	_, err := s.target()
	return err
}

func (s ReverseSpec) target() (address.Address, error) {
	s = s.Named()
	if err := checkForwardName(s.Name); err != nil {
		return address.Address{}, fmt.Errorf("reverse forward: %w", err)
	}
	fail := func(err error) (address.Address, error) {
		return address.Address{}, fmt.Errorf("reverse forward %s: %w", s.Name, err)
	}
	if len(s.ListenOn) > preamble.MaxBindLen {
		return fail(fmt.Errorf("listen-on is longer than %d bytes", preamble.MaxBindLen))
	}
	l, err := address.ParseListen(s.ListenOn)
	if err != nil {
		return fail(fmt.Errorf("listen-on: %w", err))
	}
	t, err := address.Parse(s.Target)
	if err != nil {
		return fail(fmt.Errorf("target: %w", err))
	}
	if (l.Network == address.UDP) != (t.Network == address.UDP) {
		return fail(errors.New("a UDP listen-on needs a UDP target and a UDP target a UDP listen-on (datagrams are not a stream)"))
	}
	return t, nil
}

// reverseSet is the client's reverse forwards. SetReverses changes them
// while the client runs: a removed one is withdrawn on the server at once (its
// live tunnels run on to their end), an added one is asked for on the
// current session.
type reverseSet struct {
	sync.Mutex
	byName   map[string]*reverseForward
	order    []string
	session  *reverseSession // the current session's, nil between sessions
	tunnels  context.Context // bounds their tunnels; set by Run before the keeper starts
	handlers sync.WaitGroup  // serveReverseStream calls
}

// reverseSession is one session's binds.
type reverseSession struct {
	conn   *quic.Conn
	binds  sync.WaitGroup
	closed bool // guarded by the set's lock: no bind starts after
}

type reverseForward struct {
	spec   ReverseSpec
	target address.Address
	ctx    context.Context // ends when the forward is removed
	remove context.CancelFunc
	opened atomic.Uint64
	failed atomic.Uint64
}

// SetReverses makes the client's reverse forwards those of specs, all or
// nothing: a bad spec changes none.
func (c *Client) SetReverses(specs []ReverseSpec) error {
	want := map[string]ReverseSpec{}
	listens := map[string]bool{}
	var order []string
	for _, s := range specs {
		s = s.Named()
		if err := s.Check(); err != nil {
			return err
		}
		if _, dup := want[s.Name]; dup || listens[s.ListenOn] {
			return fmt.Errorf("reverse forward %s: a second one of that name or listen address", s.Name)
		}
		want[s.Name], listens[s.ListenOn] = s, true
		order = append(order, s.Name)
	}
	c.reverse.Lock()
	defer c.reverse.Unlock()
	if c.reverse.byName == nil {
		c.reverse.byName = map[string]*reverseForward{}
	}
	for name, rf := range c.reverse.byName {
		if s, ok := want[name]; !ok || s != rf.spec {
			rf.remove()
			delete(c.reverse.byName, name)
			c.log.Info("reverse forward removed", "reverse", name)
		}
	}
	for _, name := range order {
		if c.reverse.byName[name] != nil {
			continue
		}
		s := want[name]
		t, _ := s.target() // checked above
		rf := &reverseForward{spec: s, target: t}
		rf.ctx, rf.remove = context.WithCancel(context.Background())
		c.reverse.byName[name] = rf
		if rs := c.reverse.session; rs != nil && !rs.closed {
			rs.binds.Go(func() { c.holdBind(rs.conn, rf) })
		}
	}
	c.reverse.order = order
	return nil
}

// Reverses lists the client's reverse forwards.
func (c *Client) Reverses() []ReverseSpec {
	c.reverse.Lock()
	defer c.reverse.Unlock()
	out := make([]ReverseSpec, 0, len(c.reverse.order))
	for _, name := range c.reverse.order {
		out = append(out, c.reverse.byName[name].spec)
	}
	return out
}

// ReverseStatus is one reverse forward as /forwards lists it.
type ReverseStatus struct {
	Name          string `json:"name"`
	Direction     string `json:"direction"` // reverse
	ListenOn      string `json:"listenOn"`  // on the server
	Target        string `json:"target"`
	TunnelsOpen   int    `json:"tunnelsOpen"`
	TunnelsOpened uint64 `json:"tunnelsOpened"`
	Failures      uint64 `json:"failures"`
}

func (c *Client) reverseStatuses() []ReverseStatus {
	c.reverse.Lock()
	rfs := make([]*reverseForward, 0, len(c.reverse.order))
	for _, name := range c.reverse.order {
		rfs = append(rfs, c.reverse.byName[name])
	}
	c.reverse.Unlock()
	out := make([]ReverseStatus, 0, len(rfs))
	for _, rf := range rfs {
		out = append(out, ReverseStatus{Name: rf.spec.Name, Direction: engine.DirectionReverse, ListenOn: rf.spec.ListenOn,
			Target: rf.target.String(), TunnelsOpened: rf.opened.Load(), Failures: rf.failed.Load(),
			TunnelsOpen: c.reg.CountWhere(func(i engine.Info) bool {
				return i.Direction == engine.DirectionReverse && i.Forward == rf.spec.Name
			})})
	}
	return out
}

// lookupReverse is the reverse forward whose server listener a stream's
// token names.
func (c *Client) lookupReverse(listen string) *reverseForward {
	c.reverse.Lock()
	defer c.reverse.Unlock()
	for _, rf := range c.reverse.byName {
		if rf.spec.ListenOn == listen {
			return rf
		}
	}
	return nil
}

// serveReverse runs the reverse forwards on one session until it ends: a
// bind per forward, and the streams the server opens.
func (c *Client) serveReverse(conn *quic.Conn) {
	rs := &reverseSession{conn: conn}
	c.reverse.Lock()
	c.reverse.session = rs
	for _, name := range c.reverse.order {
		rf := c.reverse.byName[name]
		rs.binds.Go(func() { c.holdBind(conn, rf) })
	}
	c.reverse.Unlock()
	defer func() {
		c.reverse.Lock()
		rs.closed = true
		if c.reverse.session == rs {
			c.reverse.session = nil
		}
		c.reverse.Unlock()
		rs.binds.Wait()
	}()
	for {
		st, err := conn.AcceptStream(conn.Context())
		if err != nil {
			return
		}
		c.reverse.handlers.Go(func() { c.serveReverseStream(conn, st) })
	}
}

// holdBind asks the server to listen for rf and holds the binding while the
// session lasts; a refusal or a lost binding is asked again with backoff.
func (c *Client) holdBind(conn *quic.Conn, rf *reverseForward) {
	log := c.log.With("reverse", rf.spec.Name, "listen_on", rf.spec.ListenOn)
	backoff := minRebindBackoff
	for {
		bound, err := c.bindOnce(conn, rf, log)
		if conn.Context().Err() != nil || rf.ctx.Err() != nil {
			return
		}
		if bound {
			backoff = minRebindBackoff
		}
		log.Warn("reverse forward not bound on the server; asking again", "in", backoff, "err", err)
		select {
		case <-time.After(backoff):
		case <-conn.Context().Done():
			return
		case <-rf.ctx.Done():
			return
		}
		backoff = min(2*backoff, maxRebindBackoff)
	}
}

// bindOnce sends one bind request and, once the server granted it, echoes
// the server's pings until the control stream or the session ends.
func (c *Client) bindOnce(conn *quic.Conn, rf *reverseForward, log *slog.Logger) (bound bool, err error) {
	ctx, cancel := context.WithTimeout(conn.Context(), dialTimeout)
	st, err := conn.OpenStreamSync(ctx)
	cancel()
	if err != nil {
		return false, err
	}
	defer func() {
		st.CancelRead(0)
		if rf.ctx.Err() == nil { // a withdrawal's FIN must not be overtaken by a reset
			st.CancelWrite(0)
		}
	}()
	hdr, err := preamble.AppendHeader(nil, preamble.Header{Bind: rf.spec.ListenOn, Name: rf.spec.Name})
	if err != nil {
		return false, err
	}
	_ = st.SetDeadline(time.Now().Add(dialTimeout))
	if _, err := st.Write(hdr); err != nil {
		return false, err
	}
	status, err := preamble.ReadStatus(st)
	if err != nil {
		err = refusal(err)
	} else {
		err = status.Err()
	}
	if se := (*preamble.StatusError)(nil); errors.As(err, &se) {
		c.metrics.failedWith(se.Status.Code)
		if se.Status.Code == preamble.CodeBadPreamble {
			err = fmt.Errorf("the server does not know reverse forwards (too old?): %w", err)
		}
		log.Error("the server refused the reverse forward", "status", se.Status.Code, "err", err)
		return false, err
	}
	if err != nil {
		return false, err
	}
	_ = st.SetDeadline(time.Time{})
	log.Info("reverse forward bound on the server", "target", rf.target.String())
	// A removed forward is withdrawn with a FIN, which the server takes as a
	// release at once (anything else keeps the listener for its grace). The
	// FIN is sent from this loop: Close must not run beside a Write.
	defer context.AfterFunc(rf.ctx, func() { st.CancelRead(0) })()
	var one [1]byte
	for {
		if _, err := st.Read(one[:]); err != nil {
			if rf.ctx.Err() != nil {
				log.Info("reverse forward withdrawn")
				_ = st.Close()
			}
			return true, fmt.Errorf("binding lost: %w", err)
		}
		if _, err := st.Write(one[:]); err != nil {
			return true, fmt.Errorf("binding lost: %w", err)
		}
	}
}

// serveReverseStream answers one stream the server opened: it reads the
// header, finds the reverse forward its token names, dials the target and
// runs the tunnel. Only configured targets are ever dialled, whatever the
// server sends.
func (c *Client) serveReverseStream(conn *quic.Conn, st *quic.Stream) {
	log := c.log.With("session", conn.RemoteAddr().String(), "stream", int64(st.StreamID()))
	refuse := func(code preamble.Code, msg string, err error) {
		log.Warn("reverse tunnel refused", "status", code, "err", err)
		c.metrics.failedWith(code)
		_, _ = st.Write(preamble.AppendStatus(nil, preamble.Status{Code: code, Message: msg}))
		_ = st.Close()
		st.CancelRead(quic.StreamErrorCode(code))
	}
	_ = st.SetReadDeadline(time.Now().Add(dialTimeout))
	hdr, err := preamble.ReadHeaderLimit(st, reverseHeaderLimit)
	if err != nil {
		refuse(preamble.CodeBadPreamble, "", err)
		return
	}
	_ = st.SetReadDeadline(time.Time{})
	if len(hdr.Token) == 0 {
		refuse(preamble.CodeBadPreamble, "", errors.New("a stream from the server must name a reverse forward"))
		return
	}
	rf := c.lookupReverse(string(hdr.Token))
	if rf == nil {
		refuse(preamble.CodeForbidden, "no such reverse forward", fmt.Errorf("no reverse forward listens on %q", hdr.Token))
		return
	}
	log = log.With("reverse", rf.spec.Name, "target", rf.target.String(), "origin", hdr.Origin)
	if rf.target.Network == address.UDP {
		c.serveReverseFlow(conn, st, rf, hdr.Origin, refuse, log)
		return
	}
	app, err := rf.target.Dial(c.reverse.tunnels, reverseDialTimeout)
	if err != nil {
		rf.failed.Add(1)
		refuse(preamble.CodeUnreachable, "", err)
		return
	}
	rf.opened.Add(1)
	if _, err := st.Write(preamble.AppendStatus(nil, preamble.Status{Code: preamble.CodeOK})); err != nil {
		log.Warn("reverse tunnel lost before it started", "err", err)
		app.Close()
		st.CancelRead(quic.StreamErrorCode(preamble.CodeInternal))
		return
	}
	t := c.reg.Open(c.reverse.tunnels, engine.Info{
		Endpoint:           engine.ClientEndpoint,
		StreamID:           int64(st.StreamID()),
		ClientAppAddr:      rf.target.Display(),
		ServerAppAddr:      hdr.Origin,
		RemoteEndpointAddr: conn.RemoteAddr().String(),
		Session:            conn.RemoteAddr().String(),
		Forward:            rf.spec.Name,
		Direction:          engine.DirectionReverse,
	})
	log = log.With("tunnel", t.ID)
	log.Debug("reverse tunnel opened")
	err = t.Run(engine.StreamSide(st), engine.ConnSide(app))
	c.metrics.ended(err)
	logTunnelEnd(log, t, err)
}

// serveReverseFlow answers a stream the server opened for a flow of a udp:
// reverse forward: a UDP socket of the flow's own towards the target,
// registered for the session's datagrams before the OK (the server sends
// the flow's first datagrams once it has it), then the flow.
func (c *Client) serveReverseFlow(conn *quic.Conn, st *quic.Stream, rf *reverseForward, origin string, refuse func(preamble.Code, string, error), log *slog.Logger) {
	app, err := rf.target.Dial(c.reverse.tunnels, reverseDialTimeout)
	if err != nil {
		rf.failed.Add(1)
		refuse(preamble.CodeUnreachable, "", err)
		return
	}
	sock := app.(*net.UDPConn)
	_ = sock.SetReadBuffer(flowSocketBuffer)
	_ = sock.SetWriteBuffer(flowSocketBuffer)
	rf.opened.Add(1)
	t := c.reg.Open(c.reverse.tunnels, engine.Info{
		Endpoint:           engine.ClientEndpoint,
		StreamID:           int64(st.StreamID()),
		ClientAppAddr:      rf.target.Display(),
		ServerAppAddr:      "udp:" + origin,
		RemoteEndpointAddr: conn.RemoteAddr().String(),
		Session:            conn.RemoteAddr().String(),
		Forward:            rf.spec.Name,
		Direction:          engine.DirectionReverse,
	})
	t.SetProtocol(ProtocolUDP, nil)
	c.udp.stats.opened.Add(1)
	flow := newFlowSide(conn, st, t, c.udp.stats)
	table := c.flowTable(conn)
	table.add(flow)
	defer c.dropFlow(conn, table, flow)
	defer flow.stop()
	log = log.With("tunnel", t.ID)
	if _, err := st.Write(preamble.AppendStatus(nil, preamble.Status{Code: preamble.CodeOK})); err != nil {
		log.Warn("reverse flow lost before it started", "err", err)
		t.Kill() // RunFlow then closes both at once
	}
	log.Debug("reverse flow opened")
	err = t.RunFlow(flow, &targetSide{conn: sock, t: t, stats: c.udp.stats})
	c.udp.ended(t)
	c.metrics.ended(err)
	logFlowEnd(log, t, err)
}

// reverseClientCollector is the client's reverse forwards at scrape time.
type reverseClientCollector struct{ c *Client }

var (
	reverseOpenDesc = prometheus.NewDesc("quictun_reverse_tunnels_open", "Live tunnels of each reverse forward.",
		[]string{"reverse"}, prometheus.Labels{"endpoint": string(engine.ClientEndpoint)})
	reverseOpenedDesc = prometheus.NewDesc("quictun_reverse_tunnels_opened_total", "Tunnels each reverse forward opened to its target.",
		[]string{"reverse"}, prometheus.Labels{"endpoint": string(engine.ClientEndpoint)})
	reverseFailedDesc = prometheus.NewDesc("quictun_reverse_failures_total", "Connections of each reverse forward whose target could not be reached.",
		[]string{"reverse"}, prometheus.Labels{"endpoint": string(engine.ClientEndpoint)})
)

func (r reverseClientCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- reverseOpenDesc
	ch <- reverseOpenedDesc
	ch <- reverseFailedDesc
}

func (r reverseClientCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range r.c.reverseStatuses() {
		ch <- prometheus.MustNewConstMetric(reverseOpenDesc, prometheus.GaugeValue, float64(st.TunnelsOpen), st.Name)
		ch <- prometheus.MustNewConstMetric(reverseOpenedDesc, prometheus.CounterValue, float64(st.TunnelsOpened), st.Name)
		ch <- prometheus.MustNewConstMetric(reverseFailedDesc, prometheus.CounterValue, float64(st.Failures), st.Name)
	}
}
