// Package contender starts and stops the things a benchmark compares: direct kernel TCP
// with a chosen congestion control, quictun, kcptun and hysteria, and reverse forwards
// (quictun's, OpenSSH's ssh -R), each as real processes on the two test hosts. A contender turns "reach this server application" into an address the
// client-side application dials, plus the endpoint processes whose CPU time is counted.
package contender

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"time"

	"github.com/quictun/quictun/bench"
)

// Side is one of the two test hosts.
type Side int

const (
	ClientSide Side = iota // where applications connect from
	ServerSide             // where the server applications listen
)

func (s Side) String() string {
	if s == ServerSide {
		return "server"
	}
	return "client"
}

// Hosts are the two test hosts joined by the link under test.
type Hosts interface {
	// Command prepares a program to run on one host.
	Command(ctx context.Context, side Side, name string, args ...string) *exec.Cmd
	// Addr is the host's address on the link.
	Addr(side Side) netip.Addr
	// FreePort returns a port nothing on that host uses ("tcp" or "udp").
	FreePort(side Side, protocol string) (int, error)
	// WaitListening returns once something on the host listens on the port.
	WaitListening(ctx context.Context, side Side, protocol string, port int, timeout time.Duration) error
}

// Path is a started contender: where to connect, and the endpoints carrying it.
type Path struct {
	Dial netip.AddrPort // the client-side application connects here
	// Congestion is the TCP congestion control the application sets on its own
	// connections ("" leaves the host default); only direct TCP contenders set it.
	Congestion string
	// Endpoints are the tunnel processes, client first; none for direct TCP.
	Endpoints []*Process
}

// Failure reports an endpoint that died while the path was in use.
func (p *Path) Failure() error {
	for _, e := range p.Endpoints {
		if err := e.Failure(); err != nil {
			return err
		}
	}
	return nil
}

// Stop ends the endpoints, client first so that the server sees its sessions close.
func (p *Path) Stop() error {
	var errs []error
	for _, e := range p.Endpoints {
		errs = append(errs, e.Stop())
	}
	return errors.Join(errs...)
}

// Contender is one way of carrying TCP from the client host to the server host.
type Contender interface {
	Name() string
	// Tuning says, for the report, how the contender is configured.
	Tuning() string
	// Start brings the contender up so that a TCP connection to Path.Dial on the client
	// host reaches target on the server host, across the link of scenario s.
	Start(ctx context.Context, hosts Hosts, s bench.Scenario, target netip.AddrPort) (*Path, error)
}

// ErrUnavailable marks a contender that cannot run here (a binary is not installed);
// the runner skips it with a note.
var ErrUnavailable = errors.New("contender unavailable")

// Config says where the contenders' programs are.
type Config struct {
	QuictunServer string // path of the quictun-server binary
	QuictunClient string // path of the quictun-client binary
	KcptunServer  string // defaults to kcptun-server on PATH
	KcptunClient  string // defaults to kcptun-client on PATH
	// Hysteria is the hysteria 2 binary; empty: see findHysteria.
	Hysteria string
	// StateDir holds files the endpoints need (certificates); it must exist.
	StateDir string
}

// New returns the contender with the given name (one of bench.Contenders).
func New(name string, cfg Config) (Contender, error) {
	switch name {
	case bench.TCPCubic:
		return direct{name: name, congestion: "cubic"}, nil
	case bench.TCPBBR:
		return direct{name: name, congestion: "bbr"}, nil
	case bench.Quictun, bench.QuictunNoFEC, bench.QuictunReno:
		q := quictun{name: name, server: cfg.QuictunServer, client: cfg.QuictunClient, stateDir: cfg.StateDir}
		switch name {
		case bench.QuictunNoFEC:
			q.clientFlags = []string{"--fec", "off"}
		case bench.QuictunReno:
			q.clientFlags = []string{"--congestion", "reno"}
		}
		for _, bin := range []string{q.server, q.client} {
			if bin == "" {
				return nil, fmt.Errorf("%s: %w: no quictun binaries given", name, ErrUnavailable)
			}
			if _, err := exec.LookPath(bin); err != nil {
				return nil, fmt.Errorf("%s: %w: %v", name, ErrUnavailable, err)
			}
		}
		if name == bench.QuictunNoFEC && !hasFlag(q.client, "--fec") {
			// Without the loss-recovery layer, quictun already is plain quic-go: the
			// variant would only repeat the quictun runs.
			return nil, fmt.Errorf("%s: %w: quictun-client has no --fec flag (no loss-recovery layer yet), so quictun itself is plain quic-go", name, ErrUnavailable)
		}
		return q, nil
	case bench.Kcptun:
		k := kcptun{server: cfg.KcptunServer, client: cfg.KcptunClient}
		if k.server == "" {
			k.server = "kcptun-server"
		}
		if k.client == "" {
			k.client = "kcptun-client"
		}
		for _, bin := range []string{k.server, k.client} {
			if _, err := exec.LookPath(bin); err != nil {
				return nil, fmt.Errorf("kcptun: %w: %s not found (apt-get install kcptun)", ErrUnavailable, bin)
			}
		}
		return k, nil
	case bench.HysteriaBBR, bench.HysteriaBrutal:
		return newHysteria(name, cfg)
	case bench.Direct:
		return bareLink{}, nil
	case bench.QuictunReverse:
		for _, bin := range []string{cfg.QuictunServer, cfg.QuictunClient} {
			if bin == "" {
				return nil, fmt.Errorf("%s: %w: no quictun binaries given", name, ErrUnavailable)
			}
			if _, err := exec.LookPath(bin); err != nil {
				return nil, fmt.Errorf("%s: %w: %v", name, ErrUnavailable, err)
			}
		}
		return quictunReverse{server: cfg.QuictunServer, client: cfg.QuictunClient, stateDir: cfg.StateDir}, nil
	case bench.SSHReverseCubic:
		return newSSHReverse(name, "cubic", cfg)
	case bench.SSHReverseBBR:
		return newSSHReverse(name, "bbr", cfg)
	}
	return nil, fmt.Errorf("unknown contender %q (known: %s)", name, strings.Join(bench.Contenders, ", "))
}

// direct is kernel TCP straight across the link; the application sets the congestion
// control on its own sockets (TCP_CONGESTION), never the host default.
type direct struct{ name, congestion string }

func (d direct) Name() string { return d.name }
func (d direct) Tuning() string {
	return "kernel TCP, TCP_CONGESTION=" + d.congestion + " per connection"
}
func (d direct) Start(_ context.Context, _ Hosts, _ bench.Scenario, target netip.AddrPort) (*Path, error) {
	return &Path{Dial: target, Congestion: d.congestion}, nil
}

// endpointStartTimeout bounds how long an endpoint may take to listen.
const endpointStartTimeout = 10 * time.Second

// startPair starts a tunnel's server endpoint, waits for its UDP port, then the client
// endpoint, and waits for its TCP port. On any failure both are stopped.
func startPair(ctx context.Context, hosts Hosts, name string, server, client *exec.Cmd, udpPort, tcpPort int) ([]*Process, error) {
	srv, err := StartProcess(name+"-server", server)
	if err != nil {
		return nil, err
	}
	if err := waitOrDie(ctx, hosts, srv, ServerSide, "udp", udpPort); err != nil {
		srv.Stop()
		return nil, err
	}
	cli, err := StartProcess(name+"-client", client)
	if err != nil {
		srv.Stop()
		return nil, err
	}
	if err := waitOrDie(ctx, hosts, cli, ClientSide, "tcp", tcpPort); err != nil {
		cli.Stop()
		srv.Stop()
		return nil, err
	}
	return []*Process{cli, srv}, nil
}

// waitOrDie waits for p to listen, and says why when it exits instead.
func waitOrDie(ctx context.Context, hosts Hosts, p *Process, side Side, protocol string, port int) error {
	err := hosts.WaitListening(ctx, side, protocol, port, endpointStartTimeout)
	if err == nil {
		return nil
	}
	if f := p.Failure(); f != nil {
		return f
	}
	return fmt.Errorf("%s: %w: %s", p.Role, err, lastLines(p.Output(), 5))
}

func hostPort(a netip.Addr, port int) string { return netip.AddrPortFrom(a, uint16(port)).String() }

// hasFlag reports whether a program's --help mentions flag.
func hasFlag(program, flag string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, program, "--help").CombinedOutput()
	return strings.Contains(string(out), flag+"=") || strings.Contains(string(out), flag+" ")
}
