package udpframe

import (
	"bytes"
	"testing"
)

// FuzzParse: any bytes parse or fail with ErrMalformed, never panic, and what
// parses encodes back to the same bytes.
func FuzzParse(f *testing.F) {
	f.Add([]byte{0x05, 1, 'h', 'i'})
	f.Add([]byte{0x05, 3, 9, 2, 'x'})
	f.Add(make([]byte, 64))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := Parse(b)
		if err != nil {
			return
		}
		again := append(AppendHeader(nil, h), payload...)
		// A varint may be longer than needed on the wire; the header then
		// re-encodes shorter, and must parse the same.
		h2, p2, err := Parse(again)
		if err != nil || h2 != h || !bytes.Equal(p2, payload) {
			t.Fatalf("%x -> %+v %x -> %+v %x %v", b, h, payload, h2, p2, err)
		}
	})
}

// FuzzReassemble feeds a stream of fragments cut from the input: the
// reassembler never panics, never rebuilds past its limit and stays bounded.
func FuzzReassemble(f *testing.F) {
	f.Add([]byte{2, 0, 0, 'a', 2, 0, 1, 'b'})
	f.Add([]byte{3, 5, 2, 'x', 3, 5, 0, 'y', 3, 5, 1, 'z', 1, 0, 0, 'w'})
	f.Fuzz(func(t *testing.T, b []byte) {
		const maxSize = 64
		r := NewReassembler(maxSize)
		for len(b) >= 4 {
			h := Header{Flow: 1, Count: b[0], Seq: uint64(b[1]), Index: b[2]}
			n := min(int(b[3]%32)+1, len(b)-4)
			piece := b[4 : 4+n]
			b = b[4+n:]
			enc := append(AppendHeader(nil, h), piece...)
			ph, payload, err := Parse(enc)
			if err != nil {
				continue
			}
			if w, _ := r.Add(ph, payload); len(w) > maxSize && ph.Fragmented() {
				t.Fatalf("rebuilt %d bytes", len(w))
			}
			if r.Pending() > MaxPartial {
				t.Fatalf("%d pending", r.Pending())
			}
		}
	})
}
