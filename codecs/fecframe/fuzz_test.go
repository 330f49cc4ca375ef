package fecframe

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecode feeds arbitrary datagrams to the decoder: it must never panic, every
// rejection must wrap ErrMalformed, whatever it accepts must encode back to the
// same bytes (tag aside: the encoders leave it to Tagger), and a frame with a tag
// passes a Tagger's check once sealed and fails it with any covered byte changed.
func FuzzDecode(f *testing.F) {
	fb := AppendFeedback(nil, Feedback{Received: 10, Lost: 1})
	source := make([]byte, DataHeaderLen+3)
	PutSource(source, Source{Seq: 8, SSN: 9, Timestamp: 10}, 3)
	repair := make([]byte, RepairHeaderLen+5)
	PutRepair(repair, Repair{Seq: 11, Timestamp: 12, First: 13, Count: 14})
	for _, seed := range [][]byte{fb, source, repair, AppendHello(nil, 42), AppendHelloAck(nil, 42, [KeyLen]byte{1}), {0x40}, {}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var again []byte
		switch fr.Type {
		case TypeSource:
			again = make([]byte, DataHeaderLen+len(fr.Payload))
			PutSource(again, Source{Seq: fr.Seq, SSN: fr.SSN, Timestamp: fr.Timestamp}, len(fr.Payload))
			copy(again[DataHeaderLen:], fr.Payload)
		case TypeRepair:
			again = make([]byte, RepairHeaderLen+len(fr.Payload))
			PutRepair(again, Repair{Seq: fr.Seq, Timestamp: fr.Timestamp, First: fr.First, Count: fr.Count})
			copy(again[RepairHeaderLen:], fr.Payload)
		case TypeFeedback:
			again = AppendFeedback(nil, fr.Feedback)
		case TypeHello:
			again = AppendHello(nil, fr.Nonce)
		case TypeHelloAck:
			again = AppendHelloAck(nil, fr.Nonce, fr.Key)
		default:
			t.Fatalf("accepted unknown type %v", fr.Type)
		}
		if err != nil {
			t.Fatalf("decoded %+v but cannot encode it: %v", fr, err)
		}
		if _, tag := TagSpan(b); tag != nil {
			_, into := TagSpan(again)
			copy(into, tag)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", b, again)
		}
		if signed, _ := TagSpan(again); signed != nil {
			tg := NewTagger([KeyLen]byte{7})
			tg.Seal(again)
			if !tg.Check(again) {
				t.Fatal("a sealed frame fails its check")
			}
			again[len(signed)-1] ^= 0x80
			if tg.Check(again) {
				t.Fatal("a changed header passes the check")
			}
		}
	})
}
