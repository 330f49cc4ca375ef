package netem

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// PacketConn wraps a real net.PacketConn (e.g. a loopback *net.UDPConn) and applies a
// Model to every datagram written through it (egress). Reads pass straight through, so
// wrapping both ends of a connection emulates both directions of a link.
//
// It is a plain net.PacketConn to quic-go (quic.Transport{Conn: c}): quic-go then
// reads one datagram per call and has no GSO/ECN, which is fine for tests. It forwards
// SetReadBuffer and SetWriteBuffer so quic-go can size socket buffers. It deliberately
// has no SyscallConn: quic-go fails the Transport when a SyscallConn method returns an
// error (as it would for an inner conn that is not a socket), and the raw socket would
// be a way around the emulator. Without it quic-go also skips path MTU discovery and
// keeps its 1280-byte initial packet size, which suits emulated MTU-1500 paths.
type PacketConn struct {
	inner net.PacketConn
	pipe  *Pipe
	err   error // the model was invalid: every write fails with it
}

var _ net.PacketConn = (*PacketConn)(nil)

// NewPacketConn wraps inner. The loss and jitter draws are deterministic given seed.
// If m is invalid (check with m.Validate first), the conn still reads, but every write
// returns the validation error; it never panics.
func NewPacketConn(inner net.PacketConn, m Model, seed int64) *PacketConn {
	c := &PacketConn{inner: inner}
	pipe, err := NewPipe(m, seed, func(b []byte, addr net.Addr) error {
		_, err := inner.WriteTo(b, addr)
		return err
	})
	if err != nil {
		c.err = fmt.Errorf("netem: %w", err)
		return c
	}
	c.pipe = pipe
	return c
}

// WriteTo offers b to the emulated link. Like UDP it does not wait for the datagram to
// arrive and does not report loss; it fails only when the conn is closed.
func (c *PacketConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if err := c.pipe.Send(b, addr); err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.inner.LocalAddr(), Addr: addr, Err: err}
	}
	return len(b), nil
}

// ReadFrom reads from the inner conn.
func (c *PacketConn) ReadFrom(b []byte) (int, net.Addr, error) { return c.inner.ReadFrom(b) }

// Close stops the emulator (its scheduler goroutine is waited for; datagrams still on
// the emulated wire are discarded) and closes the inner conn.
func (c *PacketConn) Close() error {
	var err error
	if c.pipe != nil {
		err = c.pipe.Close()
	}
	return errors.Join(err, c.inner.Close())
}

// SetModel changes the impairment for datagrams written from now on.
func (c *PacketConn) SetModel(m Model) error {
	if c.pipe == nil {
		return c.err
	}
	return c.pipe.SetModel(m)
}

// Stats are the counters of the egress direction.
func (c *PacketConn) Stats() Stats {
	if c.pipe == nil {
		return Stats{}
	}
	return c.pipe.Stats()
}

func (c *PacketConn) LocalAddr() net.Addr                { return c.inner.LocalAddr() }
func (c *PacketConn) SetDeadline(t time.Time) error      { return c.inner.SetDeadline(t) }
func (c *PacketConn) SetReadDeadline(t time.Time) error  { return c.inner.SetReadDeadline(t) }
func (c *PacketConn) SetWriteDeadline(t time.Time) error { return c.inner.SetWriteDeadline(t) }

// SetReadBuffer sets the inner socket's receive buffer, if it has one.
func (c *PacketConn) SetReadBuffer(bytes int) error {
	if s, ok := c.inner.(interface{ SetReadBuffer(int) error }); ok {
		return s.SetReadBuffer(bytes)
	}
	return errors.New("netem: inner conn has no SetReadBuffer")
}

// SetWriteBuffer sets the inner socket's send buffer, if it has one.
func (c *PacketConn) SetWriteBuffer(bytes int) error {
	if s, ok := c.inner.(interface{ SetWriteBuffer(int) error }); ok {
		return s.SetWriteBuffer(bytes)
	}
	return errors.New("netem: inner conn has no SetWriteBuffer")
}
