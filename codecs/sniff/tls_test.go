package sniff

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// helloSpec describes a ClientHello to build; nil fields leave their extension out.
type helloSpec struct {
	legacy   uint16
	sni      string
	alpn     []string
	versions []uint16
	noExts   bool
}

// clientHello builds a ClientHello handshake message (RFC 8446 section 4.1.2).
func clientHello(h helloSpec) []byte {
	var b cryptobyte.Builder
	b.AddUint8(tlsHandshakeHello)
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint16(h.legacy)
		b.AddBytes(make([]byte, 32))
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(make([]byte, 32)) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint16(0x1301); b.AddUint16(0xc02f) })
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddUint8(0) })
		if h.noExts {
			return
		}
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			b.AddUint16(0x0a0a) // a GREASE extension first, as browsers send
			b.AddUint16(0)
			if h.sni != "" {
				b.AddUint16(tlsExtServerName)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						b.AddUint8(tlsServerNameHost)
						b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(h.sni)) })
					})
				})
			}
			if h.alpn != nil {
				b.AddUint16(tlsExtALPN)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
						for _, p := range h.alpn {
							b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(p)) })
						}
					})
				})
			}
			if h.versions != nil {
				b.AddUint16(tlsExtSupportedVers)
				b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
					b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) {
						for _, v := range h.versions {
							b.AddUint16(v)
						}
					})
				})
			}
		})
	})
	return b.BytesOrPanic()
}

// tlsRecords wraps a handshake message in handshake records of at most fragment bytes.
func tlsRecords(msg []byte, fragment int) []byte {
	var out []byte
	for len(msg) > 0 {
		n := min(fragment, len(msg))
		out = append(out, tlsRecordHandshake, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

// helloFromCapture takes the client's handshake records from a real capture and returns
// the ClientHello message they carry.
func helloFromCapture(t testing.TB, file string) []byte {
	t.Helper()
	fromClient, _ := loadCapture(t, "testdata/"+file).streams()
	msg, complete := tlsHandshakeMessage(fromClient)
	if !complete || msg == nil {
		t.Fatalf("%s holds no whole ClientHello", file)
	}
	return msg
}

func tlsCases() []sniffCase {
	modern := clientHello(helloSpec{legacy: 0x0303, sni: "app.example", alpn: []string{"h2", "http/1.1"},
		versions: []uint16{0x1a1a, 0x0304, 0x0303}})
	modernProps := map[string]string{"sni": "app.example", "alpn": "h2,http/1.1", "tlsVersion": "1.3"}
	manyALPN := make([]string, 100)
	for i := range manyALPN {
		manyALPN[i] = "proto-" + strings.Repeat("x", 10)
	}
	huge := []byte{tlsHandshakeHello, 0x02, 0, 0} // declares 128 KiB
	return []sniffCase{
		{name: "nothing yet", verdict: Undecided},
		{name: "record header in part", client: []byte{0x16, 0x03}, verdict: Undecided},
		{name: "one record", client: tlsRecords(modern, 1<<14), verdict: Match, done: true, props: modernProps},
		{name: "record not all captured", client: tlsRecords(modern, 1<<14)[:40], verdict: Match},
		{name: "records of 100 bytes", client: tlsRecords(modern, 100), verdict: Match, done: true, props: modernProps},
		{name: "records of 1 byte", client: tlsRecords(modern, 1), verdict: Match, done: true, props: modernProps},
		{name: "records of 3 bytes, cut short", client: tlsRecords(modern, 3)[:60], verdict: Match},
		{name: "TLS 1.2 only", client: tlsRecords(clientHello(helloSpec{legacy: 0x0303, sni: "old.example"}), 1<<14),
			verdict: Match, done: true, props: map[string]string{"sni": "old.example", "tlsVersion": "1.2"}},
		{name: "no extensions at all", client: tlsRecords(clientHello(helloSpec{legacy: 0x0301, noExts: true}), 1<<14),
			verdict: Match, done: true, props: map[string]string{"tlsVersion": "1.0"}},
		{name: "unknown version", client: tlsRecords(clientHello(helloSpec{legacy: 0x0303, versions: []uint16{0x7f1c}}), 1<<14),
			verdict: Match, done: true, props: map[string]string{"tlsVersion": "0x7f1c"}},
		{name: "ALPN list cut", client: tlsRecords(clientHello(helloSpec{legacy: 0x0303, alpn: manyALPN}), 1<<14),
			verdict: Match, done: true, props: map[string]string{"tlsVersion": "1.2",
				"alpn": strings.Repeat("proto-xxxxxxxxxx,", 100)[:MaxValueLen]}},
		{name: "hostile SNI", client: tlsRecords(clientHello(helloSpec{legacy: 0x0303, sni: "a\x00b\nc"}), 1<<14),
			verdict: Match, done: true, props: map[string]string{"sni": "a?b?c", "tlsVersion": "1.2"}},
		{name: "truncated hello body", client: tlsRecords(modern[:50:50], 1<<14), verdict: Match},
		{name: "hello longer than anything captured", client: tlsRecords(huge, 1<<14), verdict: Match, done: true},
		{name: "alert between fragments", client: cat(tlsRecords(modern[:30], 30), []byte{0x15, 3, 3, 0, 2, 2, 40}),
			verdict: Match, done: true},
		{name: "malformed hello", client: tlsRecords(cat([]byte{1, 0, 0, 10}, bytes.Repeat([]byte{0xff}, 10)), 1<<14),
			verdict: Match, done: true},
		{name: "application data", client: []byte{0x17, 3, 3, 0, 10}, verdict: NotMine},
		{name: "server hello type", client: []byte{0x16, 3, 3, 0, 10, 2}, verdict: NotMine},
		{name: "future record version", client: []byte{0x16, 3, 5}, verdict: NotMine},
		{name: "empty record", client: []byte{0x16, 3, 1, 0, 0, 1}, verdict: NotMine},
		{name: "oversized record", client: []byte{0x16, 3, 1, 0xff, 0xff, 1}, verdict: NotMine},
		{name: "SSLv2 compatible hello", client: []byte{0x80, 0x2e, 0x01, 0x03, 0x01}, verdict: NotMine},
		{name: "http", client: []byte("GET / HTTP/1.1\r\n"), verdict: NotMine},
	}
}

func TestTLSCases(t *testing.T) { runSniffCases(t, TLS{}, tlsCases()) }

// TestTLSRealHelloFragmented splits curl's real ClientHello over small records (as a
// client may, and as large post-quantum key shares force) and checks nothing is lost.
func TestTLSRealHelloFragmented(t *testing.T) {
	hello := helloFromCapture(t, "tls-curl.cap")
	want := map[string]string{"sni": "sniff.example", "alpn": "h2,http/1.1", "tlsVersion": "1.3"}
	for _, fragment := range []int{1, 2, 3, 4, 5, 64, 511, 1 << 14} {
		r := TLS{}.Sniff(tlsRecords(hello, fragment), nil)
		if r.Verdict != Match || !r.Done {
			t.Fatalf("fragment %d: %v done=%v", fragment, r.Verdict, r.Done)
		}
		checkProps(t, "fragmented hello", r.Props, want)
	}
}

// TestTLSWorkBounded checks that a ClientHello split into records so small that it does
// not fit the first tlsMaxHello bytes is given up on (Done) rather than re-joined on every
// call up to the capture limit.
func TestTLSWorkBounded(t *testing.T) {
	hello := helloFromCapture(t, "tls-curl.cap")
	hello = cat(hello[:1], []byte{0, 0x30, 0}, hello[4:], make([]byte, 0x3000-len(hello)+4)) // 12 KiB body
	stream := tlsRecords(hello, 1)
	r := TLS{}.Sniff(stream[:tlsMaxHello-1], nil)
	if r.Verdict != Match || r.Done {
		t.Fatalf("short of the bound: %v done=%v", r.Verdict, r.Done)
	}
	r = TLS{}.Sniff(stream, nil)
	if r.Verdict != Match || !r.Done || r.Props != nil {
		t.Fatalf("past the bound: %v done=%v %v", r.Verdict, r.Done, r.Props)
	}
}
