package sniff

import (
	"encoding/binary"
	"maps"
	"path/filepath"
	"runtime"
	"testing"
)

// loadDatagrams reads a datagram fixture (testdata/*.dgram: the capture format, one
// record a datagram) as the engine shows datagrams to the sniffers.
func loadDatagrams(t testing.TB, path string) []Datagram {
	t.Helper()
	var out []Datagram
	for _, ch := range loadCapture(t, path).chunks {
		out = append(out, asDatagram(ch.data, !ch.fromServer))
	}
	return out
}

// asDatagram cuts a datagram as the engine's tap does.
func asDatagram(b []byte, fromClient bool) Datagram {
	return Datagram{Payload: b[:min(len(b), DatagramPrefix)], Size: len(b), FromClient: fromClient}
}

// classify is what the engine concludes from one datagram: the first sniffer that
// matches it, or "".
func classify(d Datagram) (string, Result) {
	for _, s := range DefaultDatagram() {
		if r := s.SniffDatagram(d); r.Verdict == Match {
			return s.Name(), r
		}
	}
	return "", Result{}
}

// The real captures: every datagram of dig's exchange with dnsmasq is DNS, every one of
// two wireguard-go peers' handshake and transport is WireGuard, and quic-go's long-header
// packets are QUIC version 1 while its short-header ones are nobody's.
func TestDatagramFixtures(t *testing.T) {
	for _, c := range []struct {
		file  string
		want  string
		props map[string]string
		all   bool // every datagram matches, not only the long-header ones
	}{
		{"dig-dnsmasq.dgram", "dns", map[string]string{"name": "host.quictun.test.", "type": "A"}, true},
		{"wireguard-go.dgram", "wireguard", nil, true},
		{"quic-go.dgram", "quic", map[string]string{"version": "1"}, false},
	} {
		t.Run(c.file, func(t *testing.T) {
			ds := loadDatagrams(t, filepath.Join("testdata", c.file))
			if len(ds) < 2 {
				t.Fatalf("%d datagrams", len(ds))
			}
			matched := 0
			for i, d := range ds {
				name, r := classify(d)
				long := len(d.Payload) > 0 && d.Payload[0]&0x80 != 0
				switch {
				case name == c.want:
					matched++
					if !r.Done || !maps.Equal(r.Props, c.props) {
						t.Errorf("datagram %d (%d bytes): done %v props %v, want done and %v", i, d.Size, r.Done, r.Props, c.props)
					}
				case c.all || long:
					t.Errorf("datagram %d (%d bytes, from client %v): %q, want %q", i, d.Size, d.FromClient, name, c.want)
				case name != "":
					t.Errorf("short-header datagram %d (%d bytes): %q, want nobody's", i, d.Size, name)
				}
			}
			if _, r := classify(ds[0]); r.Verdict != Match {
				t.Errorf("the first datagram is not recognised")
			}
			t.Logf("%d of %d datagrams matched %s", matched, len(ds), c.want)
		})
	}
}

type datagramCase struct {
	name    string
	b       []byte
	size    int // 0: len(b)
	verdict Verdict
	props   map[string]string
}

func runDatagramCases(t *testing.T, s DatagramSniffer, cases []datagramCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := asDatagram(tc.b, true)
			if tc.size != 0 {
				d.Size = tc.size
			}
			r := s.SniffDatagram(d)
			checkBounds(t, r)
			if r.Verdict != tc.verdict || !maps.Equal(r.Props, tc.props) {
				t.Errorf("%v %v, want %v %v", r.Verdict, r.Props, tc.verdict, tc.props)
			}
		})
	}
}

// dnsMessage builds a DNS message: header fields, one question unless qname is nil, and
// extra bytes after it.
func dnsMessage(flags uint16, qd, an, ns, ar uint16, qname []string, qtype uint16, extra []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, 0x1234)
	for _, v := range []uint16{flags, qd, an, ns, ar} {
		b = binary.BigEndian.AppendUint16(b, v)
	}
	if qname != nil {
		for _, l := range qname {
			b = append(append(b, byte(len(l))), l...)
		}
		b = append(b, 0)
		b = binary.BigEndian.AppendUint16(b, qtype)
		b = binary.BigEndian.AppendUint16(b, 1)
	}
	return append(b, extra...)
}

func dnsCases() []datagramCase {
	name := []string{"www", "example", "org"}
	long63 := string(make([]byte, 63))
	opt := []byte{0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0} // an EDNS OPT record
	aRR := []byte{0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1}
	www := map[string]string{"name": "www.example.org.", "type": "AAAA"}
	return []datagramCase{
		{"query", dnsMessage(0x0100, 1, 0, 0, 0, name, 28, nil), 0, Match, www},
		{"query with EDNS", dnsMessage(0x0120, 1, 0, 0, 1, name, 28, opt), 0, Match, www},
		{"answer", dnsMessage(0x8180, 1, 1, 0, 0, name, 28, aRR), 0, Match, www},
		{"root NS query", dnsMessage(0x0000, 1, 0, 0, 0, []string{}, 2, nil), 0, Match, map[string]string{"name": ".", "type": "NS"}},
		{"unknown type", dnsMessage(0x0100, 1, 0, 0, 0, name, 9999, nil), 0, Match, map[string]string{"name": "www.example.org.", "type": "9999"}},
		{"NXDOMAIN", dnsMessage(0x8183, 1, 0, 0, 0, name, 1, nil), 0, Match, map[string]string{"name": "www.example.org.", "type": "A"}},
		{"FORMERR without a question", dnsMessage(0x8181, 0, 0, 0, 0, nil, 0, nil), 0, Undecided, nil},
		{"header only", dnsMessage(0x0100, 0, 0, 0, 0, nil, 0, nil), 0, NotMine, nil},
		{"short", []byte{0x12, 0x34, 1, 0, 0, 1}, 0, NotMine, nil},
		{"trailing bytes", dnsMessage(0x0100, 1, 0, 0, 0, name, 1, []byte{0}), 0, NotMine, nil},
		{"two questions", dnsMessage(0x0100, 2, 0, 0, 0, name, 1, nil), 0, NotMine, nil},
		{"query with an answer", dnsMessage(0x0100, 1, 1, 0, 0, name, 1, aRR), 0, NotMine, nil},
		{"IQUERY", dnsMessage(0x0900, 1, 0, 0, 0, name, 1, nil), 0, NotMine, nil},
		{"Z bit", dnsMessage(0x0140, 1, 0, 0, 0, name, 1, nil), 0, NotMine, nil},
		{"rcode in a query", dnsMessage(0x0103, 1, 0, 0, 0, name, 1, nil), 0, NotMine, nil},
		{"counts past the datagram", dnsMessage(0x8180, 1, 200, 0, 0, name, 1, aRR), 0, NotMine, nil},
		{"type 0", dnsMessage(0x0100, 1, 0, 0, 0, name, 0, nil), 0, NotMine, nil},
		{"compressed question", append(dnsMessage(0x0100, 1, 0, 0, 0, nil, 0, nil), 0xc0, 12, 0, 1, 0, 1), 0, NotMine, nil},
		{"label of 64", dnsMessage(0x0100, 1, 0, 0, 0, []string{long63 + "x"}, 1, nil), 0, NotMine, nil},
		{"name of 256", dnsMessage(0x0100, 1, 0, 0, 0, []string{long63, long63, long63, long63[:62]}, 1, nil), 0, NotMine, nil},
		{"name of 255", dnsMessage(0x0100, 1, 0, 0, 0, []string{long63, long63, long63, long63[:61]}, 1, nil), 0, Match,
			map[string]string{"name": cleanValue([]byte(long63 + "." + long63 + "." + long63 + "." + long63[:61] + ".")), "type": "A"}},
		{"class 7", func() []byte { b := dnsMessage(0x0100, 1, 0, 0, 0, name, 1, nil); b[len(b)-1] = 7; return b }(), 0, NotMine, nil},
		{"question cut", dnsMessage(0x0100, 1, 0, 0, 0, name, 1, nil)[:20], 0, NotMine, nil},
	}
}

func wireguardCases() []datagramCase {
	msg := func(typ byte, size int) []byte { b := make([]byte, size); b[0] = typ; b[4] = 0xaa; return b }
	reserved := msg(1, 148)
	reserved[2] = 1
	return []datagramCase{
		{"initiation", msg(1, 148), 0, Match, nil},
		{"response", msg(2, 92), 0, Match, nil},
		{"cookie reply", msg(3, 64), 0, Match, nil},
		{"keepalive", msg(4, 32), 0, Match, nil},
		{"transport", msg(4, 1440), 0, Match, nil},
		{"large transport, cut for the sniffer", msg(4, 65520), 0, Match, nil},
		{"initiation of 149", msg(1, 149), 0, NotMine, nil},
		{"response of 148", msg(2, 148), 0, NotMine, nil},
		{"cookie reply of 92", msg(3, 92), 0, NotMine, nil},
		{"transport of 40", msg(4, 40), 0, NotMine, nil},
		{"transport of 16", msg(4, 16), 0, NotMine, nil},
		{"type 5", msg(5, 64), 0, NotMine, nil},
		{"type 0", msg(0, 64), 0, NotMine, nil},
		{"reserved byte set", reserved, 0, NotMine, nil},
		{"short", []byte{1, 0, 0}, 0, NotMine, nil},
	}
}

func stunCases() []datagramCase {
	hdr := func(typ, length uint16) []byte {
		b := binary.BigEndian.AppendUint16(nil, typ)
		b = binary.BigEndian.AppendUint16(b, length)
		b = binary.BigEndian.AppendUint32(b, stunMagicCookie)
		return append(b, "0123456789ab"...)
	}
	software := append(hdr(0x0101, 12), 0x80, 0x22, 0, 7, 'q', 'u', 'i', 'c', 't', 'u', 'n', 0)
	badCookie := hdr(0x0001, 0)
	badCookie[4] = 0
	return []datagramCase{
		{"binding request", hdr(0x0001, 0), 0, Match, nil},
		{"binding response with an attribute", software, 0, Match, nil},
		{"length past the datagram", hdr(0x0001, 8), 0, NotMine, nil},
		{"length not a multiple of 4", append(hdr(0x0001, 2), 0, 0), 0, NotMine, nil},
		{"top bits set", hdr(0xc001, 0), 0, NotMine, nil},
		{"no magic cookie", badCookie, 0, NotMine, nil},
		{"short", hdr(0x0001, 0)[:12], 0, NotMine, nil},
	}
}

func quicCases() []datagramCase {
	long := func(first byte, version uint32, rest ...byte) []byte {
		b := binary.BigEndian.AppendUint32([]byte{first}, version)
		b = append(b, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0) // DCID of 8, empty SCID
		return append(b, rest...)
	}
	pad := func(b []byte, n int) []byte { return append(b, make([]byte, n-len(b))...) }
	v1 := map[string]string{"version": "1"}
	return []datagramCase{
		{"v1 Initial", pad(long(0xc3, quicVersion1, 0, 0x44, 0x80), 1200), 0, Match, v1},
		{"v1 Initial with a token", pad(long(0xc3, quicVersion1, 4, 1, 2, 3, 4, 0x44, 0x80), 1200), 0, Match, v1},
		{"v1 Handshake", pad(long(0xe1, quicVersion1, 0x40, 0x20), 60), 0, Match, v1},
		{"v1 Retry", pad(long(0xf0, quicVersion1, 9, 9, 9), 40), 0, Match, v1},
		{"v2 Initial", pad(long(0xd0, quicVersion2, 0, 0x40, 0x30), 1200), 0, Match, map[string]string{"version": "2"}},
		{"draft-29 Initial", pad(long(0xc0, 0xff00001d, 0, 0x40, 0x30), 1200), 0, Match, map[string]string{"version": "draft-29"}},
		{"Initial, length cut by the prefix", pad(long(0xc3, quicVersion1, 0x41, 0xf4), DatagramPrefix), 2000, Match, v1},
		{"version negotiation", long(0x80, 0, 0, 0, 0, 1, 0x6b, 0x33, 0x43, 0xcf), 0, Match, nil},
		{"version negotiation, a partial version", long(0x80, 0, 0, 0, 1), 0, NotMine, nil},
		{"length past the datagram", pad(long(0xc3, quicVersion1, 0, 0x44, 0xc0), 1000), 0, NotMine, nil},
		{"zero length", pad(long(0xe1, quicVersion1, 0), 40), 0, NotMine, nil},
		{"token past the datagram", pad(long(0xc3, quicVersion1, 0x44, 0xc0), 1000), 0, NotMine, nil},
		{"fixed bit clear", pad(long(0x83, quicVersion1, 0, 0x44, 0x80), 1200), 0, NotMine, nil},
		{"unknown version", pad(long(0xc3, 0x0a0a0a0a, 0, 0x44, 0x80), 1200), 0, NotMine, nil},
		{"connection ID of 21", pad(append(binary.BigEndian.AppendUint32([]byte{0xc3}, quicVersion1), 21), 1200), 0, NotMine, nil},
		{"short header", pad([]byte{0x41, 1, 2, 3}, 60), 0, NotMine, nil},
		{"Retry without its tag", long(0xf0, quicVersion1, 9), 0, NotMine, nil},
		{"short", []byte{0xc3, 0, 0, 0, 1}, 0, NotMine, nil},
	}
}

func TestDNSDatagrams(t *testing.T)       { runDatagramCases(t, DNS{}, dnsCases()) }
func TestWireGuardDatagrams(t *testing.T) { runDatagramCases(t, WireGuard{}, wireguardCases()) }
func TestSTUNDatagrams(t *testing.T)      { runDatagramCases(t, STUN{}, stunCases()) }
func TestQUICDatagrams(t *testing.T)      { runDatagramCases(t, QUIC{}, quicCases()) }

// Each built-in sniffer's matches are nobody else's: in the order DefaultDatagram tries
// them, a datagram of one protocol is never taken for another's.
func TestDatagramSniffersDoNotOverlap(t *testing.T) {
	cases := map[string][]datagramCase{"dns": dnsCases(), "wireguard": wireguardCases(), "stun": stunCases(), "quic": quicCases()}
	for proto, cs := range cases {
		for _, tc := range cs {
			if tc.verdict != Match {
				continue
			}
			d := asDatagram(tc.b, true)
			if tc.size != 0 {
				d.Size = tc.size
			}
			for _, s := range DefaultDatagram() {
				if s.Name() != proto && s.SniffDatagram(d).Verdict == Match {
					t.Errorf("%s %q is taken for %s too", proto, tc.name, s.Name())
				}
			}
		}
	}
}

// checkDatagram checks what the engine relies on for any datagram: the bounds of every
// Result, a pure function of its input, and allocations bounded by what it reports.
func checkDatagram(t testing.TB, s DatagramSniffer, d Datagram) {
	t.Helper()
	r := s.SniffDatagram(d)
	checkBounds(t, r)
	again := s.SniffDatagram(d)
	if again.Verdict != r.Verdict || again.Done != r.Done || !maps.Equal(again.Props, r.Props) {
		t.Fatalf("%s: two calls on the same datagram disagree: %+v, %+v", s.Name(), r, again)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var before, after runtime.MemStats
	allocs := uint64(1 << 63)
	for range 2 {
		runtime.ReadMemStats(&before)
		s.SniffDatagram(d)
		runtime.ReadMemStats(&after)
		allocs = min(allocs, after.Mallocs-before.Mallocs)
	}
	if allocs > maxSniffAllocs {
		t.Fatalf("%s: one call on %d bytes allocated %d times, bound %d", s.Name(), d.Size, allocs, maxSniffAllocs)
	}
}

// FuzzSniffDatagram runs every datagram sniffer on arbitrary datagrams, cut for the
// sniffers as the engine cuts them, seeded with the real captures and the hand-made
// cases: none may panic or break the bounds.
func FuzzSniffDatagram(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.dgram")
	for _, file := range files {
		for _, d := range loadDatagrams(f, file) {
			f.Add(d.Payload, uint16(d.Size-len(d.Payload)), d.FromClient)
		}
	}
	for _, cs := range [][]datagramCase{dnsCases(), wireguardCases(), stunCases(), quicCases()} {
		for _, tc := range cs {
			f.Add(tc.b, uint16(0), true)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, beyond uint16, fromClient bool) {
		d := asDatagram(b, fromClient)
		if len(b) > DatagramPrefix {
			d.Size += int(beyond) // what lies past the prefix is not shown
		}
		for _, s := range DefaultDatagram() {
			checkDatagram(t, s, d)
		}
	})
}
