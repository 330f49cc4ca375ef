package socks

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// udpDatagram is a relayed datagram as a client builds it.
func udpDatagram(frag, atyp byte, addr []byte, port uint16, data string) []byte {
	b := []byte{0, 0, frag, atyp}
	if atyp == AtypDomain {
		b = append(b, byte(len(addr)))
	}
	b = append(append(b, addr...), byte(port>>8), byte(port))
	return append(b, data...)
}

func TestParseUDP(t *testing.T) {
	v6 := netip.MustParseAddr("2001:db8::53").AsSlice()
	for _, c := range []struct {
		name    string
		in      []byte
		target  string
		data    string
		wantErr error
	}{
		{name: "ipv4", in: udpDatagram(0, AtypIPv4, []byte{127, 0, 0, 1}, 53, "query"), target: "127.0.0.1:53", data: "query"},
		{name: "ipv6", in: udpDatagram(0, AtypIPv6, v6, 5353, "q"), target: "[2001:db8::53]:5353", data: "q"},
		{name: "name", in: udpDatagram(0, AtypDomain, []byte("dns.internal"), 53, "q"), target: "dns.internal:53", data: "q"},
		{name: "no data", in: udpDatagram(0, AtypIPv4, []byte{10, 0, 0, 1}, 1, ""), target: "10.0.0.1:1"},
		{name: "fragment", in: udpDatagram(1, AtypIPv4, []byte{127, 0, 0, 1}, 53, "q"), wantErr: ErrUDPFragment},
		{name: "last fragment", in: udpDatagram(0x81, AtypIPv4, []byte{127, 0, 0, 1}, 53, "q"), wantErr: ErrUDPFragment},
		{name: "rsv set", in: append([]byte{0, 1}, udpDatagram(0, AtypIPv4, []byte{127, 0, 0, 1}, 53, "q")[2:]...), wantErr: ErrUDPHeader},
		{name: "port 0", in: udpDatagram(0, AtypIPv4, []byte{127, 0, 0, 1}, 0, "q"), wantErr: ErrUDPHeader},
		{name: "address type 2", in: udpDatagram(0, 2, []byte{127, 0, 0, 1}, 53, "q"), wantErr: ErrUDPHeader},
		{name: "empty name", in: udpDatagram(0, AtypDomain, nil, 53, "q"), wantErr: ErrUDPHeader},
		{name: "name with a colon", in: udpDatagram(0, AtypDomain, []byte("a:1"), 53, "q"), wantErr: ErrUDPHeader},
		{name: "cut in the address", in: udpDatagram(0, AtypIPv6, v6, 53, "")[:12], wantErr: ErrUDPHeader},
		{name: "cut in the port", in: udpDatagram(0, AtypIPv4, []byte{1, 2, 3, 4}, 53, "")[:9], wantErr: ErrUDPHeader},
		{name: "cut in the name", in: []byte{0, 0, 0, AtypDomain, 20, 'a', 'b'}, wantErr: ErrUDPHeader},
		{name: "name length only", in: []byte{0, 0, 0, AtypDomain}, wantErr: ErrUDPHeader},
		{name: "too short", in: []byte{0, 0, 0}, wantErr: ErrUDPHeader},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, data, err := ParseUDP(c.in)
			if c.wantErr != nil {
				if !errors.Is(err, c.wantErr) {
					t.Fatalf("error %v, want %v", err, c.wantErr)
				}
				return
			}
			if err != nil || h.Target() != c.target || string(data) != c.data {
				t.Fatalf("got %+v %q %v, want %s %q", h, data, err, c.target, c.data)
			}
			// The answer's header is the request's, FRAG 0: the same bytes.
			if back := AppendUDPHeader(nil, h.Addr); !bytes.Equal(back, c.in[:len(c.in)-len(c.data)]) {
				t.Fatalf("header back %x, want %x", back, c.in[:len(c.in)-len(c.data)])
			}
		})
	}
}

// FuzzParseUDP: any bytes are a header and data or an error, never a panic;
// a parsed header is the datagram's start (its answer's header the same
// bytes), its target splits back to its host and a port that is not 0, and
// its host could travel in a token.
func FuzzParseUDP(f *testing.F) {
	f.Add(udpDatagram(0, AtypIPv4, []byte{127, 0, 0, 1}, 53, "query"))
	f.Add(udpDatagram(0, AtypIPv6, make([]byte, 16), 1, ""))
	f.Add(udpDatagram(0, AtypDomain, []byte("example.com"), 443, "x"))
	f.Add(udpDatagram(3, AtypIPv4, []byte{1, 2, 3, 4}, 1, "x"))
	f.Add([]byte{0, 0, 0, AtypDomain, 255})
	f.Fuzz(func(t *testing.T, in []byte) {
		h, data, err := ParseUDP(in)
		if err != nil {
			if !errors.Is(err, ErrUDPHeader) && !errors.Is(err, ErrUDPFragment) {
				t.Fatalf("error %v is neither kind", err)
			}
			return
		}
		hdr := AppendUDPHeader(nil, h.Addr)
		if len(hdr) > MaxUDPHeaderLen || !bytes.Equal(append(hdr, data...), in) {
			t.Fatalf("header %x and data %x are not the datagram %x", hdr, data, in)
		}
		host, port, err := net.SplitHostPort(h.Target())
		if err != nil || host != h.Host || port == "0" || h.Host == "" {
			t.Fatalf("target %q of %+v", h.Target(), h)
		}
		if strings.ContainsAny(h.Host, " /\\\x00") {
			t.Fatalf("host %q would not travel as an address", h.Host)
		}
	})
}
