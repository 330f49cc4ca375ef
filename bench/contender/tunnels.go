package contender

import (
	"context"
	"net/netip"
	"path/filepath"
	"strings"

	"github.com/quictun/quictun/bench"
)

// quictun runs quictun-server on the server host and quictun-client on the client host;
// the client's token names the target, so every tunnel reaches it.
type quictun struct {
	name           string
	server, client string
	clientFlags    []string // the variant: none for defaults, --fec off for plain quic-go, --congestion reno
	stateDir       string
}

func (q quictun) Name() string { return q.name }

func (q quictun) Tuning() string {
	if len(q.clientFlags) == 0 {
		return "default settings"
	}
	return strings.Join(q.clientFlags, " ")
}

func (q quictun) Start(ctx context.Context, hosts Hosts, _ bench.Scenario, target netip.AddrPort) (*Path, error) {
	udpPort, err := hosts.FreePort(ServerSide, "udp")
	if err != nil {
		return nil, err
	}
	tcpPort, err := hosts.FreePort(ClientSide, "tcp")
	if err != nil {
		return nil, err
	}
	serverAddr := hostPort(hosts.Addr(ServerSide), udpPort)
	listen := hostPort(hosts.Addr(ClientSide), tcpPort)
	// The server's self-signed key pair is made once and kept in the state dir; the
	// client skips verification because both ends are the harness's own, on a link
	// inside this machine. A short drain lets a stopped endpoint exit at once. The
	// target is the server host's own address, which the server dials only when a
	// rule names it.
	server := hosts.Command(ctx, ServerSide, q.server,
		"--listen-on", serverAddr,
		"--allow", target.String(),
		"--state-dir", filepath.Join(q.stateDir, "quictun-server"),
		"--drain-timeout", "1s",
		"--log-level", "warn",
	)
	clientArgs := append([]string{
		"--listen-on", "tcp:" + listen,
		"--server-endpoint", serverAddr,
		"--token-source", "tcp:" + target.String(),
		"--insecure-skip-verify",
		"--drain-timeout", "1s",
		"--log-level", "error",
	}, q.clientFlags...)
	client := hosts.Command(ctx, ClientSide, q.client, clientArgs...)
	endpoints, err := startPair(ctx, hosts, q.name, server, client, udpPort, tcpPort)
	if err != nil {
		return nil, err
	}
	return &Path{Dial: netip.MustParseAddrPort(listen), Endpoints: endpoints}, nil
}

// kcptunTuning is how kcptun runs: the fastest retransmission profile, no encryption and
// no compression (quictun's data is encrypted by QUIC, but the comparison is about the
// transport, and compression would flatter kcptun on iperf3's compressible payload),
// windows of 2048 packets (about 2.7 MB: a 100 Mbit/s x 200 ms path), MTU 1350, and its
// default Reed-Solomon FEC of 10 data + 3 parity shards.
var kcptunTuning = []string{
	"--mode", "fast3", "--crypt", "none", "--nocomp",
	"--sndwnd", "2048", "--rcvwnd", "2048", "--mtu", "1350",
	"--datashard", "10", "--parityshard", "3", "--quiet",
}

// kcptun runs the Debian package's kcptun-server and kcptun-client.
type kcptun struct{ server, client string }

func (k kcptun) Name() string   { return "kcptun" }
func (k kcptun) Tuning() string { return strings.Join(kcptunTuning, " ") }

func (k kcptun) Start(ctx context.Context, hosts Hosts, _ bench.Scenario, target netip.AddrPort) (*Path, error) {
	udpPort, err := hosts.FreePort(ServerSide, "udp")
	if err != nil {
		return nil, err
	}
	tcpPort, err := hosts.FreePort(ClientSide, "tcp")
	if err != nil {
		return nil, err
	}
	serverAddr := hostPort(hosts.Addr(ServerSide), udpPort)
	listen := hostPort(hosts.Addr(ClientSide), tcpPort)
	server := hosts.Command(ctx, ServerSide, k.server,
		append([]string{"--listen", serverAddr, "--target", target.String()}, kcptunTuning...)...)
	client := hosts.Command(ctx, ClientSide, k.client,
		append([]string{"--localaddr", listen, "--remoteaddr", serverAddr}, kcptunTuning...)...)
	endpoints, err := startPair(ctx, hosts, "kcptun", server, client, udpPort, tcpPort)
	if err != nil {
		return nil, err
	}
	return &Path{Dial: netip.MustParseAddrPort(listen), Endpoints: endpoints}, nil
}
