// Package udpframe is the framing of UDP flows in QUIC datagrams (RFC 9221).
//
// A UDP flow rides on one bidirectional QUIC stream: the stream carries the
// flow's header (its target as the token, or for a reverse flow the bind
// address) and the answering endpoint's status, and its life is the flow's.
// The flow's datagrams travel as QUIC datagrams, each prefixed by the flow's
// number, which both ends derive from the stream's ID (FlowNumber), so that
// the receiver finds the flow without a table of its own:
//
//	Datagram = flow:varint count:u8 [seq:varint index:u8] payload
//
// count is the number of fragments of the application's datagram (1 to 255).
// A datagram that fits in one QUIC datagram has count 1 and its payload
// follows at once: two bytes of overhead for the first 64 flows' numbers
// below 64, three up to 16383. A larger one is cut in count fragments that
// share seq (a counter of the flow's fragmented datagrams, each direction
// its own) and carry their index (0 to count-1); the receiver rebuilds it
// once every fragment came (Reassembler) and drops it whole when one does
// not: nothing ever waits for a lost piece, so no datagram is held behind
// another (no head-of-line blocking).
//
// A forward flow's stream is one the client opened (IDs 0, 4, 8...) and its
// number is the ID divided by four, as RFC 9297's quarter stream ID. A
// reverse flow's stream is one the server opened (IDs 1, 5, 9...), whose ID
// over four is the same 0, 1, 2...: its number is ReverseFlowBase plus the ID
// over four. Stream IDs are below 2^62, so forward numbers stay below 2^60
// and the two never meet on one session; a reverse flow's datagrams pay for
// it with an 8-byte flow number (6 bytes more than a forward flow's first
// 16383).
//
// Flow 0 is no flow: a session's first stream is its hello, and the client
// endpoint's liveness probes (zeros) read as flow 0. Receivers drop it.
// Integers are QUIC varints (RFC 9000, 16).
package udpframe

import (
	"errors"
	"fmt"

	"github.com/quic-go/quic-go/quicvarint"
)

// MaxFragments is the most fragments one datagram is cut into.
const MaxFragments = 255

// MaxHeaderLen is the longest header: an 8-byte flow, the count, an 8-byte
// seq and the index.
const MaxHeaderLen = 8 + 1 + 8 + 1

// ErrMalformed wraps every decoding failure.
var ErrMalformed = errors.New("malformed UDP datagram frame")

// ErrTooLarge is a datagram that needs more than MaxFragments fragments.
var ErrTooLarge = errors.New("datagram too large to fragment")

// ReverseFlowBase is added to the ID over four of a server-opened stream.
const ReverseFlowBase = 1 << 60

// FlowNumber is the number of the flow carried beside the bidirectional
// stream streamID: ID/4 for a stream the client opened, ReverseFlowBase +
// ID/4 for one the server opened (the ID's low bit, RFC 9000 2.1).
func FlowNumber(streamID uint64) uint64 {
	if streamID&1 == 1 {
		return ReverseFlowBase + streamID/4
	}
	return streamID / 4
}

// Header is what precedes a datagram or a fragment of one.
type Header struct {
	Flow  uint64
	Count uint8  // fragments of the whole datagram; 1 for an unfragmented one
	Seq   uint64 // of a fragmented datagram (Count > 1)
	Index uint8  // of this fragment (Count > 1)
}

// Fragmented says whether the header is a fragment's.
func (h Header) Fragmented() bool { return h.Count > 1 }

// AppendHeader appends h's encoding to b.
func AppendHeader(b []byte, h Header) []byte {
	b = quicvarint.Append(b, h.Flow)
	b = append(b, h.Count)
	if h.Count > 1 {
		b = quicvarint.Append(b, h.Seq)
		b = append(b, h.Index)
	}
	return b
}

// HeaderLen is the length of h's encoding.
func HeaderLen(h Header) int {
	n := quicvarint.Len(h.Flow) + 1
	if h.Count > 1 {
		n += quicvarint.Len(h.Seq) + 1
	}
	return n
}

// Parse splits a QUIC datagram into its header and payload (a sub-slice of
// b). Flow 0 parses (the caller drops it); a fragment must carry payload.
func Parse(b []byte) (Header, []byte, error) {
	var h Header
	flow, n, err := quicvarint.Parse(b)
	if err != nil {
		return h, nil, fmt.Errorf("%w: flow number: %v", ErrMalformed, err)
	}
	h.Flow, b = flow, b[n:]
	if len(b) < 1 {
		return h, nil, fmt.Errorf("%w: no fragment count", ErrMalformed)
	}
	h.Count, b = b[0], b[1:]
	switch {
	case h.Count == 0:
		return h, nil, fmt.Errorf("%w: fragment count 0", ErrMalformed)
	case h.Count == 1:
		return h, b, nil
	}
	seq, n, err := quicvarint.Parse(b)
	if err != nil {
		return h, nil, fmt.Errorf("%w: fragment sequence: %v", ErrMalformed, err)
	}
	h.Seq, b = seq, b[n:]
	if len(b) < 1 {
		return h, nil, fmt.Errorf("%w: no fragment index", ErrMalformed)
	}
	h.Index, b = b[0], b[1:]
	if h.Index >= h.Count {
		return h, nil, fmt.Errorf("%w: fragment %d of %d", ErrMalformed, h.Index, h.Count)
	}
	if len(b) == 0 {
		return h, nil, fmt.Errorf("%w: empty fragment", ErrMalformed)
	}
	return h, b, nil
}

// Fragments cuts payload into QUIC datagrams of at most max bytes each and
// gives them to emit in order, built in scratch (grown as needed, returned for
// reuse): emit must copy what it keeps (quic-go's SendDatagram does). seq is
// used only when payload needs more than one datagram; fragmented reports
// whether it did, so the caller advances its counter. The fragments are of
// near equal size, so none is a sliver.
func Fragments(flow, seq uint64, payload []byte, max int, scratch []byte, emit func([]byte) error) (out []byte, fragmented bool, err error) {
	whole := Header{Flow: flow, Count: 1}
	if HeaderLen(whole)+len(payload) <= max {
		scratch = append(AppendHeader(scratch[:0], whole), payload...)
		return scratch, false, emit(scratch)
	}
	fh := Header{Flow: flow, Count: MaxFragments, Seq: seq, Index: MaxFragments - 1}
	room := max - HeaderLen(fh)
	if room <= 0 {
		return scratch, false, fmt.Errorf("%w: %d bytes per QUIC datagram leave no room", ErrTooLarge, max)
	}
	count := (len(payload) + room - 1) / room
	if count > MaxFragments {
		return scratch, false, fmt.Errorf("%w: %d bytes need %d fragments of %d (at most %d)", ErrTooLarge, len(payload), count, room, MaxFragments)
	}
	size := (len(payload) + count - 1) / count
	fh.Count = uint8(count)
	for i := range count {
		fh.Index = uint8(i)
		piece := payload[i*size : min((i+1)*size, len(payload))]
		scratch = append(AppendHeader(scratch[:0], fh), piece...)
		if err := emit(scratch); err != nil {
			return scratch, true, err
		}
	}
	return scratch, true, nil
}
