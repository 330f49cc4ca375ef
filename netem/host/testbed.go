//go:build linux

// Package host emulates a link between two hosts on one machine, so that kernel TCP
// and quictun cross the same impaired path: two network namespaces (the client host and
// the server host) joined through the emulator. It needs root and Linux (namespaces,
// TUN, tc), so every file is built for Linux only.
//
// Two backends:
//   - "tun": a TUN device in each namespace and a user-space forwarder in this process
//     applying the netem.Model (the same netem.Pipe code as the in-process PacketConn).
//     Works on any kernel with /dev/net/tun, including this project's, which has no
//     netem qdisc.
//   - "tc-netem": a veth pair between the namespaces with the kernel's netem qdisc on
//     each end's egress, where the kernel has sch_netem.
//
// "auto" picks tc-netem where the kernel has a working netem qdisc (it runs in the
// kernel and costs no user-space CPU, which on a small machine the endpoints under test
// need), else tun; Testbed.BackendReason says why, for reports.
//
// Cleanup: namespaces are named NAME-cli and NAME-srv, devices NAME-c and NAME-s. Close
// removes them and kills processes left in them. A run that died without Close leaves
// the namespaces behind (TUN devices vanish with the process); CleanupStale(prefix)
// removes them, so call it at start. To make Ctrl-C run Close, give main a signal-aware
// context and defer Close:
//
//	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
//	defer stop()
//	_ = host.CleanupStale("qtb")
//	tb, err := host.New(ctx, host.Config{Name: "qtb", Link: link})
//	if err != nil { ... }
//	defer tb.Close()
//	... run the benchmark with ctx; on Ctrl-C ctx ends, main returns, Close runs.
package host

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quictun/quictun/netem"
	"golang.org/x/sys/unix"
)

// Side is one end of the testbed.
type Side int

const (
	Client Side = iota // the client host: sends on Link.Up
	Server             // the server host: sends on Link.Down
)

func (s Side) String() string {
	switch s {
	case Client:
		return "client"
	case Server:
		return "server"
	}
	return "side(" + strconv.Itoa(int(s)) + ")"
}

// Backend names.
const (
	BackendAuto    = "auto"
	BackendTUN     = "tun"
	BackendTCNetem = "tc-netem"
)

// Config describes one testbed.
type Config struct {
	// Name prefixes the namespaces (NAME-cli, NAME-srv) and devices (NAME-c, NAME-s):
	// 1 to 10 characters of a-z and 0-9, starting with a letter, unique among
	// testbeds alive at the same time.
	Name    string
	Link    netem.Link
	Backend string // "auto" (also ""), "tun", or "tc" / "tc-netem"
	Seed    int64  // seeds the loss and jitter draws of the tun backend (Up: Seed, Down: Seed+1)
}

// Address plan: one point-to-point link; every testbed has its own namespaces, so all
// of them can use the same two addresses.
var (
	clientAddr = netip.MustParseAddr("198.18.0.1")
	serverAddr = netip.MustParseAddr("198.18.0.2")
)

// MTU of the emulated link: Ethernet's, as on the paths quictun is meant for.
const MTU = 1500

// Testbed is a running pair of hosts joined by an emulated link.
type Testbed struct {
	ClientNS, ServerNS     string
	ClientAddr, ServerAddr netip.Addr
	Backend                string // "tun" or "tc-netem"
	// BackendReason says why Backend was used: that auto preferred it, that auto fell
	// back to it and why the preferred one was rejected, or that the caller asked.
	BackendReason string
	// Realtime is true when the tun forwarder's threads run at real-time priority (they
	// do as root; see forwarder), so the emulation stays accurate on a busy machine.
	// Always true for tc-netem, which runs in the kernel.
	Realtime bool

	name    string
	devices [2]string // client, server side device names
	fwd     *forwarder
	mu      sync.Mutex // serializes SetLink and Close
	link    netem.Link
	closed  bool
	err     error // from the first Close
}

var namePattern = regexp.MustCompile(`^[a-z][a-z0-9]{0,9}$`)

func checkName(what, name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%s %q: want 1 to 10 characters a-z, 0-9, starting with a letter", what, name)
	}
	return nil
}

// New creates the two namespaces and joins them through the emulator. ctx bounds the
// setup only; the testbed lives until Close. On error nothing is left behind.
func New(ctx context.Context, cfg Config) (_ *Testbed, err error) {
	if err := checkName("testbed name", cfg.Name); err != nil {
		return nil, err
	}
	if err := cfg.Link.Validate(); err != nil {
		return nil, fmt.Errorf("testbed %s: link: %w", cfg.Name, err)
	}
	backends, why := Available()
	backend, reason, err := chooseBackend(cfg.Backend, backends, why)
	if err != nil {
		return nil, fmt.Errorf("testbed %s: %w", cfg.Name, err)
	}
	if backend == BackendTCNetem {
		if _, err := netemArgs(cfg.Link.Up); err != nil {
			return nil, fmt.Errorf("testbed %s: up: %w", cfg.Name, err)
		}
		if _, err := netemArgs(cfg.Link.Down); err != nil {
			return nil, fmt.Errorf("testbed %s: down: %w", cfg.Name, err)
		}
	}
	t := &Testbed{
		ClientNS:      cfg.Name + "-cli",
		ServerNS:      cfg.Name + "-srv",
		ClientAddr:    clientAddr,
		ServerAddr:    serverAddr,
		Backend:       backend,
		BackendReason: reason,
		name:          cfg.Name,
		devices:       [2]string{cfg.Name + "-c", cfg.Name + "-s"},
		link:          cfg.Link,
	}
	for _, ns := range []string{t.ClientNS, t.ServerNS} {
		if namespaceExists(ns) {
			return nil, fmt.Errorf("testbed %s: namespace %s already exists (another live testbed, or leftovers of a crashed run: host.CleanupStale(%q))", cfg.Name, ns, cfg.Name)
		}
	}
	defer func() {
		if err != nil {
			_ = t.Close()
			err = fmt.Errorf("testbed %s: %w", cfg.Name, err)
		}
	}()
	if err := raiseSocketBufferLimits(); err != nil {
		return nil, err
	}
	for _, ns := range []string{t.ClientNS, t.ServerNS} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			return nil, err
		}
		if err := setupNamespace(ctx, ns); err != nil {
			return nil, err
		}
	}
	switch backend {
	case BackendTUN:
		err = t.setupTUN(ctx, cfg)
	case BackendTCNetem:
		err = t.setupVeth(ctx)
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// chooseBackend picks the backend for want ("auto", "", "tun", "tc", "tc-netem") among
// the available ones (in auto's order of preference; why says what is wrong with the
// others) and says why, for reports.
func chooseBackend(want string, available []string, why error) (backend, reason string, err error) {
	switch want {
	case "", BackendAuto:
		if len(available) == 0 {
			return "", "", fmt.Errorf("no link emulation backend: %w", why)
		}
		backend = available[0]
		if backend == BackendTCNetem {
			return backend, "auto: the kernel's netem qdisc works here (preferred: no user-space forwarding)", nil
		}
		reason = "auto: " + backend + " because " + oneLine(why)
		return backend, reason, nil
	case BackendTUN, "tc", BackendTCNetem:
		if want == "tc" {
			want = BackendTCNetem
		}
		for _, b := range available {
			if b == want {
				return b, "requested (--backend " + want + ")", nil
			}
		}
		return "", "", fmt.Errorf("backend %s not available: %w", want, why)
	}
	return "", "", fmt.Errorf("backend %q: want auto, tun or tc", want)
}

// oneLine joins the lines of an errors.Join into one.
func oneLine(err error) string {
	if err == nil {
		return "the preferred backend is unavailable"
	}
	return strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
}

// setupNamespace brings up loopback and sets the per-namespace TCP buffer limits: a
// 100 Mbit/s x 200 ms path needs 2.5 MB in flight, a 1 Gbit/s one far more, and the
// defaults of a new namespace cap the send buffer at 4 MiB. Route metrics are not
// saved, so a repetition does not start from the ssthresh its predecessor learnt.
func setupNamespace(ctx context.Context, ns string) error {
	if err := run(ctx, "ip", "-n", ns, "link", "set", "lo", "up"); err != nil {
		return err
	}
	return run(ctx, "ip", "netns", "exec", ns, "sysctl", "-q", "-w",
		"net.ipv4.tcp_rmem=4096 131072 67108864",
		"net.ipv4.tcp_wmem=4096 16384 67108864",
		"net.ipv4.tcp_no_metrics_save=1",
	)
}

// wantSocketBufferMax is what quic-go asks for (7 MiB) with some room.
const wantSocketBufferMax = 8 << 20

// raiseSocketBufferLimits raises net.core.rmem_max and wmem_max to 8 MiB when they are
// lower. These two are not per namespace (a namespace sees the initial namespace's
// values, read-only), so this changes the machine; it only ever raises them and does
// not restore them, since other testbeds may rely on the raised values.
func raiseSocketBufferLimits() error {
	for _, key := range []string{"rmem_max", "wmem_max"} {
		path := "/proc/sys/net/core/" + key
		b, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("read %s: %w", path, err)
		}
		cur, err := strconv.Atoi(string(trimNewline(b)))
		if err != nil {
			return fmt.Errorf("parse %s: %w", path, err)
		}
		if cur >= wantSocketBufferMax {
			continue
		}
		if err := os.WriteFile(path, []byte(strconv.Itoa(wantSocketBufferMax)), 0o644); err != nil {
			return fmt.Errorf("raise %s to %d: %w", path, wantSocketBufferMax, err)
		}
	}
	return nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// setupTUN creates a TUN device per side in this (the initial) namespace, moves it into
// its host namespace, addresses it and starts the forwarder. The fds stay here.
func (t *Testbed) setupTUN(ctx context.Context, cfg Config) error {
	fds := [2]int{-1, -1}
	closeFDs := func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
	addrs := [2][2]netip.Addr{{t.ClientAddr, t.ServerAddr}, {t.ServerAddr, t.ClientAddr}}
	for i, ns := range []string{t.ClientNS, t.ServerNS} {
		dev := t.devices[i]
		fd, err := openTUN(dev)
		if err != nil {
			closeFDs()
			return err
		}
		fds[i] = fd
		if err := configureLink(ctx, ns, dev, addrs[i][0], addrs[i][1]); err != nil {
			closeFDs()
			return err
		}
	}
	fwd, err := newForwarder(fds[0], fds[1], cfg.Link, cfg.Seed)
	if err != nil {
		return err
	}
	t.fwd = fwd
	t.Realtime = fwd.realtimeOK()
	return nil
}

// configureLink moves dev from the initial namespace into ns and gives it a
// point-to-point address towards peer.
func configureLink(ctx context.Context, ns, dev string, local, peer netip.Addr) error {
	steps := [][]string{
		{"ip", "link", "set", "dev", dev, "netns", ns},
		{"ip", "-n", ns, "addr", "add", local.String(), "peer", peer.String() + "/32", "dev", dev},
		// A TUN's transmit queue is where packets wait for the forwarder to read them;
		// a longer one absorbs scheduling hiccups so that drops happen in the emulated
		// queue, not here.
		{"ip", "-n", ns, "link", "set", "dev", dev, "mtu", strconv.Itoa(MTU), "txqueuelen", "4096", "up"},
		// The link carries IPv4 only; without IPv6 no router solicitations or MLD
		// reports cross the emulated link and show up in its counters.
		{"ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf." + dev + ".disable_ipv6=1"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// Command runs name inside a host's namespace (via `ip netns exec`). The caller starts
// and waits for it as for any exec.Cmd; Close kills whatever is still running there.
func (t *Testbed) Command(ctx context.Context, side Side, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", t.Namespace(side), name}, args...)...)
}

// Namespace is the name of a side's namespace.
func (t *Testbed) Namespace(side Side) string {
	if side == Server {
		return t.ServerNS
	}
	return t.ClientNS
}

// Addr is a side's address on the emulated link.
func (t *Testbed) Addr(side Side) netip.Addr {
	if side == Server {
		return t.ServerAddr
	}
	return t.ClientAddr
}

// Do runs fn in this process on an OS thread inside a side's namespace: sockets it
// creates (net.Listen, net.Dial, ...) live in that namespace and stay usable from any
// goroutine after fn returns. Use literal IP addresses; name resolution may run on
// other threads.
func (t *Testbed) Do(side Side, fn func() error) error {
	return inNamespace(t.Namespace(side), fn)
}

// Link is the impairment in force.
func (t *Testbed) Link() netem.Link {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.link
}

// SetLink changes the impairment live; connections stay up.
func (t *Testbed) SetLink(l netem.Link) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("testbed %s: %w", t.name, err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return fmt.Errorf("testbed %s: closed", t.name)
	}
	var err error
	switch t.Backend {
	case BackendTUN:
		err = t.fwd.setLink(l)
	case BackendTCNetem:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = t.applyNetem(ctx, l)
	}
	if err != nil {
		return fmt.Errorf("testbed %s: %w", t.name, err)
	}
	t.link = l
	return nil
}

// Stats are the counters of both directions.
type Stats struct {
	Up, Down netem.Stats
	// ReadErrors counts failed TUN reads per direction (tun backend), a sign of trouble
	// if not zero.
	ReadErrors [2]uint64
}

// Stats reads the counters. With tc-netem the kernel counts loss and queue overflow
// together: both appear as DroppedLoss, and DroppedQueue stays 0.
func (t *Testbed) Stats() (Stats, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return Stats{}, fmt.Errorf("testbed %s: closed", t.name)
	}
	switch t.Backend {
	case BackendTUN:
		return Stats{
			Up:         t.fwd.up.Stats(),
			Down:       t.fwd.down.Stats(),
			ReadErrors: [2]uint64{t.fwd.readErrors[0].Load(), t.fwd.readErrors[1].Load()},
		}, nil
	default:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return t.netemStats(ctx)
	}
}

// TakeWorstLate returns the worst lateness of the emulator's own scheduling, in
// either direction, since the previous call (see netem.Pipe.TakeWorstLate), and
// whether it is known: the tc-netem backend runs in the kernel, which reports none.
func (t *Testbed) TakeWorstLate() (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.Backend != BackendTUN {
		return 0, false
	}
	return max(t.fwd.up.TakeWorstLate(), t.fwd.down.TakeWorstLate()), true
}

// Close stops the forwarder, kills processes left in the namespaces and removes the
// namespaces and devices. It is idempotent and safe after a failed New.
func (t *Testbed) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return t.err
	}
	t.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	if t.fwd != nil {
		errs = append(errs, t.fwd.close())
	}
	for _, ns := range []string{t.ClientNS, t.ServerNS} {
		errs = append(errs, deleteNamespace(ctx, ns))
	}
	// A veth end still in the initial namespace (setup failed before moving it).
	for _, dev := range t.devices {
		if linkExists(dev) {
			errs = append(errs, run(ctx, "ip", "link", "del", dev))
		}
	}
	t.err = errors.Join(errs...)
	return t.err
}
