package fecframe

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestDataRoundTrip(t *testing.T) {
	payload := []byte("a QUIC packet, more or less")
	h := Data{Seq: 0xfffffffe, Group: 0xabcdef, Index: 200, Timestamp: 123456789}
	b, err := AppendData(nil, h, payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != DataHeaderLen+len(payload) {
		t.Fatalf("len %d, want %d", len(b), DataHeaderLen+len(payload))
	}
	if !IsFramed(b) {
		t.Fatal("a data frame is not recognised as framed")
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeData || f.Seq != h.Seq || f.Group != h.Group || f.Index != h.Index || f.Timestamp != h.Timestamp {
		t.Fatalf("decoded %+v, want %+v", f, h)
	}
	if !bytes.Equal(f.Payload, payload) {
		t.Fatalf("payload %q", f.Payload)
	}
	// The coded shard is the length field followed by the payload.
	shard := b[DataShardOffset:]
	if int(shard[0])<<8|int(shard[1]) != len(payload) || !bytes.Equal(shard[2:], payload) {
		t.Fatalf("shard %x does not start with the payload length", shard)
	}
}

func TestSourceAndRepairRoundTrip(t *testing.T) {
	payload := []byte("a QUIC packet")
	b := make([]byte, DataHeaderLen+len(payload))
	PutSource(b, Source{Seq: 1, SSN: 0xfffffff0, Timestamp: 3}, len(payload))
	copy(b[DataHeaderLen:], payload)
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeSource || f.Seq != 1 || f.SSN != 0xfffffff0 || f.Timestamp != 3 || !bytes.Equal(f.Payload, payload) {
		t.Fatalf("decoded %+v", f)
	}
	// A source's coded shard is laid out as a data datagram's.
	if shard := b[DataShardOffset:]; int(shard[0])<<8|int(shard[1]) != len(payload) {
		t.Fatalf("shard %x does not start with the payload length", shard)
	}
	shard := []byte{0, 2, 7, 7}
	b = make([]byte, RepairHeaderLen+len(shard))
	PutRepair(b, Repair{Seq: 4, Timestamp: 5, First: 6, Count: 256})
	copy(b[RepairHeaderLen:], shard)
	f, err = Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeRepair || f.Seq != 4 || f.Timestamp != 5 || f.First != 6 || f.Count != 256 || !bytes.Equal(f.Payload, shard) {
		t.Fatalf("decoded %+v", f)
	}
	for _, bad := range []Repair{{Count: 0}, {Count: MaxRepairCount + 1}} {
		PutRepair(b, bad)
		if _, err := Decode(b); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "repair over") {
			t.Fatalf("count %d: error %v", bad.Count, err)
		}
	}
	if _, err := Decode(b[:RepairHeaderLen+1]); err == nil {
		t.Fatal("a repair without a shard was accepted")
	}
}

func TestPutDataMatchesAppend(t *testing.T) {
	payload := bytes.Repeat([]byte{7}, 1200)
	h := Data{Seq: 1, Group: 2, Index: 3, Timestamp: 4}
	want, err := AppendData(nil, h, payload)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, DataHeaderLen+len(payload))
	copy(got[DataHeaderLen:], payload)
	PutData(got, h, len(payload))
	if !bytes.Equal(got, want) {
		t.Fatal("PutData and AppendData disagree")
	}
}

func TestParityRoundTrip(t *testing.T) {
	shard := bytes.Repeat([]byte{0x5a}, 1300)
	h := Parity{Seq: 9, Group: 77, Index: 2, Timestamp: 5, K: 20, N: 13, M: 4, Depth: 3}
	b, err := AppendParity(nil, h, shard)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	got := Parity{Seq: f.Seq, Group: f.Group, Index: f.Index, Timestamp: f.Timestamp, K: f.K, N: f.N, M: f.M, Depth: f.Depth}
	if f.Type != TypeParity || got != h {
		t.Fatalf("decoded %+v, want %+v", got, h)
	}
	if !bytes.Equal(f.Payload, shard) {
		t.Fatal("shard differs")
	}
}

func TestFeedbackRoundTrip(t *testing.T) {
	fb := Feedback{
		EchoTimestamp: 1, EchoDelay: 2, Received: 3, Sampled: 8, Lost: 4, Bursts: 5, CongestionLost: 6, Unrepaired: 7, Flags: FeedbackTrained | 0x80,
		NACKs: []NACK{{Group: 0xffffff, Index: 0}, {Group: 12, Index: 254}},
	}
	b, err := AppendFeedback(nil, fb)
	if err != nil {
		t.Fatal(err)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeFeedback {
		t.Fatalf("type %v", f.Type)
	}
	got := f.Feedback
	if f.NACKCount() != len(fb.NACKs) {
		t.Fatalf("%d NACKs, want %d", f.NACKCount(), len(fb.NACKs))
	}
	for i := range f.NACKCount() {
		got.NACKs = append(got.NACKs, f.NACK(i))
	}
	if got.EchoTimestamp != 1 || got.EchoDelay != 2 || got.Received != 3 || got.Sampled != 8 || got.Lost != 4 ||
		got.Bursts != 5 || got.CongestionLost != 6 || got.Unrepaired != 7 || got.Flags != FeedbackTrained|0x80 {
		t.Fatalf("counters %+v", got)
	}
	for i := range fb.NACKs {
		if got.NACKs[i] != fb.NACKs[i] {
			t.Fatalf("NACK %d = %+v, want %+v", i, got.NACKs[i], fb.NACKs[i])
		}
	}
}

func TestHelloRoundTrip(t *testing.T) {
	for _, typ := range []Type{TypeHello, TypeHelloAck} {
		var b []byte
		if typ == TypeHello {
			b = AppendHello(nil, 0x0102030405060708)
		} else {
			b = AppendHelloAck(nil, 0x0102030405060708, [KeyLen]byte{9, 8, 7})
		}
		f, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type != typ || f.Nonce != 0x0102030405060708 {
			t.Fatalf("%v: decoded %+v", typ, f)
		}
		if typ == TypeHelloAck && f.Key != [KeyLen]byte{9, 8, 7} {
			t.Fatalf("hello-ack key %x", f.Key)
		}
	}
}

// QUIC packets always have the fixed bit set and must never be taken for frames;
// frames must never look like QUIC long or short header packets.
func TestFramedIsDisjointFromQUIC(t *testing.T) {
	for b0 := range 256 {
		framed := IsFramed([]byte{byte(b0)})
		quic := b0&0x40 != 0
		if framed && quic {
			t.Fatalf("first byte %#02x is both framed and QUIC", b0)
		}
	}
	for _, typ := range []Type{TypeData, TypeParity, TypeFeedback, TypeHello, TypeHelloAck, TypeSource, TypeRepair} {
		if b := firstByte(typ); b&0xc0 != 0 {
			t.Fatalf("%v frames start with %#02x, which quic-go would not drop", typ, b)
		}
	}
	if IsFramed(nil) {
		t.Fatal("an empty datagram is not framed")
	}
}

func TestDecodeRejects(t *testing.T) {
	data, _ := AppendData(nil, Data{Seq: 1}, []byte("xyz"))
	parity := func(h Parity) []byte {
		b := make([]byte, ParityHeaderLen+10)
		PutParity(b, h)
		return b
	}
	fb, _ := AppendFeedback(nil, Feedback{NACKs: []NACK{{1, 1}}})
	tooManyNACKs := append([]byte(nil), fb[:FeedbackBaseLen]...)
	tooManyNACKs[FeedbackBaseLen-TagLen-1] = MaxNACKs + 1
	badIndex := append([]byte(nil), data...)
	badIndex[8] = 255
	bigData := make([]byte, DataHeaderLen+MaxPayload+1)
	PutData(bigData, Data{}, MaxPayload+1)
	tests := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "empty"},
		{"quic short header", []byte{0x40, 1, 2}, "QUIC packet"},
		{"quic long header", []byte{0xc0, 1, 2}, "QUIC packet"},
		{"version 1", []byte{0x11}, "version 1, want 4"},
		{"version 2", []byte{0x21}, "version 2"},
		{"version 3", []byte{0x36, 1, 2}, "version 3"},
		{"unknown type", []byte{0x0f}, "unknown frame type"},
		{"data short", data[:10], "shorter than its header"},
		{"data truncated", data[:len(data)-1], "says 3 payload bytes but carries 2"},
		{"data trailing", append(append([]byte(nil), data...), 0), "says 3 payload bytes but carries 4"},
		{"data too big", bigData, "exceeds the limit"},
		{"data index", badIndex, "no room for parity"},
		{"parity short", parity(Parity{K: 1, N: 1, M: 1, Depth: 1})[:ParityHeaderLen+1], "shorter than its header"},
		{"parity k 0", parity(Parity{K: 0, N: 0, M: 1, Depth: 1}), "k is 0"},
		{"parity m 0", parity(Parity{K: 4, N: 4, M: 0, Depth: 1}), "m is 0"},
		{"parity n 0", parity(Parity{K: 4, N: 0, M: 1, Depth: 1}), "n 0 is outside"},
		{"parity n > k", parity(Parity{K: 4, N: 5, M: 1, Depth: 1}), "n 5 is outside"},
		{"parity k+m", parity(Parity{K: 200, N: 200, M: 57, Depth: 1}), "exceeds 256"},
		{"parity index", parity(Parity{K: 4, N: 4, M: 2, Index: 2}), "parity index 2"},
		{"parity depth 0", parity(Parity{K: 4, N: 4, M: 2}), "depth 0"},
		{"parity depth", parity(Parity{K: 4, N: 4, M: 2, Depth: MaxDepth + 1}), "depth 17"},
		{"parity too big", append(parity(Parity{K: 4, N: 4, M: 2, Depth: 1}), make([]byte, MaxShardLen)...), "exceeds the limit"},
		{"feedback short", fb[:FeedbackBaseLen-1], "shorter than"},
		{"feedback truncated NACK", fb[:len(fb)-1], "says 1 NACKs"},
		{"feedback too many NACKs", tooManyNACKs, "exceed the limit"},
		{"hello short", AppendHello(nil, 1)[:HelloLen-1], "want 9"},
		{"hello-ack long", append(AppendHelloAck(nil, 1, [KeyLen]byte{}), 0), "want 25"},
		{"hello-ack of version 3", []byte{0x05, 0, 0, 0, 0, 0, 0, 0, 1}, "want 25"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.b)
			if err == nil {
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

// TestTagger: a sealed frame passes its key's check and no other key's; a change
// to any byte the tag covers fails it; the payload is outside the tag (quic-go
// authenticates it); frames without a tag never pass.
func TestTagger(t *testing.T) {
	key, other := [KeyLen]byte{1}, [KeyLen]byte{2}
	tg, wrong := NewTagger(key), NewTagger(other)
	source := make([]byte, DataHeaderLen+4)
	PutSource(source, Source{Seq: 1, SSN: 2, Timestamp: 3}, 4)
	repair := make([]byte, RepairHeaderLen+6)
	PutRepair(repair, Repair{Seq: 4, Timestamp: 5, First: 6, Count: 7})
	data, _ := AppendData(nil, Data{Seq: 8, Group: 9}, []byte("abcd"))
	parity, _ := AppendParity(nil, Parity{Seq: 10, K: 4, N: 4, M: 2, Depth: 1}, []byte{0, 4, 1, 2, 3, 4})
	fb, _ := AppendFeedback(nil, Feedback{Received: 11, NACKs: []NACK{{Group: 12, Index: 1}}})
	for _, b := range [][]byte{source, repair, data, parity, fb} {
		name := Type(b[0] & 0x0f).String()
		if tg.Check(b) {
			t.Fatalf("%s: an unsealed frame passes", name)
		}
		tg.Seal(b)
		if !tg.Check(b) || wrong.Check(b) {
			t.Fatalf("%s: sealed frame: own key %v, other key %v", name, tg.Check(b), wrong.Check(b))
		}
		if _, err := Decode(b); err != nil {
			t.Fatalf("%s: sealed frame does not decode: %v", name, err)
		}
		signed, _ := TagSpan(b)
		for i := range signed {
			c := append([]byte(nil), b...)
			c[i] ^= 0x10
			if tg.Check(c) {
				t.Fatalf("%s: a change at byte %d passes", name, i)
			}
		}
	}
	tail := append([]byte(nil), source...)
	tail[len(tail)-1] ^= 1
	if !tg.Check(tail) {
		t.Fatal("a source's payload is covered by the tag, not left to quic-go")
	}
	for _, b := range [][]byte{AppendHello(nil, 1), AppendHelloAck(nil, 1, key), nil} {
		if tg.Check(b) {
			t.Fatalf("%x has no tag but passes", b)
		}
	}
}

func TestEncodeRejects(t *testing.T) {
	if _, err := AppendData(nil, Data{}, make([]byte, MaxPayload+1)); err == nil {
		t.Fatal("oversized payload accepted")
	}
	if _, err := AppendData(nil, Data{Group: 1 << 24}, nil); err == nil {
		t.Fatal("25-bit group accepted")
	}
	if _, err := AppendParity(nil, Parity{K: 1, N: 1, M: 1, Depth: 1}, []byte{0}); err == nil {
		t.Fatal("1-byte shard accepted")
	}
	if _, err := AppendParity(nil, Parity{K: 0, N: 1, M: 1, Depth: 1}, []byte{0, 0}); err == nil {
		t.Fatal("k=0 accepted")
	}
	if _, err := AppendFeedback(nil, Feedback{NACKs: make([]NACK, MaxNACKs+1)}); err == nil {
		t.Fatal("too many NACKs accepted")
	}
	if _, err := AppendFeedback(nil, Feedback{NACKs: []NACK{{Group: 1 << 24}}}); err == nil {
		t.Fatal("25-bit NACK group accepted")
	}
}

func TestDecodeAllocatesNothing(t *testing.T) {
	b, _ := AppendData(nil, Data{Seq: 1}, make([]byte, 1200))
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Decode(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Decode allocates %v times per datagram", allocs)
	}
}

func BenchmarkDecodeData(b *testing.B) {
	d, _ := AppendData(nil, Data{Seq: 1}, make([]byte, 1280))
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		if _, err := Decode(d); err != nil {
			b.Fatal(err)
		}
	}
}
