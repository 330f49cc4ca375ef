package recovery

import (
	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/fecframe"
)

// PacketSize is the QUIC packet size to run on top of a Conn: its repair datagram
// (the packet plus fecframe.RepairHeaderLen plus a 2-byte length: 1425 bytes)
// still fits a 1500-byte path MTU behind IPv6 and UDP headers (48 bytes), with
// room to spare for an encapsulation on the way. quic-go's path MTU discovery must stay off on a
// Conn (TuneQUICConfig does that): it cannot see the framing's bytes and would
// grow packets until their parity no longer fits.
const PacketSize = 1400

// MaxOverhead is the most the framing adds to a QUIC packet on the wire (a repair
// datagram; a source adds fecframe.DataHeaderLen).
const MaxOverhead = fecframe.RepairHeaderLen + 2

// TuneQUICConfig sets what quic-go on a Conn needs: path MTU discovery off
// (always: see PacketSize) and, where cfg leaves it zero, the packet size above.
// Everything else (windows, keep-alive, timeouts) is the endpoint's: quictun's
// is internal/quicconf, which the recovery tests and benchmarks run too.
func TuneQUICConfig(cfg *quic.Config) {
	cfg.DisablePathMTUDiscovery = true
	if cfg.InitialPacketSize == 0 {
		cfg.InitialPacketSize = PacketSize
	}
}

// connecting reports whether a QUIC packet is not a 1-RTT one: a long header (the
// peer's quic-go is connecting, or reconnecting with a new connection, which
// starts over in slow start and untrained) or nothing. The trainer and the
// slow-start guard start over on such packets and never hold or drop them.
func connecting(quic []byte) bool { return len(quic) == 0 || quic[0]&0x80 != 0 }
