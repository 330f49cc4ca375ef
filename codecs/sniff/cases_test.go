package sniff

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// sniffCase is one hand-made input for one sniffer, for the corners real captures do not
// reach: malformed fields, other auth paths, split records, bounds.
type sniffCase struct {
	name           string
	client, server []byte
	verdict        Verdict
	done           bool
	props          map[string]string // nil: no properties
}

func runSniffCases(t *testing.T, s Sniffer, cases []sniffCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := s.Sniff(tc.client, tc.server)
			if r.Verdict != tc.verdict || r.Done != tc.done {
				t.Errorf("verdict %v done %v, want %v done %v (props %v)", r.Verdict, r.Done, tc.verdict, tc.done, r.Props)
			}
			if tc.props == nil && r.Props != nil {
				t.Errorf("props %v, want none", r.Props)
			} else if tc.props != nil {
				checkProps(t, tc.name, r.Props, tc.props)
			}
			checkBounds(t, r)
		})
	}
}

// checkBounds checks what every Result must satisfy whatever the input.
func checkBounds(t testing.TB, r Result) {
	t.Helper()
	if r.Done && r.Verdict != Match {
		t.Errorf("Done with verdict %v", r.Verdict)
	}
	if r.Props != nil && len(r.Props) == 0 {
		t.Errorf("empty non-nil Props")
	}
	if len(r.Props) > MaxProps {
		t.Errorf("%d props, more than MaxProps", len(r.Props))
	}
	for k, v := range r.Props {
		if len(v) == 0 || len(v) > MaxValueLen || !utf8.ValidString(v) {
			t.Errorf("prop %s = %q: empty, longer than MaxValueLen or not UTF-8", k, v)
		}
		for _, c := range v {
			if c < 0x20 || c == 0x7f {
				t.Errorf("prop %s = %q holds a control character", k, v)
			}
		}
	}
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func TestCleanValue(t *testing.T) {
	long := bytes.Repeat([]byte("é"), MaxValueLen) // 2 bytes a rune
	cases := []struct {
		in   []byte
		want string
	}{
		{[]byte("plain"), "plain"},
		{[]byte("tab\tnl\nesc\x1b"), "tab?nl?esc?"},
		{[]byte{'a', 0xff, 'b'}, "a\uFFFDb"},
		{long, string(long[:MaxValueLen])},
		{append(bytes.Repeat([]byte("a"), MaxValueLen-1), "é"...), string(bytes.Repeat([]byte("a"), MaxValueLen-1))},
	}
	for _, tc := range cases {
		if got := cleanValue(tc.in); got != tc.want {
			t.Errorf("cleanValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPropsBounded(t *testing.T) {
	var p props
	for i := range MaxProps + 5 {
		p.setString(string(rune('a'+i)), "v")
	}
	p.setString("a", "changed") // an existing key may still be updated
	if len(p.m) != MaxProps || p.m["a"] != "changed" {
		t.Fatalf("props = %v", p.m)
	}
	p.setString("empty", "")
	if _, ok := p.m["empty"]; ok {
		t.Fatal("empty value stored")
	}
}

// TestFixturesByteByByte replays every real capture one byte per chunk, so every prefix
// of both streams, records and messages split at every point, passes the sniffers.
func TestFixturesByteByByte(t *testing.T) {
	for _, tc := range fixtureCases {
		t.Run(tc.file, func(t *testing.T) {
			c := loadCapture(t, "testdata/"+tc.file)
			var bytewise capture
			for _, ch := range c.chunks {
				for i := range ch.data {
					bytewise.chunks = append(bytewise.chunks, chunk{fromServer: ch.fromServer, data: ch.data[i : i+1]})
				}
			}
			o := replay(t, Default(), bytewise)
			if o.name != tc.protocol || !o.result.Done {
				t.Fatalf("recognised as %q %v done=%v, want %q done", o.name, o.result.Verdict, o.result.Done, tc.protocol)
			}
			checkProps(t, tc.file, o.result.Props, tc.props)
		})
	}
}

// TestFixturePrefixes checks the verdict rules on pairs of prefixes of the real captures:
// a longer prefix never takes back NotMine or Done, never turns a Match back to Undecided,
// and keeps every property already reported.
func TestFixturePrefixes(t *testing.T) {
	for _, tc := range fixtureCases {
		c := loadCapture(t, "testdata/"+tc.file)
		fromClient, fromServer := c.streams()
		for _, s := range Default() {
			for _, cut := range []int{0, 1, 3, 4, 5, 16, 17, 33, 34, 100, 500, 2000} {
				kc, ks := min(cut, len(fromClient)), min(cut, len(fromServer))
				checkExtension(t, s, fromClient, fromServer, kc, ks)
				checkExtension(t, s, fromClient, fromServer, kc, len(fromServer))
				checkExtension(t, s, fromClient, fromServer, len(fromClient), ks)
			}
		}
	}
}
