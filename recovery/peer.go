package recovery

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quictun/quictun/codecs/fecframe"
)

// Negotiation states of a peer, seen from our sending side.
const (
	// peerOffering: we have not heard whether the peer speaks the framing; we send
	// plain QUIC and offer with Hello.
	peerOffering int32 = iota
	// peerFramed: the peer answered our Hello; we frame what we send it.
	peerFramed
	// peerPlain: the peer never answered (or we are Off); we send plain QUIC.
	peerPlain
)

// Hello pacing: offers ride on our writes, at most one per helloInterval, for up to
// offerWindow (long enough for any round trip), then we give up and stay plain.
//
// While offering, the first offerCopies datagrams go out three times: they carry
// the QUIC handshake, which the recovery layer cannot protect yet, and quic-go
// ends slow start for good on any loss, even of a handshake packet, after which
// Reno grows by one packet per round trip. The receiving quic-go drops the
// duplicates.
const (
	helloInterval = 25 * time.Millisecond
	offerWindow   = 3 * time.Second
	offerCopies   = 32
)

// peerOrigin says who spoke first on a path, which decides how much the layer may
// send there before the address is proven (see peer.amplification).
type peerOrigin int

const (
	noCreate  peerOrigin = iota // look up only
	weSpoke                     // our write made the peer: we chose the address
	theySpoke                   // a datagram from the address made the peer
)

// peerKey identifies a remote address.
type peerKey struct {
	ap    netip.AddrPort
	other string // for non-UDP addresses
}

func keyOf(a net.Addr) peerKey {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return peerKey{ap: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
	}
	return peerKey{other: a.Network() + "|" + a.String()}
}

// peer is the state a Conn keeps per remote address: negotiation, the sending
// and receiving halves, and what Feedback taught us about the path.
//
// Each side offers the framing independently with Hello{nonce} and switches its own
// sending only when the peer echoes that nonce in a HelloAck, so an off-path
// attacker cannot talk a Conn into framing datagrams for a peer that cannot read
// them. A Conn in Off mode answers but never offers: the direction from A to B is
// framed exactly when A is not Off and B runs the layer at all.
type peer struct {
	key  peerKey
	addr net.Addr

	state      atomic.Int32
	lastActive atomic.Int64 // Conn clock, nanoseconds

	hello struct {
		sync.Mutex
		nonce  uint64
		sent   int
		first  time.Duration
		last   time.Duration
		copies int // datagrams sent in triplicate so far
	}

	// amplification bounds what the layer adds (Hellos, handshake copies) on a path
	// that a datagram from the address opened: its source may be spoofed. quic-go
	// sends an unproven address at most 3x what came from it (RFC 9000, section 8);
	// the layer adds at most 1x more, until the peer answers our Hello (which
	// proves the address and ends the copies). Without this bound the copies made
	// a spoofed Initial worth 9x in reflected bytes.
	amplification struct {
		limited        bool         // a datagram opened the path (immutable)
		received, sent atomic.Int64 // bytes from the peer; bytes the layer added
	}

	send sender
	recv receiver

	// ctl runs in the ReadFrom goroutine (Feedback handling) under ctlMu; the
	// estimate it produces is applied to send under send.mu.
	ctlMu sync.Mutex
	ctl   controller

	sa       sockAddr // addr for sendmsg, built once; guarded by send.mu
	saDone   bool
	rtt      atomic.Int64  // smoothed round trip, nanoseconds, 0 until measured
	minRTT   atomic.Int64  // minimum round trip, nanoseconds, 0 until measured
	peerLoss atomic.Uint64 // float64 bits: loss rate the peer reports for our sending
}

func newPeer(c *Conn, key peerKey, addr net.Addr, origin peerOrigin, now time.Duration) *peer {
	p := &peer{key: key, addr: addr}
	p.amplification.limited = origin == theySpoke
	var nb [8]byte
	rand.Read(nb[:]) //nolint:errcheck // crypto/rand.Read never fails
	p.hello.nonce = binary.BigEndian.Uint64(nb[:])
	// Sequence, group and source numbers start at random points. If this side forgets the
	// peer and meets it again (a NAT rebinding gives it a new address, idle
	// expiry), the peer's receiver, which still remembers our old numbers, sees a
	// jump far beyond any reordering and starts afresh instead of taking the new
	// numbers for duplicates of old ones.
	p.send.seq = binary.BigEndian.Uint32(nb[:4]) ^ uint32(now)
	p.send.nextGroup = binary.BigEndian.Uint32(nb[4:]) ^ uint32(now>>20)
	rand.Read(nb[:4]) //nolint:errcheck // as above
	p.send.rlc.ssn = binary.BigEndian.Uint32(nb[:4])
	if c.cfg.Mode == Off {
		p.state.Store(peerPlain)
	}
	p.lastActive.Store(int64(now))
	p.ctl = newController(c.cfg)
	sh := p.ctl.shape()
	p.send.shape = sh
	return p
}

// sockaddr is the peer's address for sendmsg (nil: send singly). Callers hold
// send.mu. Writes use quic-go's address for the peer, which is the peer's own.
func (p *peer) sockaddr(c *Conn, addr net.Addr) sockAddr {
	if !p.saDone {
		p.sa, p.saDone = c.wire.sockaddr(addr), true
	}
	return p.sa
}

func (p *peer) rttOr(def time.Duration) time.Duration {
	if r := time.Duration(p.rtt.Load()); r > 0 {
		return r
	}
	return def
}

// maybeHello offers the framing while the peer has not answered. size is the
// length of the datagrams being written (sent plain by the caller); it returns how
// many extra copies of them to send.
func (p *peer) maybeHello(c *Conn, size int, now time.Duration) (extraCopies int) {
	p.hello.Lock()
	defer p.hello.Unlock()
	if p.state.Load() != peerOffering {
		return 0
	}
	if p.hello.sent == 0 {
		p.hello.first = now
	} else if now-p.hello.first > offerWindow {
		p.state.Store(peerPlain)
		return 0
	}
	if (p.hello.sent == 0 || now-p.hello.last >= helloInterval) && p.mayAdd(fecframe.HelloLen) {
		p.hello.sent++
		p.hello.last = now
		var b [fecframe.HelloLen]byte
		c.inner.WriteTo(fecframe.AppendHello(b[:0], p.hello.nonce), p.addr) //nolint:errcheck // an offer; the next write retries
	}
	for extraCopies < 2 && p.hello.copies < offerCopies && p.mayAdd(size) {
		extraCopies++
	}
	if extraCopies > 0 {
		p.hello.copies++
	}
	return extraCopies
}

// mayAdd reports whether n more bytes of the layer's own may go to the peer, and
// counts them if so. Callers hold hello.
func (p *peer) mayAdd(n int) bool {
	a := &p.amplification
	if !a.limited {
		return true
	}
	if a.sent.Load()+int64(n) > a.received.Load() {
		return false
	}
	a.sent.Add(int64(n))
	return true
}

// onReceiveOffering counts a datagram from a peer we are still offering to, for the
// amplification bound.
func (p *peer) onReceiveOffering(n int) {
	if p.amplification.limited {
		p.amplification.received.Add(int64(n))
	}
}

// onHelloAck switches our sending to framed if the peer echoed our nonce, even
// after we gave up offering (the answer was merely slow).
func (p *peer) onHelloAck(c *Conn, nonce uint64) {
	p.hello.Lock()
	defer p.hello.Unlock()
	if nonce == p.hello.nonce && c.cfg.Mode != Off {
		p.state.Store(peerFramed)
	}
}

// onFeedback takes the peer's report on what we send.
func (p *peer) onFeedback(c *Conn, f *fecframe.Frame, now time.Duration) {
	fb := &f.Feedback
	var rtt time.Duration
	if sample := time.Duration(stamp(now)-fb.EchoTimestamp-fb.EchoDelay) * time.Microsecond; sample > 0 && sample < 10*time.Second {
		rtt = sample
	}
	p.ctlMu.Lock()
	reshape := p.ctl.onFeedback(fb, now, rtt, p.send.dataSent.Load())
	p.rtt.Store(int64(p.ctl.srtt))
	p.minRTT.Store(int64(p.ctl.minRTT.get(now)))
	p.peerLoss.Store(floatBits(p.ctl.loss))
	var sh shape
	if reshape && c.cfg.Mode != Off {
		sh = p.ctl.shape()
	}
	p.ctlMu.Unlock()
	if reshape && c.cfg.Mode != Off {
		p.send.setShape(c, p, &sh, now)
		c.stats.data.Store(int64(sh.k))
		c.stats.parity.Store(int64(sh.parityPer(sh.k, c.cfg.groups)))
	}
	if c.cfg.resend() && f.NACKCount() > 0 {
		p.send.resend(c, p, f, now)
	}
}

// peerTable holds the peers of a Conn, bounded by Config.MaxPeers.
type peerTable struct {
	mu sync.RWMutex
	m  map[peerKey]*peer
}

// lookup returns the peer for addr, creating it (unless origin is noCreate) when there is
// room (evicting the longest-idle peer when the table is full and that peer has
// been idle for a while). It returns nil when there is no peer.
func (t *peerTable) lookup(c *Conn, key peerKey, addr net.Addr, origin peerOrigin, now time.Duration) *peer {
	t.mu.RLock()
	p := t.m[key]
	t.mu.RUnlock()
	if p != nil || origin == noCreate {
		return p
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.m[key]; p != nil {
		return p
	}
	if len(t.m) >= c.cfg.MaxPeers {
		var oldest *peer
		for _, q := range t.m {
			if oldest == nil || q.lastActive.Load() < oldest.lastActive.Load() {
				oldest = q
			}
		}
		if oldest == nil || now-time.Duration(oldest.lastActive.Load()) < peerEvictAfter {
			return nil
		}
		delete(t.m, oldest.key)
		c.retirePeer(oldest)
	}
	p = newPeer(c, key, addr, origin, now)
	t.m[key] = p
	c.flusher.wake(now + min(idleCheck, c.cfg.PeerIdle/2)) // so it is forgotten if it stays idle
	return p
}

// peerEvictAfter is how idle a peer must be before a new one may take its place in
// a full table.
const peerEvictAfter = 5 * time.Second

// snapshot returns the peers, for the flusher and Stats.
func (t *peerTable) snapshot(dst []*peer) []*peer {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, p := range t.m {
		dst = append(dst, p)
	}
	return dst
}

func (t *peerTable) remove(p *peer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[p.key] == p {
		delete(t.m, p.key)
	}
}
