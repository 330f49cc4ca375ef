package endpoints

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/endpoints/token"
	"github.com/quictun/quictun/engine"
	"github.com/quictun/quictun/internal/quicconf"
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
	// Secret, when set, is the shared identity's: a client proves it in its
	// session's hello (see preamble.Proof); a session that does not is closed
	// with CodeAuthFailed. At most preamble.MaxSecretLen bytes.
	Secret []byte
	// Identities are the clients the server knows (package identity); nil is
	// the Secret's alone. A table holds the Secret's identity when it was
	// made with it (identity.Load, identity.NewTable).
	Identities *identity.Table
	// AuthPenalty is how long an address that failed to authenticate waits
	// first (0: 1 s); each further failure doubles it, up to 5 minutes.
	AuthPenalty time.Duration
	// Rules are the --allow and --deny rules; nil leaves the safe defaults
	// of package policy, which depend on ListenOn and on authentication.
	Rules *policy.Rules
	// Listening are the other addresses (HOST:PORT) this process listens on,
	// its REST API: no target may name them, whatever the rules.
	Listening []string
	// AllowBind are where clients' reverse forwards may have the server
	// listen (--allow-bind); an identity's bind= rules replace them for it.
	// Nil permits nothing.
	AllowBind *policy.BindRules
	// ReverseGrace is how long a reverse forward's listener stays bound
	// while its client is away (0: 30 s); SessionWait how long a connection
	// to it waits for the client's session (0: 10 s).
	ReverseGrace time.Duration
	SessionWait  time.Duration
	Limits       Limits
	// SpeedTest bounds the speed tests authenticated clients may run.
	SpeedTest SpeedTestLimits
	// WrapUDP, when set, puts a layer between the UDP socket and quic-go (link
	// emulation in tests).
	WrapUDP func(net.PacketConn) net.PacketConn
	// Recovery configures the loss-recovery layer; nil is recovery.DefaultConfig.
	Recovery *recovery.Config
	// Congestion names the sender's congestion controller (quicconf.BBR, the
	// default, or quicconf.Reno).
	Congestion string
	Logger     *slog.Logger
}

// Limits protect a server from more than it can carry. Past a limit a new
// session or tunnel is refused with CodeOverloaded; live ones are untouched.
// Zero is the default of each.
type Limits struct {
	MaxSessions int // authenticated QUIC sessions at once (default 256)
	// MaxSessionsPerAddress bounds the sessions of one client address (an
	// IPv4 address or an IPv6 /64), authenticated or not (default 64).
	MaxSessionsPerAddress int
	// MaxPendingSessions is the pool of sessions that have not yet proved
	// who they are; a newcomer evicts the oldest (default 16), and one
	// address holds at most MaxPendingPerAddress of them (default 4).
	MaxPendingSessions   int
	MaxPendingPerAddress int
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
		orDefault("Limits.MaxSessionsPerAddress", &l.MaxSessionsPerAddress, 64),
		orDefault("Limits.MaxPendingSessions", &l.MaxPendingSessions, 16),
		orDefault("Limits.MaxPendingPerAddress", &l.MaxPendingPerAddress, 4),
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
		c.SpeedTest.setDefaults(),
		checkIdleTimeout(c.Engine),
		orDefault("DialTimeout", &c.DialTimeout, 5*time.Second),
		orDefault("PreambleTimeout", &c.PreambleTimeout, 10*time.Second),
		orDefault("DrainTimeout", &c.DrainTimeout, 10*time.Second),
		orDefault("AuthPenalty", &c.AuthPenalty, minPenalty),
		orDefault("ReverseGrace", &c.ReverseGrace, 30*time.Second),
		orDefault("SessionWait", &c.SessionWait, 10*time.Second),
	)
}

// What a session costs the server before it has authenticated, at most: its
// connection (quic-go's state, packet buffers, TLS), the quic-go state of the
// streams its first flights may open before the server sees the second one
// and closes the session (QUIC's stream credit bounds their number), and the
// data those streams carry, which quic-go's connection flow control caps at
// the initial connection window (the window grows only once the session has
// authenticated; the server itself reads at most preamble.MaxHelloLen bytes).
// A handshake in progress costs the connection alone. That is a hard cap; what
// an attack reaches in practice is far below it, because the session is closed
// at its second stream (TestStrangersStayWithinTheStatedBound).
const (
	sessionStateBytes   = 256 << 10
	streamStateBytes    = 2 << 10
	handshakeStateBytes = 128 << 10
)

// preAuthBound is the most memory strangers can make the server hold: the
// pool of unauthenticated sessions and the handshakes in progress (past
// those, quic-go answers with a stateless Retry).
func preAuthBound(l Limits) int {
	streams := min(l.MaxTunnelsPerSession+refusalsInFlight, maxStreamsPerSession)
	perSession := sessionStateBytes + streams*streamStateBytes + quicconf.InitialConnectionWindow
	return l.MaxPendingSessions*perSession + maxPendingHandshakes*handshakeStateBytes
}
