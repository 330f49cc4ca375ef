package sniff

import "encoding/binary"

// STUN recognises STUN messages (RFC 8489 section 5; also TURN's and ICE's): the two top
// bits zero, the magic cookie 0x2112A442 at bytes 4 to 7, and a message length that is a
// multiple of 4 and counts exactly what follows the 20-byte header.
//
// Properties: none.
type STUN struct{}

// Name implements DatagramSniffer.
func (STUN) Name() string { return "stun" }

const (
	stunHeaderLen   = 20
	stunMagicCookie = 0x2112A442
)

// SniffDatagram implements DatagramSniffer.
func (STUN) SniffDatagram(d Datagram) Result {
	var p props
	b := d.Payload
	if len(b) < stunHeaderLen || b[0]&0xc0 != 0 || binary.BigEndian.Uint32(b[4:]) != stunMagicCookie {
		return p.result(NotMine, false)
	}
	length := int(binary.BigEndian.Uint16(b[2:]))
	if length%4 != 0 || stunHeaderLen+length != d.Size {
		return p.result(NotMine, false)
	}
	return p.result(Match, true)
}
