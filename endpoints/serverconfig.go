package endpoints

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/engine"
	"github.com/quictun/quictun/recovery"
)

// ServerConfig is what a server endpoint needs; cmd/quictun-server fills it.
//
// Zero limits and timeouts take their defaults; negative ones are an error.
type ServerConfig struct {
	// ListenOn is the UDP address to listen on ("0.0.0.0:7500").
	ListenOn string
	Parser   token.Parser
	TLS      *tls.Config
	// ResetKey, when set, lets a restarted server reset its old sessions at once.
	ResetKey *[32]byte
	Engine   engine.Config
	// DialTimeout bounds connecting to a server application (0: 5 s).
	DialTimeout time.Duration
	// PreambleTimeout bounds how long a new session may take for its TLS
	// handshake, a new stream to send its header, and a new session to present
	// a valid header (its hello) before it is closed (0: 10 s).
	PreambleTimeout time.Duration
	// DrainTimeout is how long shutdown lets live tunnels finish (0: 10 s).
	DrainTimeout time.Duration
	// Secret, when set, must come in every stream's header (compared in
	// constant time); a client without it is refused with CodeAuthFailed, and
	// its session is closed unless it presented the secret before. At most
	// preamble.MaxSecretLen bytes.
	Secret []byte
	// Rules are the --allow and --deny rules; nil leaves the safe defaults
	// of package policy, which depend on ListenOn and on authentication.
	Rules *policy.Rules
	// Listening are the other addresses (HOST:PORT) this process listens on,
	// its REST API: no target may name them, whatever the rules.
	Listening []string
	Limits    Limits
	// WrapUDP, when set, puts a layer between the UDP socket and quic-go (link
	// emulation in tests).
	WrapUDP func(net.PacketConn) net.PacketConn
	// Recovery configures the loss-recovery layer; nil is recovery.DefaultConfig.
	Recovery *recovery.Config
	Logger   *slog.Logger
}

// Limits protect a server from more than it can carry. Past a limit a new
// session or tunnel is refused with CodeOverloaded; live ones are untouched.
// Zero is the default of each.
type Limits struct {
	MaxSessions          int // QUIC sessions at once (default 256)
	MaxTunnels           int // tunnels at once over all sessions (default 8192)
	MaxTunnelsPerSession int // tunnels at once on one session (default 4096)
	// MaxHeaderSize bounds a stream's header: token plus secret (default
	// preamble.MaxHeaderLen, which is also the most it may be).
	MaxHeaderSize int
	// MaxTokenSize bounds the token inside the header (default the smaller of
	// preamble.MaxTokenLen and MaxHeaderSize; never more than either).
	MaxTokenSize int
}

func (l *Limits) setDefaults() error {
	err := errors.Join(
		orDefault("Limits.MaxSessions", &l.MaxSessions, 256),
		orDefault("Limits.MaxTunnels", &l.MaxTunnels, 8192),
		orDefault("Limits.MaxTunnelsPerSession", &l.MaxTunnelsPerSession, 4096),
		orDefault("Limits.MaxHeaderSize", &l.MaxHeaderSize, preamble.MaxHeaderLen),
	)
	// After MaxHeaderSize has its default: the token's defaults to what fits.
	return errors.Join(err, orDefault("Limits.MaxTokenSize", &l.MaxTokenSize, min(preamble.MaxTokenLen, l.MaxHeaderSize)))
}

// validate names the first limit that the wire format cannot honour.
func (l *Limits) validate() error {
	switch {
	case l.MaxHeaderSize > preamble.MaxHeaderLen:
		return fmt.Errorf("max preamble size %d bytes exceeds the wire format's limit of %d", l.MaxHeaderSize, preamble.MaxHeaderLen)
	case l.MaxTokenSize > preamble.MaxTokenLen:
		return fmt.Errorf("max token size %d bytes exceeds the wire format's limit of %d", l.MaxTokenSize, preamble.MaxTokenLen)
	case l.MaxTokenSize > l.MaxHeaderSize:
		return fmt.Errorf("max token size %d bytes exceeds the max preamble size of %d bytes that holds it", l.MaxTokenSize, l.MaxHeaderSize)
	}
	return nil
}

func (c *ServerConfig) setDefaults() error {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return errors.Join(
		c.Limits.setDefaults(),
		checkIdleTimeout(c.Engine),
		orDefault("DialTimeout", &c.DialTimeout, 5*time.Second),
		orDefault("PreambleTimeout", &c.PreambleTimeout, 10*time.Second),
		orDefault("DrainTimeout", &c.DrainTimeout, 10*time.Second),
	)
}
