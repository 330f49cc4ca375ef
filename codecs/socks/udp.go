package socks

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"
)

// The header of a datagram relayed for a UDP association (RFC 1928 section
// 7): RSV (two zero bytes), FRAG, ATYP, DST.ADDR, DST.PORT, then the data.
// From the client it names where the data goes; back to the client it names
// where the answer came from.

// MaxUDPHeaderLen is the longest header: a 255-byte host name.
const MaxUDPHeaderLen = 3 + 1 + 1 + 255 + 2

var (
	// ErrUDPFragment is a datagram with FRAG set: one piece of a datagram
	// the client cut, which a relay may drop (RFC 1928 section 7), as this
	// package's callers do.
	ErrUDPFragment = errors.New("socks5: fragmented UDP datagram (FRAG is not 0)")
	// ErrUDPHeader is a datagram whose header is not one (cut, RSV not
	// zero, an unknown address type, a bad host name, port 0).
	ErrUDPHeader = errors.New("socks5: malformed UDP header")
)

// UDPHeader is a relayed datagram's header.
type UDPHeader struct {
	// Host is an IP address in text form or a host name, as the client sent it.
	Host string
	Port uint16
	// Addr is the header's ATYP, DST.ADDR and DST.PORT bytes as they came:
	// a destination's key, and what an answer from it is sent back with.
	Addr []byte
}

// Target is the header's HOST:PORT, IPv6 in brackets.
func (h UDPHeader) Target() string { return net.JoinHostPort(h.Host, strconv.Itoa(int(h.Port))) }

// ParseUDP reads a relayed datagram's header; it returns the header (whose
// Addr aliases b) and the data after it. A datagram with FRAG set is
// ErrUDPFragment, any other bad header ErrUDPHeader (wrapped with why).
func ParseUDP(b []byte) (UDPHeader, []byte, error) {
	bad := func(why string) (UDPHeader, []byte, error) {
		return UDPHeader{}, nil, errors.Join(ErrUDPHeader, errors.New(why))
	}
	if len(b) < 4 {
		return bad("shorter than a header")
	}
	if b[0] != 0 || b[1] != 0 {
		return bad("RSV is not zero")
	}
	if b[2] != 0 {
		return UDPHeader{}, nil, ErrUDPFragment
	}
	var h UDPHeader
	n := 4
	switch b[3] {
	case AtypIPv4, AtypIPv6:
		size := 4
		if b[3] == AtypIPv6 {
			size = 16
		}
		if len(b) < n+size+2 {
			return bad("cut in the address")
		}
		a, _ := netip.AddrFromSlice(b[n : n+size])
		h.Host = a.String()
		n += size
	case AtypDomain:
		if len(b) < n+1 || len(b) < n+1+int(b[n])+2 {
			return bad("cut in the host name")
		}
		name := string(b[n+1 : n+1+int(b[n])])
		if err := checkName(name); err != nil {
			return bad(err.Error())
		}
		h.Host = name
		n += 1 + int(b[n])
	default:
		return bad("address type " + strconv.Itoa(int(b[3])))
	}
	h.Port = binary.BigEndian.Uint16(b[n:])
	n += 2
	if h.Port == 0 {
		return bad("port 0")
	}
	h.Addr = b[3:n]
	return h, b[n:], nil
}

// AppendUDPHeader appends the header of a datagram to or from the address
// whose ATYP, DST.ADDR and DST.PORT bytes are addr (a UDPHeader's Addr).
func AppendUDPHeader(b, addr []byte) []byte {
	return append(append(b, 0, 0, 0), addr...)
}
