package sniff

import (
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// clientDecided names the sniffers whose verdict depends on the client's bytes alone, so a
// Match can never be taken back. SSH and RFB read both sides; a Match there turns into
// NotMine if the other side later proves not to speak the protocol.
var clientDecided = map[string]bool{"spice": true, "tls": true, "http": true}

// checkExtension compares a sniffer's answers on a prefix pair (fromClient[:kc],
// fromServer[:ks]) and on the whole pair, against the rules the engine relies on when it
// calls with growing prefixes: NotMine and Done are final, a Match never goes back to
// Undecided, properties once reported keep their values, and the answer is a pure
// function of the input.
func checkExtension(t testing.TB, s Sniffer, fromClient, fromServer []byte, kc, ks int) {
	t.Helper()
	short := s.Sniff(fromClient[:kc], fromServer[:ks])
	long := s.Sniff(fromClient, fromServer)
	checkBounds(t, short)
	checkBounds(t, long)
	again := s.Sniff(fromClient, fromServer)
	if again.Verdict != long.Verdict || again.Done != long.Done || !maps.Equal(again.Props, long.Props) {
		t.Fatalf("%s: two calls on the same input disagree: %+v, %+v", s.Name(), long, again)
	}
	switch short.Verdict {
	case NotMine:
		if long.Verdict != NotMine {
			t.Fatalf("%s: NotMine on a prefix, %v on more bytes", s.Name(), long.Verdict)
		}
	case Match:
		if long.Verdict == Undecided || clientDecided[s.Name()] && long.Verdict != Match {
			t.Fatalf("%s: Match on a prefix, %v on more bytes", s.Name(), long.Verdict)
		}
		if long.Verdict == Match {
			for k, v := range short.Props {
				if long.Props[k] != v {
					t.Fatalf("%s: property %s was %q on a prefix, %q on more bytes", s.Name(), k, v, long.Props[k])
				}
			}
		}
	}
	if short.Done && (!long.Done || !maps.Equal(short.Props, long.Props)) {
		t.Fatalf("%s: Done with %v on a prefix, then done=%v with %v", s.Name(), short.Props, long.Done, long.Props)
	}
}

// Allocation bounds of one Sniff call, whatever the input and its size: at most MaxProps
// values, each cleaned into a buffer and a string of at most MaxValueLen bytes, the map
// that holds them, a few small temporaries (TLS joins the ALPN list), and TLS's copy of
// a ClientHello split over several records (at most tlsMaxHello, grown by append: under
// twice that in all, in at most 16 steps). Measured on the fixtures: 4 to 6
// allocations, 352 to 416 bytes; a 16 KiB hello in one record: none for the join.
const (
	maxSniffAllocs     = 4*MaxProps + 8 + 16
	maxSniffAllocBytes = MaxProps*2*MaxValueLen + 4<<10 + 2*tlsMaxHello
)

// checkAllocs fails when one Sniff call allocates beyond the bounds above. It measures
// with runtime.ReadMemStats around single calls, as testing.AllocsPerRun does (which
// counts allocations but not bytes), on one P so that little else runs meanwhile; the
// smaller of two measurements is taken, since other goroutines can only add to it.
func checkAllocs(t testing.TB, s Sniffer, fromClient, fromServer []byte) {
	t.Helper()
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	allocs, bytes := uint64(1<<63), uint64(1<<63)
	var before, after runtime.MemStats
	for range 2 {
		runtime.ReadMemStats(&before)
		s.Sniff(fromClient, fromServer)
		runtime.ReadMemStats(&after)
		allocs = min(allocs, after.Mallocs-before.Mallocs)
		bytes = min(bytes, after.TotalAlloc-before.TotalAlloc)
	}
	if allocs > maxSniffAllocs || bytes > maxSniffAllocBytes {
		t.Fatalf("%s: one call on %d+%d bytes allocated %d times, %d bytes; bound %d times, %d bytes",
			s.Name(), len(fromClient), len(fromServer), allocs, bytes, maxSniffAllocs, maxSniffAllocBytes)
	}
}

// fuzzSniffer runs one sniffer on arbitrary pairs of streams cut at arbitrary points,
// seeded with the real captures and the hand-made cases.
func fuzzSniffer(f *testing.F, s Sniffer, seeds []sniffCase) {
	files, _ := filepath.Glob("testdata/*.cap")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		c, err := parseCapture(data)
		if err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		fromClient, fromServer := c.streams()
		f.Add(fromClient, fromServer, uint16(len(fromClient)/2), uint16(len(fromServer)/2))
	}
	for _, tc := range seeds {
		f.Add(tc.client, tc.server, uint16(len(tc.client)/2), uint16(len(tc.server)/2))
	}
	f.Fuzz(func(t *testing.T, fromClient, fromServer []byte, cutClient, cutServer uint16) {
		kc := int(cutClient) % (len(fromClient) + 1)
		ks := int(cutServer) % (len(fromServer) + 1)
		checkExtension(t, s, fromClient, fromServer, kc, ks)
		checkAllocs(t, s, fromClient, fromServer)
	})
}

func FuzzSniffSPICE(f *testing.F) { fuzzSniffer(f, SPICE{}, spiceCases()) }
func FuzzSniffSSH(f *testing.F)   { fuzzSniffer(f, SSH{}, sshCases()) }
func FuzzSniffTLS(f *testing.F)   { fuzzSniffer(f, TLS{}, tlsCases()) }
func FuzzSniffHTTP(f *testing.F)  { fuzzSniffer(f, HTTP{}, httpCases()) }
func FuzzSniffRFB(f *testing.F)   { fuzzSniffer(f, RFB{}, rfbCases()) }

// TestAllocationsDoNotGrowWithInput feeds every sniffer large inputs that each of them
// keeps reading (no early NotMine) and checks the same allocation bounds as the fuzz
// targets: what a sniffer allocates depends on the properties it reports, not on how
// much it was given.
func TestAllocationsDoNotGrowWithInput(t *testing.T) {
	const size = 1 << 20
	fill := func(prefix string, b byte) []byte {
		out := append(make([]byte, 0, size), prefix...)
		for len(out) < size {
			out = append(out, b)
		}
		return out
	}
	spiceClient := cat(spiceLinkMess(0, spiceChannelMain, 0, []uint32{capsMini}, []uint32{capsNameUUID}), make([]byte, size))
	tlsHello := fill("\x16\x03\x01\x40\x00\x01\xff\xff\xff\x03\x03", 'a')
	// A hello of 16 KiB - 1 byte sent one byte a record: the join grows step by step.
	var tlsTrickle []byte
	for _, b := range append([]byte{1, 0, 0x3f, 0xfb}, make([]byte, size/6)...) {
		tlsTrickle = append(tlsTrickle, tlsRecordHandshake, 3, 1, 0, 1, b)
	}
	for _, c := range []struct {
		s                    Sniffer
		fromClient, fromServ []byte
	}{
		{SPICE{}, spiceClient, fill("REDQ", 0xff)},
		{SSH{}, fill("SSH-2.0-", 'v'), fill("", 'x')},
		{TLS{}, tlsHello, fill("", 0x16)},
		{TLS{}, tlsTrickle, nil},
		{HTTP{}, fill("GET /", 'p'), nil},
		{HTTP{}, cat([]byte("GET / HTTP/1.1\r\n"), fill("X-A: ", 'h')), nil},
		{RFB{}, []byte("RFB 003.008\n"), fill("RFB 003.008\n", 'x')},
	} {
		checkAllocs(t, c.s, c.fromClient, c.fromServ)
	}
}
