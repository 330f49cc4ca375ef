package contender

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/quictun/quictun/bench"
)

// The reverse contenders carry the same iperf3 flow as the others, client host to
// server host, over a reverse forward: the tunnel's server runs on the client host and
// listens there at the request of the tunnel's client, which runs on the server host
// beside the target. So the flow enters at the tunnel server's side and leaves at its
// client's, and the bytes cross the link on streams the tunnel server opened, the
// direction issue 19 added. The link is symmetric, so a contender's figures in both
// directions should match.

// quictunReverse runs quictun-server on the client host with --allow-bind for one port,
// and quictun-client on the server host with --reverse that port=target.
type quictunReverse struct {
	server, client string
	stateDir       string
}

func (q quictunReverse) Name() string { return bench.QuictunReverse }

func (q quictunReverse) Tuning() string {
	return "default settings, a reverse forward: quictun-server on the client host (listening at the client's request), quictun-client on the server host; CPU client = the client host's endpoint"
}

// reverseSecret is no secret: both ends are the harness's own, on a link inside this
// machine; a reverse forward needs an authenticated client.
const reverseSecret = "quictun-bench-reverse-secret"

func (q quictunReverse) Start(ctx context.Context, hosts Hosts, _ bench.Scenario, target netip.AddrPort) (*Path, error) {
	udpPort, err := hosts.FreePort(ClientSide, "udp")
	if err != nil {
		return nil, err
	}
	tcpPort, err := hosts.FreePort(ClientSide, "tcp")
	if err != nil {
		return nil, err
	}
	serverAddr := hostPort(hosts.Addr(ClientSide), udpPort)
	listen := hostPort(hosts.Addr(ClientSide), tcpPort)
	dir, err := os.MkdirTemp(q.stateDir, "quictun-reverse-")
	if err != nil {
		return nil, err
	}
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte(reverseSecret+"\n"), 0o600); err != nil {
		return nil, err
	}
	server := hosts.Command(ctx, ClientSide, q.server,
		"--listen-on", serverAddr,
		"--allow-bind", listen,
		"--secret-file", secret,
		"--state-dir", filepath.Join(dir, "server"),
		"--drain-timeout", "1s",
		"--log-level", "warn",
	)
	client := hosts.Command(ctx, ServerSide, q.client,
		"--server-endpoint", serverAddr,
		"--reverse", "tcp:"+listen+"=tcp:"+target.String(),
		"--secret-file", secret,
		"--insecure-skip-verify",
		"--drain-timeout", "1s",
		"--log-level", "error",
	)
	// The tunnel's server comes up first, then its client, whose bind makes the
	// listener the application dials.
	endpoints, err := startReversed(ctx, hosts, bench.QuictunReverse, server, "udp", udpPort, client, tcpPort)
	if err != nil {
		return nil, err
	}
	return &Path{Dial: netip.MustParseAddrPort(listen), Endpoints: endpoints}, nil
}

// startReversed starts the process that listens on the client host (waiting for its
// port), then the one on the server host, and waits until the client host listens on
// tcpPort, which the second makes the first open. Endpoints come client host first.
func startReversed(ctx context.Context, hosts Hosts, name string, first *exec.Cmd, protocol string, port int, second *exec.Cmd, tcpPort int) ([]*Process, error) {
	a, err := StartProcess(name+"-client-host", first)
	if err != nil {
		return nil, err
	}
	if err := waitOrDie(ctx, hosts, a, ClientSide, protocol, port); err != nil {
		a.Stop()
		return nil, err
	}
	b, err := StartProcess(name+"-server-host", second)
	if err != nil {
		a.Stop()
		return nil, err
	}
	if err := hosts.WaitListening(ctx, ClientSide, "tcp", tcpPort, endpointStartTimeout); err != nil {
		err = errors.Join(b.Failure(), a.Failure(), fmt.Errorf("%s: %w: %s | %s", name, err, lastLines(a.Output(), 5), lastLines(b.Output(), 5)))
		b.Stop()
		a.Stop()
		return nil, err
	}
	return []*Process{a, b}, nil
}

// sshReverse is OpenSSH's remote forward over one TCP connection: sshd on the client
// host, `ssh -N -R` from the server host; the flow enters at sshd's forwarded port. It
// is the baseline the issue names where frp and chisel are not packaged. sshd, which
// sends the flow's bytes across the link, cannot be told a congestion control, and a
// network namespace may default only to the host's allowed ones (reno bbr here, not
// cubic); so socat accepts the one connection on a listener with TCP_CONGESTION set
// (an accepted socket keeps a listener's own choice) and becomes sshd -i on it (nofork:
// no relay, the process is sshd).
type sshReverse struct {
	name       string
	congestion string
	sshd, ssh  string
	socat      string
	stateDir   string
	keys       *sshKeys
}

// sshKeys are the host and user keys, made once per harness run.
type sshKeys struct {
	once       sync.Once
	host, user string
	authorized string
	err        error
}

// sshKeysByDir is shared by both ssh contenders of a run: state dir -> *sshKeys.
var sshKeysByDir sync.Map

func newSSHReverse(name, congestion string, cfg Config) (Contender, error) {
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/sshd"); statErr != nil {
			return nil, fmt.Errorf("%s: %w: sshd not found (apt-get install openssh-server)", name, ErrUnavailable)
		}
		sshd = "/usr/sbin/sshd"
	}
	found := map[string]string{}
	for _, t := range []struct{ tool, pkg string }{{"ssh", "openssh-client"}, {"ssh-keygen", "openssh-client"}, {"socat", "socat"}} {
		p, err := exec.LookPath(t.tool)
		if err != nil {
			return nil, fmt.Errorf("%s: %w: %s not found (apt-get install %s)", name, ErrUnavailable, t.tool, t.pkg)
		}
		found[t.tool] = p
	}
	keys, _ := sshKeysByDir.LoadOrStore(cfg.StateDir, &sshKeys{})
	return &sshReverse{name: name, congestion: congestion, sshd: sshd, ssh: found["ssh"], socat: found["socat"],
		stateDir: cfg.StateDir, keys: keys.(*sshKeys)}, nil
}

func (s *sshReverse) Name() string { return s.name }

func (s *sshReverse) Tuning() string {
	return "OpenSSH ssh -N -R from the server host to sshd -i on the client host: one TCP connection, TCP_CONGESTION=" + s.congestion +
		" on sshd's socket (the sender), default cipher, no compression"
}

// tcpCongestion is TCP_CONGESTION's option number (level IPPROTO_TCP = 6).
const tcpCongestion = 13

func (s *sshReverse) Start(ctx context.Context, hosts Hosts, _ bench.Scenario, target netip.AddrPort) (*Path, error) {
	if err := s.makeKeys(); err != nil {
		return nil, err
	}
	sshPort, err := hosts.FreePort(ClientSide, "tcp")
	if err != nil {
		return nil, err
	}
	tcpPort, err := hosts.FreePort(ClientSide, "tcp")
	if err != nil {
		return nil, err
	}
	// sshd as root wants its privilege separation folder.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("%s: %w", s.name, err)
	}
	clientHost := hosts.Addr(ClientSide)
	sshd := strings.Join([]string{s.sshd, "-i", "-e", "-f", "/dev/null", "-h", s.keys.host,
		"-o", "PidFile=none", "-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no",
		"-o", "AuthorizedKeysFile=" + s.keys.authorized, "-o", "StrictModes=no",
		"-o", "PermitRootLogin=prohibit-password", "-o", "GatewayPorts=clientspecified",
		"-o", "Compression=no", "-o", "LogLevel=ERROR"}, " ")
	listener := hosts.Command(ctx, ClientSide, s.socat,
		fmt.Sprintf("TCP-LISTEN:%d,bind=%s,reuseaddr,setsockopt-string=6:%d:%s", sshPort, clientHost, tcpCongestion, s.congestion),
		"EXEC:"+sshd+",nofork")
	ssh := hosts.Command(ctx, ServerSide, s.ssh, "-N", "-F", "/dev/null", "-i", s.keys.user,
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes", "-o", "Compression=no", "-o", "LogLevel=ERROR",
		"-p", strconv.Itoa(sshPort),
		"-R", hostPort(clientHost, tcpPort)+":"+target.String(),
		sshUser()+"@"+clientHost.String())
	endpoints, err := startReversed(ctx, hosts, s.name, listener, "tcp", sshPort, ssh, tcpPort)
	if err != nil {
		return nil, err
	}
	return &Path{Dial: netip.AddrPortFrom(clientHost, uint16(tcpPort)), Endpoints: endpoints}, nil
}

func sshUser() string {
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "root"
}

func (s *sshReverse) makeKeys() error {
	k := s.keys
	k.once.Do(func() {
		dir := filepath.Join(s.stateDir, "ssh-reverse")
		if k.err = os.MkdirAll(dir, 0o700); k.err != nil {
			return
		}
		k.host, k.user, k.authorized = filepath.Join(dir, "host"), filepath.Join(dir, "user"), filepath.Join(dir, "authorized_keys")
		for _, f := range []string{k.host, k.user} {
			if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f).CombinedOutput(); err != nil {
				k.err = fmt.Errorf("ssh-keygen: %v: %s", err, strings.TrimSpace(string(out)))
				return
			}
		}
		pub, err := os.ReadFile(k.user + ".pub")
		if err == nil {
			err = os.WriteFile(k.authorized, pub, 0o600)
		}
		k.err = err
	})
	return k.err
}
