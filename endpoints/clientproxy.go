package endpoints

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/quictun/quictun/codecs/httpproxy"
	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/codecs/socks"
)

// A proxy forward (SOCKS5 or HTTP) learns each tunnel's target from its
// application, sends it as the token ("tcp:HOST:PORT", a host name resolved
// by the server), and lets the server's policy decide. Unlike a token
// forward, it waits for the server's answer before the application's bytes
// flow: the application expects the proxy's verdict (a SOCKS reply, an HTTP
// status) first, and a refusal must reach it as the protocol's own code.

// failBadProxyRequest counts applications whose proxy request was refused by
// the client itself (malformed, unsupported, wrong credentials).
const failBadProxyRequest = "bad proxy request"

// proxyRequest is what a proxy handshake yields: the target, what to send
// ahead of the application's bytes, and how to tell the application the
// server's verdict.
type proxyRequest struct {
	target string
	first  []byte   // a plain HTTP request's head, sent before the rest
	app    net.Conn // the application, with bytes the parser read ahead
	answer func(code preamble.Code, refusal error) error
	// associate is a SOCKS5 UDP ASSOCIATE request, which carries no tunnel
	// of its own (see serveAssociation); nil for a CONNECT.
	associate *socks.Request
}

// proxyHandshake reads the application's request within SessionWait.
func (c *Client) proxyHandshake(f *forward, app net.Conn) (*proxyRequest, error) {
	_ = app.SetDeadline(time.Now().Add(c.cfg.SessionWait))
	// A forward that stops (a reload, shutdown) ends handshakes under way at
	// once rather than after SessionWait.
	stop := context.AfterFunc(f.ctx, func() { _ = app.SetDeadline(time.Now()) })
	defer func() {
		stop()
		_ = app.SetDeadline(time.Time{})
	}()
	creds := socks.Credentials{Username: f.spec.Username, Password: f.spec.Password}
	if f.proxy == ProxySOCKS5 {
		req, err := socks.Handshake(app, creds)
		if err != nil {
			return nil, err
		}
		if req.Command == socks.CmdUDPAssociate {
			return &proxyRequest{target: req.Target(), app: app, associate: &req}, nil
		}
		return &proxyRequest{target: req.Target(), app: app, answer: func(code preamble.Code, refusal error) error {
			_, err := app.Write(socks.AppendReply(nil, socksReply(code, refusal), netip.AddrPort{}))
			return err
		}}, nil
	}
	req, br, err := httpproxy.ReadRequest(app)
	if he := (*httpproxy.Error)(nil); errors.As(err, &he) {
		_, _ = app.Write(httpproxy.AppendResponse(nil, he.Status, he.Msg))
	}
	if err != nil {
		return nil, err
	}
	if creds.Username != "" && !(req.HasAuth && constantTimeEqual(req.Username, creds.Username) && constantTimeEqual(req.Password, creds.Password)) {
		_, _ = app.Write(httpproxy.AppendResponse(nil, http.StatusProxyAuthRequired, "proxy authentication required"))
		return nil, &httpproxy.Error{Status: http.StatusProxyAuthRequired, Msg: "missing or wrong proxy credentials"}
	}
	p := &proxyRequest{target: req.Target, first: req.Head, app: &readAheadConn{Conn: app, r: br}}
	p.answer = func(code preamble.Code, refusal error) error {
		if code == preamble.CodeOK && !req.Connect {
			return nil // the origin server's response is the answer
		}
		status, msg := httpStatus(code, refusal), "connection established"
		if refusal != nil {
			msg = refusal.Error()
		}
		_, err := app.Write(httpproxy.AppendResponse(nil, status, msg))
		return err
	}
	return p, nil
}

// serveProxy carries one application connection of a proxy forward.
func (c *Client) serveProxy(f *forward, app net.Conn, log *slog.Logger) {
	failed := func(reason string) {
		c.metrics.failed(reason)
		f.stats.failed(reason)
	}
	req, err := c.proxyHandshake(f, app)
	if err != nil {
		log.Warn("application connection closed: bad proxy request", "err", err)
		failed(failBadProxyRequest)
		app.Close()
		return
	}
	if req.associate != nil {
		c.serveAssociation(f, app, *req.associate, log)
		return
	}
	log = log.With("target", req.target)
	setup, cancel := context.WithTimeout(f.ctx, c.cfg.SessionWait)
	defer cancel()
	tok := "tcp:" + req.target
	hdr, err := preamble.AppendHeader(nil, preamble.Header{Token: []byte(tok)})
	if err == nil && req.first != nil {
		hdr = append(hdr, req.first...)
	}
	if err != nil {
		log.Warn("application connection closed: bad target", "err", err)
		_ = req.answer(preamble.CodeBadToken, err)
		failed(failNoToken)
		app.Close()
		return
	}
	stream, err := openClientStream(setup, c.sessions, c.cfg.SessionWait, hdr)
	if err != nil {
		log.Warn("application connection closed: no tunnel", "err", err)
		_ = req.answer(preamble.CodeInternal, err)
		failed(failNoSession)
		app.Close()
		return
	}
	// The server's verdict, within the set-up's bound: abort the stream
	// when it does not come in time.
	stop := context.AfterFunc(setup, func() { stream.Abort(uint64(preamble.CodeInternal)) })
	err = stream.awaitStatus()
	if !stop() && err != nil {
		err = errors.Join(err, context.Cause(setup))
	}
	if err != nil {
		code := preamble.CodeInternal
		if se := (*preamble.StatusError)(nil); errors.As(err, &se) {
			code = se.Status.Code
			c.metrics.failedWith(code)
			f.stats.failed(code.String())
		} else {
			failed(failNoSession)
		}
		stream.Abort(uint64(preamble.CodeInternal))
		log.Warn("application connection closed: tunnel refused", "err", err)
		_ = req.answer(code, err)
		app.Close()
		return
	}
	if err := req.answer(preamble.CodeOK, nil); err != nil {
		stream.Abort(uint64(preamble.CodeInternal))
		log.Warn("application connection closed before the proxy's answer", "err", err)
		app.Close()
		return
	}
	c.runTunnel(f, req.app, stream, tok, log)
}

// socksReply is the SOCKS reply for the server's verdict.
func socksReply(code preamble.Code, refusal error) socks.Reply {
	switch code {
	case preamble.CodeOK:
		return socks.Succeeded
	case preamble.CodeForbidden:
		return socks.NotAllowed
	case preamble.CodeUnreachable:
		if refusal != nil && strings.Contains(refusal.Error(), "refused") {
			return socks.ConnectionRefused
		}
		return socks.HostUnreachable
	case preamble.CodeBadToken:
		return socks.HostUnreachable // the server could not read the target as an address
	}
	return socks.GeneralFailure
}

// httpStatus is the HTTP status for the server's verdict.
func httpStatus(code preamble.Code, refusal error) int {
	switch code {
	case preamble.CodeOK:
		return http.StatusOK
	case preamble.CodeForbidden:
		return http.StatusForbidden
	case preamble.CodeBadToken:
		return http.StatusBadRequest
	case preamble.CodeOverloaded, preamble.CodeShutdown:
		return http.StatusServiceUnavailable
	}
	if errors.Is(refusal, context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return http.StatusBadGateway
}

// readAheadConn is an application connection whose first bytes a parser has
// read ahead into r.
type readAheadConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *readAheadConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// CloseWrite and SetLinger pass to the connection, so that the tunnel's
// half-close and hard close work as on any application connection.
func (c *readAheadConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *readAheadConn) SetLinger(sec int) error {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		return tc.SetLinger(sec)
	}
	return nil
}

// constantTimeEqual compares credentials without telling their length or
// content through timing.
func constantTimeEqual(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}
