//go:build linux

package runner

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/netip"
	"os/exec"
	"sync"
	"time"

	"github.com/quictun/quictun/bench"
	"github.com/quictun/quictun/bench/contender"
	"github.com/quictun/quictun/bench/loadgen"
	"github.com/quictun/quictun/netem"
	"github.com/quictun/quictun/netem/host"
)

// NamePrefix starts the name of every testbed the harness creates unless told
// otherwise; the CLI removes leftovers with its prefix (host.CleanupStale) before it
// starts, so two runs at once on one machine need prefixes of their own.
const NamePrefix = "qtbench"

// maxPrefixLen leaves room for the testbed's number within netem/host's 10 characters.
const maxPrefixLen = 7

// Namespaces returns a factory of netem/host testbeds named prefix+N: two network
// namespaces joined by the emulated link. It first removes what an earlier, killed run
// with the same prefix left behind.
func Namespaces(_ context.Context, prefix, backend string) (BedFactory, error) {
	return namespacesWithPrefix(prefix, backend)
}

func namespacesWithPrefix(prefix, backend string) (BedFactory, error) {
	if len(prefix) > maxPrefixLen {
		return nil, fmt.Errorf("testbed name prefix %q: at most %d characters", prefix, maxPrefixLen)
	}
	if backends, why := host.Available(); len(backends) == 0 {
		return nil, fmt.Errorf("no link emulation backend works here: %v", why)
	}
	if err := host.CleanupStale(prefix); err != nil {
		return nil, fmt.Errorf("remove testbeds left by an earlier run: %w", err)
	}
	var mu sync.Mutex
	seq := 0
	return func(ctx context.Context, s bench.Scenario) (Bed, error) {
		link, err := Link(s)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		seq++
		name := fmt.Sprintf("%s%d", prefix, seq%1000)
		mu.Unlock()
		h := fnv.New64a()
		h.Write([]byte(s.ID()))
		tb, err := host.New(ctx, host.Config{Name: name, Link: link, Backend: backend, Seed: int64(h.Sum64() >> 1)})
		if err != nil {
			return nil, err
		}
		return &namespaceBed{tb: tb, nextPort: 20000}, nil
	}, nil
}

// Link translates a scenario into the emulator's link model: half the RTT each way,
// the same loss, rate and drop-tail queue in both directions.
func Link(s bench.Scenario) (netem.Link, error) {
	m := netem.Model{
		Delay:  s.RTT / 2,
		Jitter: s.Jitter,
		Loss:   s.Loss,
	}
	if s.RateMbps > 0 {
		m.RateBps = int64(s.RateMbps * 1e6)
		m.QueueBytes = s.QueueBytes()
	}
	if s.Burst > 1 {
		ge, err := netem.NewBurstLoss(s.Loss, s.Burst)
		if err != nil {
			return netem.Link{}, fmt.Errorf("scenario %s: %w", s.ID(), err)
		}
		m.Loss, m.Burst = 0, ge
	}
	l := netem.Symmetric(m)
	if err := l.Validate(); err != nil {
		return netem.Link{}, fmt.Errorf("scenario %s: %w", s.ID(), err)
	}
	return l, nil
}

// namespaceBed adapts a host.Testbed to the runner's Bed.
type namespaceBed struct {
	tb       *host.Testbed
	mu       sync.Mutex
	nextPort int
}

func side(s contender.Side) host.Side {
	if s == contender.ServerSide {
		return host.Server
	}
	return host.Client
}

func (b *namespaceBed) Backend() string       { return b.tb.Backend }
func (b *namespaceBed) BackendReason() string { return b.tb.BackendReason }
func (b *namespaceBed) Close() error          { return b.tb.Close() }

func (b *namespaceBed) TakeWorstLate() (time.Duration, bool) { return b.tb.TakeWorstLate() }

func (b *namespaceBed) Command(ctx context.Context, s contender.Side, name string, args ...string) *exec.Cmd {
	return b.tb.Command(ctx, side(s), name, args...)
}

func (b *namespaceBed) Addr(s contender.Side) netip.Addr { return b.tb.Addr(side(s)) }

// FreePort hands out fresh ports: the namespaces are the harness's own, so nothing else
// binds there, and a port is never reused within a testbed (no TIME_WAIT surprises).
func (b *namespaceBed) FreePort(contender.Side, string) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.nextPort >= 60000 {
		return 0, fmt.Errorf("testbed %s: out of ports", b.tb.ClientNS)
	}
	b.nextPort++
	return b.nextPort, nil
}

// WaitListening polls the namespace's socket table from a thread inside it.
func (b *namespaceBed) WaitListening(ctx context.Context, s contender.Side, protocol string, port int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var ok bool
		err := b.tb.Do(side(s), func() error {
			var err error
			ok, err = loadgen.Listening(protocol, port)
			return err
		})
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on %s port %d in the %s namespace after %s", protocol, port, side(s), timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
