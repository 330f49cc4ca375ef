package cli

import (
	"log/slog"
	"net"
)

// WarnOpenListener warns when a client endpoint's forward (a port forward
// or a proxy) accepts applications beyond loopback: every host that can connect there gets tunnels to what the token
// names, carried with this client's secret and certificate, so the server's
// authentication no longer says who is on the other end. It is sometimes
// meant (a gateway host, or the File token source choosing by client
// address), hence a warning and not a refusal.
func WarnOpenListener(log *slog.Logger, forward string, addr net.Addr) {
	var ip net.IP
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	default:
		return // a UNIX socket's reach is its file's permissions
	}
	if ip.IsLoopback() {
		return
	}
	log.Warn("ANYONE WHO CAN CONNECT TO THIS CLIENT USES ITS TUNNELS: it listens beyond loopback, so every host that "+
		"reaches the port gets through to the server's applications with this client's secret and certificate. "+
		"Listen on 127.0.0.1 (the default) or a UNIX socket, or firewall the port to the hosts that should have it",
		"forward", forward, "listen", addr.Network()+":"+addr.String())
}
