package sniff

import (
	"strconv"

	"golang.org/x/crypto/cryptobyte"
)

// TLS recognises a TLS connection by the client's first record, a handshake record that
// starts a ClientHello (RFC 8446 sections 4.1.2 and 5.1), and reads the cleartext
// extensions an operator cares about. The ClientHello may span several records (large key
// shares, or a client that fragments on purpose); they are joined, within the first
// tlsMaxHello bytes of the stream. A hello that does not fit there is given up on, Done
// without properties, which bounds the work of every call.
//
// Properties: sni (server_name), alpn (the offered protocols, comma-joined, in the client's
// order), tlsVersion (the highest version offered: from supported_versions when present,
// else the legacy version field), all set once the whole ClientHello is captured.
type TLS struct{}

// Name implements Sniffer.
func (TLS) Name() string { return "tls" }

const (
	tlsRecordHandshake  = 0x16
	tlsRecordHeaderLen  = 5
	tlsMaxRecordLen     = 1<<14 + 2048 // TLSCiphertext bound; plaintext records are smaller
	tlsHandshakeHello   = 1
	tlsHandshakeHdrLen  = 4
	tlsMaxHello         = 16 << 10 // real ones, post-quantum key shares included, are < 3 KiB
	tlsExtServerName    = 0
	tlsExtALPN          = 16
	tlsExtSupportedVers = 43
	tlsServerNameHost   = 0
)

// Sniff implements Sniffer.
func (TLS) Sniff(fromClient, fromServer []byte) Result {
	var p props
	c := fromClient
	switch {
	case len(c) == 0:
		return p.result(Undecided, false)
	case c[0] != tlsRecordHandshake,
		len(c) > 1 && c[1] != 3,
		len(c) > 2 && c[2] > 4: // record versions 3.0 (SSL 3) to 3.4
		return p.result(NotMine, false)
	case len(c) < tlsRecordHeaderLen+1:
		return p.result(Undecided, false)
	}
	if n := tlsRecordLen(c); n == 0 || n > tlsMaxRecordLen || c[5] != tlsHandshakeHello {
		return p.result(NotMine, false)
	}
	hello, complete := tlsHandshakeMessage(c[:min(len(c), tlsMaxHello)])
	if !complete && len(c) >= tlsMaxHello {
		return p.result(Match, true) // too big or too fragmented to be worth reading
	}
	if !complete {
		return p.result(Match, false)
	}
	parseClientHello(&p, hello)
	return p.result(Match, true)
}

// tlsHandshakeMessage returns the first handshake message (header included) from the
// handshake records at the start of c. complete is false while more records are needed;
// it is true with a nil message when the records cannot hold a ClientHello we can read
// (too long, or interrupted by another record type), since more bytes will not help.
func tlsHandshakeMessage(c []byte) (msg []byte, complete bool) {
	// The usual case: the first record holds the whole message, no copy needed.
	if first := c[tlsRecordHeaderLen:min(len(c), tlsRecordHeaderLen+tlsRecordLen(c))]; len(first) >= tlsHandshakeHdrLen {
		if need := tlsHandshakeLen(first); len(first) >= need {
			return first[:need], true
		}
	}
	var joined []byte
	need := -1
	for at := 0; ; {
		if len(c)-at < tlsRecordHeaderLen {
			return nil, false
		}
		n := tlsRecordLen(c[at:])
		if c[at] != tlsRecordHandshake || n == 0 || n > tlsMaxRecordLen {
			return nil, true
		}
		end := at + tlsRecordHeaderLen + n
		joined = append(joined, c[at+tlsRecordHeaderLen:min(len(c), end)]...)
		if need < 0 && len(joined) >= tlsHandshakeHdrLen {
			if need = tlsHandshakeLen(joined); need > tlsMaxHello {
				return nil, true
			}
		}
		if need >= 0 && len(joined) >= need {
			return joined[:need], true
		}
		if end > len(c) {
			return nil, false // this record is not all captured yet
		}
		at = end
	}
}

// tlsRecordLen reads the length field of the record header at the start of b.
func tlsRecordLen(b []byte) int { return int(b[3])<<8 | int(b[4]) }

// tlsHandshakeLen is the full length, header included, of the handshake message at the
// start of b.
func tlsHandshakeLen(b []byte) int {
	return tlsHandshakeHdrLen + (int(b[1])<<16 | int(b[2])<<8 | int(b[3]))
}

// parseClientHello records what a ClientHello offers. A malformed hello yields what was
// read before the fault.
func parseClientHello(p *props, msg []byte) {
	if len(msg) < tlsHandshakeHdrLen {
		return
	}
	s := cryptobyte.String(msg[tlsHandshakeHdrLen:])
	var legacyVersion uint16
	var sessionID, suites, compression cryptobyte.String
	if !s.ReadUint16(&legacyVersion) || !s.Skip(32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) ||
		!s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return
	}
	best := legacyVersion
	defer func() { p.setString("tlsVersion", tlsVersionName(best)) }()
	var exts cryptobyte.String
	if s.Empty() || !s.ReadUint16LengthPrefixed(&exts) {
		return
	}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return
		}
		switch typ {
		case tlsExtServerName:
			if name, ok := tlsServerName(data); ok {
				p.set("sni", name)
			}
		case tlsExtALPN:
			p.set("alpn", tlsALPN(data))
		case tlsExtSupportedVers:
			var list cryptobyte.String
			if !data.ReadUint8LengthPrefixed(&list) {
				continue
			}
			var top uint16
			for !list.Empty() {
				var v uint16
				if !list.ReadUint16(&v) {
					break
				}
				if v&0x0f0f != 0x0a0a && v > top { // skip GREASE (RFC 8701)
					top = v
				}
			}
			if top != 0 {
				best = top
			}
		}
	}
}

func tlsServerName(data cryptobyte.String) ([]byte, bool) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) {
		return nil, false
	}
	for !list.Empty() {
		var typ uint8
		var name cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&name) {
			return nil, false
		}
		if typ == tlsServerNameHost {
			return name, true
		}
	}
	return nil, false
}

// tlsALPN joins the offered protocol names with commas, stopping once the value is longer
// than a property may be.
func tlsALPN(data cryptobyte.String) []byte {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) {
		return nil
	}
	var out []byte
	for !list.Empty() && len(out) <= MaxValueLen {
		var proto cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&proto) {
			break
		}
		if len(out) > 0 {
			out = append(out, ',')
		}
		out = append(out, proto...)
	}
	return out
}

func tlsVersionName(v uint16) string {
	switch v {
	case 0x0300:
		return "ssl3.0"
	case 0x0301:
		return "1.0"
	case 0x0302:
		return "1.1"
	case 0x0303:
		return "1.2"
	case 0x0304:
		return "1.3"
	}
	return "0x" + strconv.FormatUint(uint64(v)|0x10000, 16)[1:]
}
