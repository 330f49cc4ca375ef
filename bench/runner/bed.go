//go:build linux

package runner

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"time"

	"github.com/quictun/quictun/bench"
	"github.com/quictun/quictun/bench/contender"
	"github.com/quictun/quictun/bench/loadgen"
)

// Bed is a pair of test hosts set up for one scenario's link.
type Bed interface {
	contender.Hosts
	// Backend names the link emulation for the report: "tun", "tc-netem", "loopback".
	Backend() string
	// BackendReason says why that one: chosen by auto, and why the preferred backend
	// was rejected, or requested.
	BackendReason() string
	Close() error
}

// lateReporter is a Bed whose emulator reports its own scheduling error: the
// worst lateness since the previous call, and whether it knows it.
type lateReporter interface {
	TakeWorstLate() (time.Duration, bool)
}

// BedFactory sets up hosts whose link matches the scenario.
type BedFactory func(ctx context.Context, s bench.Scenario) (Bed, error)

// Loopback is a Bed without emulation: both hosts are this machine's loopback, in the
// caller's network namespace. It needs no root and serves tests of the harness itself
// and measurements of what the contenders do at host speed; it refuses any scenario
// with an impaired link rather than report numbers for a link it did not build.
func Loopback(_ context.Context, s bench.Scenario) (Bed, error) {
	if s.Impaired() {
		return nil, fmt.Errorf("scenario %s needs link emulation (%s); the loopback bed has none", s.ID(), s.Describe())
	}
	return loopback{}, nil
}

type loopback struct{}

func (loopback) Backend() string       { return "loopback" }
func (loopback) BackendReason() string { return "requested (--backend loopback)" }
func (loopback) Close() error          { return nil }

func (loopback) Command(ctx context.Context, _ contender.Side, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, name, args...)
}

func (loopback) Addr(contender.Side) netip.Addr { return netip.MustParseAddr("127.0.0.1") }

// FreePort asks the kernel for an unused port. Other programs on this machine may take
// it before the contender binds it; that fails the run loudly (address in use), never
// silently.
func (loopback) FreePort(_ contender.Side, protocol string) (int, error) {
	switch protocol {
	case "tcp":
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port, nil
	case "udp":
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		defer pc.Close()
		return pc.LocalAddr().(*net.UDPAddr).Port, nil
	}
	return 0, errors.New("protocol must be tcp or udp")
}

func (loopback) WaitListening(ctx context.Context, _ contender.Side, protocol string, port int, timeout time.Duration) error {
	return loadgen.WaitListening(ctx, protocol, port, timeout)
}
