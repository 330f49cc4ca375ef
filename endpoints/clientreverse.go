package endpoints

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

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
	// ListenOn is where the server listens: tcp:IP:PORT or unix:PATH, which
	// its --allow-bind rules must permit.
	ListenOn string `json:"listenOn"`
	// Target is what each connection there reaches on the client's side:
	// tcp:HOST:PORT or unix:PATH.
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
	if _, err := address.ParseListen(s.ListenOn); err != nil {
		return fail(fmt.Errorf("listen-on: %w", err))
	}
	t, err := address.Parse(s.Target)
	if err != nil {
		return fail(fmt.Errorf("target: %w", err))
	}
	return t, nil
}

// reverseSet is the client's reverse forwards; fixed at NewClient.
type reverseSet struct {
	byListen map[string]*reverseForward // by ListenOn as written: the token of its tunnels
	order    []*reverseForward
	tunnels  context.Context // bounds their tunnels; set by Run before the keeper starts
	handlers sync.WaitGroup  // serveReverseStream calls
}

type reverseForward struct {
	spec   ReverseSpec
	target address.Address
}

// setReverses checks specs and makes the client's reverse set.
func (c *Client) setReverses(specs []ReverseSpec) error {
	c.reverse.byListen = map[string]*reverseForward{}
	names := map[string]bool{}
	for _, s := range specs {
		s = s.Named()
		t, err := s.target()
		if err != nil {
			return err
		}
		if names[s.Name] || c.reverse.byListen[s.ListenOn] != nil {
			return fmt.Errorf("reverse forward %s: a second one of that name or listen address", s.Name)
		}
		names[s.Name] = true
		rf := &reverseForward{spec: s, target: t}
		c.reverse.byListen[s.ListenOn] = rf
		c.reverse.order = append(c.reverse.order, rf)
	}
	return nil
}

// Reverses lists the client's reverse forwards.
func (c *Client) Reverses() []ReverseSpec {
	out := make([]ReverseSpec, 0, len(c.reverse.order))
	for _, rf := range c.reverse.order {
		out = append(out, rf.spec)
	}
	return out
}

// serveReverse runs the reverse forwards on one session until it ends: a
// bind per forward, and the streams the server opens.
func (c *Client) serveReverse(conn *quic.Conn) {
	var binds sync.WaitGroup
	defer binds.Wait()
	for _, rf := range c.reverse.order {
		binds.Go(func() { c.holdBind(conn, rf) })
	}
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
		if conn.Context().Err() != nil {
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
		st.CancelWrite(0)
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
	var one [1]byte
	for {
		if _, err := st.Read(one[:]); err != nil {
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
	rf := c.reverse.byListen[string(hdr.Token)]
	if rf == nil {
		refuse(preamble.CodeForbidden, "no such reverse forward", fmt.Errorf("no reverse forward listens on %q", hdr.Token))
		return
	}
	log = log.With("reverse", rf.spec.Name, "target", rf.target.String(), "origin", hdr.Origin)
	app, err := rf.target.Dial(c.reverse.tunnels, reverseDialTimeout)
	if err != nil {
		refuse(preamble.CodeUnreachable, "", err)
		return
	}
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
