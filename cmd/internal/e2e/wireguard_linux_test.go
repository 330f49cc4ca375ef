package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quictun/quictun/internal/livetest"
	"github.com/quictun/quictun/netem"
	"github.com/quictun/quictun/netem/host"
)

// wgTestbed is the prefix of this file's testbeds; a killed run's leftovers
// go at the next start.
const wgTestbed = "qtwge"

// Inner WireGuard addresses, in the benchmark range like the testbed's own.
const (
	wgClientInner = "198.19.0.1"
	wgServerInner = "198.19.0.2"
)

// WireGuard (Debian's user-space wireguard-go and wg) between two network
// namespaces joined by an emulated lossy link, its UDP carried by quictun: on
// the client host WireGuard's peer endpoint is a quictun udp: forward on
// loopback, on the server host quictun-server sends the datagrams to
// WireGuard's port on loopback. A TCP transfer inside WireGuard, 4 MiB each
// way, must come back byte for byte. WireGuard's 1420-byte MTU makes 1452-byte
// datagrams, larger than one QUIC datagram: every full packet travels in two
// fragments.
func TestWireGuardThroughTheTunnel(t *testing.T) {
	livetest.RequireTools(t, "wireguard-go", "wg", "ip")
	if os.Geteuid() != 0 {
		t.Skip("needs root: network namespaces and TUN devices")
	}
	if backends, why := host.Available(); len(backends) == 0 {
		t.Skipf("no network namespace testbed here: %v", why)
	}
	if err := host.CleanupStale(wgTestbed); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tb, err := host.New(ctx, host.Config{Name: wgTestbed + "1", Backend: host.BackendTUN, Link: netem.Symmetric(netem.Model{
		Delay: 10 * time.Millisecond, Loss: 0.01, RateBps: 50e6, QueueBytes: 256 << 10,
	})})
	if err != nil {
		t.Fatal(err)
	}
	// Close kills what still runs in the namespaces (wireguard-go included:
	// its interfaces and UAPI sockets go with it) and removes them.
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Errorf("testbed: %v", err)
		}
	})
	srvNS, cliNS := tb.Namespace(host.Server), tb.Namespace(host.Client)
	const wgPort, fwdPort = "51820", "51821"

	udp := tb.ServerAddr.String() + ":4433"
	api := "127.0.0.1:8080" // in each namespace, where nothing else runs
	srv := startCmd(t, nil, "quictun-server", exec.Command("ip", "netns", "exec", srvNS, filepath.Join(binDir, "quictun-server"),
		"--listen-on", udp, "--allow", "127.0.0.1:"+wgPort, "--httpd-listen-on", api))
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli := startCmd(t, nil, "quictun-client", exec.Command("ip", "netns", "exec", cliNS, filepath.Join(binDir, "quictun-client"),
		"--server-endpoint", udp, "--server-fingerprint", fp, "--httpd-listen-on", api,
		"--listen-on", "udp:127.0.0.1:"+fwdPort, "--token-source", "udp:127.0.0.1:"+wgPort))
	cli.waitLog(t, `msg="forward accepting" forward=default listen=udp:`)

	cliKey, cliPub := wgKeys(t)
	srvKey, srvPub := wgKeys(t)
	srvDev, cliDev := wgTestbed+"1-ws", wgTestbed+"1-wc"
	startWireGuard(t, srvNS, srvDev, wgServerInner,
		"private-key", srvKey, "listen-port", wgPort, "peer", cliPub, "allowed-ips", wgClientInner+"/32")
	startWireGuard(t, cliNS, cliDev, wgClientInner,
		"private-key", cliKey, "peer", srvPub, "allowed-ips", wgServerInner+"/32", "endpoint", "127.0.0.1:"+fwdPort)

	var ln net.Listener
	if err := tb.Do(host.Server, func() (err error) {
		ln, err = net.Listen("tcp", wgServerInner+":5001")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The server's side echoes and hashes what it got; the client compares
	// both with what it sent.
	var wg sync.WaitGroup
	defer wg.Wait()
	serverSum := make(chan []byte, 1)
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			serverSum <- nil
			return
		}
		defer c.Close()
		h := sha256.New()
		_, err = io.Copy(io.MultiWriter(c, h), c)
		if err != nil {
			t.Errorf("server side of the transfer: %v", err)
		}
		c.(*net.TCPConn).CloseWrite()
		serverSum <- h.Sum(nil)
	})

	var c net.Conn
	// The handshake's first packet may be lost on the link, and WireGuard
	// retries it after 5 s: give the dial a few of those.
	if err := tb.Do(host.Client, func() (err error) {
		c, err = net.DialTimeout("tcp", wgServerInner+":5001", 30*time.Second)
		return err
	}); err != nil {
		t.Fatalf("TCP inside WireGuard: %v", err)
	}
	defer c.Close()
	const size = 4 << 20
	data := make([]byte, size)
	rand.Read(data)
	want := sha256.Sum256(data)
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	begin := time.Now()
	wg.Go(func() {
		if _, err := c.Write(data); err != nil {
			t.Errorf("send: %v", err)
		}
		c.(*net.TCPConn).CloseWrite()
	})
	got := sha256.New()
	n, err := io.Copy(got, c)
	took := time.Since(begin)
	if err != nil || n != size {
		t.Fatalf("read back %d of %d bytes: %v", n, size, err)
	}
	if !bytes.Equal(got.Sum(nil), want[:]) {
		t.Fatal("the bytes that came back differ from the ones sent")
	}
	if s := <-serverSum; !bytes.Equal(s, want[:]) {
		t.Fatal("the bytes the server side got differ from the ones sent")
	}
	t.Logf("4 MiB each way through WireGuard over quictun (50 Mbit/s, RTT 20 ms, 1%% loss): %s, %.1f Mbit/s each way", took.Round(time.Millisecond), size*8/took.Seconds()/1e6)

	// The flow, as each endpoint's API shows it: WireGuard's one source port,
	// with fragmented datagrams both ways, sniffed as WireGuard on both.
	for _, ns := range []string{cliNS, srvNS} {
		body, err := exec.Command("ip", "netns", "exec", ns, "curl", "-sf", "http://"+api+"/tunnels").Output()
		if err != nil {
			t.Fatalf("/tunnels (curl in %s): %v", ns, err)
		}
		var flows []struct {
			Protocol, ServerAppAddr string
			BytesUp, BytesDown      int64
			PacketsUp, PacketsDown  int64
		}
		if err := json.Unmarshal(body, &flows); err != nil {
			t.Fatalf("/tunnels: %v: %s", err, body)
		}
		if len(flows) != 1 || flows[0].Protocol != "wireguard" || flows[0].ServerAppAddr != "udp:127.0.0.1:"+wgPort ||
			flows[0].BytesUp < size || flows[0].BytesDown < size {
			t.Fatalf("%s: /tunnels shows %+v: want the one WireGuard flow, protocol wireguard, with more than 4 MiB each way", ns, flows)
		}
		t.Logf("the flow in %s's /tunnels: %+v", ns, flows[0])
	}
}

// wgKeys makes a WireGuard key pair: the private key's file and the public key.
func wgKeys(t *testing.T) (keyFile, pub string) {
	t.Helper()
	key, err := exec.Command("wg", "genkey").Output()
	if err != nil {
		t.Fatalf("wg genkey: %v", err)
	}
	cmd := exec.Command("wg", "pubkey")
	cmd.Stdin = bytes.NewReader(key)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("wg pubkey: %v", err)
	}
	f, err := os.CreateTemp(t.TempDir(), "wg-*.key")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(key); err != nil {
		t.Fatal(err)
	}
	return f.Name(), strings.TrimSpace(string(out))
}

// startWireGuard runs wireguard-go in the foreground in ns with interface
// dev, configures it with `wg set dev wgArgs...`, and brings it up with the
// inner address addr/24. The test's cleanup kills it.
func startWireGuard(t *testing.T, ns, dev, addr string, wgArgs ...string) {
	t.Helper()
	// Debian's wireguard-go refuses Linux unless told that the user prefers it
	// to the kernel module, which this test cannot load.
	livetest.StartProcess(t, []string{"WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1"}, "ip", "netns", "exec", ns, "wireguard-go", "-f", dev)
	if !livetest.WaitFor(10*time.Second, func() bool {
		return exec.Command("ip", "netns", "exec", ns, "wg", "show", dev).Run() == nil
	}) {
		t.Fatalf("wireguard-go did not bring up %s in %s", dev, ns)
	}
	for _, args := range [][]string{
		append([]string{"netns", "exec", ns, "wg", "set", dev}, wgArgs...),
		{"-n", ns, "addr", "add", addr + "/24", "dev", dev},
		{"-n", ns, "link", "set", dev, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}
