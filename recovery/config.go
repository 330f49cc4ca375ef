package recovery

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Mode says how a Conn protects what it sends.
type Mode int

const (
	// Off adds no parity of its own: it sends plain QUIC and offers nothing. It
	// still answers a peer's offer and reads what that peer frames, so a client in
	// Auto mode protects its uploads to a server in Off mode.
	Off Mode = iota
	// Auto adapts the parity to the loss the receiving peer measures and reports.
	Auto
	// Fixed sends Config.Parity repairs per Config.Data sources.
	Fixed
)

func (m Mode) String() string {
	switch m {
	case Off:
		return "off"
	case Auto:
		return "auto"
	case Fixed:
		return "fixed"
	}
	return fmt.Sprintf("mode(%d)", int(m))
}

// Config configures a Conn. The zero value of every field but Mode means "the
// default", so Config{Mode: Auto} is a complete configuration.
type Config struct {
	Mode Mode
	// Data and Parity are the repair rate of Fixed mode: M repairs per K sources,
	// K+M <= 256. Data is also the group the span top-up sizes for: a flow that
	// sends fewer than Data sources within GroupSpan gets at its end at least the
	// repairs such a group would need. In Auto mode Data defaults to 128 (at most
	// 64 until the peer has trained our quic-go connection to tolerate late
	// repairs) and Parity is ignored.
	Data, Parity int
	// GroupSpan is that span: the longest a slow flow's sources wait for their
	// repairs. Default: an eighth of the measured round trip, within 2-10 ms (5 ms
	// until the round trip is known); a quarter, within 2-25 ms, once the peer has
	// trained our quic-go connection to tolerate late repairs.
	GroupSpan time.Duration
	// TargetResidual is, in Auto mode, the share of sources that may stay lost
	// after coding, for which the repair rate is sized (the window rule and the
	// span top-up: a group of n fails with probability below n x
	// TargetResidual). Default 1e-4.
	TargetResidual float64
	// MaxPeers bounds the remote addresses a Conn keeps state for (a server has one
	// per client). Default 1024.
	MaxPeers int
	// PeerIdle is how long a peer's state is kept without traffic. Default 2 min.
	PeerIdle time.Duration
	// MaxBuffers bounds the datagram buffers (2 KiB each) a Conn holds for coding.
	// Default 16384 (32 MiB). One peer holds at most half of them, and at most 1024.
	MaxBuffers int
	// Dialer says that quic-go on this Conn only dials (a client): every address
	// it writes to is one the application chose, and so proven (see Conn.Prove).
	// A server leaves it false: its quic-go also answers strangers.
	Dialer bool

	// noTrain turns the trainer off (benchmarks only: experiments).
	noTrain bool
	// noRamp turns the slow-start guard off (benchmarks only: experiments).
	noRamp bool
}

// Defaults.
const (
	defaultAutoData       = 128
	untrainedData         = 64
	defaultTargetResidual = 1e-4
	defaultMaxPeers       = 1024
	defaultPeerIdle       = 2 * time.Minute
	defaultMaxBuffers     = 16384
	initialGroupSpan      = 5 * time.Millisecond
	minGroupSpan          = 2 * time.Millisecond
	maxGroupSpan          = 10 * time.Millisecond
	maxTrainedGroupSpan   = 25 * time.Millisecond
	// Default spans are the smoothed round trip divided by these.
	untrainedSpanDivisor = 8
	trainedSpanDivisor   = 4
)

// DefaultConfig is what quictun runs with unless told otherwise.
func DefaultConfig() Config { return Config{Mode: Auto} }

// ParseConfig reads the --fec flag: "off", "auto", or "K,M" for a fixed rate of M
// repairs per K datagrams (e.g. "10,3").
func ParseConfig(s string) (Config, error) {
	v := strings.TrimSpace(strings.ToLower(s))
	switch v {
	case "off", "none", "0":
		return Config{Mode: Off}, nil
	case "auto", "":
		return Config{Mode: Auto}, nil
	}
	ks, ms, ok := strings.Cut(v, ",")
	if !ok {
		return Config{}, fmt.Errorf("fec %q: want off, auto, or K,M (data,parity) such as 10,3", s)
	}
	k, err := strconv.Atoi(strings.TrimSpace(ks))
	if err != nil {
		return Config{}, fmt.Errorf("fec %q: data count %q is not a number", s, ks)
	}
	m, err := strconv.Atoi(strings.TrimSpace(ms))
	if err != nil {
		return Config{}, fmt.Errorf("fec %q: parity count %q is not a number", s, ms)
	}
	cfg := Config{Mode: Fixed, Data: k, Parity: m}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("fec %q: %w", s, err)
	}
	return cfg, nil
}

// Validate reports the first setting that is out of range.
func (c Config) Validate() error {
	switch c.Mode {
	case Off, Auto, Fixed:
	default:
		return fmt.Errorf("mode %d is not off, auto or fixed", int(c.Mode))
	}
	if c.Mode == Fixed {
		if c.Data < 1 {
			return fmt.Errorf("data count %d: want at least 1", c.Data)
		}
		if c.Parity < 1 {
			return fmt.Errorf("parity count %d: want at least 1 (use off for none)", c.Parity)
		}
		if c.Data+c.Parity > maxGroup {
			return fmt.Errorf("data+parity = %d: want at most %d", c.Data+c.Parity, maxGroup)
		}
	}
	if c.Mode == Auto && (c.Data < 0 || c.Data > maxGroup/2) {
		return fmt.Errorf("largest auto group %d: want 0 (default) or 1..%d", c.Data, maxGroup/2)
	}
	switch {
	case c.GroupSpan < 0:
		return fmt.Errorf("group span %v is negative", c.GroupSpan)
	case c.TargetResidual < 0 || c.TargetResidual >= 0.01:
		return fmt.Errorf("target residual loss %v: want 0 (default) or a probability below 0.01", c.TargetResidual)
	case c.MaxPeers < 0:
		return fmt.Errorf("max peers %d is negative", c.MaxPeers)
	case c.PeerIdle < 0:
		return fmt.Errorf("peer idle %v is negative", c.PeerIdle)
	case c.MaxBuffers < 0:
		return errors.New("max buffers is negative")
	}
	return nil
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.Mode == Auto && c.Data == 0 {
		c.Data = defaultAutoData
	}
	if c.TargetResidual == 0 {
		c.TargetResidual = defaultTargetResidual
	}
	if c.MaxPeers == 0 {
		c.MaxPeers = defaultMaxPeers
	}
	if c.PeerIdle == 0 {
		c.PeerIdle = defaultPeerIdle
	}
	if c.MaxBuffers == 0 {
		c.MaxBuffers = defaultMaxBuffers
	}
	return c
}

// String renders the config the way ParseConfig reads it.
func (c Config) String() string {
	if c.Mode == Fixed {
		return fmt.Sprintf("%d,%d", c.Data, c.Parity)
	}
	return c.Mode.String()
}
