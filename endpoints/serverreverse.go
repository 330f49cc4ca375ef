package endpoints

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/engine"
)

// Reverse forwards, as the server runs them. A client asks, on a stream of
// its authenticated session, that the server listen on an address (a bind
// request, see package preamble); the server binds it only when the bind
// rules permit that address for that client's identity (none do by default),
// answers with a status and keeps the stream as the binding's control
// stream. Each connection accepted there becomes a stream that the server
// opens on the holder's session, answered by the client's status as the
// server answers a tunnel in the forward direction. A udp: binding is a
// UDP socket whose source addresses are flows (serverreverseudp.go).
//
// A binding belongs to one identity. While its session is away the listener
// stays bound for ReverseGrace and connections wait up to SessionWait for a
// new holder; a session of the same identity takes it over, and after the
// grace it is released. A client that closes the control stream cleanly (it
// removed the forward) releases it at once. A bind of an address another
// identity holds is refused with CodeInUse; so is one of an address that a
// live session of the same identity holds: the server asks the holder
// (a ping byte on the control stream, which the client echoes) and a holder
// that does not answer within pingBound is taken as gone, which is how a
// restarted client takes its port back before the old session times out.

// Bounds of the reverse direction.
const (
	// pingBound, plus two round trips, is how long a holder has to answer the
	// ping that decides whether a newcomer may take its binding over.
	pingBound = 2 * time.Second
	// maxWaitingPerBinding bounds the connections that wait for a holder;
	// more are closed at once, so that a flood on a public port while the
	// client is away holds little.
	maxWaitingPerBinding = 256
	pingByte             = 0x01
)

// reverseTable is the server's bindings, by canonical address.
type reverseTable struct {
	sync.Mutex
	byKey   map[string]*binding
	stopped bool
	// routines counts the accept loops, the waiting connections and their
	// tunnels, so that Run waits for them.
	routines sync.WaitGroup
}

// binding is one listener of a reverse forward.
type binding struct {
	key     string          // the canonical address: the table's key
	owner   string          // the identity's name
	forward string          // the client's name for the forward
	ln      net.Listener    // nil for a udp: binding
	udp     *reverseUDP     // a udp: binding's socket and flows, nil for others
	ctx     context.Context // bounds its tunnels: the server's tunnel context

	// Guarded by the table's lock.
	holder   *holder       // nil while the client is away
	changed  chan struct{} // closed and replaced when holder changes or the binding is released
	released bool
	grace    *time.Timer // runs while the client is away
	waiting  int
}

// holder is the session that holds a binding, with its control stream.
type holder struct {
	sess  *serverSession
	ctl   *quic.Stream
	asked string // the bind address as this client wrote it: its tunnels' token
	name  string // the client's name of the forward
	pong  chan struct{}
	done  chan struct{} // closed when the control stream has ended
	ping  sync.Mutex    // one ping at a time on the control stream
}

// bindKey is the address a listener binds, in one spelling: an IPv4-mapped
// address is its IPv4 address, a path is cleaned.
func bindKey(a address.Address) (string, error) {
	if a.Network == address.Unix {
		if strings.HasPrefix(a.Addr, "@") {
			return a.String(), nil
		}
		return address.Unix + ":" + filepath.Clean(a.Addr), nil
	}
	ap, err := netip.ParseAddrPort(a.Addr)
	if err != nil {
		return "", fmt.Errorf("bind address %s: want an IP address and a port", a)
	}
	// TCP and UDP ports are two spaces: tcp:0.0.0.0:53 and udp:0.0.0.0:53
	// are two bindings.
	return a.Network + ":" + netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String(), nil
}

// SetBindRules replaces the server's --allow-bind rules (SIGHUP). Bindings
// that no longer pass keep running until their client withdraws them or its
// session ends; new requests see the new rules.
func (s *Server) SetBindRules(b *policy.BindRules) { s.bindRules.Store(b) }

// serveBind answers a bind request and, when it is granted, serves the
// control stream until the client withdraws it or its session ends.
func (s *Server) serveBind(ctx context.Context, sess *serverSession, stream *quic.Stream, hdr preamble.Header, log *slog.Logger) {
	log = log.With("reverse", hdr.Name, "bind", hdr.Bind)
	refuse := func(code preamble.Code, msg string) {
		log.Warn("reverse forward refused", "status", code, "err", msg)
		s.refuse(stream, code, msg)
	}
	if !s.auth.Load().required {
		refuse(preamble.CodeForbidden, "reverse forwards need client authentication (a secret, identities or mutual TLS)")
		return
	}
	addr, err := address.ParseListen(hdr.Bind)
	if err != nil {
		refuse(preamble.CodeBadToken, err.Error())
		return
	}
	key, err := bindKey(addr)
	if err != nil {
		refuse(preamble.CodeBadToken, err.Error())
		return
	}
	rules := s.bindRules.Load()
	if sess.identity.Bind != nil {
		rules = sess.identity.Bind
	}
	if !rules.Permits(addr) {
		refuse(preamble.CodeForbidden, fmt.Sprintf("the server does not let this client listen on %s (--allow-bind, bind=)", key))
		return
	}
	h := &holder{sess: sess, ctl: stream, asked: hdr.Bind, name: hdr.Name, pong: make(chan struct{}, 1), done: make(chan struct{})}
	// A newcomer may ping h as soon as claim makes it the holder: the ping
	// lock keeps that byte behind the status on the stream.
	h.ping.Lock()
	b, code, err := s.claim(ctx, key, addr, hdr.Name, h)
	if err != nil {
		h.ping.Unlock()
		refuse(code, err.Error())
		return
	}
	_, err = stream.Write(preamble.AppendStatus(nil, preamble.Status{Code: preamble.CodeOK}))
	h.ping.Unlock()
	if err != nil {
		close(h.done)
		s.detach(b, h, false)
		return
	}
	log.Info("reverse forward bound", "listen", b.addr().String(), "protocol", b.protocol())
	// The control stream carries only the client's echoes of pings; its end
	// says how the client left: FIN is a withdrawal, anything else a loss.
	var one [1]byte
	for {
		if _, err := stream.Read(one[:]); err != nil {
			close(h.done)
			withdrawn := errors.Is(err, io.EOF)
			if withdrawn {
				log.Info("reverse forward withdrawn by the client")
			}
			s.detach(b, h, withdrawn)
			return
		}
		select {
		case h.pong <- struct{}{}:
		default:
		}
	}
}

// claim makes h the holder of the binding at key: a new listener, a binding
// in its grace, or one whose holder of the same identity no longer answers.
func (s *Server) claim(ctx context.Context, key string, addr address.Address, name string, h *holder) (*binding, preamble.Code, error) {
	owner := h.sess.identity.Name
	for {
		s.reverse.Lock()
		if s.reverse.stopped {
			s.reverse.Unlock()
			return nil, preamble.CodeShutdown, errors.New("server is shutting down")
		}
		b := s.reverse.byKey[key]
		if b == nil {
			break
		}
		if b.owner != owner {
			s.reverse.Unlock()
			return nil, preamble.CodeInUse, fmt.Errorf("%s is held by another client", key)
		}
		old := b.holder
		if old == nil {
			b.setHolder(h, name)
			s.reverse.Unlock()
			return b, preamble.CodeOK, nil
		}
		s.reverse.Unlock()
		if old.sess == h.sess || old.alive() {
			return nil, preamble.CodeInUse, fmt.Errorf("%s is held by a live session of this client", key)
		}
		// The old holder is gone without a word (a killed client): take over.
		s.reverse.Lock()
		if b.holder == old {
			b.setHolder(h, name)
			b.udp.endFlowsOf(old) // the new holder's session carries them from their next datagram
			s.reverse.Unlock()
			old.ctl.CancelRead(quic.StreamErrorCode(preamble.CodeInUse))
			old.ctl.CancelWrite(quic.StreamErrorCode(preamble.CodeInUse))
			return b, preamble.CodeOK, nil
		}
		s.reverse.Unlock() // it changed meanwhile: look again
	}
	defer s.reverse.Unlock()
	var ln net.Listener
	var udp *reverseUDP
	var err error
	if addr.Network == address.UDP {
		udp, err = listenReverseUDP(addr)
	} else {
		ln, err = addr.Listen()
	}
	if err != nil {
		code := preamble.CodeInternal
		switch {
		case errors.Is(err, syscall.EADDRINUSE):
			code = preamble.CodeInUse
		case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EADDRNOTAVAIL):
			code = preamble.CodeForbidden
		}
		return nil, code, err
	}
	b := &binding{key: key, owner: owner, forward: name, ln: ln, udp: udp, ctx: ctx, changed: make(chan struct{})}
	b.holder = h
	s.reverse.byKey[key] = b
	if udp != nil {
		s.reverse.routines.Go(func() { s.receiveReverse(b) })
	} else {
		s.reverse.routines.Go(func() { s.acceptReverse(b) })
	}
	return b, preamble.CodeOK, nil
}

// setHolder hands b to h. The caller holds the table's lock.
func (b *binding) setHolder(h *holder, name string) {
	b.holder = h
	if name != "" {
		b.forward = name
	}
	if b.grace != nil {
		b.grace.Stop()
		b.grace = nil
	}
	close(b.changed)
	b.changed = make(chan struct{})
}

// alive pings the holder on its control stream and says whether it echoed
// in time.
func (h *holder) alive() bool {
	h.ping.Lock()
	defer h.ping.Unlock()
	select {
	case <-h.pong: // a stale echo
	default:
	}
	bound := pingBound + 2*h.sess.conn.ConnectionStats().SmoothedRTT
	_ = h.ctl.SetWriteDeadline(time.Now().Add(bound))
	if _, err := h.ctl.Write([]byte{pingByte}); err != nil {
		return false
	}
	t := time.NewTimer(bound)
	defer t.Stop()
	select {
	case <-h.pong:
		return true
	case <-h.done:
	case <-t.C:
	}
	return false
}

// detach ends h's hold on b: the binding is released at once when the
// client withdrew it, and otherwise waits ReverseGrace for the client's next
// session.
func (s *Server) detach(b *binding, h *holder, withdrawn bool) {
	s.reverse.Lock()
	defer s.reverse.Unlock()
	if b.holder != h || b.released {
		return
	}
	b.holder = nil
	close(b.changed)
	b.changed = make(chan struct{})
	if withdrawn || s.reverse.stopped {
		s.release(b)
		return
	}
	s.log.Info("reverse forward waits for its client", "bind", b.key, "reverse", b.forward, "identity", h.sess.identityName(), "grace", s.cfg.ReverseGrace)
	b.grace = time.AfterFunc(s.cfg.ReverseGrace, func() {
		s.reverse.Lock()
		defer s.reverse.Unlock()
		if b.holder == nil && !b.released {
			s.log.Info("reverse forward released: its client did not come back", "bind", b.key, "reverse", b.forward)
			s.release(b)
		}
	})
}

// release closes b's listener and wakes its waiting connections. The caller
// holds the table's lock.
func (s *Server) release(b *binding) {
	b.released = true
	if b.grace != nil {
		b.grace.Stop()
	}
	close(b.changed)
	b.changed = make(chan struct{})
	delete(s.reverse.byKey, b.key)
	if b.udp != nil {
		b.udp.close()
		return
	}
	b.ln.Close()
}

// addr is where b listens.
func (b *binding) addr() net.Addr {
	if b.udp != nil {
		return b.udp.pc.LocalAddr()
	}
	return b.ln.Addr()
}

// protocol is b's network: tcp, unix or udp.
func (b *binding) protocol() string { return b.key[:strings.IndexByte(b.key, ':')] }

// stopReverse releases every binding and waits for their routines; Run
// calls it once sessions are closed.
func (s *Server) stopReverse() {
	s.reverse.Lock()
	s.reverse.stopped = true
	for _, b := range s.reverse.byKey {
		s.release(b)
	}
	s.reverse.Unlock()
	s.reverse.routines.Wait()
}

// acceptReverse is a binding's accept loop, until its listener is closed.
func (s *Server) acceptReverse(b *binding) {
	for {
		app, err := b.ln.Accept()
		if err != nil {
			return
		}
		s.reverse.Lock()
		full := b.waiting >= maxWaitingPerBinding
		if !full {
			b.waiting++
		}
		s.reverse.Unlock()
		if full {
			s.refusals.warn("reverse connection closed: too many waiting", "bind", b.key, "max", maxWaitingPerBinding)
			s.metrics.failed("reverse: too many waiting")
			app.Close()
			continue
		}
		s.reverse.routines.Go(func() { s.serveReverseConn(b, app) })
	}
}

// nextHolder waits for b's holder while ctx lasts; nil when b was released
// or ctx ended.
func (s *Server) nextHolder(ctx context.Context, b *binding) *holder {
	for {
		s.reverse.Lock()
		h, changed, released := b.holder, b.changed, b.released
		s.reverse.Unlock()
		switch {
		case released:
			return nil
		case h != nil && h.sess.conn.Context().Err() == nil:
			return h
		}
		select {
		case <-changed:
		case <-h.gone():
		case <-ctx.Done():
			return nil
		}
	}
}

// gone is closed when the holder's session ends; nil (never) without one.
func (h *holder) gone() <-chan struct{} {
	if h == nil {
		return nil
	}
	return h.sess.conn.Context().Done()
}

// serveReverseConn carries one connection accepted on b to the client that
// holds it: it waits up to SessionWait for a holder, opens a stream on its
// session, and runs the tunnel.
func (s *Server) serveReverseConn(b *binding, app net.Conn) {
	waited := true
	defer func() {
		if waited {
			s.reverse.Lock()
			b.waiting--
			s.reverse.Unlock()
		}
	}()
	s.reverse.Lock()
	name := b.forward
	s.reverse.Unlock()
	log := s.log.With("reverse", name, "bind", b.key, "app", app.RemoteAddr().String())
	wait, cancel := context.WithTimeout(b.ctx, s.cfg.SessionWait)
	defer cancel()
	for {
		h := s.nextHolder(wait, b)
		if h == nil {
			log.Warn("reverse connection closed: no session of its client", "waited_up_to", s.cfg.SessionWait)
			s.metrics.failed("reverse: no session")
			app.Close()
			return
		}
		st, err := h.sess.conn.OpenStreamSync(wait)
		if err != nil {
			if h.sess.conn.Context().Err() != nil || sessionGone(err) {
				continue // the holder left meanwhile: wait for the next one
			}
			log.Warn("reverse connection closed: no stream", "err", err)
			s.metrics.failed("reverse: no stream")
			app.Close()
			return
		}
		s.reverse.Lock()
		b.waiting--
		waited = false
		s.reverse.Unlock()
		s.runReverse(b, h, st, app, log)
		return
	}
}

// runReverse sends the reverse tunnel's header, then runs it; the client's
// status comes back as the first thing the stream carries.
func (s *Server) runReverse(b *binding, h *holder, st *quic.Stream, app net.Conn, log *slog.Logger) {
	sess := h.sess
	log = log.With("session", sess.peer, "identity", sess.identityName(), "stream", int64(st.StreamID()))
	abort := func(code preamble.Code, msg string) {
		log.Warn("reverse connection closed", "status", code, "err", msg)
		s.metrics.failedWith(code)
		st.CancelRead(quic.StreamErrorCode(code))
		st.CancelWrite(quic.StreamErrorCode(code))
		app.Close()
	}
	if !s.admitTunnel() {
		abort(preamble.CodeOverloaded, "too many tunnels")
		return
	}
	defer s.tunnels.Add(-1)
	release, ok := s.admitIdentityTunnel(sess.identity)
	if !ok {
		abort(preamble.CodeOverloaded, "too many tunnels for this identity")
		return
	}
	defer release()
	hdr, err := preamble.AppendHeader(nil, preamble.Header{Token: []byte(h.asked), Origin: app.RemoteAddr().String()})
	if err == nil {
		_, err = st.Write(hdr)
	}
	if err != nil {
		abort(preamble.CodeInternal, err.Error())
		return
	}
	t := s.reg.Open(b.ctx, engine.Info{
		Endpoint:           engine.ServerEndpoint,
		StreamID:           int64(st.StreamID()),
		ServerAppAddr:      address.DisplayConn(app),
		RemoteEndpointAddr: sess.conn.RemoteAddr().String(),
		Session:            sess.peer,
		Identity:           sess.identityName(),
		Forward:            h.name,
		Direction:          engine.DirectionReverse,
	})
	log = log.With("tunnel", t.ID)
	log.Debug("reverse tunnel opened")
	err = t.Run(engine.ConnSide(app), &reverseStream{stream: st})
	if se := (*preamble.StatusError)(nil); errors.As(err, &se) {
		log.Warn("reverse tunnel refused by the client", "status", se.Status.Code, "err", se.Status.Message)
		s.metrics.failedWith(se.Status.Code)
	} else {
		s.metrics.ended(err)
	}
	logTunnelEnd(log, t, err)
}

// reverseStream is the server's side of a reverse tunnel's stream: its first
// read consumes the client's status, and a refusal is the read's error.
type reverseStream struct {
	stream *quic.Stream
	status bool // reader-only
	abort  sync.Once
}

func (r *reverseStream) Read(p []byte) (int, error) {
	if !r.status {
		st, err := preamble.ReadStatus(r.stream)
		if err != nil {
			return 0, refusal(err)
		}
		if err := st.Err(); err != nil {
			return 0, err
		}
		r.status = true
	}
	return r.stream.Read(p)
}

func (r *reverseStream) Write(p []byte) (int, error) { return r.stream.Write(p) }
func (r *reverseStream) SetInteractive(on bool)      { engine.SetStreamInteractive(r.stream, on) }
func (r *reverseStream) CloseWrite() error           { return r.stream.Close() }

func (r *reverseStream) Abort(code uint64) {
	r.abort.Do(func() {
		r.stream.CancelRead(quic.StreamErrorCode(code))
		r.stream.CancelWrite(quic.StreamErrorCode(code))
	})
}

func (r *reverseStream) Close() error {
	r.stream.CancelRead(0)
	return nil
}

// reverseCollector counts the server's bindings at scrape time, held (a
// session of their client is there) or waiting (in their grace).
type reverseCollector struct{ s *Server }

var reverseBindingsDesc = prometheus.NewDesc("quictun_reverse_bindings",
	"Listeners of reverse forwards, by state: held (their client's session is there) or waiting (in their grace).",
	[]string{"state"}, prometheus.Labels{"endpoint": string(engine.ServerEndpoint)})

func (c reverseCollector) Describe(ch chan<- *prometheus.Desc) { ch <- reverseBindingsDesc }

func (c reverseCollector) Collect(ch chan<- prometheus.Metric) {
	c.s.reverse.Lock()
	held, waiting := 0, 0
	for _, b := range c.s.reverse.byKey {
		if b.holder != nil {
			held++
		} else {
			waiting++
		}
	}
	c.s.reverse.Unlock()
	ch <- prometheus.MustNewConstMetric(reverseBindingsDesc, prometheus.GaugeValue, float64(held), "held")
	ch <- prometheus.MustNewConstMetric(reverseBindingsDesc, prometheus.GaugeValue, float64(waiting), "waiting")
}

// Bindings lists the server's reverse forwards, for the API and tests.
func (s *Server) Bindings() []BindingInfo {
	s.reverse.Lock()
	defer s.reverse.Unlock()
	out := make([]BindingInfo, 0, len(s.reverse.byKey))
	for _, b := range s.reverse.byKey {
		bi := BindingInfo{Name: b.forward, Listen: b.addr().String(), Protocol: b.protocol(), Identity: b.owner, Held: b.holder != nil}
		if b.holder != nil {
			bi.Identity = b.holder.sess.identityName()
		}
		out = append(out, bi)
	}
	return out
}

// BindingInfo is one reverse forward's listener on the server.
type BindingInfo struct {
	Name     string `json:"name"`
	Listen   string `json:"listenOn"`
	Protocol string `json:"protocol"` // tcp, unix or udp
	Identity string `json:"identity"`
	Held     bool   `json:"held"` // false while it waits for its client
}

// ListForwards is GET /forwards on the server: its reverse forwards'
// listeners.
func (s *Server) ListForwards() any { return s.Bindings() }

// errClientsAsk answers the API's changes of the server's forwards: clients
// ask for their reverse forwards, the rules decide.
var errClientsAsk error = &forwardError{"the server's reverse forwards are asked for by its clients (see --allow-bind)", 405}

// AddForwardJSON is POST /forwards, which the server does not take.
func (s *Server) AddForwardJSON([]byte) (any, error) { return nil, errClientsAsk }

// RemoveForward is DELETE /forwards/NAME, which the server does not take.
func (s *Server) RemoveForward(string) error { return errClientsAsk }
