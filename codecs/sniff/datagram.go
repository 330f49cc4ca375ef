package sniff

// Datagram sniffers classify a UDP flow from its first datagrams, as the stream sniffers
// classify a tunnel from its first bytes. A datagram is a message of its own (no prefix of
// a stream: one that is lost or missed says nothing about the next), so each call judges
// one datagram, and the engine asks about each of a flow's first few datagrams each way
// until one sniffer matches.

// DatagramPrefix is the most bytes of a datagram a DatagramSniffer is given: the headers
// the built-in ones read (a DNS question of at most 255 bytes of name after its 12-byte
// header, QUIC's long header with two 20-byte connection IDs, STUN's 20 bytes) fit, so a
// large datagram is never copied whole for the sniffer.
const DatagramPrefix = 512

// Datagram is what a DatagramSniffer is shown of one datagram of a flow.
type Datagram struct {
	Payload    []byte // its first bytes, at most DatagramPrefix
	Size       int    // its whole length (WireGuard's messages are told by it)
	FromClient bool   // sent by the client application (upstream)
}

// DatagramSniffer classifies one datagram of a flow. Its verdict is about that datagram
// alone: Match (it is this protocol's), NotMine (it is not: the engine stops asking this
// sniffer about the flow) or Undecided (it cannot tell). Props are what the datagram
// says (only with a Match); Done means there is nothing more to learn from later ones.
// Like Sniffer it must be a pure function of its input, bounded, and never panic.
type DatagramSniffer interface {
	Name() string // protocol name shown in the API: "dns", "wireguard", "quic", "stun"
	SniffDatagram(d Datagram) Result
}

// DefaultDatagram returns the built-in datagram sniffers in the order they should be
// tried. WireGuard comes first because its test is the strictest (four message types of
// exact sizes with three zero bytes after the type); DNS's header and question rarely fit
// anything else, QUIC's long header and STUN's magic cookie even less.
func DefaultDatagram() []DatagramSniffer {
	return []DatagramSniffer{WireGuard{}, DNS{}, QUIC{}, STUN{}}
}
