package endpoints

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quictun/quictun/engine"
)

// An RFC 1928 UDP ASSOCIATE client, written here from the RFC rather than
// with the proxy's own codec: greeting without authentication, the request
// with the address it will send from (zeros when it does not say), the
// reply's BND.ADDR and BND.PORT, then datagrams with the UDP request header.
type socksUDPClient struct {
	ctl   net.Conn     // the association lives as long as this
	pc    *net.UDPConn // the application's datagram socket
	relay *net.UDPAddr
}

// socksAssociate asks proxy for an association; pin names pc's port in the
// request. A refusal returns the reply code as an error.
func socksAssociate(t *testing.T, proxy net.Addr, pin bool) (*socksUDPClient, error) {
	t.Helper()
	ctl, err := net.DialTimeout("tcp", proxy.String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The datagrams come from the IP the control connection comes from.
	ip := ctl.LocalAddr().(*net.TCPAddr).IP
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	fail := func(err error) (*socksUDPClient, error) {
		ctl.Close()
		pc.Close()
		return nil, err
	}
	_ = ctl.SetDeadline(time.Now().Add(10 * time.Second))
	req := []byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}
	if pin {
		copy(req[7:11], ip.To4())
		binary.BigEndian.PutUint16(req[11:], uint16(pc.LocalAddr().(*net.UDPAddr).Port))
	}
	if _, err := ctl.Write(req); err != nil {
		return fail(err)
	}
	var reply [12]byte // method choice, then a reply with an IPv4 BND.ADDR
	if _, err := io.ReadFull(ctl, reply[:2]); err != nil || reply[1] != 0 {
		return fail(fmt.Errorf("method %x: %v", reply[:2], err))
	}
	if _, err := io.ReadFull(ctl, reply[2:6]); err != nil {
		return fail(err)
	}
	if reply[3] != 0 {
		return fail(fmt.Errorf("reply %d", reply[3]))
	}
	if reply[5] != 1 {
		return fail(fmt.Errorf("bound address type %d, want IPv4", reply[5]))
	}
	if _, err := io.ReadFull(ctl, reply[6:12]); err != nil {
		return fail(err)
	}
	_ = ctl.SetDeadline(time.Time{})
	relay := &net.UDPAddr{IP: net.IP(reply[6:10]), Port: int(binary.BigEndian.Uint16(reply[10:]))}
	return &socksUDPClient{ctl: ctl, pc: pc, relay: relay}, nil
}

func (c *socksUDPClient) close() { c.ctl.Close(); c.pc.Close() }

// socksUDPHeader is the header of a datagram to host:port: an IPv4 or IPv6
// address, or a name (an IP written as a name stays a name).
func socksUDPHeader(host string, port int, asName bool) []byte {
	b := []byte{0, 0, 0}
	if a, err := netip.ParseAddr(host); err == nil && !asName {
		if a.Is4() {
			b = append(append(b, 1), a.AsSlice()...)
		} else {
			b = append(append(b, 4), a.AsSlice()...)
		}
	} else {
		b = append(append(b, 3, byte(len(host))), host...)
	}
	return binary.BigEndian.AppendUint16(b, uint16(port))
}

func hostPort(t *testing.T, a net.Addr) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// exchange sends msg to the destination of hdr through the association
// until its echo comes back (UDP may lose a datagram), at most 20 times; the
// answer must carry the same header (it names where it came from).
func (c *socksUDPClient) exchange(t *testing.T, hdr, msg []byte) {
	t.Helper()
	buf := make([]byte, 64<<10)
	want := append(append([]byte(nil), hdr...), msg...)
	for range 20 {
		if _, err := c.pc.WriteToUDP(want, c.relay); err != nil {
			t.Fatal(err)
		}
		_ = c.pc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		for {
			n, from, err := c.pc.ReadFromUDP(buf)
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if from.String() != c.relay.String() {
				t.Fatalf("answer from %v, not the relay %v", from, c.relay)
			}
			if bytes.Equal(buf[:n], want) {
				return
			}
			if !bytes.HasPrefix(buf[:n], hdr) {
				t.Fatalf("answer %x does not name its destination %x", buf[:n], hdr)
			}
			// A late echo of an earlier datagram: keep reading.
		}
	}
	t.Fatalf("no echo of %q through the association", msg)
}

func clientMetric(t *testing.T, p *pair, name string) float64 {
	t.Helper()
	return gather(t, p.client)[name]
}

// UDP ASSOCIATE: each destination is a flow whose token the server's policy
// decides, as for a udp: forward; answers come back with the header naming
// the destination (an IP written as a name comes back as that name); a
// forbidden destination is refused beside an allowed one; /tunnels and the
// metrics show the flows; and the association's flows end with its TCP
// connection, cleanly, on both endpoints.
func TestSOCKS5UDPAssociate(t *testing.T) {
	allowed := startUDPApp(t, echoDatagram)
	defer allowed.close()
	forbidden := startUDPApp(t, func(b []byte) []byte { t.Errorf("the forbidden target got %q", b); return nil })
	defer forbidden.close()
	p := proxyPair(t, []string{allowed.conn.LocalAddr().String()}, [2]string{}, false)
	defer p.stop()
	c, err := socksAssociate(t, p.client.ForwardAddr("socks"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if got, want := c.relay.IP.String(), p.client.ForwardAddr("socks").(*net.TCPAddr).IP.String(); got != want {
		t.Fatalf("relay on %s, want the proxy's IP %s", got, want)
	}
	host, port := hostPort(t, allowed.conn.LocalAddr())
	byIP, byName := socksUDPHeader(host, port, false), socksUDPHeader(host, port, true)
	c.exchange(t, byIP, []byte("by address"))
	c.exchange(t, byName, []byte("by name"))
	c.exchange(t, byIP, bytes.Repeat([]byte("large "), 3000)) // 18000 bytes: fragments on the way

	fhost, fport := hostPort(t, forbidden.conn.LocalAddr())
	if _, err := c.pc.WriteToUDP(append(socksUDPHeader(fhost, fport, false), "let me in"...), c.relay); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the refusal counted", func() bool {
		for _, f := range p.client.Forwards() {
			if f.Name == "socks" && f.Failures["forbidden target"] == 1 {
				return true
			}
		}
		return false
	})
	c.exchange(t, byIP, []byte("still allowed"))

	var flows []*engine.Tunnel
	for _, tn := range p.client.Registry().Tunnels() {
		if tn.Datagrams() {
			flows = append(flows, tn)
		}
	}
	if len(flows) != 2 {
		t.Fatalf("client: %d flows, want 2 (the allowed target by address and by name)", len(flows))
	}
	for _, tn := range flows {
		if proto, _ := tn.Protocol(); tn.Info.Forward != "socks" || tn.Info.ServerAppAddr != "udp:"+allowed.conn.LocalAddr().String() ||
			tn.Info.ClientAppAddr != "udp:"+c.pc.LocalAddr().String() || proto != ProtocolUDP {
			t.Fatalf("flow %+v (%s)", tn.Info, proto)
		}
	}
	if n := p.server.Registry().Len(); n != 2 {
		t.Fatalf("server: %d flows, want 2", n)
	}
	m := gather(t, p.client)
	if m[`quictun_socks_udp_associations_open{endpoint="client"}`] != 1 || m[`quictun_udp_flows_opened_total{endpoint="client"}`] != 2 {
		t.Fatalf("metrics: associations %v, flows opened %v", m[`quictun_socks_udp_associations_open{endpoint="client"}`], m[`quictun_udp_flows_opened_total{endpoint="client"}`])
	}

	c.ctl.Close()
	waitFor(t, 5*time.Second, "the flows ended with the association", func() bool {
		return p.client.Registry().Len() == 0 && p.server.Registry().Len() == 0 &&
			clientMetric(t, p, `quictun_socks_udp_associations_open{endpoint="client"}`) == 0
	})
	if clean := clientMetric(t, p, `quictun_tunnels_closed_total{endpoint="client",how="clean"}`); clean != 2 {
		t.Fatalf("%v flows closed cleanly, want 2", clean)
	}
	// A new association of the same proxy works.
	c2, err := socksAssociate(t, p.client.ForwardAddr("socks"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.close()
	c2.exchange(t, byIP, []byte("again"))
}

// Only the application that asked may use an association. Datagrams from
// another port of its IP, or from another IP, are dropped and counted and
// reach no target, however many; fragments and malformed headers too; the
// application carries on. A request naming its port pins it from the
// start, so a stranger's datagram before the first real one cannot take it.
func TestSOCKS5UDPAssociationTakesOnlyItsApplication(t *testing.T) {
	var strangers atomic.Int64
	echo := startUDPApp(t, func(b []byte) []byte {
		if bytes.HasPrefix(b, []byte("stranger")) {
			strangers.Add(1)
		}
		return echoDatagram(b)
	})
	defer echo.close()
	p := proxyPair(t, []string{echo.conn.LocalAddr().String()}, [2]string{}, false)
	defer p.stop()
	host, port := hostPort(t, echo.conn.LocalAddr())
	hdr := socksUDPHeader(host, port, false)
	dropped := func(reason string) float64 {
		return clientMetric(t, p, `quictun_udp_datagrams_dropped_total{endpoint="client",reason="`+reason+`"}`)
	}
	flood := func(from *net.UDPConn, to *net.UDPAddr, n int) {
		for i := range n {
			if _, err := from.WriteToUDP(fmt.Appendf(append([]byte(nil), hdr...), "stranger %d", i), to); err != nil {
				t.Fatal(err)
			}
		}
	}

	c, err := socksAssociate(t, p.client.ForwardAddr("socks"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	c.exchange(t, hdr, []byte("first")) // its port is learnt here
	ip := c.pc.LocalAddr().(*net.UDPAddr).IP
	samePort, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	defer samePort.Close()
	const n = 100
	flood(samePort, c.relay, n)
	waitFor(t, 10*time.Second, "another port's datagrams dropped", func() bool { return dropped("foreign source") >= n })
	otherIP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer otherIP.Close()
	flood(otherIP, c.relay, n)
	waitFor(t, 10*time.Second, "another IP's datagrams dropped", func() bool { return dropped("foreign source") >= 2*n })

	// Fragments and malformed headers from the application itself.
	frag := append([]byte(nil), hdr...)
	frag[2] = 1
	for _, d := range [][]byte{append(frag, "stranger fragment"...), {0, 0, 0, 9, 1}, append([]byte{0, 1}, hdr[2:]...)} {
		if _, err := c.pc.WriteToUDP(d, c.relay); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "a fragment and two malformed headers dropped", func() bool {
		return dropped("socks fragment") == 1 && dropped("malformed") == 2
	})
	c.exchange(t, hdr, []byte("still mine"))

	// Pinned: the stranger speaks first, from the same IP.
	pinned, err := socksAssociate(t, p.client.ForwardAddr("socks"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer pinned.close()
	before := dropped("foreign source")
	flood(samePort, pinned.relay, 1)
	waitFor(t, 5*time.Second, "the first stranger's datagram dropped", func() bool { return dropped("foreign source") == before+1 })
	pinned.exchange(t, hdr, []byte("pinned"))
	if s := strangers.Load(); s != 0 {
		t.Fatalf("%d strangers' datagrams reached the target", s)
	}
	if n := p.server.Registry().Len(); n != 2 {
		t.Fatalf("server: %d flows, want one per association", n)
	}
}

// Bounds: 32 associations at once per proxy, the next refused with a
// general failure (and counted) until one ends; 128 destinations per
// association, a datagram to the next dropped and counted. Every
// destination here is a port nothing listens on (the flows stay, unanswered).
func TestSOCKS5UDPAssociationBounds(t *testing.T) {
	p := proxyPair(t, nil, [2]string{}, false)
	defer p.stop()
	at := p.client.ForwardAddr("socks")
	var held []*socksUDPClient
	defer func() {
		for _, c := range held {
			c.close()
		}
	}()
	for range maxAssociationsPerProxy {
		c, err := socksAssociate(t, at, false)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	if _, err := socksAssociate(t, at, false); err == nil || err.Error() != "reply 1" {
		t.Fatalf("association %d: %v, want reply 1", maxAssociationsPerProxy+1, err)
	}
	if got := clientMetric(t, p, `quictun_tunnel_failures_total{endpoint="client",reason="too many associations"}`); got != 1 {
		t.Fatalf("%v refusals counted", got)
	}
	held[0].close()
	held = held[1:]
	waitFor(t, 5*time.Second, "the association ended", func() bool {
		return clientMetric(t, p, `quictun_socks_udp_associations_open{endpoint="client"}`) == maxAssociationsPerProxy-1
	})
	c, err := socksAssociate(t, at, false)
	if err != nil {
		t.Fatal(err)
	}
	held = append(held, c)

	// 128 destinations, then one more.
	for i := range maxFlowsPerAssociation + 1 {
		d := append(socksUDPHeader("127.0.0.1", 40000+i, false), "anyone?"...)
		if _, err := c.pc.WriteToUDP(d, c.relay); err != nil {
			t.Fatal(err)
		}
		if i == maxFlowsPerAssociation-1 {
			waitFor(t, 10*time.Second, "128 flows opened", func() bool { return p.server.Registry().Len() == maxFlowsPerAssociation })
		}
	}
	waitFor(t, 5*time.Second, "the 129th destination dropped", func() bool {
		return clientMetric(t, p, `quictun_udp_datagrams_dropped_total{endpoint="client",reason="too many flows"}`) == 1
	})
}

// A SOCKS5 proxy on a UNIX socket has no peer IP to check datagrams
// against: UDP ASSOCIATE gets "command not supported", CONNECT still works.
func TestSOCKS5UDPAssociateRefusedOnUnixSockets(t *testing.T) {
	p := proxyPair(t, nil, [2]string{}, true)
	defer p.stop()
	ctl, err := net.DialTimeout("unix", p.client.ForwardAddr("socks").String(), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	_ = ctl.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := ctl.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 12)
	if _, err := io.ReadFull(ctl, reply); err != nil || reply[3] != 7 {
		t.Fatalf("reply %x, %v; want command not supported (7)", reply, err)
	}
	if _, err := ctl.Read(reply); err != io.EOF {
		t.Fatalf("the control connection stays open: %v", err)
	}
}
