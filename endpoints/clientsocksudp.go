package endpoints

// SOCKS5 UDP ASSOCIATE (RFC 1928 section 7) in a client's SOCKS5 proxy. The
// application asks on a TCP connection; the client opens a relay socket on
// the IP the application reached the proxy at and replies with its address.
// Each datagram the application sends there carries a SOCKS UDP header
// naming its destination, and each destination is a UDP flow to the server
// whose token is udp:DST:PORT, so that the server's policy decides each as
// it does a udp: forward's; answers come back with the header naming the
// destination. The association lives as long as its TCP connection.
//
// Only the application that asked may use it: datagrams must come from the
// TCP connection's peer IP, and from one port, the request's when it named
// one, else the first datagram's; every other datagram is dropped and
// counted ("foreign source"), so a stranger on the LAN cannot send through
// someone's association, nor be answered by it.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"

	"github.com/quictun/quictun/codecs/socks"
)

// Bounds of SOCKS5 UDP: associations at once per proxy forward, and
// destinations (flows) at once per association, which make the 4096 flows
// of a udp: forward.
const (
	maxAssociationsPerProxy = 32
	maxFlowsPerAssociation  = 128
)

// Reasons a relayed datagram is dropped, besides udpflow.go's.
const (
	dropForeignSource = "foreign source" // not from the association's application
	dropSOCKSFragment = "socks fragment" // FRAG set: RFC 1928 lets a relay drop them
)

// failTooManyAssociations counts UDP ASSOCIATE requests over the bound.
const failTooManyAssociations = "too many associations"

// association is one UDP ASSOCIATE's relay socket and its flows by
// destination (the header's address bytes).
type association struct {
	relay  *net.UDPConn
	peerIP netip.Addr     // the TCP connection's peer: the only source IP taken
	client netip.AddrPort // the application's address, once known (port 0 before)
	flows  flowSet[string]
	// setup bounds the set-up of its flows: cancelled when it ends.
	setup       context.Context
	cancelSetup context.CancelFunc
	handlers    sync.WaitGroup // its flows
}

// serveAssociation runs a UDP ASSOCIATE request of app until app's
// connection ends (or the forward's tunnels are stopped), then ends its
// flows and waits for them.
func (c *Client) serveAssociation(f *forward, app net.Conn, req socks.Request, log *slog.Logger) {
	refuse := func(reply socks.Reply, reason string, err error) {
		log.Warn("application connection closed: UDP associate refused", "err", err)
		c.metrics.failed(reason)
		f.stats.failed(reason)
		_, _ = app.Write(socks.AppendReply(nil, reply, netip.AddrPort{}))
		app.Close()
	}
	peer, okPeer := app.RemoteAddr().(*net.TCPAddr)
	local, okLocal := app.LocalAddr().(*net.TCPAddr)
	if !okPeer || !okLocal {
		// A UNIX socket's peer has no IP for the relay to check datagrams against.
		refuse(socks.CommandNotSupported, failBadProxyRequest, errors.New("UDP ASSOCIATE needs a proxy on tcp:"))
		return
	}
	if n := f.associations.Add(1); n > maxAssociationsPerProxy {
		f.associations.Add(-1)
		refuse(socks.GeneralFailure, failTooManyAssociations, errors.New("too many UDP associations on this proxy"))
		return
	}
	defer f.associations.Add(-1)
	// The relay listens on the IP the application reached the proxy at: the
	// proxy's own IP, or the interface's when it listens on all.
	relay, err := net.ListenUDP("udp", &net.UDPAddr{IP: local.IP, Zone: local.Zone})
	if err != nil {
		refuse(socks.GeneralFailure, failBadProxyRequest, err)
		return
	}
	_ = relay.SetReadBuffer(flowSocketBuffer)
	_ = relay.SetWriteBuffer(flowSocketBuffer)
	a := &association{relay: relay, peerIP: peer.AddrPort().Addr().Unmap()}
	// A request naming a port pins it (its address is not taken: the source
	// IP must be the peer's anyway).
	if req.Port != 0 {
		a.client = netip.AddrPortFrom(a.peerIP, req.Port)
	}
	a.setup, a.cancelSetup = context.WithCancel(f.ctx)
	defer a.cancelSetup()
	bound := relay.LocalAddr().(*net.UDPAddr).AddrPort()
	if _, err := app.Write(socks.AppendReply(nil, socks.Succeeded, netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()))); err != nil {
		relay.Close()
		app.Close()
		return
	}
	c.udp.stats.associations.Add(1)
	c.udp.stats.associationsOpened.Add(1)
	defer c.udp.stats.associations.Add(-1)
	log = log.With("relay", bound.String())
	log.Info("UDP association opened")
	var receiver sync.WaitGroup
	receiver.Go(func() { c.relayDatagrams(f, a, log) })
	// The control connection carries nothing more; its end is the
	// association's (RFC 1928 section 7). Bytes sent on it are discarded.
	stop := context.AfterFunc(f.tunnels, func() { app.Close() })
	_, err = io.Copy(io.Discard, app)
	stop()
	app.Close()
	relay.Close()
	receiver.Wait()
	// No new flow now: end those there are (their pumps read EOF: a clean
	// close on both endpoints) and those still being set up.
	a.flows.each(func(fl *clientFlow) { fl.app.Close() })
	a.cancelSetup()
	a.handlers.Wait()
	log.Info("UDP association closed", "err", err)
}

// relayDatagrams is an association's receiver: it takes the application's
// datagrams from the relay socket and hands each to its destination's flow,
// starting one for a new destination. It ends when the relay socket closes.
func (c *Client) relayDatagrams(f *forward, a *association, log *slog.Logger) {
	buf := make([]byte, socks.MaxUDPHeaderLen+MaxUDPDatagram+1)
	for {
		n, src, err := a.relay.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Warn("receive from the UDP association's application", "err", err)
			continue
		}
		src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
		if src.Addr() != a.peerIP || a.client.Port() != 0 && src != a.client {
			c.udp.stats.drop(dropForeignSource, 1)
			continue
		}
		h, data, err := socks.ParseUDP(buf[:n])
		switch {
		case errors.Is(err, socks.ErrUDPFragment):
			c.udp.stats.drop(dropSOCKSFragment, 1)
			continue
		case err != nil:
			c.udp.stats.drop(dropMalformed, 1)
			continue
		case len(data) > MaxUDPDatagram:
			c.udp.stats.drop(dropTooLarge, 1)
			continue
		}
		// The first good datagram names the application's port.
		a.client = src
		fl, fresh, drop := a.flows.route(string(h.Addr), maxFlowsPerAssociation, func() *clientFlow {
			p := newPeerSide(a.relay, src, c.udp.stats)
			p.prefix = socks.AppendUDPHeader(nil, h.Addr)
			return &clientFlow{app: p}
		})
		if drop != "" {
			c.udp.stats.drop(drop, 1)
			continue
		}
		if fresh {
			key, target := string(h.Addr), h.Target()
			a.handlers.Go(func() { c.serveAssociationFlow(f, a, key, target, fl, log) })
		}
		fl.app.deliver(append([]byte(nil), data...))
	}
}

// serveAssociationFlow runs the flow of one destination of an association.
func (c *Client) serveAssociationFlow(f *forward, a *association, key, target string, fl *clientFlow, log *slog.Logger) {
	log = log.With("app", "udp:"+fl.app.src.String(), "target", target)
	setup, cancel := context.WithTimeout(a.setup, c.cfg.SessionWait)
	defer cancel()
	c.runFlow(f, clientFlowRun{
		fl: fl, token: "udp:" + target, appAddr: "udp:" + fl.app.src.String(), setup: setup, tunnels: f.tunnels,
		refused: func() { a.flows.refused(fl) },
		forget:  func() { a.flows.forget(key, fl) },
	}, log)
}
