package recovery

import (
	"time"

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

// Receive windows for long fat links: 100 Mbit/s at 200 ms with a full queue is
// about 5 MB in flight, and a loss holds the window back for a round trip more.
const (
	initialStreamWindow     = 2 << 20
	maxStreamWindow         = 32 << 20
	initialConnectionWindow = 4 << 20
	maxConnectionWindow     = 64 << 20
	keepAlivePeriod         = 15 * time.Second
)

// TuneQUICConfig sets the quic-go settings a tunnel over a Conn wants: path MTU
// discovery off (always: see PacketSize), and where cfg leaves them zero, the
// packet size above, receive windows sized for long fat links (quic-go's
// auto-tuning starts at 512 KiB and grows one round trip at a time), and a
// keep-alive so NAT bindings and the recovery layer's peer state stay warm.
// Other fields already set are kept.
func TuneQUICConfig(cfg *quic.Config) {
	cfg.DisablePathMTUDiscovery = true
	if cfg.InitialPacketSize == 0 {
		cfg.InitialPacketSize = PacketSize
	}
	if cfg.InitialStreamReceiveWindow == 0 {
		cfg.InitialStreamReceiveWindow = initialStreamWindow
	}
	if cfg.MaxStreamReceiveWindow == 0 {
		cfg.MaxStreamReceiveWindow = maxStreamWindow
	}
	if cfg.InitialConnectionReceiveWindow == 0 {
		cfg.InitialConnectionReceiveWindow = initialConnectionWindow
	}
	if cfg.MaxConnectionReceiveWindow == 0 {
		cfg.MaxConnectionReceiveWindow = maxConnectionWindow
	}
	if cfg.KeepAlivePeriod == 0 {
		cfg.KeepAlivePeriod = keepAlivePeriod
	}
}

// connecting reports whether a QUIC packet is not a 1-RTT one: a long header (the
// peer's quic-go is connecting, or reconnecting with a new connection, which
// starts over in slow start and untrained) or nothing. The trainer and the
// slow-start guard start over on such packets and never hold or drop them.
func connecting(quic []byte) bool { return len(quic) == 0 || quic[0]&0x80 != 0 }
