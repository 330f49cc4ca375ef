// Package fecframe is the datagram framing of quictun's loss-recovery layer.
//
// The recovery layer sits between quic-go and the UDP socket. It numbers the datagrams
// it carries, adds repair datagrams computed over them (a sliding-window code) and
// exchanges small control datagrams with its peer. This package is the byte format, and the tag that
// authenticates a frame; the coding and all policy live in package recovery.
//
// Every framed datagram starts with one byte 0b00vv_tttt: the two top bits are clear,
// vv is the version and tttt the frame type. A QUIC packet always has the fixed bit
// 0x40 set, so a receiver tells framed datagrams from plain QUIC packets by that byte
// alone, and plain quic-go, which treats a datagram with both top bits clear as
// "not QUIC", silently drops a framed datagram it does not understand. That is what
// makes negotiation by first datagram safe against peers without this layer.
//
// All integers are big-endian.
//
//	Source   = b0 seq:u32 ssn:u32 ts:u32 tag[8] len:u16 payload[len]
//	Repair   = b0 seq:u32 ts:u32 first:u32 count:u16 tag[8] shard[...]
//	Hello    = b0 nonce:u64
//	HelloAck = b0 nonce:u64 key[16]
//	Feedback = b0 echoTs:u32 echoDelay:u32 received:u32 sampled:u32 lost:u32 bursts:u32
//	           congestionLost:u32 unrepaired:u32 flags:u8 tag[8]
//
// seq numbers every Source and Repair of one direction, so the receiver can count
// losses and bursts. ts is the sender's clock in microseconds
// (wrapping), from which the receiver follows queueing delay and the sender, through
// the echo in Feedback, the round-trip time.
//
// Source and Repair are the sliding-window code's frames (package recovery,
// rlc.go): ssn numbers the sources of one direction, and a repair is a combination
// of the count sources from first, its seq naming the coefficients. A source's
// coded shard is its len field plus payload (the bytes from DataShardOffset on),
// zero-padded to the repair's length, so the receiver hands a received datagram to
// the decoder without copying it.
//
// Feedback flags say what the receiver has done for the sender; a receiver sets only
// the bits it knows and a sender ignores the others. FeedbackTrained: the receiver
// has taught the sending quic-go connection to tolerate late repairs (see package
// recovery), so the sender may code over longer spans.
//
// Tags. A Hello offers the framing with a nonce; the HelloAck that answers it echoes
// the nonce and carries a key, sent only to the address the Hello came from. Every
// other frame carries a tag: the first TagLen bytes of HMAC-SHA256 under that key
// of the frame's bytes before the tag (its header: Tagger). Frames from A to B and
// B's Feedback about them are tagged with the key B gave A; the other direction
// uses the key A gave B. An off-path attacker sees neither key and cannot make a
// frame that passes; the tag leaves out the payload, which is a QUIC packet that
// quic-go authenticates itself, or a combination of such packets (an attacker who
// can alter payloads on the path can as well drop them).
//
// Version 2 added the flags byte, version 3 Source and Repair, version 4 the tags
// and the HelloAck's key, and dropped the block code's Data and Parity frames
// (types 1 and 2) and Feedback's NACKs. The two bits wrap: version 4 is written vv = 0 (no frame
// ever had vv = 0 before), and a version after it needs another byte. Peers of
// different versions drop each other's frames and so never agree to frame (they
// talk plain QUIC).
package fecframe

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// Version is the framing version this package speaks; on the wire it is
// Version & 3 (see the package doc).
const Version = 4

// Type is the kind of a framed datagram.
type Type uint8

// Frame types.
// Types 1 and 2 were the block code's Data and Parity, before version 4.
const (
	TypeFeedback Type = 3
	TypeHello    Type = 4
	TypeHelloAck Type = 5
	TypeSource   Type = 6
	TypeRepair   Type = 7
)

func (t Type) String() string {
	switch t {
	case TypeFeedback:
		return "feedback"
	case TypeHello:
		return "hello"
	case TypeHelloAck:
		return "hello-ack"
	case TypeSource:
		return "source"
	case TypeRepair:
		return "repair"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Sizes and limits.
const (
	// TagLen is the length of a frame's tag, KeyLen that of the key it is made with.
	TagLen = 8
	KeyLen = 16
	// DataHeaderLen is the number of bytes in front of a source's payload.
	DataHeaderLen = 23
	// DataShardOffset is where the coded shard (len field + payload) of a source
	// starts, right after its tag.
	DataShardOffset = 21
	// RepairHeaderLen is the number of bytes in front of a repair shard.
	RepairHeaderLen = 23
	// MaxRepairCount bounds the sources one repair combines.
	MaxRepairCount = 1024
	// HelloLen is the length of a Hello datagram, HelloAckLen of a HelloAck.
	HelloLen    = 9
	HelloAckLen = HelloLen + KeyLen
	// FeedbackLen is the length of a Feedback datagram.
	FeedbackLen = 42
	// MaxPayload bounds a source's payload. QUIC packets are far smaller
	// (quic-go sends at most 1452 bytes).
	MaxPayload = 1600
	// MaxShardLen bounds a coded shard: the 2-byte length plus MaxPayload.
	MaxShardLen = 2 + MaxPayload
	// MaxDatagramLen is the largest framed datagram this package produces.
	MaxDatagramLen = RepairHeaderLen + MaxShardLen
)

// ErrMalformed wraps every decoding failure caused by the peer's bytes.
var ErrMalformed = errors.New("malformed recovery frame")

// IsFramed reports whether a datagram is a framed recovery datagram rather than a
// QUIC packet: both top bits of the first byte clear.
func IsFramed(b []byte) bool { return len(b) > 0 && b[0]&0xc0 == 0 }

func firstByte(t Type) byte { return Version&3<<4 | byte(t) }

// Source is the header of a source datagram of the sliding-window code.
type Source struct {
	Seq       uint32
	SSN       uint32
	Timestamp uint32
}

// Repair is the header of a repair datagram of the sliding-window code: a
// combination of the sources First .. First+Count-1 whose coefficients its Seq
// names.
type Repair struct {
	Seq       uint32
	Timestamp uint32
	First     uint32
	Count     uint16
}

// Feedback is what a receiver tells the sender about the direction it receives.
// Counters are cumulative and wrap, so a lost Feedback datagram loses nothing but
// timeliness.
type Feedback struct {
	EchoTimestamp  uint32 // ts of the latest datagram received
	EchoDelay      uint32 // microseconds between receiving it and sending this
	Received       uint32 // data and parity datagrams received
	Sampled        uint32 // of those, received while the path queue was clear of congestion
	Lost           uint32 // datagrams seen missing while the queue was clear: random loss
	Bursts         uint32 // runs of consecutive random losses
	CongestionLost uint32 // datagrams seen missing while the path queue was full
	Unrepaired     uint32 // sources neither received nor rebuilt
	Flags          uint8  // FeedbackTrained; unknown bits are ignored
}

// Feedback flags.
const (
	// FeedbackTrained: the receiver has taught the sender's quic-go connection
	// that this path reorders, so repairs may arrive up to about a round trip late.
	FeedbackTrained uint8 = 1 << 0
)

// Frame is a decoded framed datagram. Payload aliases the decoded bytes.
type Frame struct {
	Type Type
	// Source and Repair.
	Seq       uint32
	Timestamp uint32
	// Source: SSN. Repair: First and Count.
	SSN, First uint32
	Count      uint16
	// Payload is a source's payload or a repair's coded shard.
	Payload  []byte
	Feedback Feedback
	// Hello and HelloAck.
	Nonce uint64
	// HelloAck: the key to tag frames to its sender with.
	Key [KeyLen]byte
}

// PutSource writes the header of a source datagram carrying payloadLen bytes
// into b[:DataHeaderLen], all but its tag. The caller places the payload at
// b[DataHeaderLen:].
func PutSource(b []byte, h Source, payloadLen int) {
	_ = b[DataHeaderLen-1]
	b[0] = firstByte(TypeSource)
	binary.BigEndian.PutUint32(b[1:], h.Seq)
	binary.BigEndian.PutUint32(b[5:], h.SSN)
	binary.BigEndian.PutUint32(b[9:], h.Timestamp)
	binary.BigEndian.PutUint16(b[DataShardOffset:], uint16(payloadLen))
}

// PutRepair writes the header of a repair datagram into b[:RepairHeaderLen], all
// but its tag. The caller places the shard at b[RepairHeaderLen:].
func PutRepair(b []byte, h Repair) {
	_ = b[RepairHeaderLen-1]
	b[0] = firstByte(TypeRepair)
	binary.BigEndian.PutUint32(b[1:], h.Seq)
	binary.BigEndian.PutUint32(b[5:], h.Timestamp)
	binary.BigEndian.PutUint32(b[9:], h.First)
	binary.BigEndian.PutUint16(b[13:], h.Count)
}

// AppendFeedback appends a feedback datagram to b, with a zero tag.
func AppendFeedback(b []byte, f Feedback) []byte {
	b = append(b, firstByte(TypeFeedback))
	b = binary.BigEndian.AppendUint32(b, f.EchoTimestamp)
	b = binary.BigEndian.AppendUint32(b, f.EchoDelay)
	b = binary.BigEndian.AppendUint32(b, f.Received)
	b = binary.BigEndian.AppendUint32(b, f.Sampled)
	b = binary.BigEndian.AppendUint32(b, f.Lost)
	b = binary.BigEndian.AppendUint32(b, f.Bursts)
	b = binary.BigEndian.AppendUint32(b, f.CongestionLost)
	b = binary.BigEndian.AppendUint32(b, f.Unrepaired)
	b = append(b, f.Flags)
	var tag [TagLen]byte
	return append(b, tag[:]...)
}

// AppendHello appends a Hello datagram to b.
func AppendHello(b []byte, nonce uint64) []byte {
	b = append(b, firstByte(TypeHello))
	return binary.BigEndian.AppendUint64(b, nonce)
}

// AppendHelloAck appends a HelloAck datagram to b: the answer to a Hello with
// nonce, giving its sender the key to tag its frames with.
func AppendHelloAck(b []byte, nonce uint64, key [KeyLen]byte) []byte {
	b = append(b, firstByte(TypeHelloAck))
	b = binary.BigEndian.AppendUint64(b, nonce)
	return append(b, key[:]...)
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// Decode parses one framed datagram. It never panics; every rejection wraps
// ErrMalformed and names what was wrong. Payload aliases b.
func Decode(b []byte) (Frame, error) {
	var f Frame
	if len(b) == 0 {
		return f, malformed("empty datagram")
	}
	if !IsFramed(b) {
		return f, malformed("first byte %#02x is a QUIC packet, not a frame", b[0])
	}
	if v := b[0] >> 4; v != Version&3 {
		return f, malformed("version %d, want %d", v, Version)
	}
	f.Type = Type(b[0] & 0x0f)
	switch f.Type {
	case TypeSource:
		if len(b) < DataHeaderLen {
			return f, malformed("%s frame of %d bytes is shorter than its header", f.Type, len(b))
		}
		f.Seq = binary.BigEndian.Uint32(b[1:])
		f.Timestamp = binary.BigEndian.Uint32(b[9:])
		n := int(binary.BigEndian.Uint16(b[DataShardOffset:]))
		if n > MaxPayload {
			return f, malformed("%s payload of %d bytes exceeds the limit of %d", f.Type, n, MaxPayload)
		}
		if len(b) != DataHeaderLen+n {
			return f, malformed("%s frame says %d payload bytes but carries %d", f.Type, n, len(b)-DataHeaderLen)
		}
		f.Payload = b[DataHeaderLen:]
		f.SSN = binary.BigEndian.Uint32(b[5:])
	case TypeRepair:
		if len(b) < RepairHeaderLen+2 {
			return f, malformed("repair frame of %d bytes is shorter than its header and shard", len(b))
		}
		f.Seq = binary.BigEndian.Uint32(b[1:])
		f.Timestamp = binary.BigEndian.Uint32(b[5:])
		f.First = binary.BigEndian.Uint32(b[9:])
		f.Count = binary.BigEndian.Uint16(b[13:])
		if f.Count == 0 || f.Count > MaxRepairCount {
			return f, malformed("repair over %d sources, want 1..%d", f.Count, MaxRepairCount)
		}
		if len(b)-RepairHeaderLen > MaxShardLen {
			return f, malformed("repair shard of %d bytes exceeds the limit of %d", len(b)-RepairHeaderLen, MaxShardLen)
		}
		f.Payload = b[RepairHeaderLen:]
	case TypeFeedback:
		if len(b) != FeedbackLen {
			return f, malformed("feedback frame of %d bytes, want %d", len(b), FeedbackLen)
		}
		fb := &f.Feedback
		fb.EchoTimestamp = binary.BigEndian.Uint32(b[1:])
		fb.EchoDelay = binary.BigEndian.Uint32(b[5:])
		fb.Received = binary.BigEndian.Uint32(b[9:])
		fb.Sampled = binary.BigEndian.Uint32(b[13:])
		fb.Lost = binary.BigEndian.Uint32(b[17:])
		fb.Bursts = binary.BigEndian.Uint32(b[21:])
		fb.CongestionLost = binary.BigEndian.Uint32(b[25:])
		fb.Unrepaired = binary.BigEndian.Uint32(b[29:])
		fb.Flags = b[33]
	case TypeHello:
		if len(b) != HelloLen {
			return f, malformed("%s frame of %d bytes, want %d", f.Type, len(b), HelloLen)
		}
		f.Nonce = binary.BigEndian.Uint64(b[1:])
	case TypeHelloAck:
		if len(b) != HelloAckLen {
			return f, malformed("%s frame of %d bytes, want %d", f.Type, len(b), HelloAckLen)
		}
		f.Nonce = binary.BigEndian.Uint64(b[1:])
		copy(f.Key[:], b[HelloLen:])
	default:
		return f, malformed("unknown frame type %d", uint8(f.Type))
	}
	return f, nil
}

// tagOffset is where the tag of a frame of type t and length n starts, -1 for a
// frame without one (Hello, HelloAck) or an unknown type.
func tagOffset(t Type, n int) int {
	switch t {
	case TypeSource:
		return DataShardOffset - TagLen
	case TypeRepair:
		return RepairHeaderLen - TagLen
	case TypeFeedback:
		return FeedbackLen - TagLen
	}
	return -1
}

// TagSpan splits a framed datagram into the bytes its tag covers and the tag. b
// must be one that Decode accepts, or one built by this package; for a frame
// without a tag (Hello, HelloAck) both are nil.
func TagSpan(b []byte) (signed, tag []byte) {
	if len(b) == 0 {
		return nil, nil
	}
	off := tagOffset(Type(b[0]&0x0f), len(b))
	if off < 0 || off+TagLen > len(b) {
		return nil, nil
	}
	return b[:off], b[off : off+TagLen]
}

// Tagger makes and checks the tags of frames under one key. It is not safe for
// concurrent use.
//
// HMAC-SHA256, truncated to TagLen bytes (RFC 2104, truncation as RFC 4868), over
// the frame's header: 0.2 us a frame on this project's machines (SHA extensions),
// where a keyed hash over the whole 1.4 KB datagram costs 1.1 us, as much as the
// rest of the layer. The standard library's HMAC is used because no SipHash is
// among the modules the project can fetch, and the header is too short for the
// difference to matter.
type Tagger struct {
	mac hash.Hash
	sum [sha256.Size]byte
}

// NewTagger returns a Tagger for key.
func NewTagger(key [KeyLen]byte) *Tagger { return &Tagger{mac: hmac.New(sha256.New, key[:])} }

func (t *Tagger) compute(signed []byte) []byte {
	t.mac.Reset()
	t.mac.Write(signed)
	return t.mac.Sum(t.sum[:0])[:TagLen]
}

// Seal writes the tag of the framed datagram b into it.
func (t *Tagger) Seal(b []byte) {
	signed, tag := TagSpan(b)
	if tag != nil {
		copy(tag, t.compute(signed))
	}
}

// Check reports whether the framed datagram b carries the tag of this key. A
// frame without a tag never does.
func (t *Tagger) Check(b []byte) bool {
	signed, tag := TagSpan(b)
	return tag != nil && hmac.Equal(tag, t.compute(signed))
}
