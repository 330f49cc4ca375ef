package sniff

import (
	"maps"
	"os"
	"path/filepath"
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
	})
}

func FuzzSniffSPICE(f *testing.F) { fuzzSniffer(f, SPICE{}, spiceCases()) }
func FuzzSniffSSH(f *testing.F)   { fuzzSniffer(f, SSH{}, sshCases()) }
func FuzzSniffTLS(f *testing.F)   { fuzzSniffer(f, TLS{}, tlsCases()) }
func FuzzSniffHTTP(f *testing.F)  { fuzzSniffer(f, HTTP{}, httpCases()) }
func FuzzSniffRFB(f *testing.F)   { fuzzSniffer(f, RFB{}, rfbCases()) }
