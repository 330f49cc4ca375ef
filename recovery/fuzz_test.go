package recovery

import (
	"net"
	"testing"

	"github.com/quictun/quictun/codecs/fecframe"
)

// FuzzReceive feeds a Conn's receive path arbitrary sequences of datagrams (each
// input is split into datagrams at 0xff 0xfe markers), valid frames with
// hostile headers among them: repairs over sources far away or of shard lengths
// that do not match, garbage that decodes, sources and repairs in any order. Every datagram that has a tag is sealed
// with the peer's key, unless its last byte is odd (a forgery). It must never
// panic, never hand quic-go more bytes than a datagram holds, and return every
// buffer it takes.
func FuzzReceive(f *testing.F) {
	fb := fecframe.AppendFeedback(nil, fecframe.Feedback{Received: 9})
	source := func(seq, ssn uint32, payload string) []byte {
		b := make([]byte, fecframe.DataHeaderLen+len(payload))
		fecframe.PutSource(b, fecframe.Source{Seq: seq, SSN: ssn}, len(payload))
		copy(b[fecframe.DataHeaderLen:], payload)
		return b
	}
	s0, s2 := source(10, 100, "first"), source(12, 102, "third!")
	repair := func(seq, first uint32, count uint16, shards ...[]byte) []byte {
		L := 0
		for _, sh := range shards {
			L = max(L, len(sh))
		}
		b := make([]byte, fecframe.RepairHeaderLen+L)
		fecframe.PutRepair(b, fecframe.Repair{Seq: seq, First: first, Count: count})
		rlcEncode(b[fecframe.RepairHeaderLen:], seq, first, shards)
		return b
	}
	r0 := repair(13, 100, 3, s0[fecframe.DataShardOffset:], source(11, 101, "second")[fecframe.DataShardOffset:], s2[fecframe.DataShardOffset:])
	sep := []byte{0xff, 0xfe}
	join := func(parts ...[]byte) []byte {
		var out []byte
		for i, p := range parts {
			if i > 0 {
				out = append(out, sep...)
			}
			out = append(out, p...)
		}
		return out
	}
	f.Add(join(s0, fb, s2))
	f.Add(join(fecframe.AppendHello(nil, 1), fecframe.AppendHelloAck(nil, 2, [fecframe.KeyLen]byte{}), s0))
	f.Add(join(s0, s2, r0))                       // the middle source lost, rebuilt
	f.Add(join(s2, r0, s0, repair(14, 99, 1024))) // late and out of order, a repair of nothing

	u, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		f.Fatal(err)
	}
	c, err := NewConn(u, Config{Mode: Auto})
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9} // discard port: answers go nowhere
	c.Prove(from)
	theirKey := [fecframe.KeyLen]byte{1}
	seal, sealFeedback := fecframe.NewTagger(c.keyFor(keyOf(from))), fecframe.NewTagger(theirKey)
	f.Fuzz(func(t *testing.T, in []byte) {
		before := c.pool.out.Load()
		c.readMu.Lock()
		defer c.readMu.Unlock()
		out := make([]byte, 2048)
		for len(in) > 0 {
			var dgram []byte
			if i := indexOf(in, sep); i >= 0 {
				dgram, in = in[:i], in[i+len(sep):]
			} else {
				dgram, in = in, nil
			}
			if len(dgram) > bufSize {
				continue
			}
			buf := c.pool.get()
			buf.n = copy(buf.b[:], dgram)
			if _, err := fecframe.Decode(buf.b[:buf.n]); err == nil && dgram[len(dgram)-1]&1 == 0 {
				if fecframe.Type(dgram[0]&0x0f) == fecframe.TypeFeedback {
					sealFeedback.Seal(buf.b[:buf.n])
				} else {
					seal.Seal(buf.b[:buf.n])
				}
			}
			addr, p := c.peerOf(from)
			if p == nil {
				p = c.peers.lookup(c, keyOf(from), from, theySpoke, c.now())
				addr = p.addr
			}
			if p.checkFeedback == nil {
				p.learnKey(c, theirKey)
			}
			n, _, kept := c.handleFramed(out, buf, true, addr, p)
			if n > len(dgram) {
				t.Fatalf("handed quic-go %d bytes from a %d-byte datagram", n, len(dgram))
			}
			if !kept {
				c.pool.put(buf)
			}
			for _, d := range c.pending[c.pendingHead:] {
				if d.buf.n > bufSize || d.buf.n < fecframe.DataHeaderLen {
					t.Fatalf("rebuilt datagram of %d bytes", d.buf.n)
				}
				c.pool.put(d.buf)
			}
			c.pending, c.pendingHead = c.pending[:0], 0
		}
		// Forget the peer: its decoder gives its buffers back.
		for _, p := range c.peers.snapshot(nil) {
			c.peers.remove(c, p)
		}
		if after := c.pool.out.Load(); after != before {
			t.Fatalf("%d buffers not returned", after-before)
		}
	})
}

func indexOf(b, sep []byte) int {
	for i := 0; i+len(sep) <= len(b); i++ {
		if b[i] == sep[0] && b[i+1] == sep[1] {
			return i
		}
	}
	return -1
}
