package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quictun/quictun/internal/livetest"
)

// udpClient runs a server and a client whose forward listen (udp:) reaches
// target (udp:) through it, plus any extra client arguments; it returns the
// client and its API address.
func udpClient(t *testing.T, listen, target string, extra ...string) (*proc, string) {
	t.Helper()
	udp := freePort(t, "udp")
	srv := start(t, "quictun-server", "--listen-on", udp)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	api := freePort(t, "tcp")
	cli := start(t, "quictun-client", append([]string{"--server-endpoint", udp, "--server-fingerprint", fp,
		"--listen-on", listen, "--token-source", target, "--httpd-listen-on", api}, extra...)...)
	cli.waitLog(t, `msg="forward accepting" forward=default listen=udp:`)
	return cli, api
}

// udpTunnels lists an endpoint's live UDP flows from its API (those with
// datagram counts: a flow's protocol is the sniffed one, or "udp").
func udpTunnels(t *testing.T, api string) []map[string]any {
	t.Helper()
	var all []map[string]any
	getJSON(t, "http://"+api+"/tunnels", &all)
	var out []map[string]any
	for _, tn := range all {
		if _, ok := tn["packetsUp"]; ok {
			out = append(out, tn)
		}
	}
	return out
}

// awaitSniffed waits until every flow in an endpoint's /tunnels shows proto:
// the sniffer names a flow just after its first datagram went through.
func awaitSniffed(t *testing.T, api, proto string) {
	t.Helper()
	if !livetest.WaitFor(10*time.Second, func() bool {
		for _, f := range udpTunnels(t, api) {
			if f["protocol"] != proto {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("%s: not every flow shows protocol %s: %v", api, proto, udpTunnels(t, api))
	}
}

// checkDNSFlow fails unless /tunnels shows a flow as DNS, with a question
// that dig asked.
func checkDNSFlow(t *testing.T, api string, f map[string]any) {
	t.Helper()
	props, _ := f["protocolProperties"].(map[string]any)
	if name, _ := props["name"].(string); f["protocol"] != "dns" || !strings.HasSuffix(name, "quictun.test.") || props["type"] == nil {
		t.Fatalf("%s: flow %v: want protocol dns with the question's name and type", api, f)
	}
}

// dig through the tunnel to a local dnsmasq: A records from many source
// ports at once (a flow each), and a TXT answer of 1.8 KB, larger than one
// QUIC datagram, that comes back in fragments and whole.
func TestDigThroughTheTunnelToDnsmasq(t *testing.T) {
	livetest.RequireTools(t, "dig", "dnsmasq")
	dnsPort := livetest.FreeLoopbackPort(t)
	var txt []string
	for i := range 9 {
		txt = append(txt, fmt.Sprintf("%02d%s", i, strings.Repeat(string(rune('a'+i)), 198)))
	}
	livetest.StartProcess(t, nil, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--user=root", "--pid-file=", "--edns-packet-max=4096", "--bind-interfaces", "--listen-address=127.0.0.1", "--port="+strconv.Itoa(dnsPort),
		"--address=/quictun.test/198.18.0.7", "--txt-record=big.quictun.test,"+strings.Join(txt, ","))
	dnsAddr := "127.0.0.1:" + strconv.Itoa(dnsPort)
	if !livetest.WaitFor(10*time.Second, func() bool {
		out, err := exec.Command("dig", "@127.0.0.1", "-p", strconv.Itoa(dnsPort), "+short", "+tries=1", "+time=1", "a.quictun.test").Output()
		return err == nil && strings.TrimSpace(string(out)) == "198.18.0.7"
	}) {
		t.Fatal("dnsmasq does not answer directly")
	}
	listen := freePort(t, "udp")
	_, api := udpClient(t, "udp:"+listen, "udp:"+dnsAddr)
	host, port, _ := net.SplitHostPort(listen)
	dig := func(args ...string) (string, error) {
		out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+tries=3", "+time=2"}, args...)...).CombinedOutput()
		return string(out), err
	}
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			out, err := dig("+short", fmt.Sprintf("host%d.quictun.test", i))
			if err != nil || strings.TrimSpace(out) != "198.18.0.7" {
				t.Errorf("dig host%d: %v %q", i, err, out)
			}
		})
	}
	wg.Wait()
	// +ignore: a truncated answer is a failure, not a retry over TCP (which
	// this forward does not carry).
	out, err := dig("+ignore", "+bufsize=4096", "+short", "TXT", "big.quictun.test")
	if err != nil {
		t.Fatalf("dig TXT: %v\n%s", err, out)
	}
	for _, s := range txt {
		if !strings.Contains(out, `"`+s+`"`) {
			t.Fatalf("the TXT answer lacks %q:\n%s", s[:8], out)
		}
	}
	awaitSniffed(t, api, "dns")
	flows := udpTunnels(t, api)
	if len(flows) < n+1 {
		t.Fatalf("/tunnels shows %d udp flows, want %d (one per dig)", len(flows), n+1)
	}
	for _, f := range flows {
		if f["packetsUp"].(float64) < 1 || f["packetsDown"].(float64) < 1 || f["serverAppAddr"] != "udp:"+dnsAddr {
			t.Fatalf("flow %v", f)
		}
		checkDNSFlow(t, api, f)
	}
}

// iperf3 -u through the tunnel: its control connection over a tcp: forward
// and its datagrams over a udp: forward on the same port number, at a
// modest 10 Mbit/s for 3 s, with 1200-byte datagrams and with 4000-byte ones
// (fragmented); on loopback almost nothing may be lost.
func TestIperf3UDPThroughTheTunnel(t *testing.T) {
	livetest.RequireTools(t, "iperf3")
	sport := strconv.Itoa(livetest.FreeLoopbackPort(t))
	livetest.StartProcess(t, nil, "iperf3", "--server", "--bind", "127.0.0.1", "--port", sport)
	livetest.WaitForSocket(t, "tcp", "127.0.0.1:"+sport)
	var listen string
	for range 20 { // a port number free for both TCP and UDP
		listen = freePort(t, "tcp")
		if c, err := net.ListenPacket("udp", listen); err == nil {
			c.Close()
			break
		}
	}
	udpClient(t, "udp:"+listen, "udp:127.0.0.1:"+sport, "--forward", "tcp:"+listen+"=tcp:127.0.0.1:"+sport)
	_, port, _ := net.SplitHostPort(listen)
	for _, size := range []string{"1200", "4000"} {
		out, err := exec.Command("iperf3", "--client", "127.0.0.1", "--port", port, "--udp", "--bitrate", "10M",
			"--time", "3", "--length", size, "--json").Output()
		if err != nil {
			t.Fatalf("iperf3 -l %s: %v\n%s", size, err, out)
		}
		var res struct {
			End struct {
				Sum struct {
					Packets     int     `json:"packets"`
					LostPackets int     `json:"lost_packets"`
					LostPercent float64 `json:"lost_percent"`
					JitterMs    float64 `json:"jitter_ms"`
				} `json:"sum"`
			} `json:"end"`
			Error string `json:"error"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.Error != "" {
			t.Fatalf("iperf3 -l %s: %v %s\n%s", size, err, res.Error, out)
		}
		s := res.End.Sum
		t.Logf("iperf3 -u -b 10M -l %s: %d datagrams, %d lost (%.2f%%), jitter %.3f ms", size, s.Packets, s.LostPackets, s.LostPercent, s.JitterMs)
		if s.Packets < 300 || s.LostPercent > 2 {
			t.Fatalf("iperf3 -l %s: %d datagrams, %.2f%% lost", size, s.Packets, s.LostPercent)
		}
	}
}

// dig through a udp: reverse forward: dnsmasq runs beside the client, which
// asks the server to publish its port (a [[reverse]] table, the server's
// --allow-bind naming udp:); dig asks the server's published port, from
// many source ports at once (a flow each) and for a TXT answer larger than
// one QUIC datagram. Both APIs list the flows as reverse udp, and /forwards
// on the server lists the binding as udp.
func TestDigThroughAReverseForwardToDnsmasq(t *testing.T) {
	livetest.RequireTools(t, "dig", "dnsmasq")
	dnsPort := livetest.FreeLoopbackPort(t)
	var txt []string
	for i := range 9 {
		txt = append(txt, fmt.Sprintf("%02d%s", i, strings.Repeat(string(rune('a'+i)), 198)))
	}
	livetest.StartProcess(t, nil, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--user=root", "--pid-file=", "--edns-packet-max=4096", "--bind-interfaces", "--listen-address=127.0.0.1", "--port="+strconv.Itoa(dnsPort),
		"--address=/quictun.test/198.18.0.7", "--txt-record=big.quictun.test,"+strings.Join(txt, ","))
	dnsAddr := "127.0.0.1:" + strconv.Itoa(dnsPort)
	if !livetest.WaitFor(10*time.Second, func() bool {
		out, err := exec.Command("dig", "@127.0.0.1", "-p", strconv.Itoa(dnsPort), "+short", "+tries=1", "+time=1", "a.quictun.test").Output()
		return err == nil && strings.TrimSpace(string(out)) == "198.18.0.7"
	}) {
		t.Fatal("dnsmasq does not answer directly")
	}
	udp := freePort(t, "udp")
	published := freePort(t, "udp")
	srvAPI, cliAPI := freePort(t, "tcp"), freePort(t, "tcp")
	secret := "QUICTUN_SECRET=reverse-udp-secret-0123456789"
	srv := startEnv(t, []string{secret}, "quictun-server", "--listen-on", udp, "--allow-bind", "udp:"+published, "--httpd-listen-on", srvAPI)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	conf := filepath.Join(t.TempDir(), "client.toml")
	os.WriteFile(conf, fmt.Appendf(nil, "server-endpoint = %q\nserver-fingerprint = %q\nhttpd-listen-on = %q\n\n[[reverse]]\nname = \"dns\"\nlisten-on = %q\ntarget = %q\n",
		udp, fp, cliAPI, "udp:"+published, "udp:"+dnsAddr), 0o600)
	cli := startEnv(t, []string{secret}, "quictun-client", "--config", conf)
	cli.waitLog(t, `msg="reverse forward bound on the server" reverse=dns`)
	host, port, _ := net.SplitHostPort(published)
	dig := func(args ...string) (string, error) {
		out, err := exec.Command("dig", append([]string{"@" + host, "-p", port, "+tries=3", "+time=2"}, args...)...).CombinedOutput()
		return string(out), err
	}
	const n = 8
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			out, err := dig("+short", fmt.Sprintf("host%d.quictun.test", i))
			if err != nil || strings.TrimSpace(out) != "198.18.0.7" {
				t.Errorf("dig host%d: %v %q", i, err, out)
			}
		})
	}
	wg.Wait()
	out, err := dig("+ignore", "+bufsize=4096", "+short", "TXT", "big.quictun.test")
	if err != nil {
		t.Fatalf("dig TXT: %v\n%s", err, out)
	}
	for _, s := range txt {
		if !strings.Contains(out, `"`+s+`"`) {
			t.Fatalf("the TXT answer lacks %q:\n%s", s[:8], out)
		}
	}
	for _, api := range []string{srvAPI, cliAPI} {
		awaitSniffed(t, api, "dns")
		flows := udpTunnels(t, api)
		if len(flows) < n+1 {
			t.Fatalf("%s/tunnels shows %d udp flows, want %d (one per dig)", api, len(flows), n+1)
		}
		for _, f := range flows {
			if f["direction"] != "reverse" || f["forward"] != "dns" || f["packetsUp"].(float64) < 1 || f["packetsDown"].(float64) < 1 {
				t.Fatalf("%s: flow %v", api, f)
			}
			checkDNSFlow(t, api, f)
		}
	}
	var srvForwards []map[string]any
	getJSON(t, "http://"+srvAPI+"/forwards", &srvForwards)
	if len(srvForwards) != 1 || srvForwards[0]["protocol"] != "udp" || srvForwards[0]["listenOn"] != published || srvForwards[0]["held"] != true {
		t.Fatalf("server's /forwards: %v", srvForwards)
	}
}

// A DNS query through the client's SOCKS5 proxy (UDP ASSOCIATE, RFC 1928
// section 7) to a local dnsmasq: the client below is written from the RFC
// (the request, the reply's relay address, the UDP request header), the
// query and the answer's check from RFC 1035. The answer comes back with
// the header naming dnsmasq; the association's flow shows in /tunnels and
// ends when the control connection closes.
func TestSOCKS5UDPAssociateToDnsmasq(t *testing.T) {
	livetest.RequireTools(t, "dnsmasq")
	dnsPort := livetest.FreeLoopbackPort(t)
	livetest.StartProcess(t, nil, "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
		"--user=root", "--pid-file=", "--bind-interfaces", "--listen-address=127.0.0.1", "--port="+strconv.Itoa(dnsPort),
		"--address=/quictun.test/198.18.0.7")
	socksAt := freePort(t, "tcp")
	_, api := udpClient(t, "udp:"+freePort(t, "udp"), "udp:127.0.0.1:"+strconv.Itoa(dnsPort), "--socks-listen-on", "tcp:"+socksAt)
	livetest.WaitForSocket(t, "tcp", socksAt)

	ctl, err := net.DialTimeout("tcp", socksAt, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer ctl.Close()
	_ = ctl.SetDeadline(time.Now().Add(10 * time.Second))
	// No authentication; UDP ASSOCIATE from an address not known yet (zeros).
	if _, err := ctl.Write([]byte{5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	reply := make([]byte, 12)
	if _, err := io.ReadFull(ctl, reply); err != nil || reply[1] != 0 || reply[3] != 0 || reply[5] != 1 {
		t.Fatalf("reply %x: %v", reply, err)
	}
	relay := &net.UDPAddr{IP: net.IP(reply[6:10]), Port: int(binary.BigEndian.Uint16(reply[10:]))}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	hdr := binary.BigEndian.AppendUint16([]byte{0, 0, 0, 1, 127, 0, 0, 1}, uint16(dnsPort))
	// An A query for host.quictun.test, ID 0x5154, recursion desired.
	query := []byte{0x51, 0x54, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range []string{"host", "quictun", "test"} {
		query = append(append(query, byte(len(label))), label...)
	}
	query = append(query, 0, 0, 1, 0, 1)
	buf := make([]byte, 4096)
	var answer []byte
	for range 10 {
		if _, err := pc.WriteToUDP(append(append([]byte(nil), hdr...), query...), relay); err != nil {
			t.Fatal(err)
		}
		_ = pc.SetReadDeadline(time.Now().Add(time.Second))
		n, from, err := pc.ReadFromUDP(buf)
		if err == nil {
			if from.String() != relay.String() || !bytes.HasPrefix(buf[:n], hdr) {
				t.Fatalf("answer from %v with header %x, want the relay %v and %x", from, buf[:min(n, len(hdr))], relay, hdr)
			}
			answer = buf[len(hdr):n]
			break
		}
	}
	// The answer: same ID, a response without error, one answer record
	// whose data (the message's last 4 bytes) is dnsmasq's address.
	if len(answer) < 12+4 || answer[0] != 0x51 || answer[1] != 0x54 || answer[2]&0x80 == 0 || answer[3]&0x0f != 0 ||
		binary.BigEndian.Uint16(answer[6:]) != 1 || !bytes.Equal(answer[len(answer)-4:], []byte{198, 18, 0, 7}) {
		t.Fatalf("DNS answer %x", answer)
	}
	awaitSniffed(t, api, "dns")
	flows := udpTunnels(t, api)
	if len(flows) != 1 || flows[0]["serverAppAddr"] != "udp:127.0.0.1:"+strconv.Itoa(dnsPort) || flows[0]["clientAppAddr"] != "udp:"+pc.LocalAddr().String() {
		t.Fatalf("flows %v", flows)
	}
	checkDNSFlow(t, api, flows[0])
	ctl.Close()
	if !livetest.WaitFor(10*time.Second, func() bool { return len(udpTunnels(t, api)) == 0 }) {
		t.Fatal("the flow outlived its association")
	}
}
