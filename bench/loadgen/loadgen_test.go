//go:build linux

package loadgen

import (
	"context"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startEcho runs an EchoServer on loopback for the test's lifetime.
func startEcho(t *testing.T) string { return startServer(t, NewEchoServer) }

// startServer runs a server made by newServer on loopback for the test's lifetime.
func startServer(t *testing.T, newServer func(net.Listener) *EchoServer) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- newServer(ln).Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("echo server: %v", err)
		}
	})
	return ln.Addr().String()
}

func TestLatencyThroughEcho(t *testing.T) {
	addr := startEcho(t)
	res, err := Latency(context.Background(), LatencyConfig{Target: addr, Requests: 50, MessageBytes: 100, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.RoundTrips != 50 || res.FirstEchoMs <= 0 || res.TotalMs < res.FirstEchoMs || res.P99Ms < res.P50Ms {
		t.Fatalf("implausible result %+v", res)
	}
}

func TestLatencyRejectsBadConfig(t *testing.T) {
	if _, err := Latency(context.Background(), LatencyConfig{Target: "127.0.0.1:1", Requests: 0, MessageBytes: 1, Timeout: time.Second}); err == nil {
		t.Fatal("zero requests accepted")
	}
}

// The interactive load through a mixed server: stuck connections download their
// bytes first, then bulk downloads and an echo share the measured second.
func TestInteractiveThroughMixedServer(t *testing.T) {
	addr := startServer(t, NewMixedServer)
	res, err := Interactive(context.Background(), InteractiveConfig{Target: addr, Bulk: 2, Echo: true,
		EchoInterval: 20 * time.Millisecond, MessageBytes: 64, Stuck: 2, StuckBytes: 1 << 20,
		Warmup: 200 * time.Millisecond, Duration: time.Second, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.BulkBytes <= 0 || res.BulkMbps <= 0 || res.Echoes < 10 || res.Echoes > 51 || len(res.StuckFastS) != 2 ||
		res.EchoP50Ms <= 0 || res.EchoP99Ms < res.EchoP50Ms || res.EchoMaxMs < res.EchoP99Ms {
		t.Fatalf("implausible result %+v", res)
	}
	alone, err := Interactive(context.Background(), InteractiveConfig{Target: addr, Bulk: 1, Duration: 500 * time.Millisecond, Timeout: 10 * time.Second})
	if err != nil || alone.BulkMbps <= 0 || alone.Echoes != 0 {
		t.Fatalf("bulk alone: %+v, %v", alone, err)
	}
}

func TestInteractiveRejectsBadConfig(t *testing.T) {
	for _, cfg := range []InteractiveConfig{
		{Target: "127.0.0.1:1", Duration: time.Second, Timeout: time.Second},                      // nothing to run
		{Target: "127.0.0.1:1", Bulk: 1, Echo: true, Duration: time.Second, Timeout: time.Second}, // no echo period
		{Target: "127.0.0.1:1", Bulk: -1, Duration: time.Second, Timeout: time.Second},            // negative
		{Target: "127.0.0.1:1", Bulk: 1, Duration: time.Second},                                   // no timeout
	} {
		if _, err := Interactive(context.Background(), cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// A mixed server's download ends with the connection, and an echo fails
// loudly when the server breaks it.
func TestInteractiveFailsWhenTheServerGoes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		c.Close() // the bulk download's connection breaks at once
	})
	defer func() { ln.Close(); wg.Wait() }()
	_, err = Interactive(context.Background(), InteractiveConfig{Target: ln.Addr().String(), Bulk: 1, Duration: 2 * time.Second, Timeout: 10 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "bulk download") {
		t.Fatalf("err = %v, want the bulk download's failure", err)
	}
}

func TestScaleVerifiesEveryTunnel(t *testing.T) {
	addr := startEcho(t)
	// An odd total so the last chunk of each tunnel is not a multiple of 8 bytes.
	res, err := Scale(context.Background(), ScaleConfig{Target: addr, Tunnels: 64, TotalBytes: 64*100_003 + 5, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified != 64 || res.Failed != 0 || res.BytesVerified != 64*100_003 || res.GoodputMbps <= 0 {
		t.Fatalf("result %+v", res)
	}
}

// corruptingEcho is a faulty peer: it echoes, but flips one byte at the given offset
// of every connection.
func corruptingEcho(t *testing.T, at int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 4096)
				off := 0
				for {
					n, err := c.Read(buf)
					for i := range n {
						if off+i == at {
							buf[i] ^= 0x40
						}
					}
					off += n
					if n > 0 {
						if _, werr := c.Write(buf[:n]); werr != nil {
							return
						}
					}
					if err != nil {
						c.(*net.TCPConn).CloseWrite()
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func TestScaleDetectsCorruption(t *testing.T) {
	addr := corruptingEcho(t, 70_000)
	res, err := Scale(context.Background(), ScaleConfig{Target: addr, Tunnels: 3, TotalBytes: 3 * 100_000, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified != 0 || res.Failed != 3 || !strings.Contains(res.FirstError, "byte 70000 differs") {
		t.Fatalf("corruption not caught: %+v", res)
	}
}

func TestLatencyDetectsCorruption(t *testing.T) {
	addr := corruptingEcho(t, 10)
	_, err := Latency(context.Background(), LatencyConfig{Target: addr, Requests: 3, MessageBytes: 8, Timeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "request 2: echo differs") {
		t.Fatalf("err = %v, want the second echo to differ", err)
	}
}

func TestScaleCountsUnreachableTunnels(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	res, err := Scale(context.Background(), ScaleConfig{Target: addr, Tunnels: 4, TotalBytes: 400, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 4 || !strings.Contains(res.FirstError, "dial") {
		t.Fatalf("result %+v", res)
	}
}

func TestScaleTimesOutOnSilentPeer(t *testing.T) {
	// A listener that accepts (the kernel does) but never reads or echoes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	res, err := Scale(context.Background(), ScaleConfig{Target: ln.Addr().String(), Tunnels: 2, TotalBytes: 2 << 20, Timeout: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 2 {
		t.Fatalf("result %+v", res)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("timeout of 500ms took %s", time.Since(start))
	}
}

func TestListening(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := WaitListening(context.Background(), "tcp", port, time.Second); err != nil {
		t.Fatal(err)
	}
	ln.Close()
	if ok, _ := Listening("tcp", port); ok {
		t.Fatalf("port %d still reported listening after close", port)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if ok, err := Listening("udp", pc.LocalAddr().(*net.UDPAddr).Port); !ok || err != nil {
		t.Fatalf("udp port not found: %v %v", ok, err)
	}
	if err := WaitListening(context.Background(), "tcp", port, 50*time.Millisecond); err == nil {
		t.Fatal("WaitListening on a closed port succeeded")
	}
	if _, err := Listening("sctp", 1); err == nil {
		t.Fatal("unknown protocol accepted")
	}
}

func TestCongestionIsSetPerConnection(t *testing.T) {
	addr := startEcho(t)
	res, err := Latency(context.Background(), LatencyConfig{Target: addr, Requests: 2, MessageBytes: 8, Timeout: 5 * time.Second, Congestion: "reno"})
	if err != nil {
		t.Fatalf("reno (always built in): %v", err)
	}
	if res.RoundTrips != 2 {
		t.Fatalf("result %+v", res)
	}
	_, err = Latency(context.Background(), LatencyConfig{Target: addr, Requests: 1, MessageBytes: 8, Timeout: 5 * time.Second, Congestion: "no-such-cc"})
	if err == nil || !strings.Contains(err.Error(), `set TCP congestion control "no-such-cc"`) {
		t.Fatalf("unknown algorithm: err = %v", err)
	}
}

// otherCongestion is an algorithm this kernel offers that is not the namespace's
// default, so that a socket using it proves it was set, not inherited from the host.
func otherCongestion(t *testing.T) (other, def string) {
	t.Helper()
	defBytes, err := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	if err != nil {
		t.Skipf("no TCP congestion control in /proc: %v", err)
	}
	availBytes, err := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	if err != nil {
		t.Skipf("no TCP congestion control in /proc: %v", err)
	}
	def = strings.TrimSpace(string(defBytes))
	for _, name := range strings.Fields(string(availBytes)) {
		if name != def {
			return name, def
		}
	}
	t.Skipf("the kernel offers only %q", def)
	return "", ""
}

// The echo server sends every byte back, so its sockets must use the contender's
// congestion control too: accepted sockets inherit it from the listener.
func TestListenSetsCongestionOnAcceptedSockets(t *testing.T) {
	want, def := otherCongestion(t)
	ln, err := Listen(context.Background(), "127.0.0.1:0", want)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := dialer("").Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	accepted, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	if got, err := Congestion(accepted); err != nil || got != want {
		t.Errorf("accepted socket: congestion %q (%v), want %q", got, err, want)
	}
	// The dialing side set nothing and keeps the default: the listener's setting is
	// per socket, not the host's.
	if got, err := Congestion(client); err != nil || got != def {
		t.Errorf("dialed socket: congestion %q (%v), want the default %q", got, err, def)
	}

	plain, err := Listen(context.Background(), "127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := Listen(context.Background(), "127.0.0.1:0", "no-such-cc"); err == nil || !strings.Contains(err.Error(), `"no-such-cc"`) {
		t.Errorf("unknown algorithm: err = %v", err)
	}
}

func TestDialerSetsCongestion(t *testing.T) {
	want, _ := otherCongestion(t)
	addr := startEcho(t)
	conn, err := dialer(want).Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got, err := Congestion(conn); err != nil || got != want {
		t.Errorf("dialed socket: congestion %q (%v), want %q", got, err, want)
	}
}
