package endpoints

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quictun/quictun/codecs/sniff"
	"github.com/quictun/quictun/codecs/udpframe"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/policy"
	"github.com/quictun/quictun/engine"
)

// udpApp is a UDP server application on loopback: it answers each datagram
// with what reply makes of it (nothing when reply returns nil).
type udpApp struct {
	conn *net.UDPConn
	wg   sync.WaitGroup
}

func startUDPApp(t testing.TB, reply func([]byte) []byte) *udpApp {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	a := &udpApp{conn: c}
	a.wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if r := reply(buf[:n]); r != nil {
				c.WriteToUDPAddrPort(r, from)
			}
		}
	})
	return a
}

func (a *udpApp) token() string { return "udp:" + a.conn.LocalAddr().String() }
func (a *udpApp) close()        { a.conn.Close(); a.wg.Wait() }

func echoDatagram(b []byte) []byte { return append([]byte(nil), b...) }

func udpPair(t *testing.T, target string, mods func(*ServerConfig), flow engine.FlowTimeouts) *pair {
	return startPair(t, pairOptions{
		listenOn: address.Address{Network: address.UDP, Addr: "127.0.0.1:0"}, token: target,
		serverMods: func(c *ServerConfig) {
			c.Engine.Flow = flow
			if mods != nil {
				mods(c)
			}
		},
		clientMods: func(c *ClientConfig) { c.Engine.Flow = flow },
	})
}

// exchange sends msg from c until the answer comes (a datagram may be lost:
// UDP's contract), at most 20 times, and waits for msg to come back. The
// late answer to an earlier datagram that was sent again is skipped: on a
// busy machine the first copy's echo can come after the retry's.
func exchange(t *testing.T, c *net.UDPConn, msg []byte) {
	t.Helper()
	buf := make([]byte, 64<<10)
	var stale int
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
			if bytes.Equal(buf[:n], msg) {
				return
			}
			stale++
		}
	}
	t.Fatalf("no answer to a datagram of %d bytes in 20 tries (%d other datagrams came back)", len(msg), stale)
}

func dialUDP(t *testing.T, a net.Addr) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, a.(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Datagrams of every size up to MaxUDPDatagram come back whole, the larger
// ones in fragments; /tunnels shows the flow as udp with its packets.
func TestUDPEchoOfEverySize(t *testing.T) {
	echoApp := startUDPApp(t, echoDatagram)
	defer echoApp.close()
	p := udpPair(t, echoApp.token(), nil, engine.FlowTimeouts{})
	defer p.stop()
	c := dialUDP(t, p.client.Addr())
	defer c.Close()
	sizes := []int{1, 2, 100, 1000, 1150, 1200, 1252, 1300, 1452, 1500, 2999, 4096, 9000, 16384, MaxUDPDatagram}
	for i, size := range sizes {
		msg := bytes.Repeat([]byte{byte(i + 1)}, size)
		msg[0], msg[size-1] = byte(size), byte(size>>8)
		exchange(t, c, msg)
	}
	// One flow on each endpoint, shown as udp with its datagrams counted.
	for _, ep := range []struct {
		name string
		reg  *engine.Registry
	}{{"client", p.client.Registry()}, {"server", p.server.Registry()}} {
		// A pump counts a datagram after it wrote it on, so the last echo can
		// reach the test before the client's down pump has counted it.
		waitFor(t, 5*time.Second, ep.name+" counted every datagram", func() bool {
			snaps := ep.reg.Snapshots()
			return len(snaps) == 1 && snaps[0].PacketsUp >= uint64(len(sizes)) && snaps[0].PacketsDown >= uint64(len(sizes))
		})
		snaps := ep.reg.Snapshots()
		s := snaps[0]
		if !s.Datagrams || s.Protocol != ProtocolUDP || s.PacketsUp < uint64(len(sizes)) || s.PacketsDown < uint64(len(sizes)) {
			t.Fatalf("%s: %+v", ep.name, s)
		}
		if s.BytesUp < 60000 || s.BytesDown < 60000 {
			t.Fatalf("%s: bytes %d up, %d down", ep.name, s.BytesUp, s.BytesDown)
		}
	}
	// The larger ones went in fragments both ways: at least those past 1500 bytes.
	for name, m := range map[string]map[string]float64{"client": gather(t, p.client), "server": gather(t, p.server)} {
		if got := m[`quictun_udp_datagrams_fragmented_total{endpoint="`+name+`"}`]; got < 6 {
			t.Errorf("%s sent %v datagrams in fragments, want 6 or more", name, got)
		}
	}
	// One larger than the largest is dropped, not cut, and counted.
	if _, err := c.Write(make([]byte, MaxUDPDatagram+1)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the too large datagram counted", func() bool {
		return gather(t, p.client)[`quictun_udp_datagrams_dropped_total{endpoint="client",reason="too large"}`] == 1
	})
	exchange(t, c, []byte("still there"))
}

// Every source port is a flow of its own, each answered on its own port.
func TestUDPFlowsFromManySourcePorts(t *testing.T) {
	echoApp := startUDPApp(t, echoDatagram)
	defer echoApp.close()
	p := udpPair(t, echoApp.token(), nil, engine.FlowTimeouts{})
	defer p.stop()
	const n = 24
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := dialUDP(t, p.client.Addr())
			defer c.Close()
			for j := range 5 {
				exchange(t, c, fmt.Appendf(nil, "source %d datagram %d %s", i, j, bytes.Repeat([]byte("x"), 1000*j)))
			}
		})
	}
	wg.Wait()
	if got := p.client.Registry().Len(); got != n {
		t.Fatalf("client: %d flows, want %d", got, n)
	}
	if got := p.server.Registry().Len(); got != n {
		t.Fatalf("server: %d flows, want %d", got, n)
	}
	m := gather(t, p.server)
	if m[`quictun_udp_flows_open{endpoint="server"}`] != n || m[`quictun_udp_datagrams_total{direction="up",endpoint="server"}`] < 5*n {
		t.Fatalf("server metrics: open %v, up %v", m[`quictun_udp_flows_open{endpoint="server"}`], m[`quictun_udp_datagrams_total{direction="up",endpoint="server"}`])
	}
}

// A flow that is never answered ends after the unreplied timeout, on both
// endpoints; the next datagram from the same source opens a new one.
func TestUDPIdleFlowsExpire(t *testing.T) {
	var mu sync.Mutex
	answer := false
	app := startUDPApp(t, func(b []byte) []byte {
		mu.Lock()
		defer mu.Unlock()
		if !answer {
			return nil
		}
		return echoDatagram(b)
	})
	defer app.close()
	tm := engine.FlowTimeouts{Unreplied: 200 * time.Millisecond, Replied: 400 * time.Millisecond}
	p := udpPair(t, app.token(), nil, tm)
	defer p.stop()
	c := dialUDP(t, p.client.Addr())
	defer c.Close()
	if _, err := c.Write([]byte("anyone?")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the flow opened", func() bool { return p.server.Registry().Len() == 1 })
	waitFor(t, 5*time.Second, "the unanswered flow expired", func() bool {
		return p.client.Registry().Len() == 0 && p.server.Registry().Len() == 0
	})
	// Whichever endpoint's timer fires first ends it; the other hears of it.
	idle := gather(t, p.client)[`quictun_tunnels_closed_total{endpoint="client",how="idle"}`] +
		gather(t, p.server)[`quictun_tunnels_closed_total{endpoint="server",how="idle"}`]
	if idle < 1 {
		t.Fatal("no flow closed as idle")
	}
	mu.Lock()
	answer = true
	mu.Unlock()
	exchange(t, c, []byte("again"))
	if got := gather(t, p.client)[`quictun_udp_flows_opened_total{endpoint="client"}`]; got != 2 {
		t.Fatalf("%v flows opened, want 2", got)
	}
	waitFor(t, 5*time.Second, "the answered flow expired", func() bool {
		return p.client.Registry().Len() == 0 && p.server.Registry().Len() == 0
	})
}

// The server's policy decides on UDP targets as on TCP ones: a forbidden
// one is refused with its status, its datagrams go nowhere, and an allowed
// flow of the same session is untouched.
func TestUDPPolicyRefusesATarget(t *testing.T) {
	allowed := startUDPApp(t, echoDatagram)
	defer allowed.close()
	forbidden := startUDPApp(t, func(b []byte) []byte { t.Errorf("the forbidden target got %q", b); return nil })
	defer forbidden.close()
	rules, err := policy.Parse([]string{allowed.conn.LocalAddr().String()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := udpPair(t, allowed.token(), func(c *ServerConfig) { c.Rules = rules }, engine.FlowTimeouts{})
	defer p.stop()
	if err := p.client.AddForward(ForwardSpec{Name: "forbidden", ListenOn: "udp:127.0.0.1:0", TokenSource: forbidden.token()}); err != nil {
		t.Fatal(err)
	}
	ok := dialUDP(t, p.client.Addr())
	defer ok.Close()
	no := dialUDP(t, p.client.ForwardAddr("forbidden"))
	defer no.Close()
	if _, err := no.Write([]byte("let me in")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the refusal counted", func() bool {
		for _, f := range p.client.Forwards() {
			if f.Name == "forbidden" && f.Failures["forbidden target"] == 1 {
				return true
			}
		}
		return false
	})
	// Datagrams while the refusal holds are dropped at the client.
	for range 10 {
		no.Write([]byte("again"))
	}
	waitFor(t, 5*time.Second, "datagrams of the refused flow dropped", func() bool {
		return gather(t, p.client)[`quictun_udp_datagrams_dropped_total{endpoint="client",reason="refused flow"}`] >= 1
	})
	exchange(t, ok, []byte("allowed"))
	if got := gather(t, p.server)[`quictun_tunnel_failures_total{endpoint="server",reason="forbidden target"}`]; got < 1 {
		t.Fatalf("server counted %v refusals", got)
	}
	if n := p.server.Registry().Len(); n != 1 {
		t.Fatalf("server: %d flows, want the allowed one", n)
	}
}

// A session that has not proved its hello has no flows: its datagrams,
// however many, are dropped as they come and counted, and the session is
// closed at the hello's deadline as any other. A real client's flow works
// while the stranger floods.
func TestUDPDatagramsBeforeTheHelloDropped(t *testing.T) {
	target := startUDPApp(t, func(b []byte) []byte {
		if bytes.Equal(b, []byte("flood")) {
			t.Errorf("a stranger's datagram reached the target")
			return nil
		}
		return echoDatagram(b)
	})
	defer target.close()
	const secret = "the-real-clients-secret"
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) {
		c.Secret = []byte(secret)
		c.PreambleTimeout = 2 * time.Second
	}})
	defer stopServer()
	s := newStranger(t)
	defer s.close()
	conn, err := s.dial(srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	// Flows 1 and up, whole and fragments, as a client's would be, until the
	// real client got its answer or the session is closed (at most 200000).
	var sent int
	stop := make(chan struct{})
	var flood sync.WaitGroup
	flood.Go(func() {
		for i := range 200000 {
			select {
			case <-stop:
				return
			default:
			}
			h := udpframe.Header{Flow: uint64(1 + i%8), Count: 1}
			if i%2 == 1 {
				h = udpframe.Header{Flow: uint64(1 + i%8), Count: 3, Seq: uint64(i), Index: uint8(i % 3)}
			}
			if err := conn.SendDatagram(append(udpframe.AppendHeader(nil, h), "flood"...)); err != nil {
				return
			}
			sent++
		}
	})
	waitFor(t, 5*time.Second, "the stranger's datagrams counted", func() bool {
		return gather(t, srv)[`quictun_udp_datagrams_dropped_total{endpoint="server",reason="unauthenticated"}`] > 0
	})
	cli, stopClient := startClient(t, srv.Addr().String(), pairOptions{
		listenOn: address.Address{Network: address.UDP, Addr: "127.0.0.1:0"}, token: target.token(),
		clientMods: func(c *ClientConfig) { c.Secret = []byte(secret) }})
	c := dialUDP(t, cli.Addr())
	exchange(t, c, []byte("a real client's datagram"))
	c.Close()
	stopClient()
	close(stop)
	flood.Wait()
	select {
	case <-conn.Context().Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the stranger's session outlived the hello's deadline")
	}
	m := gather(t, srv)
	if got := m[`quictun_udp_datagrams_dropped_total{endpoint="server",reason="unauthenticated"}`]; got > float64(sent) {
		t.Fatalf("%v dropped of %d sent", got, sent)
	}
	if m[`quictun_udp_flows_opened_total{endpoint="server"}`] != 1 {
		t.Fatalf("%v flows opened: want the real client's one, none of the stranger's", m[`quictun_udp_flows_opened_total{endpoint="server"}`])
	}
	t.Logf("the stranger sent %d datagrams, %v counted as dropped", sent, m[`quictun_udp_datagrams_dropped_total{endpoint="server",reason="unauthenticated"}`])
}

// A flow is shown by what its datagrams are: a DNS query through the tunnel
// makes it "dns", with the question, on both endpoints (each sniffs the
// datagrams it carries), while the endpoints' own name for it was "udp".
func TestUDPFlowSniffedOnBothEndpoints(t *testing.T) {
	// The answer: the query with QR set, as a server that knows nothing says (REFUSED).
	dnsApp := startUDPApp(t, func(q []byte) []byte {
		a := append([]byte(nil), q...)
		a[2] |= 0x80
		a[3] = a[3]&0xf0 | 5
		return a
	})
	defer dnsApp.close()
	sniffers := func(e *engine.Config) { e.DatagramSniffers = sniff.DefaultDatagram() }
	p := startPair(t, pairOptions{
		listenOn: address.Address{Network: address.UDP, Addr: "127.0.0.1:0"}, token: dnsApp.token(),
		serverMods: func(c *ServerConfig) { sniffers(&c.Engine) },
		clientMods: func(c *ClientConfig) { sniffers(&c.Engine) },
	})
	defer p.stop()
	c := dialUDP(t, p.client.Addr())
	defer c.Close()
	// A TXT query for x.quictun.test, no EDNS.
	query := []byte{0x0b, 0x0e, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 'x', 7, 'q', 'u', 'i', 'c', 't', 'u', 'n', 4, 't', 'e', 's', 't', 0, 0, 16, 0, 1}
	want := append([]byte(nil), query...)
	want[2] |= 0x80
	want[3] |= 5
	if _, err := c.Write(query); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], want) {
		t.Fatalf("answer %x, %v; want %x", buf[:n], err, want)
	}
	for name, reg := range map[string]*engine.Registry{"client": p.client.Registry(), "server": p.server.Registry()} {
		waitFor(t, 5*time.Second, name+" shows the flow as dns", func() bool {
			snaps := reg.Snapshots()
			return len(snaps) == 1 && snaps[0].Protocol == "dns"
		})
		if s := reg.Snapshots()[0]; !s.Datagrams || s.Props["name"] != "x.quictun.test." || s.Props["type"] != "TXT" {
			t.Fatalf("%s: %+v", name, s)
		}
	}
}

// A flow that sends little is interactive: its datagrams go urgent, ahead of
// bulk ones and past a full window (flowSide.SetInteractive: the pumps mark
// only a Prioritized side); one that sends past the pumps' budget turns bulk.
func TestUDPFlowIsInteractiveUntilItSendsInBulk(t *testing.T) {
	app := startUDPApp(t, func([]byte) []byte { return nil })
	defer app.close()
	p := udpPair(t, app.token(), nil, engine.FlowTimeouts{})
	defer p.stop()
	c := dialUDP(t, p.client.Addr())
	defer c.Close()
	interactive := func() (on, ok bool) {
		snaps := p.client.Registry().Snapshots()
		if len(snaps) != 1 {
			return false, false
		}
		return snaps[0].Interactive, true
	}
	waitFor(t, 10*time.Second, "an interactive flow", func() bool {
		_, _ = c.Write([]byte("tick"))
		on, ok := interactive()
		return ok && on
	})
	big := make([]byte, 1200)
	waitFor(t, 10*time.Second, "the flow turned bulk", func() bool {
		for range 100 { // 120 kB: past 64 KiB in a quarter second
			_, _ = c.Write(big)
		}
		on, ok := interactive()
		return ok && !on
	})
}

// A shutdown does not wait for UDP flows: one ends only when idle, and a
// drain of DrainTimeout (here a minute) would hold every stop that long.
func TestShutdownDoesNotDrainUDPFlows(t *testing.T) {
	app := startUDPApp(t, echoDatagram)
	defer app.close()
	long := func(c *time.Duration) { *c = time.Minute }
	p := startPair(t, pairOptions{
		listenOn: address.Address{Network: address.UDP, Addr: "127.0.0.1:0"}, token: app.token(),
		serverMods: func(c *ServerConfig) { long(&c.DrainTimeout) },
		clientMods: func(c *ClientConfig) { long(&c.DrainTimeout) },
	})
	c := dialUDP(t, p.client.Addr())
	defer c.Close()
	exchange(t, c, []byte("flow"))
	start := time.Now()
	p.stop()
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("both endpoints took %v to stop beside an open flow, want well under their drain of a minute", took)
	}
}
