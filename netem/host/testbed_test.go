//go:build linux

package host

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quictun/quictun/netem"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// requireTUN skips, saying why, where the tun backend cannot run.
func requireTUN(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: host link emulation needs root (network namespaces, TUN devices)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("skipping: no /dev/net/tun (%v)", err)
	}
	backends, why := Available()
	for _, b := range backends {
		if b == BackendTUN {
			return
		}
	}
	t.Skipf("skipping: tun backend not available: %v", why)
}

// newTestbed makes a testbed with a name unique to this process and test, and removes
// it when the test ends, also on failure.
func newTestbed(t testing.TB, link netem.Link) *Testbed {
	t.Helper()
	name := testName(t)
	_ = CleanupStale(name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tb, err := New(ctx, Config{Name: name, Link: link, Backend: BackendTUN, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return tb
}

var testSerial struct {
	sync.Mutex
	n int
}

func testName(t testing.TB) string {
	testSerial.Lock()
	defer testSerial.Unlock()
	testSerial.n++
	return fmt.Sprintf("qtt%d%d", os.Getpid()%1000, testSerial.n%100)
}

// tcpPair connects a TCP client in the client namespace to a server in the server
// namespace across the emulated link.
func tcpPair(t testing.TB, tb interface {
	Do(Side, func() error) error
	Addr(Side) netip.Addr
}) (client, server net.Conn) {
	t.Helper()
	var ln net.Listener
	err := tb.Do(Server, func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(tb.Addr(Server), 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	err = tb.Do(Client, func() (err error) {
		d := net.Dialer{Timeout: 5 * time.Second}
		client, err = d.Dial("tcp", ln.Addr().String())
		return err
	})
	if err != nil {
		ln.Close()
		<-accepted
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		client.Close()
		t.Fatal("accept failed")
	}
	return client, server
}

func TestTestbedCarriesTCPWithDelay(t *testing.T) {
	requireTUN(t)
	const oneWay = 15 * time.Millisecond
	tb := newTestbed(t, netem.Symmetric(netem.Model{Delay: oneWay}))
	if tb.Backend != BackendTUN || !tb.Realtime || !strings.HasSuffix(tb.ClientNS, "-cli") || !tb.ServerAddr.Is4() {
		t.Fatalf("testbed %+v", tb)
	}
	client, server := tcpPair(t, tb)
	defer client.Close()
	defer server.Close()

	// Round trip of a small message: at least 2 x the one-way delay.
	start := time.Now()
	var echoErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 4)
		if _, echoErr = io.ReadFull(server, buf); echoErr == nil {
			_, echoErr = server.Write(buf)
		}
	})
	if _, err := client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	pong := make([]byte, 4)
	if _, err := io.ReadFull(client, pong); err != nil {
		t.Fatal(err)
	}
	rtt := time.Since(start)
	wg.Wait()
	if echoErr != nil {
		t.Fatal(echoErr)
	}
	if rtt < 2*oneWay {
		t.Errorf("round trip %v, shorter than 2 x %v of emulated delay", rtt, oneWay)
	}

	// Bulk data arrives intact.
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data)
	var got []byte
	var readErr error
	wg.Go(func() { got, readErr = io.ReadAll(server) })
	if _, err := client.Write(data); err != nil {
		t.Fatal(err)
	}
	_ = client.(*net.TCPConn).CloseWrite()
	wg.Wait()
	if readErr != nil || sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatalf("received %d of %d bytes (err %v), digest differs", len(got), len(data), readErr)
	}
	s, err := tb.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Up.DeliveredBytes < uint64(len(data)) || s.Down.Delivered == 0 || s.Up.DroppedLoss+s.Up.DroppedQueue != 0 {
		t.Errorf("stats %+v: want all of %d bytes delivered up, ACKs down, nothing dropped", s, len(data))
	}
	// The first take covers the testbed's whole life so far: at least what Stats saw.
	if w, ok := tb.TakeWorstLate(); !ok || w < max(s.Up.MaxLate, s.Down.MaxLate) {
		t.Errorf("worst lateness %v (known %v), stats say %v up and %v down", w, ok, s.Up.MaxLate, s.Down.MaxLate)
	}
}

func TestTestbedLossAndSetLink(t *testing.T) {
	requireTUN(t)
	tb := newTestbed(t, netem.Link{})
	var recv, send *net.UDPConn
	if err := tb.Do(Server, func() (err error) {
		recv, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(tb.ServerAddr, 0)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer recv.Close()
	if err := tb.Do(Client, func() (err error) {
		send, err = net.DialUDP("udp", nil, recv.LocalAddr().(*net.UDPAddr))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer send.Close()
	if err := recv.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}

	count := func(n int) int {
		t.Helper()
		pkt := make([]byte, 1000)
		for i := range n {
			if _, err := send.Write(pkt); err != nil {
				t.Fatal(err)
			}
			if i%50 == 49 {
				time.Sleep(time.Millisecond) // stay far below what the socket buffers hold
			}
		}
		got := 0
		buf := make([]byte, 2048)
		for {
			_ = recv.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := recv.Read(buf); err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					return got
				}
				t.Fatal(err)
			}
			got++
		}
	}
	if got := count(500); got != 500 {
		t.Fatalf("perfect link: %d of 500 datagrams arrived", got)
	}
	if err := tb.SetLink(netem.Link{Up: netem.Model{Loss: 0.2}}); err != nil {
		t.Fatal(err)
	}
	if got := count(1000); got < 740 || got > 860 {
		t.Errorf("20%% loss: %d of 1000 datagrams arrived, want about 800", got)
	}
	if err := tb.SetLink(netem.Link{Up: netem.Model{Loss: 2}}); err == nil {
		t.Error("SetLink accepted loss 2")
	}
	s, err := tb.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Up.DroppedLoss < 140 || s.Up.DroppedLoss > 260 {
		t.Errorf("stats %+v: want about 200 lost up", s)
	}
}

func TestTestbedCloseRemovesEverything(t *testing.T) {
	requireTUN(t)
	name := testName(t)
	ctx := context.Background()
	tb, err := New(ctx, Config{Name: name, Link: netem.Symmetric(netem.Model{Delay: time.Millisecond})})
	if err != nil {
		t.Fatal(err)
	}
	// A process left running in a namespace must not keep it alive.
	sleeper := tb.Command(ctx, Server, "sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := New(ctx, Config{Name: name}); err == nil || !strings.Contains(err.Error(), "CleanupStale") {
		t.Errorf("second testbed with the same name: %v, want an error pointing at CleanupStale", err)
	}
	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_ = sleeper.Wait() // killed by Close
	for _, ns := range []string{tb.ClientNS, tb.ServerNS} {
		if namespaceExists(ns) {
			t.Errorf("namespace %s still there after Close", ns)
		}
	}
	if err := tb.SetLink(netem.Link{}); err == nil {
		t.Error("SetLink after Close succeeded")
	}
}

func TestCleanupStale(t *testing.T) {
	requireTUN(t)
	name := testName(t)
	ctx := context.Background()
	// Leftovers of a crashed run: namespaces without a process behind them.
	for _, ns := range []string{name + "-cli", name + "-srv"} {
		if err := run(ctx, "ip", "netns", "add", ns); err != nil {
			t.Fatal(err)
		}
	}
	if err := run(ctx, "ip", "netns", "add", "other-cli"); err != nil {
		t.Fatal(err)
	}
	defer deleteNamespace(ctx, "other-cli")
	if err := CleanupStale(name[:3]); err != nil {
		t.Fatal(err)
	}
	if namespaceExists(name+"-cli") || namespaceExists(name+"-srv") {
		t.Error("CleanupStale left the testbed's namespaces")
	}
	if !namespaceExists("other-cli") {
		t.Error("CleanupStale removed a namespace that is not ours")
	}
	if err := CleanupStale(""); err == nil {
		t.Error("CleanupStale accepted an empty prefix")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	for _, cfg := range []Config{
		{Name: ""},
		{Name: "Has-Dash"},
		{Name: "muchtoolongname"},
		{Name: "ok", Link: netem.Link{Up: netem.Model{Loss: -1}}},
		{Name: "ok", Backend: "carrier-pigeon"},
	} {
		if _, err := New(ctx, cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestOurs(t *testing.T) {
	for _, c := range []struct {
		name, prefix string
		want         bool
	}{
		{"qtb-cli", "qtb", true},
		{"qtb12-srv", "qtb", true},
		{"qtb-c", "qtb", true},
		{"qtb", "qtb", false},
		{"qt-cli", "qtb", false},
		{"qtb-x-cli", "qtb", false},
		{"eth0", "qtb", false},
	} {
		if got := ours(c.name, c.prefix, "-cli", "-srv", "-c", "-s"); got != c.want {
			t.Errorf("ours(%q, %q) = %v", c.name, c.prefix, got)
		}
	}
}

func TestNetemArgs(t *testing.T) {
	burst, _ := netem.NewBurstLoss(0.02, 4)
	cases := []struct {
		m    netem.Model
		want string
	}{
		{netem.Model{}, "limit 100000"},
		{netem.Model{Delay: 25 * time.Millisecond, Jitter: time.Millisecond, Loss: 0.01},
			"delay 25000us 1000us loss random 1% limit 100000"},
		{netem.Model{Delay: 25 * time.Millisecond, RateBps: 100e6, QueueBytes: 150000},
			"delay 25000us rate 100000000bit -14 limit 309"}, // 100 queued + 209 on the wire
		{netem.Model{Burst: burst, RateBps: 1e6, QueueDelay: 120 * time.Millisecond},
			"loss gemodel 0.5102040816326531% 25% 100% 0% rate 1000000bit -14 limit 10"},
	}
	for _, c := range cases {
		args, err := netemArgs(c.m)
		if err != nil {
			t.Errorf("netemArgs(%s): %v", c.m, err)
			continue
		}
		if got := strings.Join(args, " "); got != c.want {
			t.Errorf("netemArgs(%s) = %q, want %q", c.m, got, c.want)
		}
	}
	if _, err := netemArgs(netem.Model{Loss: 0.01, Burst: burst}); err == nil {
		t.Error("netemArgs accepted random and burst loss together")
	}
}

func TestParseQdiscStats(t *testing.T) {
	js := `[{"kind":"netem","handle":"1:","root":true,"refcnt":2,"options":{"limit":1000},"bytes":15000,"packets":10,"drops":3,"overlimits":0,"requeues":0,"backlog":0,"qlen":0}]`
	s, err := parseQdiscStats([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	if s.Sent != 13 || s.Delivered != 10 || s.DroppedLoss != 3 || s.DeliveredBytes != 15000 {
		t.Errorf("parsed %+v", s)
	}
	if _, err := parseQdiscStats([]byte(`[{"kind":"fq_codel"}]`)); err == nil {
		t.Error("no error without a netem qdisc")
	}
	if _, err := parseQdiscStats([]byte(`garbage`)); err == nil {
		t.Error("no error on garbage")
	}
}

func TestChooseBackend(t *testing.T) {
	noNetem := errors.New("tc-netem: kernel has no usable netem qdisc: Error: Specified qdisc kind is unknown.")
	both := []string{BackendTCNetem, BackendTUN}
	for _, c := range []struct {
		want      string
		available []string
		why       error
		backend   string
		reason    string // substring
		fails     bool
	}{
		{want: "auto", available: both, backend: BackendTCNetem, reason: "netem qdisc works"},
		{want: "", available: both, backend: BackendTCNetem, reason: "preferred"},
		{want: "auto", available: []string{BackendTUN}, why: noNetem, backend: BackendTUN, reason: "auto: tun because tc-netem: kernel has no usable netem qdisc: Error: Specified qdisc kind is unknown."},
		{want: "tun", available: both, backend: BackendTUN, reason: "requested (--backend tun)"},
		{want: "tc", available: both, backend: BackendTCNetem, reason: "requested (--backend tc-netem)"},
		{want: "tc-netem", available: []string{BackendTUN}, why: noNetem, fails: true, reason: "Specified qdisc kind is unknown"},
		{want: "auto", why: errors.New("needs root"), fails: true, reason: "needs root"},
		{want: "pigeon", available: both, fails: true, reason: "want auto, tun or tc"},
	} {
		backend, reason, err := chooseBackend(c.want, c.available, c.why)
		if c.fails {
			if err == nil || !strings.Contains(err.Error(), c.reason) {
				t.Errorf("chooseBackend(%q, %v): err %v, want one containing %q", c.want, c.available, err, c.reason)
			}
			continue
		}
		if err != nil || backend != c.backend || !strings.Contains(reason, c.reason) {
			t.Errorf("chooseBackend(%q, %v) = %q, %q, %v; want %q with reason containing %q", c.want, c.available, backend, reason, err, c.backend, c.reason)
		}
	}
}
