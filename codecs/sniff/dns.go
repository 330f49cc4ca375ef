package sniff

import (
	"encoding/binary"
	"strconv"
)

// DNS recognises DNS messages over UDP (RFC 1035 section 4.1) from one datagram: a header
// whose opcode is QUERY, NOTIFY or UPDATE, whose Z bit is clear, whose counts fit in the
// datagram (a resource record is at least 11 bytes), and one question that parses: labels
// of at most 63 bytes, no compression (nothing precedes the question to point at), a name
// of at most 255 bytes, a type other than 0 and a known class. A query asks one question
// and carries no answer or authority records (an EDNS OPT record and a TSIG may follow);
// a response echoes the question, or carries none (then the datagram is Undecided: a
// header alone proves little).
//
// Properties: name (the question's, dotted, "example.com.") and type ("A", "AAAA", or the
// number), from the first datagram that carries a question; then Done.
type DNS struct{}

// Name implements DatagramSniffer.
func (DNS) Name() string { return "dns" }

const (
	dnsHeaderLen = 12
	dnsMaxName   = 255 // bytes of a name on the wire, length bytes and the root's included
	dnsMinRR     = 11  // the root name, type, class, TTL and RDLENGTH
)

// SniffDatagram implements DatagramSniffer.
func (DNS) SniffDatagram(d Datagram) Result {
	var p props
	b := d.Payload
	if len(b) < dnsHeaderLen || d.Size < len(b) {
		return p.result(NotMine, false)
	}
	response := b[2]&0x80 != 0
	opcode := b[2] >> 3 & 0x0f
	truncated := b[2]&0x02 != 0
	zero := b[3]&0x40 == 0
	rcode := b[3] & 0x0f
	qd, an := binary.BigEndian.Uint16(b[4:]), binary.BigEndian.Uint16(b[6:])
	ns, ar := binary.BigEndian.Uint16(b[8:]), binary.BigEndian.Uint16(b[10:])
	switch {
	case !zero || opcode != 0 && opcode != 4 && opcode != 5 || rcode > 10:
		return p.result(NotMine, false)
	case dnsHeaderLen+(int(an)+int(ns)+int(ar))*dnsMinRR > d.Size:
		return p.result(NotMine, false)
	case response && qd == 0:
		return p.result(Undecided, false)
	case qd != 1:
		return p.result(NotMine, false)
	case !response && (rcode != 0 || truncated):
		return p.result(NotMine, false)
	case !response && opcode == 0 && (an != 0 || ns != 0 || ar > 2):
		return p.result(NotMine, false)
	}
	var name [dnsMaxName]byte
	n, pos := 0, dnsHeaderLen
	for {
		if pos >= len(b) {
			return p.result(NotMine, false)
		}
		l := int(b[pos])
		pos++
		if l == 0 {
			break
		}
		// 0x40 and up: a compression pointer or a reserved label type.
		if l > 63 || pos+l > len(b) || pos+l+1-dnsHeaderLen > dnsMaxName {
			return p.result(NotMine, false)
		}
		n += copy(name[n:], b[pos:pos+l])
		name[n] = '.'
		n++
		pos += l
	}
	if pos+4 > len(b) {
		return p.result(NotMine, false)
	}
	qtype, qclass := binary.BigEndian.Uint16(b[pos:]), binary.BigEndian.Uint16(b[pos+2:])
	pos += 4
	switch {
	case qtype == 0 || qclass != 1 && qclass != 3 && qclass != 4 && qclass != 254 && qclass != 255:
		return p.result(NotMine, false)
	case pos+(int(an)+int(ns)+int(ar))*dnsMinRR > d.Size:
		return p.result(NotMine, false)
	case an == 0 && ns == 0 && ar == 0 && pos != d.Size:
		// Nothing may follow the question when no record does.
		return p.result(NotMine, false)
	}
	if n == 0 {
		p.setString("name", ".")
	} else {
		p.set("name", name[:n])
	}
	p.setString("type", dnsTypeName(qtype))
	return p.result(Match, true)
}

// dnsTypeName names the record types a tunnel's operator is likely to meet.
func dnsTypeName(t uint16) string {
	switch t {
	case 1:
		return "A"
	case 2:
		return "NS"
	case 5:
		return "CNAME"
	case 6:
		return "SOA"
	case 12:
		return "PTR"
	case 15:
		return "MX"
	case 16:
		return "TXT"
	case 28:
		return "AAAA"
	case 33:
		return "SRV"
	case 43:
		return "DS"
	case 48:
		return "DNSKEY"
	case 64:
		return "SVCB"
	case 65:
		return "HTTPS"
	case 255:
		return "ANY"
	case 257:
		return "CAA"
	}
	return strconv.Itoa(int(t))
}
