package sniff

import (
	"encoding/binary"
	"strconv"
)

// QUIC recognises a QUIC long-header packet (RFC 8999 and RFC 9000 section 17.2), which
// every QUIC connection opens with: the header form bit set, a version this sniffer knows
// (1, 2 of RFC 9369, the IETF drafts 0xff0000xx) with the fixed bit set, connection IDs
// of at most 20 bytes, and a packet length that fits the datagram (Initial, 0-RTT,
// Handshake) or room for a Retry's integrity tag; or a version negotiation (version 0)
// listing whole 4-byte versions. Short-header packets look random and are NotMine: a
// flow seen from its middle stays "udp".
//
// Properties: version ("1", "2", "draft-29"; none for a version negotiation).
type QUIC struct{}

// Name implements DatagramSniffer.
func (QUIC) Name() string { return "quic" }

const (
	quicVersion1 = 0x00000001
	quicVersion2 = 0x6b3343cf
	quicMaxCID   = 20
	quicRetryTag = 16
)

// SniffDatagram implements DatagramSniffer.
func (QUIC) SniffDatagram(d Datagram) Result {
	var p props
	b := d.Payload
	if len(b) < 7 || b[0]&0x80 == 0 {
		return p.result(NotMine, false)
	}
	version := binary.BigEndian.Uint32(b[1:])
	pos := 5
	var cidOK bool
	if pos, cidOK = quicSkipCID(b, pos); !cidOK {
		return p.result(NotMine, false)
	}
	if pos, cidOK = quicSkipCID(b, pos); !cidOK {
		return p.result(NotMine, false)
	}
	if version == 0 {
		rest := d.Size - pos
		if rest <= 0 || rest%4 != 0 {
			return p.result(NotMine, false)
		}
		return p.result(Match, true)
	}
	var name string
	// The long packet types: Initial, 0-RTT, Handshake, Retry (RFC 9369 permutes them).
	typ := b[0] >> 4 & 3
	initial, retry := typ == 0, typ == 3
	switch {
	case version == quicVersion1:
		name = "1"
	case version == quicVersion2:
		name = "2"
		initial, retry = typ == 1, typ == 0
	case version&0xffffff00 == 0xff000000 && version&0xff >= 22:
		name = "draft-" + strconv.Itoa(int(version&0xff))
	default:
		return p.result(NotMine, false)
	}
	if b[0]&0x40 == 0 {
		return p.result(NotMine, false)
	}
	if retry {
		if d.Size < pos+quicRetryTag+1 {
			return p.result(NotMine, false)
		}
		p.setString("version", name)
		return p.result(Match, true)
	}
	if initial {
		token, n, ok := quicVarint(b[pos:])
		switch {
		case !ok && len(b) < d.Size:
			// Cut off where DatagramPrefix ends: the header so far will do.
			p.setString("version", name)
			return p.result(Match, true)
		case !ok || token > uint64(d.Size):
			return p.result(NotMine, false)
		}
		pos += n + int(token)
	}
	if pos < len(b) {
		length, n, ok := quicVarint(b[pos:])
		switch {
		case !ok && len(b) == d.Size:
			return p.result(NotMine, false)
		case ok && (length == 0 || length > uint64(d.Size-pos-n)):
			return p.result(NotMine, false)
		}
	} else if pos >= d.Size {
		return p.result(NotMine, false)
	}
	p.setString("version", name)
	return p.result(Match, true)
}

// quicSkipCID steps over a connection ID (a length byte and at most 20 bytes).
func quicSkipCID(b []byte, pos int) (int, bool) {
	if pos >= len(b) || b[pos] > quicMaxCID || pos+1+int(b[pos]) > len(b) {
		return pos, false
	}
	return pos + 1 + int(b[pos]), true
}

// quicVarint reads a QUIC variable-length integer (RFC 9000 section 16).
func quicVarint(b []byte) (v uint64, n int, ok bool) {
	if len(b) == 0 {
		return 0, 0, false
	}
	n = 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0, false
	}
	v = uint64(b[0] & 0x3f)
	for _, c := range b[1:n] {
		v = v<<8 | uint64(c)
	}
	return v, n, true
}
