package engine

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/quictun/quictun/codecs/sniff"
)

// dnsQuery is an A query for host.quictun.test, as dig sends it (EDNS, a cookie).
var dnsQuery = []byte{0xa1, 0x97, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1,
	4, 'h', 'o', 's', 't', 7, 'q', 'u', 'i', 'c', 't', 'u', 'n', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1,
	0, 0, 0x29, 0x04, 0xd0, 0, 0, 0, 0, 0, 0x0c, 0, 0x0a, 0, 0x08, 0xbd, 0x8c, 0xf2, 0x6b, 0x3e, 0xd3, 0x86, 0x4a}

// A flow's protocol is what its first datagram is: "dns" with the question, from
// the built-in sniffers, and the datagrams themselves go through untouched.
func TestFlowSniffedAsDNS(t *testing.T) {
	reg := NewRegistry(Config{DatagramSniffers: sniff.DefaultDatagram(), Flow: FlowTimeouts{Unreplied: time.Hour, Replied: time.Hour}})
	clientApp, serverApp, tn, done := startFlow(t, reg)
	tn.SetProtocol("udp", nil)
	clientApp.Write(dnsQuery)
	if got := read(t, serverApp); got != string(dnsQuery) {
		t.Fatalf("server app got %x", got)
	}
	waitFor(t, func() bool { p, _ := tn.Protocol(); return p == "dns" })
	if _, props := tn.Protocol(); props["name"] != "host.quictun.test." || props["type"] != "A" {
		t.Fatalf("props %v", props)
	}
	tn.Kill()
	if err := ended(t, done); !errors.Is(err, ErrKilled) {
		t.Fatal(err)
	}
}

// A flow whose first datagrams are nobody's stays what its endpoint called it.
func TestFlowOfUnknownDatagramsKeepsItsProtocol(t *testing.T) {
	reg := NewRegistry(Config{DatagramSniffers: sniff.DefaultDatagram(), Flow: FlowTimeouts{Unreplied: time.Hour, Replied: time.Hour}})
	clientApp, serverApp, tn, done := startFlow(t, reg)
	tn.SetProtocol("udp", nil)
	// Each is NotMine for every built-in sniffer, so the actor ends after the first.
	for _, m := range []string{"hello", "world"} {
		clientApp.Write([]byte(m))
		if got := read(t, serverApp); got != m {
			t.Fatalf("server app got %q", got)
		}
	}
	serverApp.Write([]byte("answer"))
	read(t, clientApp)
	tn.Kill()
	ended(t, done)
	if p, _ := tn.Protocol(); p != "udp" {
		t.Fatalf("protocol %q, want udp", p)
	}
}

// laterSniffer is Undecided about datagrams until one starts with "me", which
// it matches with a property naming that datagram; Done after "me-last".
type laterSniffer struct{}

func (laterSniffer) Name() string { return "later" }
func (laterSniffer) SniffDatagram(d sniff.Datagram) sniff.Result {
	switch {
	case bytes.Equal(d.Payload, []byte("me-last")):
		return sniff.Result{Verdict: sniff.Match, Props: map[string]string{"last": "yes"}, Done: true}
	case bytes.HasPrefix(d.Payload, []byte("me")):
		return sniff.Result{Verdict: sniff.Match, Props: map[string]string{"first": string(d.Payload), "dir": dirName(d.FromClient)}}
	}
	return sniff.Result{Verdict: sniff.Undecided}
}

func dirName(fromClient bool) string {
	if fromClient {
		return "client"
	}
	return "server"
}

// The sniffer sees datagrams of both directions, one at a time with their
// sizes; a Match from the server's side counts, later datagrams add
// properties and never change one already shown.
func TestFlowSnifferSeesBothWaysAndKeepsProperties(t *testing.T) {
	reg := NewRegistry(Config{DatagramSniffers: []sniff.DatagramSniffer{laterSniffer{}}, Flow: FlowTimeouts{Unreplied: time.Hour, Replied: time.Hour}})
	clientApp, serverApp, tn, done := startFlow(t, reg)
	clientApp.Write([]byte("not yet"))
	read(t, serverApp)
	serverApp.Write([]byte("me-from-server"))
	read(t, clientApp)
	waitFor(t, func() bool { p, _ := tn.Protocol(); return p == "later" })
	clientApp.Write([]byte("me-again"))
	read(t, serverApp)
	clientApp.Write([]byte("me-last"))
	read(t, serverApp)
	waitFor(t, func() bool { _, props := tn.Protocol(); return props["last"] == "yes" })
	if _, props := tn.Protocol(); props["first"] != "me-from-server" || props["dir"] != "server" {
		t.Fatalf("props %v: the first Match's properties must stay", props)
	}
	tn.Kill()
	ended(t, done)
}

// stuckDatagramSniffer blocks until released.
type stuckDatagramSniffer struct{ release chan struct{} }

func (stuckDatagramSniffer) Name() string { return "stuck" }
func (s stuckDatagramSniffer) SniffDatagram(sniff.Datagram) sniff.Result {
	<-s.release
	return sniff.Result{Verdict: sniff.NotMine}
}

// A sniffer that never returns neither delays nor drops a datagram, and the
// flow still ends at once, the actor abandoned and counted.
func TestStuckDatagramSnifferDoesNotDelayDatagrams(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	reg := NewRegistry(Config{DatagramSniffers: []sniff.DatagramSniffer{stuckDatagramSniffer{release}}, Flow: FlowTimeouts{Unreplied: time.Hour, Replied: time.Hour}})
	clientApp, serverApp, tn, done := startFlow(t, reg)
	const n = 200 // far more than the tap holds
	for i := range n {
		m := []byte{byte(i), byte(i >> 8)}
		clientApp.Write(m)
		if got := read(t, serverApp); got != string(m) {
			t.Fatalf("datagram %d: got %x", i, got)
		}
	}
	tn.Kill()
	if err := ended(t, done); !errors.Is(err, ErrKilled) {
		t.Fatal(err)
	}
	if up, _, dropped := tn.Packets(); up != n || dropped != 0 {
		t.Fatalf("%d up, %d dropped", up, dropped)
	}
	if a, s := reg.SniffersAbandoned(), reg.SniffersStuck(); a != 1 || s != 1 {
		t.Fatalf("abandoned %d, stuck %d; want 1, 1", a, s)
	}
}

// The tap copies at most sniff.DatagramPrefix bytes of a datagram and says
// how long it was; it offers sniffDatagrams a direction and never blocks.
func TestDatagramTapBounds(t *testing.T) {
	tp := newDatagramTap(sniffDatagrams)
	big := make([]byte, 9000)
	for range 3 * sniffDatagrams {
		tp.offer(upstream, big)
	}
	tp.offer(downstream, []byte("x"))
	if len(tp.ch) != sniffDatagrams+1 {
		t.Fatalf("%d datagrams offered, want %d", len(tp.ch), sniffDatagrams+1)
	}
	d := <-tp.ch
	if len(d.Payload) != sniff.DatagramPrefix || d.Size != len(big) || !d.FromClient {
		t.Fatalf("payload %d, size %d, from client %v", len(d.Payload), d.Size, d.FromClient)
	}
	tp.active.Store(false)
	tp.offer(downstream, []byte("y"))
	if len(tp.ch) != sniffDatagrams {
		t.Fatal("an inactive tap offered a datagram")
	}
}
