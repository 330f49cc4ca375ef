package sniff

// WireGuard recognises WireGuard's four messages (the protocol paper, section 5.4, and
// wireguard-go's device/noise-protocol.go) by their type byte, the three reserved bytes
// after it (zero) and their sizes, which are fixed: a handshake initiation is 148 bytes,
// a response 92, a cookie reply 64, and transport data at least 32 (a keepalive: the
// 16-byte header and a 16-byte tag) and padded to a multiple of 16. Everything else in
// them is random-looking (keys, MACs, ciphertext), so there is nothing to report.
type WireGuard struct{}

// Name implements DatagramSniffer.
func (WireGuard) Name() string { return "wireguard" }

// SniffDatagram implements DatagramSniffer.
func (WireGuard) SniffDatagram(d Datagram) Result {
	var p props
	b := d.Payload
	if len(b) < 4 || b[1] != 0 || b[2] != 0 || b[3] != 0 {
		return p.result(NotMine, false)
	}
	var ok bool
	switch b[0] {
	case 1:
		ok = d.Size == 148
	case 2:
		ok = d.Size == 92
	case 3:
		ok = d.Size == 64
	case 4:
		ok = d.Size >= 32 && d.Size%16 == 0
	}
	if !ok {
		return p.result(NotMine, false)
	}
	return p.result(Match, true)
}
