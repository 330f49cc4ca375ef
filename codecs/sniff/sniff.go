// Package sniff classifies a tunnel's application protocol from the first bytes each side
// sent, and reports properties an operator wants to see (SPICE session and channel, SSH
// software, TLS server name, HTTP host, VNC version); and a UDP flow's from its first
// datagrams (DNS, WireGuard, QUIC, STUN: see DatagramSniffer).
//
// The engine's sniffer actor owns the captured prefixes and calls the sniffers after each
// new chunk; the sniffers here keep no state and never run on the data path. Every sniffer
// is bounded: one call reads at most about 16 KiB of each stream in one pass (SPICE, SSH
// and RFB far less), whatever the capture limit, so the engine's repeated calls on growing
// prefixes stay cheap even when a peer trickles bytes one at a time; it allocates at most
// MaxProps values of at most MaxValueLen bytes, and never panics on any input.
//
// The verdicts are stable as prefixes grow, which is what lets the engine stop asking: a
// NotMine stays NotMine, Done stays Done with the same properties, a Match never goes back
// to Undecided, and a property once reported keeps its value. (SSH and RFB, which read
// both sides, may turn a Match into NotMine if the other side later proves not to speak
// the protocol; real peers never do. The engine keeps the first Match: such a NotMine
// only ends sniffing, with the properties of the last Match.)
package sniff

import (
	"unicode"
	"unicode/utf8"
)

// Verdict says what a sniffer concluded about a tunnel so far.
type Verdict int

const (
	// Undecided means the sniffer needs more bytes.
	Undecided Verdict = iota
	// NotMine means this is not the sniffer's protocol; stop asking it.
	NotMine
	// Match means it is the sniffer's protocol; Props may still grow until Done.
	Match
)

// String names a verdict for logs and test failures.
func (v Verdict) String() string {
	switch v {
	case Undecided:
		return "undecided"
	case NotMine:
		return "not-mine"
	case Match:
		return "match"
	}
	return "verdict(?)"
}

// Result is one sniffer's answer for the prefixes it was given.
type Result struct {
	Verdict Verdict
	Props   map[string]string // properties found so far (nil if none)
	Done    bool              // Match and nothing more to learn: stop feeding me
}

// Sniffer classifies one tunnel from the first bytes each side sent. fromClient and fromServer
// are everything captured so far (prefixes of the two byte streams, possibly truncated at the
// capture limit). It is called repeatedly with growing prefixes; it must be a pure function of
// its input (no state), so the engine can call it from any goroutine.
type Sniffer interface {
	Name() string // protocol name shown in the API: "spice", "ssh", "tls", "http", "rfb"
	Sniff(fromClient, fromServer []byte) Result
}

// Bounds on what a sniffer reports, so a hostile peer cannot grow the registry or the API's
// answers through the properties it makes us extract.
const (
	// MaxProps is the most properties one Result carries.
	MaxProps = 8
	// MaxValueLen is the most bytes of one property value; longer values are cut at a
	// rune boundary.
	MaxValueLen = 256
)

// Default returns the built-in sniffers in the order they should be tried. Their first
// bytes do not overlap (SPICE "REDQ", SSH "SSH-", a TLS handshake record, an HTTP method,
// RFB "RFB "), so the order only puts the protocols quictun is most often used for first
// and the ones that decide from the client's first byte before those that wait longer.
func Default() []Sniffer {
	return []Sniffer{SPICE{}, SSH{}, TLS{}, HTTP{}, RFB{}}
}

// props collects properties under the MaxProps and MaxValueLen bounds. The zero value is
// ready; its map is allocated on the first set so a Result without properties has nil Props.
type props struct {
	m map[string]string
}

// set records key=value, cleaned for display. Empty values are skipped: a property either
// says something or is absent.
func (p *props) set(key string, value []byte) {
	p.setString(key, cleanValue(value))
}

func (p *props) setString(key, value string) {
	if value == "" {
		return
	}
	if p.m == nil {
		p.m = make(map[string]string, 4)
	}
	if _, ok := p.m[key]; !ok && len(p.m) >= MaxProps {
		return
	}
	p.m[key] = value
}

// result makes the answer. Only a Match carries properties: what a sniffer read before it
// found the stream is not its protocol describes nothing.
func (p *props) result(v Verdict, done bool) Result {
	if v != Match {
		return Result{Verdict: v}
	}
	return Result{Verdict: v, Props: p.m, Done: done}
}

// cleanValue turns bytes from the wire into a value safe to show in JSON, logs and
// terminals: invalid UTF-8 becomes U+FFFD, control characters become '?', and the result
// is cut to MaxValueLen bytes at a rune boundary.
func cleanValue(b []byte) string {
	out := make([]byte, 0, min(len(b), MaxValueLen))
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case r == utf8.RuneError && size <= 1:
			r = utf8.RuneError
		case unicode.IsControl(r):
			r = '?'
		}
		if len(out)+utf8.RuneLen(r) > MaxValueLen {
			break
		}
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}

// hasPrefixPart reports whether b and prefix agree on their common length: b is either a
// start of prefix (more bytes may still complete it) or begins with all of it.
func hasPrefixPart(b []byte, prefix string) bool {
	n := min(len(b), len(prefix))
	return string(b[:n]) == prefix[:n]
}
