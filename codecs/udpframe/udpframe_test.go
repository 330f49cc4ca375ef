package udpframe

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func TestParseRoundTrip(t *testing.T) {
	for _, h := range []Header{
		{Flow: 1, Count: 1},
		{Flow: 63, Count: 1},
		{Flow: 16383, Count: 1},
		{Flow: 1 << 40, Count: 1},
		{Flow: 7, Count: 2, Seq: 0, Index: 1},
		{Flow: 7, Count: 255, Seq: 1<<62 - 1, Index: 254},
	} {
		b := append(AppendHeader(nil, h), "payload"...)
		if len(b) != HeaderLen(h)+len("payload") {
			t.Fatalf("%+v: HeaderLen %d, encoded %d", h, HeaderLen(h), len(b)-len("payload"))
		}
		got, payload, err := Parse(b)
		if err != nil || got != h || string(payload) != "payload" {
			t.Fatalf("%+v: parsed %+v %q %v", h, got, payload, err)
		}
	}
	// An unfragmented datagram may be empty (UDP allows it); a probe reads as flow 0.
	if h, p, err := Parse(AppendHeader(nil, Header{Flow: 3, Count: 1})); err != nil || h.Flow != 3 || len(p) != 0 {
		t.Fatalf("empty datagram: %+v %q %v", h, p, err)
	}
	if h, _, err := Parse(make([]byte, 64)); err == nil || h.Flow != 0 {
		t.Fatalf("probe: %+v %v (want flow 0 and an error for count 0)", h, err)
	}
}

func TestParseRejects(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":          {},
		"short varint":   {0x40},
		"no count":       {0x05},
		"count 0":        {0x05, 0},
		"no seq":         {0x05, 3},
		"no index":       {0x05, 3, 9},
		"index past":     {0x05, 3, 9, 3, 'x'},
		"empty fragment": {0x05, 3, 9, 2},
		"truncated seq":  {0x05, 3, 0x80, 0},
		"index 255 of 2": {0x05, 2, 0, 255, 'x'},
	} {
		if _, _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// fragmentAll cuts payload and returns copies of its QUIC datagrams.
func fragmentAll(t testing.TB, flow, seq uint64, payload []byte, max int) [][]byte {
	var out [][]byte
	_, _, err := Fragments(flow, seq, payload, max, nil, func(b []byte) error {
		if len(b) > max {
			t.Fatalf("datagram of %d bytes, max %d", len(b), max)
		}
		out = append(out, append([]byte(nil), b...))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFragmentAndReassembleEverySize(t *testing.T) {
	const mtu = 1200
	rng := rand.New(rand.NewPCG(1, 2))
	r := NewReassembler(64 << 10)
	var seq uint64
	for _, size := range []int{0, 1, 1196, 1197, 1198, 1199, 1200, 1201, 2400, 9000, 32 << 10, 65507} {
		payload := make([]byte, size)
		for i := range payload {
			payload[i] = byte(rng.Uint32())
		}
		dgs := fragmentAll(t, 9, seq, payload, mtu)
		if len(dgs) > 1 {
			seq++
		}
		if want := max(1, (size+mtu-6)/(mtu-5)); len(dgs) > want {
			t.Errorf("%d bytes: %d fragments", size, len(dgs))
		}
		rng.Shuffle(len(dgs), func(i, j int) { dgs[i], dgs[j] = dgs[j], dgs[i] })
		var got []byte
		for i, d := range dgs {
			h, p, err := Parse(d)
			if err != nil || h.Flow != 9 {
				t.Fatalf("%d bytes: %+v %v", size, h, err)
			}
			whole, dropped := r.Add(h, p)
			if dropped != 0 {
				t.Fatalf("%d bytes: dropped %d", size, dropped)
			}
			if whole != nil {
				if i != len(dgs)-1 {
					t.Fatalf("%d bytes: complete after %d of %d", size, i+1, len(dgs))
				}
				got = whole
			}
		}
		if !bytes.Equal(got, payload) && !(size == 0 && len(got) == 0) {
			t.Fatalf("%d bytes: rebuilt %d bytes, different", size, len(got))
		}
	}
	if r.Pending() != 0 {
		t.Fatalf("%d pending", r.Pending())
	}
}

func TestFragmentsTooLarge(t *testing.T) {
	_, _, err := Fragments(1, 0, make([]byte, 256*100), 100, nil, func([]byte) error { return nil })
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("%v, want ErrTooLarge", err)
	}
	if _, _, err := Fragments(1<<60, 1<<60, make([]byte, 100), 10, nil, func([]byte) error { return nil }); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("no room: %v", err)
	}
}

// A lost fragment loses its datagram and nothing else: later datagrams
// complete at once, and the incomplete one is evicted within MaxPartial more.
func TestLostFragmentDropsOnlyItsDatagram(t *testing.T) {
	r := NewReassembler(64 << 10)
	dropped := 0
	for seq := range uint64(10) {
		dgs := fragmentAll(t, 1, seq, bytes.Repeat([]byte{byte(seq)}, 3000), 1200)
		if seq == 2 {
			dgs = dgs[1:] // its first fragment is lost
		}
		var whole []byte
		for _, d := range dgs {
			h, p, _ := Parse(d)
			w, n := r.Add(h, p)
			dropped += n
			if w != nil {
				whole = w
			}
		}
		if seq == 2 {
			if whole != nil {
				t.Fatal("a datagram missing a fragment was rebuilt")
			}
			continue
		}
		if len(whole) != 3000 || whole[0] != byte(seq) {
			t.Fatalf("datagram %d not rebuilt at once", seq)
		}
	}
	if dropped != 0 || r.Pending() != 1 {
		t.Fatalf("dropped %d, pending %d: with free slots nothing is evicted", dropped, r.Pending())
	}
	// Interleaved starts fill the slots: the incomplete one goes first.
	for seq := uint64(10); seq < 10+MaxPartial; seq++ {
		d := fragmentAll(t, 1, seq, make([]byte, 3000), 1200)[0]
		h, p, _ := Parse(d)
		_, n := r.Add(h, p)
		dropped += n
	}
	if dropped != 1 || r.Pending() != MaxPartial {
		t.Fatalf("dropped %d, pending %d", dropped, r.Pending())
	}
}

// An attacker's fragments cannot make the reassembler hold more than
// MaxPartial datagrams of maxSize, nor rebuild a larger one.
func TestReassemblerBounded(t *testing.T) {
	const maxSize = 4000
	r := NewReassembler(maxSize)
	rng := rand.New(rand.NewPCG(3, 4))
	piece := make([]byte, 1000)
	for range 100000 {
		h := Header{Flow: 1, Count: uint8(2 + rng.IntN(254)), Seq: rng.Uint64N(1000)}
		h.Index = uint8(rng.IntN(int(h.Count)))
		if w, _ := r.Add(h, piece); len(w) > maxSize {
			t.Fatalf("rebuilt %d bytes, max %d", len(w), maxSize)
		}
		held := 0
		for i := range r.slots {
			held += r.slots[i].size
		}
		if held > MaxPartial*maxSize || r.Pending() > MaxPartial {
			t.Fatalf("holds %d bytes in %d datagrams", held, r.Pending())
		}
	}
	// Too large from its fragments' sizes: dropped, not rebuilt.
	r = NewReassembler(maxSize)
	for i := range uint8(5) {
		if w, _ := r.Add(Header{Flow: 1, Count: 5, Seq: 1, Index: i}, piece); w != nil {
			t.Fatalf("rebuilt %d bytes past the limit", len(w))
		}
	}
}

// A late fragment of a long-gone datagram is dropped, not given a slot.
func TestStaleFragmentDropped(t *testing.T) {
	r := NewReassembler(64 << 10)
	r.Add(Header{Flow: 1, Count: 2, Seq: 1000, Index: 0}, []byte("a"))
	if _, n := r.Add(Header{Flow: 1, Count: 2, Seq: 1000 - StaleWindow - 1, Index: 0}, []byte("b")); n != 1 || r.Pending() != 1 {
		t.Fatalf("stale fragment: dropped %d, pending %d", n, r.Pending())
	}
}

// Forward flows (client streams) and reverse flows (server streams) of one
// session never share a number, even at the largest stream IDs, and both
// encode as varints.
func TestFlowNumbersOfBothDirectionsApart(t *testing.T) {
	const maxID = 1<<62 - 1
	forward := map[uint64]bool{}
	for _, id := range []uint64{0, 4, 8, 1 << 20, maxID &^ 3} {
		n := FlowNumber(id)
		if n != id/4 || n >= ReverseFlowBase {
			t.Fatalf("client stream %d: flow %d", id, n)
		}
		forward[n] = true
	}
	for _, id := range []uint64{1, 5, 9, 1<<20 + 1, maxID&^3 + 1} {
		n := FlowNumber(id)
		if n != ReverseFlowBase+id/4 || forward[n] {
			t.Fatalf("server stream %d: flow %d meets a forward flow", id, n)
		}
		h := Header{Flow: n, Count: 1}
		got, _, err := Parse(AppendHeader(nil, h))
		if err != nil || got != h || HeaderLen(h) != 9 {
			t.Fatalf("server stream %d: flow %d parsed %+v %v, header %d bytes", id, n, got, err, HeaderLen(h))
		}
	}
	// Stream 1 and stream 4's quarter IDs are 0 and 1; stream 5's is stream 4's.
	if FlowNumber(5) == FlowNumber(4) || FlowNumber(1) == FlowNumber(0) {
		t.Fatal("a reverse flow meets a forward flow")
	}
}
