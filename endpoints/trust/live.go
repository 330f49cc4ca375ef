package trust

import (
	"crypto/tls"
	"sync/atomic"
)

// Live is a server TLS config whose certificates and client CAs can be replaced
// while the listener runs: each new handshake gets the newest, live sessions
// keep the one they made.
type Live struct {
	current atomic.Pointer[tls.Config]
}

// NewLive starts with c.
func NewLive(c *tls.Config) *Live {
	l := &Live{}
	l.current.Store(c)
	return l
}

// Config is the config to listen with: the first one's settings, handing out
// the current one to every client hello.
func (l *Live) Config() *tls.Config {
	c := l.current.Load().Clone()
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return l.current.Load(), nil
	}
	return c
}

// Swap makes c the config of the handshakes that start from now on.
func (l *Live) Swap(c *tls.Config) { l.current.Store(c) }
