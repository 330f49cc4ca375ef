package fecframe

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

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

func TestFeedbackRoundTrip(t *testing.T) {
	fb := Feedback{
		EchoTimestamp: 1, EchoDelay: 2, Received: 3, Sampled: 8, Lost: 4, Bursts: 5, CongestionLost: 6, Unrepaired: 7, Flags: FeedbackTrained | 0x80,
	}
	b := AppendFeedback(nil, fb)
	if len(b) != FeedbackLen {
		t.Fatalf("feedback of %d bytes, want %d", len(b), FeedbackLen)
	}
	f, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != TypeFeedback {
		t.Fatalf("type %v", f.Type)
	}
	got := f.Feedback
	if got.EchoTimestamp != 1 || got.EchoDelay != 2 || got.Received != 3 || got.Sampled != 8 || got.Lost != 4 ||
		got.Bursts != 5 || got.CongestionLost != 6 || got.Unrepaired != 7 || got.Flags != FeedbackTrained|0x80 {
		t.Fatalf("counters %+v", got)
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
	for _, typ := range []Type{TypeFeedback, TypeHello, TypeHelloAck, TypeSource, TypeRepair} {
		if b := firstByte(typ); b&0xc0 != 0 {
			t.Fatalf("%v frames start with %#02x, which quic-go would not drop", typ, b)
		}
	}
	if IsFramed(nil) {
		t.Fatal("an empty datagram is not framed")
	}
}

func TestDecodeRejects(t *testing.T) {
	data := make([]byte, DataHeaderLen+3)
	PutSource(data, Source{Seq: 1}, 3)
	fb := AppendFeedback(nil, Feedback{Received: 1})
	bigData := make([]byte, DataHeaderLen+MaxPayload+1)
	PutSource(bigData, Source{}, MaxPayload+1)
	repair := make([]byte, RepairHeaderLen+MaxShardLen+1)
	PutRepair(repair, Repair{Count: 1})
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
		{"source short", data[:10], "shorter than its header"},
		{"source truncated", data[:len(data)-1], "says 3 payload bytes but carries 2"},
		{"source trailing", append(append([]byte(nil), data...), 0), "says 3 payload bytes but carries 4"},
		{"source too big", bigData, "exceeds the limit"},
		{"repair too big", repair, "exceeds the limit"},
		{"data of version 3", []byte{0x01, 0, 0}, "unknown frame type 1"},
		{"parity of version 3", []byte{0x02, 0, 0}, "unknown frame type 2"},
		{"feedback short", fb[:FeedbackLen-1], "want 42"},
		{"feedback with NACKs", append(append([]byte(nil), fb...), 1, 2, 3, 4), "want 42"},
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
	fb := AppendFeedback(nil, Feedback{Received: 11})
	for _, b := range [][]byte{source, repair, fb} {
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

func TestDecodeAllocatesNothing(t *testing.T) {
	b := make([]byte, DataHeaderLen+1200)
	PutSource(b, Source{Seq: 1}, 1200)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := Decode(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Decode allocates %v times per datagram", allocs)
	}
}

func BenchmarkDecodeSource(b *testing.B) {
	d := make([]byte, DataHeaderLen+1280)
	PutSource(d, Source{Seq: 1}, 1280)
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		if _, err := Decode(d); err != nil {
			b.Fatal(err)
		}
	}
}
