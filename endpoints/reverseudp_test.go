package endpoints

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quictun/quictun/codecs/udpframe"
	"github.com/quictun/quictun/endpoints/identity"
	"github.com/quictun/quictun/engine"
)

// freeLoopbackUDP is a UDP address on a loopback IP of its own with a port
// that was free a moment ago: what a udp: reverse forward asks the server for.
func freeLoopbackUDP(t *testing.T) string {
	t.Helper()
	ip := loopbackTCP().Addr
	ua, err := net.ResolveUDPAddr("udp", ip)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", ua)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// heldUDP waits until the server's udp: binding of listen is held by
// identity.
func heldUDP(t *testing.T, srv *Server, listen, identity string) {
	t.Helper()
	waitUntil(t, func() bool {
		for _, b := range srv.Bindings() {
			if b.Listen == listen && b.Protocol == "udp" && b.Held && b.Identity == identity {
				return true
			}
		}
		return false
	})
}

// exchangeTagged is exchange for a target that answers msg with tag+msg: it
// fails on an answer of another tag (a datagram that reached the wrong
// flow's target) as on none.
func exchangeTagged(t *testing.T, c *net.UDPConn, tag string, msg []byte) {
	t.Helper()
	want := append([]byte(tag), msg...)
	buf := make([]byte, 64<<10)
	for range 20 {
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, err := c.Read(buf)
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(buf[:n], want) {
				return
			}
			if !bytes.HasPrefix(buf[:n], []byte(tag)) {
				t.Fatalf("a datagram of %d bytes sent for %q came back as %q...", len(msg), tag, buf[:min(n, 16)])
			}
			// A late answer to an earlier datagram sent again: skip it.
		}
	}
	t.Fatalf("no answer to a datagram of %d bytes in 20 tries", len(msg))
}

// answered sends msg once and says whether it came back within 500 ms.
func answered(c *net.UDPConn, msg []byte) bool {
	if _, err := c.Write(msg); err != nil {
		return false
	}
	buf := make([]byte, len(msg)+1)
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return false
		}
		if bytes.Equal(buf[:n], msg) {
			return true
		}
	}
}

func tagged(tag string) func([]byte) []byte {
	return func(b []byte) []byte { return append([]byte(tag), b...) }
}

// A udp: reverse forward carries datagrams of every size up to the largest,
// the larger in fragments, from the server's published port to a target on
// the client's side; both registries show the flow as reverse and udp, with
// the forward's name; /forwards and the metrics count it.
func TestReverseUDPEchoOfEverySize(t *testing.T) {
	echoApp := startUDPApp(t, echoDatagram)
	defer echoApp.close()
	listen := freeLoopbackUDP(t)
	srv, stopServer := reverseServer(t, []string{"udp:" + listen}, nil)
	defer stopServer()
	cli, stopClient := reverseClient(t, srv.Addr(), "alice", aliceSecret,
		ReverseSpec{Name: "dns", ListenOn: "udp:" + listen, Target: echoApp.token()}, nil)
	defer stopClient()
	heldUDP(t, srv, listen, "alice")
	ua, _ := net.ResolveUDPAddr("udp", listen)
	c := dialUDP(t, ua)
	defer c.Close()
	sizes := []int{1, 2, 100, 1000, 1150, 1200, 1252, 1300, 1452, 1500, 2999, 4096, 9000, 16384, MaxUDPDatagram}
	for i, size := range sizes {
		msg := bytes.Repeat([]byte{byte(i + 1)}, size)
		msg[0], msg[size-1] = byte(size), byte(size>>8)
		exchange(t, c, msg)
	}
	for _, ep := range []struct {
		name string
		reg  *engine.Registry
	}{{"client", cli.Registry()}, {"server", srv.Registry()}} {
		snaps := ep.reg.Snapshots()
		if len(snaps) != 1 {
			t.Fatalf("%s: %d tunnels, want 1 flow", ep.name, len(snaps))
		}
		s := snaps[0]
		if !s.Datagrams || s.Protocol != ProtocolUDP || s.Info.Direction != engine.DirectionReverse || s.Info.Forward != "dns" ||
			s.PacketsUp < uint64(len(sizes)) || s.PacketsDown < uint64(len(sizes)) {
			t.Fatalf("%s: %+v", ep.name, s)
		}
		if s.Info.StreamID%4 != 1 {
			t.Fatalf("%s: the flow rides on stream %d, not one the server opened", ep.name, s.Info.StreamID)
		}
	}
	cm, sm := gather(t, cli), gather(t, srv)
	for name, m := range map[string]map[string]float64{"client": cm, "server": sm} {
		if got := m[`quictun_udp_datagrams_fragmented_total{endpoint="`+name+`"}`]; got < 6 {
			t.Errorf("%s sent %v datagrams in fragments, want 6 or more", name, got)
		}
		if got := m[`quictun_udp_flows_open{endpoint="`+name+`"}`]; got != 1 {
			t.Errorf("%s: %v flows open", name, got)
		}
	}
	if cm[`quictun_reverse_tunnels_opened_total{endpoint="client",reverse="dns"}`] != 1 ||
		cm[`quictun_reverse_tunnels_open{endpoint="client",reverse="dns"}`] != 1 {
		t.Errorf("the client's reverse metrics do not count the flow")
	}
	if sm[`quictun_reverse_bindings{endpoint="server",state="held"}`] != 1 {
		t.Errorf("the server counts no held binding")
	}
	if st := cli.reverseStatuses(); len(st) != 1 || st[0].ListenOn != "udp:"+listen || st[0].Target != echoApp.token() || st[0].TunnelsOpen != 1 {
		t.Errorf("client's /forwards: %+v", st)
	}
	// One larger than the largest is dropped at the server's socket, counted.
	if _, err := c.Write(make([]byte, MaxUDPDatagram+1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the too large datagram counted", func() bool {
		return gather(t, srv)[`quictun_udp_datagrams_dropped_total{endpoint="server",reason="too large"}`] == 1
	})
	exchange(t, c, []byte("still there"))
}

// A forward UDP flow and a reverse UDP flow of one session run at once, on
// streams whose IDs over four meet (client streams 0, 4, 8, server streams
// 1, 5, 9): each flow's datagrams reach its own target and come back to its
// own source. The targets tag their answers, so a datagram routed to the
// other flow fails the test rather than vanishing.
func TestForwardAndReverseUDPFlowsOnOneSession(t *testing.T) {
	fwdTarget := startUDPApp(t, tagged("F|"))
	defer fwdTarget.close()
	revTarget := startUDPApp(t, tagged("R|"))
	defer revTarget.close()
	listen := freeLoopbackUDP(t)
	srv, stopServer := reverseServer(t, []string{"udp:" + listen}, nil)
	defer stopServer()
	cli, stopClient := reverseClient(t, srv.Addr(), "alice", aliceSecret,
		ReverseSpec{Name: "rev", ListenOn: "udp:" + listen, Target: revTarget.token()}, func(c *ClientConfig) {
			c.Forwards = []ForwardSpec{{Name: "fwd", ListenOn: "udp:127.0.0.1:0", TokenSource: fwdTarget.token()}}
		})
	defer stopClient()
	heldUDP(t, srv, listen, "alice")
	rua, _ := net.ResolveUDPAddr("udp", listen)
	// Four flows each way, from sockets of their own, opened in turns so
	// that the two directions' stream numbers overlap.
	const flows = 4
	var fwd, rev []*net.UDPConn
	for i := range flows {
		f := dialUDP(t, cli.ForwardAddr("fwd"))
		defer f.Close()
		exchangeTagged(t, f, "F|", fmt.Appendf(nil, "forward %d opens", i))
		r := dialUDP(t, rua)
		defer r.Close()
		exchangeTagged(t, r, "R|", fmt.Appendf(nil, "reverse %d opens", i))
		fwd, rev = append(fwd, f), append(rev, r)
	}
	// The case this test is for: under the quarter stream ID alone some
	// reverse flow would have had a forward flow's number.
	quarter := map[int64]string{}
	for _, s := range cli.Registry().Snapshots() {
		if s.Datagrams && s.Info.Direction != engine.DirectionReverse {
			quarter[s.Info.StreamID/4] = "forward"
		}
	}
	met := 0
	for _, s := range cli.Registry().Snapshots() {
		if s.Datagrams && s.Info.Direction == engine.DirectionReverse {
			if quarter[s.Info.StreamID/4] != "" {
				met++
			}
			if udpframe.FlowNumber(uint64(s.Info.StreamID)) < udpframe.ReverseFlowBase {
				t.Fatalf("reverse flow on stream %d numbered as a forward one", s.Info.StreamID)
			}
		}
	}
	if met == 0 || len(quarter) != flows {
		t.Fatalf("%d forward flows, %d reverse flows on a stream whose ID over four a forward flow has: no collision case", len(quarter), met)
	}
	// Then all of them at once, interleaved, in several sizes (fragmented
	// ones too).
	for round, size := range []int{10, 1200, 3000, 9000} {
		for i := range flows {
			msg := bytes.Repeat([]byte{byte('a' + i)}, size)
			msg[0] = byte(round)
			exchangeTagged(t, fwd[i], "F|", msg)
			exchangeTagged(t, rev[i], "R|", msg)
		}
	}
	m := gather(t, cli, srv)
	for _, ep := range []string{"client", "server"} {
		if got := m[`quictun_udp_datagrams_dropped_total{endpoint="`+ep+`",reason="unknown flow"}`]; got != 0 {
			t.Errorf("%s dropped %v datagrams of unknown flows", ep, got)
		}
		if got := m[`quictun_udp_flows_open{endpoint="`+ep+`"}`]; got != 2*flows {
			t.Errorf("%s: %v flows open, want %d", ep, got, 2*flows)
		}
	}
}

// A UDP bind needs a rule that says udp:. A server whose --allow-bind names
// the address and port without it (a TCP rule) refuses it, counted on both
// sides, and binds no UDP socket; an identity's bind=udp: rule lets that
// identity have it.
func TestReverseUDPBindRefusedByPolicy(t *testing.T) {
	echoApp := startUDPApp(t, echoDatagram)
	defer echoApp.close()
	listen := freeLoopbackUDP(t)
	ids, _, err := identity.Parse(strings.NewReader("alice "+aliceSecret+" bind=udp:"+listen+"\nbob "+bobSecret+"\n"), "ids", nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, stopServer := reverseServer(t, []string{listen}, func(c *ServerConfig) { c.Identities = ids })
	defer stopServer()
	rs := ReverseSpec{Name: "dns", ListenOn: "udp:" + listen, Target: echoApp.token()}
	bob, stopBob := reverseClient(t, srv.Addr(), "bob", bobSecret, rs, nil)
	waitUntil(t, func() bool {
		return gather(t, bob)[`quictun_tunnel_failures_total{endpoint="client",reason="forbidden target"}`] >= 1
	})
	if m := gather(t, srv); m[`quictun_tunnel_failures_total{endpoint="server",reason="forbidden target"}`] < 1 {
		t.Fatal("the server did not count the refused bind")
	}
	if len(srv.Bindings()) != 0 {
		t.Fatalf("bound without a udp: rule: %+v", srv.Bindings())
	}
	// Nothing holds the port: this test can bind it itself.
	ua, _ := net.ResolveUDPAddr("udp", listen)
	if c, err := net.ListenUDP("udp", ua); err != nil {
		t.Fatalf("the refused UDP port is held: %v", err)
	} else {
		c.Close()
	}
	stopBob()
	_, stopAlice := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, nil)
	defer stopAlice()
	heldUDP(t, srv, listen, "alice")
	c := dialUDP(t, ua)
	defer c.Close()
	exchange(t, c, []byte("through alice's bind=udp: rule"))
}

// A client killed without a word (its packets stop) is taken over by its
// restart; a source that sent through the old session gets through the new
// one from its next datagrams. While no client is there the socket stays
// bound for the grace, a new source's datagrams wait for the next session
// (within --session-wait), and after the grace the port is released.
func TestReverseUDPTakeoverAndGrace(t *testing.T) {
	echoApp := startUDPApp(t, echoDatagram)
	defer echoApp.close()
	listen := freeLoopbackUDP(t)
	srv, stopServer := reverseServer(t, []string{"udp:" + listen}, func(c *ServerConfig) {
		c.ReverseGrace = 3 * time.Second
		c.SessionWait = 10 * time.Second
	})
	defer stopServer()
	rs := ReverseSpec{Name: "dns", ListenOn: "udp:" + listen, Target: echoApp.token()}
	var silent atomic.Bool
	_, stopKilled := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, func(c *ClientConfig) {
		c.WrapUDP = func(pc net.PacketConn) net.PacketConn { return &muteConn{PacketConn: pc, mute: &silent} }
	})
	heldUDP(t, srv, listen, "alice")
	ua, _ := net.ResolveUDPAddr("udp", listen)
	c := dialUDP(t, ua)
	defer c.Close()
	exchange(t, c, []byte("before the kill"))
	silent.Store(true)
	_, stopRestarted := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, nil)
	// The same source, whose flow rode on the killed session, gets through
	// once the restart has taken over (the ping bound, not the idle timeout).
	waitFor(t, 20*time.Second, "an answer through the restarted client", func() bool {
		return answered(c, []byte("after the takeover"))
	})
	stopKilled()

	stopRestarted()
	waitUntil(t, func() bool { b := srv.Bindings(); return len(b) == 1 && !b[0].Held })
	waiting := dialUDP(t, ua)
	defer waiting.Close()
	if _, err := waiting.Write([]byte("sent while no client is there")); err != nil {
		t.Fatal(err)
	}
	// Queued on the server, not lost: it reaches the next session's target.
	_, stopNext := reverseClient(t, srv.Addr(), "alice", aliceSecret, rs, nil)
	buf := make([]byte, 100)
	_ = waiting.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := waiting.Read(buf); err != nil || string(buf[:n]) != "sent while no client is there" {
		t.Fatalf("the waiting datagram: %q, %v", buf[:n], err)
	}
	stopNext()
	waitFor(t, 15*time.Second, "the binding released after its grace", func() bool { return len(srv.Bindings()) == 0 })
	if p, err := net.ListenUDP("udp", ua); err != nil {
		t.Fatalf("the released port is still held: %v", err)
	} else {
		p.Close()
	}
}
