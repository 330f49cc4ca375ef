package recovery

import (
	"fmt"
	"net"
	"sync"
	"syscall"
)

// quic-go sees a Conn as an OOB-capable UDP socket (SyscallConn, ReadMsgUDP,
// WriteMsgUDP, plus ReadBatch), so it hands the Conn whole GSO batches of packets
// and takes batches of datagrams, as on a bare *net.UDPConn. Behind a plain
// net.PacketConn it would fall back to one system call per packet, which doubles
// the CPU cost of a transfer.

// WriteTo sends b to addr, framed and protected if the peer speaks the framing.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if err := c.write(b, 0, addr); err != nil {
		return 0, err
	}
	return len(b), nil
}

// WriteMsgUDP is quic-go's write: b holds one packet, or with a UDP_SEGMENT
// control message in oob several packets of that size (the last may be shorter).
// Other control messages (ECN marks, packet info) are not carried over: the
// framing does not pass ECN, and quic-go's ECN validation then turns ECN off.
func (c *Conn) WriteMsgUDP(b, oob []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	seg, err := segmentSize(oob)
	if err != nil {
		return 0, 0, err
	}
	if err := c.write(b, seg, addr); err != nil {
		return 0, 0, err
	}
	return len(b), len(oob), nil
}

func (c *Conn) write(b []byte, seg int, addr net.Addr) error {
	if seg <= 0 || seg > len(b) {
		seg = len(b)
	}
	c.stats.datagramsSent.Add(uint64((len(b) + seg - 1) / max(seg, 1)))
	now := c.now()
	p := c.peers.lookup(c, keyOf(addr), addr, weSpoke, now)
	if p == nil {
		return c.writePlain(b, seg, addr)
	}
	if c.cfg.Dialer && !p.proven() {
		p = c.peers.promote(c, p, now)
	}
	p.lastActive.Store(int64(now))
	extra := p.copies(b, len(b))
	var err error
	if p.state.Load() == peerFramed && p.proven() && extra == 0 {
		err = p.send.send(c, p, b, seg, addr)
	} else {
		for range extra {
			c.writePlain(b, seg, addr) //nolint:errcheck // a copy; the original below reports errors
		}
		err = c.writePlain(b, seg, addr)
	}
	if p.state.Load() == peerOffering || p.reoffer.Load() {
		p.maybeHello(c, now)
	}
	return err
}

// writePlain sends the packets of b unframed, batched like framed ones.
func (c *Conn) writePlain(b []byte, seg int, addr net.Addr) error {
	if seg >= len(b) {
		_, err := c.inner.WriteTo(b, addr)
		return err
	}
	c.plain.Lock()
	defer c.plain.Unlock()
	d := c.plain.dgrams[:0]
	for len(b) > 0 {
		n := min(seg, len(b))
		d = append(d, b[:n])
		b = b[n:]
	}
	err := c.sock.writeBatch(d, addr, c.sock.sockaddr(addr))
	clear(d)
	c.plain.dgrams = d[:0]
	return err
}

// plainBatch is the scratch of writePlain.
type plainBatch struct {
	sync.Mutex
	dgrams [][]byte
}

// SyscallConn lets quic-go query and set socket options (DF, GSO support, ECN and
// packet-info reception). It returns the inner socket's when the inner
// PacketConn is a UDP socket. Otherwise (an emulator in tests) it is a private
// UDP socket that carries no traffic, so quic-go's option calls have a real socket
// to act on; what matters to quic-go is that GSO batches are accepted, and Conn
// splits them itself.
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	if c.sock.udp != nil {
		return c.sock.udp.SyscallConn()
	}
	c.optSocket.Lock()
	defer c.optSocket.Unlock()
	if c.optSocket.conn == nil {
		if c.closed.Load() {
			return nil, net.ErrClosed
		}
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, fmt.Errorf("recovery: option socket: %w", err)
		}
		c.optSocket.conn = u
	}
	return c.optSocket.conn.SyscallConn()
}
