package contender

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/quictun/quictun/bench"
)

// UDPTarget is an application on the server host that a UDP carrier must reach.
type UDPTarget struct {
	Addr netip.AddrPort
	// TCP asks that TCP connections to the same client port reach the same port too:
	// iperf3 -u runs its control connection there.
	TCP bool
}

// UDPPath is a started UDP carrier: datagrams sent to Dials[i] on the client host
// reach the i-th target.
type UDPPath struct {
	*Path
	Dials []netip.AddrPort
	// Metrics are the endpoints' Prometheus /metrics addresses on their own hosts'
	// loopback, client then server; empty for contenders without them.
	Metrics []netip.AddrPort
}

// UDPCarrier is a contender that can carry datagrams (the udp and wireguard kinds).
type UDPCarrier interface {
	StartUDP(ctx context.Context, hosts Hosts, s bench.Scenario, targets []UDPTarget) (*UDPPath, error)
}

// bareLink is bench.Direct: the applications send straight across the link.
type bareLink struct{}

func (bareLink) Name() string { return bench.Direct }
func (bareLink) Tuning() string {
	return "the bare link: applications send to each other straight across it"
}

func (bareLink) Start(_ context.Context, _ Hosts, _ bench.Scenario, target netip.AddrPort) (*Path, error) {
	return &Path{Dial: target}, nil
}

func (bareLink) StartUDP(_ context.Context, _ Hosts, _ bench.Scenario, targets []UDPTarget) (*UDPPath, error) {
	p := &UDPPath{Path: &Path{}}
	for _, t := range targets {
		p.Dials = append(p.Dials, t.Addr)
	}
	return p, nil
}

// clientPorts takes one fresh client-host port per target.
func clientPorts(hosts Hosts, targets []UDPTarget) ([]netip.AddrPort, error) {
	var dials []netip.AddrPort
	for range targets {
		port, err := hosts.FreePort(ClientSide, "udp")
		if err != nil {
			return nil, err
		}
		dials = append(dials, netip.AddrPortFrom(hosts.Addr(ClientSide), uint16(port)))
	}
	return dials, nil
}

// startUDPPair starts a server endpoint, waits for its UDP port, then the client
// endpoint, and waits for its first forward's UDP port; on failure both stop.
func startUDPPair(ctx context.Context, hosts Hosts, name string, server, client *exec.Cmd, serverPort int, first netip.AddrPort) ([]*Process, error) {
	srv, err := StartProcess(name+"-server", server)
	if err != nil {
		return nil, err
	}
	if err := waitOrDie(ctx, hosts, srv, ServerSide, "udp", serverPort); err != nil {
		srv.Stop()
		return nil, err
	}
	cli, err := StartProcess(name+"-client", client)
	if err != nil {
		srv.Stop()
		return nil, err
	}
	if err := waitOrDie(ctx, hosts, cli, ClientSide, "udp", int(first.Port())); err != nil {
		cli.Stop()
		srv.Stop()
		return nil, err
	}
	return []*Process{cli, srv}, nil
}

// StartUDP runs one udp: forward per target (and a tcp: forward on the same port
// where asked), all over the client's one session.
func (q quictun) StartUDP(ctx context.Context, hosts Hosts, _ bench.Scenario, targets []UDPTarget) (*UDPPath, error) {
	udpPort, err := hosts.FreePort(ServerSide, "udp")
	if err != nil {
		return nil, err
	}
	dials, err := clientPorts(hosts, targets)
	if err != nil {
		return nil, err
	}
	serverAddr := hostPort(hosts.Addr(ServerSide), udpPort)
	// The APIs on each host's loopback, for the datagram counters (where a loss happened).
	apis := make([]netip.AddrPort, 2)
	for i, side := range []Side{ClientSide, ServerSide} {
		port, err := hosts.FreePort(side, "tcp")
		if err != nil {
			return nil, err
		}
		apis[i] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	}
	serverArgs := []string{"--listen-on", serverAddr, "--httpd-listen-on", apis[1].String(),
		"--state-dir", filepath.Join(q.stateDir, "quictun-server"),
		"--drain-timeout", "1s", "--log-level", "warn"}
	clientArgs := append([]string{"--server-endpoint", serverAddr, "--insecure-skip-verify", "--httpd-listen-on", apis[0].String(),
		"--drain-timeout", "1s", "--log-level", "error"}, q.clientFlags...)
	for i, t := range targets {
		serverArgs = append(serverArgs, "--allow", t.Addr.String())
		clientArgs = append(clientArgs, "--forward", "udp:"+dials[i].String()+"=udp:"+t.Addr.String())
		if t.TCP {
			clientArgs = append(clientArgs, "--forward", "tcp:"+dials[i].String()+"=tcp:"+t.Addr.String())
		}
	}
	endpoints, err := startUDPPair(ctx, hosts, q.name, hosts.Command(ctx, ServerSide, q.server, serverArgs...),
		hosts.Command(ctx, ClientSide, q.client, clientArgs...), udpPort, dials[0])
	if err != nil {
		return nil, err
	}
	return &UDPPath{Path: &Path{Endpoints: endpoints}, Dials: dials, Metrics: apis}, nil
}

// StartUDP runs hysteria's client with one udpForwarding entry per target (and a
// tcpForwarding entry on the same port where asked). Its datagrams ride QUIC
// datagrams under its own congestion control (BBR, or Brutal told the rate).
func (h *hysteria) StartUDP(ctx context.Context, hosts Hosts, s bench.Scenario, targets []UDPTarget) (*UDPPath, error) {
	if h.brutal && s.RateMbps <= 0 {
		return nil, fmt.Errorf("%s: Brutal must be told a link rate, and this scenario has none (host speed)", h.name)
	}
	cert, key, err := h.keyPair()
	if err != nil {
		return nil, err
	}
	udpPort, err := hosts.FreePort(ServerSide, "udp")
	if err != nil {
		return nil, err
	}
	dials, err := clientPorts(hosts, targets)
	if err != nil {
		return nil, err
	}
	serverAddr := hostPort(hosts.Addr(ServerSide), udpPort)
	serverConf, clientConf := h.configs(s, serverAddr, dials[0].String(), targets[0].Addr, cert, key)
	var tcpFwd, udpFwd []any
	for i, t := range targets {
		udpFwd = append(udpFwd, map[string]any{"listen": dials[i].String(), "remote": t.Addr.String()})
		if t.TCP {
			tcpFwd = append(tcpFwd, map[string]any{"listen": dials[i].String(), "remote": t.Addr.String()})
		}
	}
	delete(clientConf, "tcpForwarding")
	if len(tcpFwd) > 0 {
		clientConf["tcpForwarding"] = tcpFwd
	}
	clientConf["udpForwarding"] = udpFwd
	dir, err := os.MkdirTemp(h.stateDir, h.name+"-udp-")
	if err != nil {
		return nil, err
	}
	serverFile, clientFile := filepath.Join(dir, "server.json"), filepath.Join(dir, "client.json")
	if err := errors.Join(writeJSON(serverFile, serverConf), writeJSON(clientFile, clientConf)); err != nil {
		return nil, err
	}
	common := []string{"--disable-update-check", "--log-level", "warn"}
	endpoints, err := startUDPPair(ctx, hosts, h.name,
		hosts.Command(ctx, ServerSide, h.program, append([]string{"server", "-c", serverFile}, common...)...),
		hosts.Command(ctx, ClientSide, h.program, append([]string{"client", "-c", clientFile}, common...)...), udpPort, dials[0])
	if err != nil {
		return nil, err
	}
	return &UDPPath{Path: &Path{Endpoints: endpoints}, Dials: dials}, nil
}
