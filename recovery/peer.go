package recovery

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
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
	// peerAnswered: the peer answered our Hello, but its address is not proven
	// (see Conn.Prove): we send plain QUIC, and frame once it is.
	peerAnswered
	// peerFramed: the peer answered our Hello and is proven; we frame what we send it.
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
// duplicates. Handshake packets (long headers) among them go out three times even
// once we frame: the peer keeps no coding state for us until it has accepted the
// connection.
const (
	helloInterval = 25 * time.Millisecond
	offerWindow   = 3 * time.Second
	offerCopies   = 32
	// ackInterval bounds the HelloAcks a peer gets, whoever asks in its name.
	ackInterval = 10 * time.Millisecond
)

// peerOrigin says how a lookup may create a peer.
type peerOrigin int

const (
	noCreate  peerOrigin = iota // look up only
	weSpoke                     // our write: with Config.Dialer, we chose the address
	theySpoke                   // a datagram from the address
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

// peer is the state a Conn keeps per remote address. A stranger (an address
// that has not proved itself, see Conn.Prove) has only this: its negotiation
// and its amplification budget, no buffers and no coding state. A proven peer
// also has a coding: its sending and receiving halves.
//
// Each side offers the framing independently with Hello{nonce} and switches its own
// sending only when the peer echoes that nonce in a HelloAck, so an off-path
// attacker cannot talk a Conn into framing datagrams for a peer that cannot read
// them. The HelloAck carries the key the peer checks our frames' tags with (see
// Conn.keyFor). A Conn in Off mode answers but never offers: the direction from A
// to B is framed exactly when A is not Off and B runs the layer at all.
type peer struct {
	key  peerKey
	addr net.Addr

	state      atomic.Int32
	lastActive atomic.Int64 // Conn clock, nanoseconds
	reoffer    atomic.Bool  // offer again: the peer may have lost our key

	hello struct {
		sync.Mutex
		nonce  uint64
		sent   int
		first  time.Duration
		last   time.Duration
		copies int           // datagrams sent in triplicate so far
		acked  time.Duration // when we last sent the peer a HelloAck
		// sendKey is what the peer's HelloAck gave us to tag our frames with.
		sendKey  [fecframe.KeyLen]byte
		answered bool
	}

	// amplification bounds what the layer sends a stranger of its own (Hellos,
	// HelloAcks, handshake copies): its source may be spoofed. quic-go sends an
	// unproven address at most 3x what came from it (RFC 9000, section 8); the
	// layer adds at most 1x more. Without this bound the copies made a spoofed
	// Initial worth 9x in reflected bytes. A proven peer is not limited.
	amplification struct {
		received, sent atomic.Int64 // bytes from the peer; bytes the layer added
	}

	rtt      atomic.Int64  // smoothed round trip, nanoseconds, 0 until measured
	minRTT   atomic.Int64  // minimum round trip, nanoseconds, 0 until measured
	peerLoss atomic.Uint64 // float64 bits: loss rate the peer reports for our sending

	*coding // nil for a stranger; set before the peer is published, never changed
}

// coding is a proven peer's coding state.
type coding struct {
	send sender
	recv receiver

	// ctl runs in the ReadFrom goroutine (Feedback handling) under ctlMu; the
	// estimate it produces is applied to send under send.mu.
	ctlMu sync.Mutex
	ctl   controller

	sa     sockAddr // addr for sendmsg, built once; guarded by send.mu
	saDone bool

	// buffers is the peer's share of the pool (see allowance).
	buffers *allowance
	// Tag checks in the ReadFrom goroutine: check for the frames the peer
	// sends (our key), checkFeedback for its Feedback on ours (its key, nil
	// until its HelloAck).
	check, checkFeedback *fecframe.Tagger
}

func newPeer(c *Conn, key peerKey, addr net.Addr, proven bool, now time.Duration) *peer {
	p := &peer{key: key, addr: addr}
	var nb [8]byte
	rand.Read(nb[:]) //nolint:errcheck // crypto/rand.Read never fails
	p.hello.nonce = binary.BigEndian.Uint64(nb[:])
	if c.cfg.Mode == Off {
		p.state.Store(peerPlain)
	}
	p.lastActive.Store(int64(now))
	if proven {
		p.coding = newCoding(c, key, addr, now)
	}
	return p
}

func newCoding(c *Conn, key peerKey, addr net.Addr, now time.Duration) *coding {
	k := &coding{buffers: newAllowance(c.cfg.MaxBuffers)}
	recvKey := c.keyFor(key)
	k.check = fecframe.NewTagger(recvKey)
	k.recv.feedbackTag = fecframe.NewTagger(recvKey)
	k.send.buffers, k.recv.buffers = k.buffers, k.buffers
	k.recv.addr = addr
	// Numbers start at random points, so that a peer that remembers our old
	// ones sees a jump and starts afresh (README, "State per remote address").
	var nb [8]byte
	rand.Read(nb[:]) //nolint:errcheck // as above
	k.send.seq = binary.BigEndian.Uint32(nb[:4]) ^ uint32(now)
	k.send.enc.ssn = binary.BigEndian.Uint32(nb[4:])
	k.ctl = newController(c.cfg)
	k.send.shape = k.ctl.shape()
	return k
}

// promoted is a proven peer that takes over from stranger s: the same
// negotiation, with coding state. The stranger stays usable by whoever holds it
// (it sends plain).
func promoted(c *Conn, s *peer, now time.Duration) *peer {
	p := newPeer(c, s.key, s.addr, true, now)
	s.hello.Lock()
	p.hello.nonce, p.hello.sent, p.hello.first, p.hello.last = s.hello.nonce, s.hello.sent, s.hello.first, s.hello.last
	p.hello.copies, p.hello.acked = s.hello.copies, s.hello.acked
	answered, key := s.hello.answered, s.hello.sendKey
	s.hello.Unlock()
	p.state.Store(s.state.Load())
	if answered {
		p.learnKey(c, key)
	}
	return p
}

// keyFor is the key a peer at key tags its frames to us with, and we our Feedback
// to it: a function of a secret of this Conn and the address, so that it needs no
// state for strangers and stays the same however often their state is dropped.
func (c *Conn) keyFor(key peerKey) [fecframe.KeyLen]byte {
	h := hmac.New(sha256.New, c.secret[:])
	if key.other == "" {
		b, _ := key.ap.MarshalBinary()
		h.Write(b)
	} else {
		h.Write([]byte(key.other))
	}
	var k [fecframe.KeyLen]byte
	copy(k[:], h.Sum(nil))
	return k
}

// proven reports whether the peer's address has proved itself.
func (p *peer) proven() bool { return p.coding != nil }

// sockaddr is the peer's address for sendmsg (nil: send singly). Callers hold
// send.mu. Writes use quic-go's address for the peer, which is the peer's own.
func (p *peer) sockaddr(c *Conn, addr net.Addr) sockAddr {
	if !p.saDone {
		p.sa, p.saDone = c.sock.sockaddr(addr), true
	}
	return p.sa
}

func (p *peer) rttOr(def time.Duration) time.Duration {
	if r := time.Duration(p.rtt.Load()); r > 0 {
		return r
	}
	return def
}

// copies is how many extra copies of the datagrams in b, of which the first is
// first, to send plain: while we offer, the first offerCopies datagrams (the
// handshake); after that, handshake packets still.
func (p *peer) copies(first []byte, size int) (extra int) {
	st := p.state.Load()
	if st == peerPlain || (st != peerOffering && !connecting(first)) {
		return 0
	}
	p.hello.Lock()
	defer p.hello.Unlock()
	if p.hello.copies >= offerCopies {
		return 0
	}
	for extra < 2 && p.mayAdd(size) {
		extra++
	}
	if extra > 0 {
		p.hello.copies++
	}
	return extra
}

// maybeHello offers the framing while the peer has not answered, or offers again
// when it seems to have lost our key (reoffer). It rides on our writes, after the
// datagrams they send, so that a stranger's budget already holds them.
func (p *peer) maybeHello(c *Conn, now time.Duration) {
	p.hello.Lock()
	defer p.hello.Unlock()
	offering := p.state.Load() == peerOffering
	if !offering && !p.reoffer.Load() {
		return
	}
	if offering && p.hello.sent > 0 && now-p.hello.first > offerWindow {
		p.state.Store(peerPlain)
		return
	}
	if p.hello.sent == 0 {
		p.hello.first = now
	}
	if (p.hello.sent == 0 || now-p.hello.last >= helloInterval) && p.mayAdd(fecframe.HelloLen) {
		p.hello.sent++
		p.hello.last = now
		p.reoffer.Store(false)
		var b [fecframe.HelloLen]byte
		c.inner.WriteTo(fecframe.AppendHello(b[:0], p.hello.nonce), p.addr) //nolint:errcheck // an offer; the next write retries
	}
}

// mayAdd reports whether n more bytes of the layer's own may go to the peer, and
// counts them if so.
func (p *peer) mayAdd(n int) bool {
	if p.proven() {
		return true
	}
	a := &p.amplification
	if a.sent.Load()+int64(n) > a.received.Load() {
		return false
	}
	a.sent.Add(int64(n))
	return true
}

// onReceive counts a datagram from the peer, for the amplification bound.
func (p *peer) onReceive(n int) {
	if !p.proven() {
		p.amplification.received.Add(int64(n))
	}
}

// onHello answers the peer's offer with its nonce and the key to tag its frames
// with, within the amplification bound and at most once per ackInterval. A Hello
// from a peer we frame for says it may have lost our key (a restart, a NAT that
// gave us a new address): we offer again on our next write.
func (p *peer) onHello(c *Conn, nonce uint64, now time.Duration) {
	p.hello.Lock()
	due := p.hello.acked == 0 || now-p.hello.acked >= ackInterval
	if due && p.mayAdd(fecframe.HelloAckLen) {
		p.hello.acked = now
		var ack [fecframe.HelloAckLen]byte
		c.inner.WriteTo(fecframe.AppendHelloAck(ack[:0], nonce, c.keyFor(p.key)), p.addr) //nolint:errcheck // the peer repeats its Hello
	}
	switch p.state.Load() {
	case peerOffering:
		p.hello.last = -helloInterval // offer back with our next write
	case peerFramed, peerAnswered:
		p.reoffer.Store(true)
	}
	p.hello.Unlock()
}

// onHelloAck switches our sending to framed (or answered, for a stranger) if the
// peer echoed our nonce, even after we gave up offering (the answer was merely
// slow), and takes the key it gives. The ReadFrom goroutine calls it.
func (p *peer) onHelloAck(c *Conn, nonce uint64, key [fecframe.KeyLen]byte) {
	p.hello.Lock()
	if nonce != p.hello.nonce {
		p.hello.Unlock()
		return
	}
	p.hello.sendKey, p.hello.answered = key, true
	p.hello.Unlock()
	p.reoffer.Store(false)
	if p.proven() {
		p.learnKey(c, key)
	}
	if c.cfg.Mode == Off {
		return
	}
	if p.proven() {
		p.state.Store(peerFramed)
	} else {
		p.state.Store(peerAnswered)
	}
}

// learnKey sets a proven peer's taggers for its key.
func (p *peer) learnKey(c *Conn, key [fecframe.KeyLen]byte) {
	p.send.mu.Lock()
	p.send.tag = fecframe.NewTagger(key)
	p.send.mu.Unlock()
	p.checkFeedback = fecframe.NewTagger(key)
	if c.cfg.Mode != Off && p.state.Load() == peerAnswered {
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
		p.send.setShape(&sh)
		c.stats.data.Store(int64(sh.k))
		c.stats.parity.Store(int64(sh.parityPer(sh.k)))
	}
}
