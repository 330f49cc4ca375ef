package recovery

import (
	"net"
	"net/netip"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/quictun/quictun/codecs/fecframe"
)

// inBatchSize is how many datagrams one read from the inner socket may return.
const inBatchSize = 32

// inBatch holds datagrams read from the inner PacketConn in one system call that
// have not been processed yet. Its buffers come from the pool; a buffer a coding
// group keeps leaves the batch, the others are reused for the next read.
type inBatch struct {
	msgs     [inBatchSize]ipv4.Message
	bufs     [inBatchSize]*buffer
	iov      [inBatchSize][1][]byte
	count    int // datagrams in the last read
	next     int // the next one to process
	overflow buffer
}

// ReadBatch hands quic-go up to len(ms) datagrams: rebuilt ones first, then what
// the inner socket has, reading it (blocking) only while nothing is ready. quic-go
// uses it instead of ReadFrom because Conn implements its batch interface; each
// message's Buffers[0] is quic-go's buffer, N and Addr are set.
func (c *Conn) ReadBatch(ms []ipv4.Message, _ int) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	return c.readBatch(ms)
}

// ReadFrom returns the next datagram for quic-go: a plain QUIC packet, the payload
// of a framed data datagram, or a rebuilt one.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	m := c.one[:]
	m[0].Buffers[0] = b
	n, err := c.readBatch(m)
	m[0].Buffers[0] = nil
	if n == 0 {
		return 0, nil, err
	}
	return m[0].N, m[0].Addr, nil
}

// ReadMsgUDP is ReadFrom for quic-go's OOB interface (which reads through
// ReadBatch); no control messages are returned.
func (c *Conn) ReadMsgUDP(b, _ []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	n, a, err := c.ReadFrom(b)
	if err != nil {
		return 0, 0, 0, nil, err
	}
	addr, _ = a.(*net.UDPAddr)
	return n, 0, 0, addr, nil
}

func (c *Conn) readBatch(ms []ipv4.Message) (int, error) {
	n := 0
	for {
		if len(c.held) > 0 {
			c.releaseHeld()
		}
		n = c.takePending(ms, n)
		if n == len(ms) {
			return n, nil
		}
		if c.in.next == c.in.count {
			if n > 0 {
				return n, nil // do not block with datagrams in hand
			}
			if err := c.readInner(); err != nil {
				return 0, err
			}
		}
		for c.in.next < c.in.count && n < len(ms) {
			i := c.in.next
			c.in.next++
			if c.process(i, &ms[n]) {
				n++
			}
			if c.pendingHead < len(c.pending) {
				break // rebuilt datagrams go out before later arrivals
			}
		}
	}
}

// takePending moves rebuilt datagrams into ms from position n on.
func (c *Conn) takePending(ms []ipv4.Message, n int) int {
	for ; n < len(ms) && c.pendingHead < len(c.pending); n++ {
		d := c.pending[c.pendingHead]
		c.pending[c.pendingHead] = delivery{}
		c.pendingHead++
		ms[n].N = copy(ms[n].Buffers[0], d.buf.b[fecframe.DataHeaderLen:d.buf.n])
		ms[n].Addr = d.addr
		c.pool.put(d.buf)
		c.stats.datagramsReceived.Add(1)
	}
	if c.pendingHead == len(c.pending) {
		c.pending, c.pendingHead = c.pending[:0], 0
	}
	return n
}

// readInner refills the batch from the inner PacketConn, blocking until at least
// one datagram is there.
func (c *Conn) readInner() error {
	in := &c.in
	size := inBatchSize
	for i := range inBatchSize {
		if in.bufs[i] == nil {
			in.bufs[i] = c.pool.get()
		}
		if in.bufs[i] == nil { // the pool is exhausted: read fewer, or one unpooled
			size = i
			break
		}
		in.iov[i][0] = in.bufs[i].b[:]
		in.msgs[i].Buffers = in.iov[i][:]
	}
	msgs := in.msgs[:size]
	if size == 0 {
		in.iov[0][0] = in.overflow.b[:]
		in.msgs[0].Buffers = in.iov[0][:]
		msgs = in.msgs[:1]
	}
	n, err := c.sock.readBatch(msgs)
	in.count, in.next = n, 0
	if err != nil {
		in.count = 0
		return err
	}
	return nil
}

// process handles datagram i of the inner batch and, if it carries something for
// quic-go, fills m with it.
func (c *Conn) process(i int, m *ipv4.Message) bool {
	in := &c.in
	raw := &in.msgs[i]
	buf := in.bufs[i]
	pooled := buf != nil
	if !pooled {
		buf = &in.overflow
	}
	buf.n = raw.N
	d := buf.b[:raw.N]
	addr, p := c.peerOf(raw.Addr)
	if p == nil && addr != nil {
		// The peer's first datagram: keep a stranger's state from here, so that
		// what we send back before the address is proven stays within QUIC's
		// amplification limit.
		p = c.peers.lookup(c, keyOf(addr), addr, theySpoke, c.now())
		if p != nil {
			addr = p.addr
		}
	}
	if p != nil {
		p.onReceive(raw.N)
	}
	if !fecframe.IsFramed(d) {
		m.N = copy(m.Buffers[0], d)
		m.Addr = addr
		c.stats.datagramsReceived.Add(1)
		return true
	}
	n, deliver, kept := c.handleFramed(m.Buffers[0], buf, pooled, addr, p)
	if kept {
		in.bufs[i] = nil // a coding group owns it now
	}
	if deliver {
		m.N, m.Addr = n, addr
		c.stats.datagramsReceived.Add(1)
	}
	return deliver
}

// peerOf returns the address to give quic-go for a datagram from a, and the peer
// if there is one: the peer's own address object, so that quic-go sees the same
// one every time and nothing is allocated per datagram.
func (c *Conn) peerOf(a net.Addr) (net.Addr, *peer) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		if a == nil {
			return a, nil
		}
		return a, c.peers.lookup(c, keyOf(a), a, noCreate, 0)
	}
	ap := u.AddrPort()
	key := peerKey{ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
	if p := c.peers.lookup(c, key, nil, noCreate, 0); p != nil {
		return p.addr, p
	}
	return a, nil
}

// handleFramed processes one framed datagram in buf. It returns the payload
// length copied into b and whether there is one for quic-go, and whether the
// coding state kept buf (otherwise it stays the caller's). A stranger's frames,
// and frames whose tag fails, never reach the coding state; the QUIC packet of a
// source goes to quic-go all the same, as a plain one would.
func (c *Conn) handleFramed(b []byte, buf *buffer, pooled bool, addr net.Addr, p *peer) (n int, deliver, kept bool) {
	d := buf.b[:buf.n]
	f, err := fecframe.Decode(d)
	if err != nil {
		c.stats.malformed.Add(1)
		return 0, false, false
	}
	now := c.now()
	if p == nil {
		p = c.peers.lookup(c, keyOf(addr), addr, theySpoke, now)
	}
	if p == nil {
		return 0, false, false
	}
	switch f.Type {
	case fecframe.TypeHello:
		p.onHello(c, f.Nonce, now)
		return 0, false, false
	case fecframe.TypeHelloAck:
		p.onHelloAck(c, f.Nonce, f.Key)
		return 0, false, false
	case fecframe.TypeSource:
		c.stats.framedReceived.Add(1)
		n = copy(b, f.Payload)
		deliver = true
	}
	if !p.proven() {
		return n, deliver, false
	}
	check := p.check
	if f.Type == fecframe.TypeFeedback {
		check = p.checkFeedback
	}
	if check == nil || !check.Check(d) {
		c.stats.forged.Add(1)
		return n, deliver, false
	}
	p.lastActive.Store(int64(now))
	if f.Type == fecframe.TypeFeedback {
		p.onFeedback(c, &f, now)
		return 0, false, false
	}
	if !pooled || !p.buffers.charge(buf) {
		return n, deliver, false // no buffer to code with; quic-go still gets its packet
	}
	var hold time.Duration
	switch f.Type {
	case fecframe.TypeSource:
		deliver, kept, hold = p.recv.onSource(c, p, &f, buf, now)
	case fecframe.TypeRepair:
		c.stats.framedReceived.Add(1)
		kept = p.recv.onRepair(c, p, &f, buf, now)
	}
	if !kept {
		p.buffers.uncharge(buf)
	}
	if deliver && hold > 0 && c.holdBack(b[:n], addr, now+hold) {
		deliver = false
	}
	return n, deliver, kept
}

// heldDelivery is a data datagram the trainer holds back until due.
type heldDelivery struct {
	delivery
	due time.Duration
}

// holdBack keeps a copy of payload to hand to quic-go at due instead of now. It
// reports false (deliver now) when no buffer is free.
func (c *Conn) holdBack(payload []byte, addr net.Addr, due time.Duration) bool {
	nb := c.pool.get()
	if nb == nil {
		return false
	}
	nb.n = fecframe.DataHeaderLen + copy(nb.b[fecframe.DataHeaderLen:], payload)
	c.held = append(c.held, heldDelivery{delivery{buf: nb, addr: addr}, due})
	return true
}

// releaseHeld moves the held datagrams that are due to pending. A held datagram
// waits for the next read to come due; the trainer holds only while its peer
// sends in earnest, so that is a fraction of a millisecond late at worst.
func (c *Conn) releaseHeld() {
	now := c.now()
	kept := c.held[:0]
	for _, h := range c.held {
		if h.due <= now {
			c.pending = append(c.pending, h.delivery)
		} else {
			kept = append(kept, h)
		}
	}
	clear(c.held[len(kept):])
	c.held = kept
}
