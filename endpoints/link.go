package endpoints

import (
	"fmt"
	"net"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/recovery"
)

// linkLayers builds what sits between an endpoint's UDP socket and quic-go:
// the optional test layer (WrapUDP) and the loss-recovery layer. The returned
// conn owns the ones below it; closing it closes them all. rec is nil when the
// recovery layer is left out.
//
// A server always runs the recovery layer, even with mode off, because it must
// understand clients that frame their datagrams; off then only means it adds
// no parity of its own. A client with mode off leaves the layer out entirely,
// so that it is plain quic-go (with its GSO and path MTU discovery) and the
// server answers it in plain QUIC.
func linkLayers(udp *net.UDPConn, wrap func(net.PacketConn) net.PacketConn, cfg *recovery.Config, server bool, qc *quic.Config) (conn net.PacketConn, rec *recovery.Conn, err error) {
	conn = udp
	if wrap != nil {
		conn = wrap(conn)
	}
	rc := recovery.DefaultConfig()
	if cfg != nil {
		rc = *cfg
	}
	if rc.Mode == recovery.Off && !server {
		return conn, nil, nil
	}
	// A client's quic-go writes only to the server it dials: proven by our
	// choice. A server proves an address once QUIC accepts it (Server.Run).
	rc.Dialer = !server
	rec, err = recovery.NewConn(conn, rc)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("loss-recovery layer: %w", err)
	}
	// quic-go cannot see the framing: fixed packets that leave room for it, no
	// path MTU discovery (the rest of qc, set by quicConfig, is kept).
	recovery.TuneQUICConfig(qc)
	return rec, rec, nil
}
