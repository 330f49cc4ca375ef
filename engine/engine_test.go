package engine

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/quictun/quictun/codecs/sniff"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// tcpPair returns the two ends of a real loopback TCP connection.
func tcpPair(t testing.TB) (a, b *net.TCPConn) {
	t.Helper()
	// A loopback IP of its own: see loopbackIP.
	ln, err := net.Listen("tcp", net.JoinHostPort(loopbackIP(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); acc <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), (<-acc).(*net.TCPConn)
}

// tunnelHarness is a tunnel between two applications: clientApp talks to the
// tunnel's client side, serverApp to its server side.
type tunnelHarness struct {
	clientApp, serverApp *net.TCPConn
	tunnel               *Tunnel
	done                 chan error
}

func startTunnel(t testing.TB, reg *Registry) *tunnelHarness {
	t.Helper()
	clientApp, clientSide := tcpPair(t)
	serverSide, serverApp := tcpPair(t)
	h := &tunnelHarness{clientApp: clientApp, serverApp: serverApp, done: make(chan error, 1)}
	h.tunnel = reg.Open(t.Context(), Info{Endpoint: ClientEndpoint})
	go func() { h.done <- h.tunnel.Run(ConnSide(clientSide), ConnSide(serverSide)) }()
	t.Cleanup(func() { clientApp.Close(); serverApp.Close() })
	return h
}

func (h *tunnelHarness) wait(t testing.TB) error {
	t.Helper()
	select {
	case err := <-h.done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("tunnel did not end")
		return nil
	}
}

func TestHalfCloseThenCleanEnd(t *testing.T) {
	reg := NewRegistry(Config{})
	h := startTunnel(t, reg)
	h.clientApp.Write([]byte("request"))
	h.clientApp.CloseWrite()
	req, _ := io.ReadAll(h.serverApp) // EOF arrives through the tunnel
	if string(req) != "request" {
		t.Fatalf("server app got %q", req)
	}
	// The other direction still flows after the client's EOF.
	waitFor(t, func() bool { return h.tunnel.State() == StateHalfClose })
	h.serverApp.Write(bytes.Repeat([]byte("r"), 1<<20))
	h.serverApp.CloseWrite()
	resp, _ := io.ReadAll(h.clientApp)
	if len(resp) != 1<<20 {
		t.Fatalf("client app got %d bytes after its half-close", len(resp))
	}
	if err := h.wait(t); err != nil {
		t.Fatalf("clean close returned %v", err)
	}
	if reg.Len() != 0 {
		t.Fatal("tunnel still registered")
	}
	if up, down := reg.Bytes(); up != 7 || down != 1<<20 {
		t.Fatalf("counted %d up, %d down", up, down)
	}
}

func TestKillAbortsBothSides(t *testing.T) {
	reg := NewRegistry(Config{})
	h := startTunnel(t, reg)
	h.clientApp.Write([]byte("x"))
	io.ReadFull(h.serverApp, make([]byte, 1))
	if !reg.Kill(h.tunnel.ID) {
		t.Fatal("registry does not know the tunnel")
	}
	if err := h.wait(t); !errors.Is(err, ErrKilled) {
		t.Fatalf("got %v, want ErrKilled", err)
	}
	// A reset, not a clean EOF: each application must know the tunnel broke.
	for _, c := range []net.Conn{h.clientApp, h.serverApp} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("application saw %v, want a reset", err)
		}
	}
	if reg.Kill(h.tunnel.ID) {
		t.Fatal("a closed tunnel can still be killed")
	}
}

func TestIdleTimeout(t *testing.T) {
	reg := NewRegistry(Config{IdleTimeout: 200 * time.Millisecond})
	h := startTunnel(t, reg)
	h.clientApp.Write([]byte("x"))
	if err := h.wait(t); !errors.Is(err, ErrIdle) {
		t.Fatalf("got %v, want ErrIdle", err)
	}
}

func TestResetOnOneSideAbortsTheOther(t *testing.T) {
	reg := NewRegistry(Config{})
	h := startTunnel(t, reg)
	h.serverApp.SetLinger(0)
	h.serverApp.Close() // RST towards the tunnel's server side
	// Either direction may notice first; it must be an error tagged with it.
	err := h.wait(t)
	if err == nil || !strings.Contains(err.Error(), "stream ") {
		t.Fatalf("got %v, want a tagged pump error", err)
	}
	h.clientApp.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := h.clientApp.Read(make([]byte, 1)); err == nil {
		t.Fatal("client app still connected")
	}
}

// stuckSniffer blocks until released: the sniffer actor is stuck, the pumps
// must not be.
type stuckSniffer struct{ release chan struct{} }

func (s stuckSniffer) Name() string { return "stuck" }
func (s stuckSniffer) Sniff(c, _ []byte) sniff.Result {
	<-s.release
	return sniff.Result{Verdict: sniff.NotMine}
}

func TestStuckSnifferDoesNotBlockData(t *testing.T) {
	release := make(chan struct{})
	defer close(release) // after the checks: the goroutine must not outlive the test
	reg := NewRegistry(Config{Sniffers: []sniff.Sniffer{stuckSniffer{release}}})
	h := startTunnel(t, reg)
	const size = 8 << 20
	go func() { h.clientApp.Write(make([]byte, size)); h.clientApp.CloseWrite() }()
	h.serverApp.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, h.serverApp)
	if err != nil || n != size {
		t.Fatalf("moved %d bytes, %v, with the sniffer stuck", n, err)
	}
	h.serverApp.CloseWrite()
	// The sniffer is still stuck: teardown must not wait for it.
	if err := h.wait(t); err != nil {
		t.Fatal(err)
	}
	if reg.Len() != 0 {
		t.Fatal("tunnel still registered")
	}
	if a, s := reg.SniffersAbandoned(), reg.SniffersStuck(); a != 1 || s != 1 {
		t.Fatalf("abandoned %d, stuck %d; want 1, 1", a, s)
	}
}

// A stuck sniffer must not hold a killed tunnel either, and an abandoned
// sniffer that returns at last is no longer counted as stuck.
func TestKillWithStuckSniffer(t *testing.T) {
	release := make(chan struct{})
	reg := NewRegistry(Config{Sniffers: []sniff.Sniffer{stuckSniffer{release}}})
	h := startTunnel(t, reg)
	h.clientApp.Write([]byte("x"))
	io.ReadFull(h.serverApp, make([]byte, 1))
	start := time.Now()
	h.tunnel.Kill()
	if err := h.wait(t); !errors.Is(err, ErrKilled) {
		t.Fatalf("got %v, want ErrKilled", err)
	}
	if d := time.Since(start); d > snifferStopBound+2*time.Second {
		t.Fatalf("teardown took %v with a stuck sniffer", d)
	}
	if reg.SniffersStuck() != 1 {
		t.Fatalf("stuck %d, want 1", reg.SniffersStuck())
	}
	close(release)
	waitFor(t, func() bool { return reg.SniffersStuck() == 0 })
	if reg.SniffersAbandoned() != 1 {
		t.Fatalf("abandoned %d, want 1", reg.SniffersAbandoned())
	}
}

// A healthy sniffer is waited for, not abandoned.
func TestSlowSnifferStopsWithTheTunnel(t *testing.T) {
	reg := NewRegistry(Config{Sniffers: []sniff.Sniffer{slowSniffer{20 * time.Millisecond}}})
	h := startTunnel(t, reg)
	h.clientApp.Write([]byte("x"))
	io.ReadFull(h.serverApp, make([]byte, 1))
	h.tunnel.Kill()
	h.wait(t)
	if reg.SniffersAbandoned() != 0 {
		t.Fatalf("a sniffer that returns within the bound was abandoned")
	}
}

// flipSniffer matches on the client's bytes and turns the tunnel down once
// the server has spoken, the way SSH and RFB may; it reports each NotMine.
type flipSniffer struct{ notMine chan struct{} }

func (s flipSniffer) Name() string { return "flip" }
func (s flipSniffer) Sniff(c, srv []byte) sniff.Result {
	switch {
	case len(srv) > 0:
		select {
		case s.notMine <- struct{}{}:
		default:
		}
		return sniff.Result{Verdict: sniff.NotMine}
	case len(c) > 0:
		return sniff.Result{Verdict: sniff.Match, Props: map[string]string{"seen": "client"}}
	}
	return sniff.Result{}
}

// sshFlip is the real SSH sniffer, reporting when it turns the tunnel down.
type sshFlip struct {
	sniff.SSH
	notMine chan struct{}
}

func (s sshFlip) Sniff(c, srv []byte) sniff.Result {
	r := s.SSH.Sniff(c, srv)
	if r.Verdict == sniff.NotMine {
		select {
		case s.notMine <- struct{}{}:
		default:
		}
	}
	return r
}

// greedySniffer reports far more, and far longer, properties than allowed.
type greedySniffer struct{}

func (greedySniffer) Name() string { return "greedy" }
func (greedySniffer) Sniff(c, _ []byte) sniff.Result {
	props := map[string]string{}
	for i := range 100 {
		props[fmt.Sprintf("k%03d", i)+strings.Repeat("k", 300)] = strings.Repeat("é", 300)
	}
	return sniff.Result{Verdict: sniff.Match, Props: props, Done: true}
}

// What a registered sniffer reports is held to the bounds of the built-in ones.
func TestSnifferPropsBounded(t *testing.T) {
	reg := NewRegistry(Config{Sniffers: []sniff.Sniffer{greedySniffer{}}})
	h := startTunnel(t, reg)
	h.clientApp.Write([]byte("x"))
	io.ReadFull(h.serverApp, make([]byte, 1))
	waitFor(t, func() bool { p, _ := h.tunnel.Protocol(); return p == "greedy" })
	_, props := h.tunnel.Protocol()
	if len(props) != sniff.MaxProps {
		t.Fatalf("%d properties kept, want %d", len(props), sniff.MaxProps)
	}
	for k, v := range props {
		if !strings.HasPrefix(k, "k00") || len(k) > sniff.MaxValueLen || len(v) > sniff.MaxValueLen || !utf8.ValidString(v) {
			t.Fatalf("kept %d-byte key %.8q..., %d-byte value (valid UTF-8: %v)", len(k), k, len(v), utf8.ValidString(v))
		}
	}
	h.tunnel.Kill()
	h.wait(t)
}

// A Match that the sniffer later takes back keeps its protocol and properties.
func TestFirstMatchWins(t *testing.T) {
	for _, c := range []struct {
		name          string
		sniffer       func(chan struct{}) sniff.Sniffer
		client, serve string
		want          map[string]string
	}{
		{"flip", func(ch chan struct{}) sniff.Sniffer { return flipSniffer{ch} }, "hello", "no",
			map[string]string{"seen": "client"}},
		{"ssh", func(ch chan struct{}) sniff.Sniffer { return sshFlip{notMine: ch} },
			"SSH-2.0-OpenSSH_9.2p1\r\n", "SSH-garbage\r\n", map[string]string{"clientVersion": "OpenSSH_9.2p1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			notMine := make(chan struct{}, 1)
			s := c.sniffer(notMine)
			reg := NewRegistry(Config{Sniffers: []sniff.Sniffer{s}})
			h := startTunnel(t, reg)
			h.clientApp.Write([]byte(c.client))
			io.ReadFull(h.serverApp, make([]byte, len(c.client)))
			waitFor(t, func() bool { p, _ := h.tunnel.Protocol(); return p == s.Name() })
			h.serverApp.Write([]byte(c.serve))
			io.ReadFull(h.clientApp, make([]byte, len(c.serve)))
			select {
			case <-notMine:
			case <-time.After(5 * time.Second):
				t.Fatal("the sniffer never turned the tunnel down")
			}
			// Run returns only after the sniffer actor did (it is not stuck),
			// so whatever it made of the NotMine is recorded by then.
			h.tunnel.Kill()
			h.wait(t)
			if reg.SniffersAbandoned() != 0 {
				t.Fatal("sniffer abandoned")
			}
			p, props := h.tunnel.Protocol()
			if p != s.Name() || !maps.Equal(props, c.want) {
				t.Fatalf("after NotMine: %q %v, want %q %v", p, props, s.Name(), c.want)
			}
		})
	}
}

func TestSnifferReportsProtocol(t *testing.T) {
	reg := NewRegistry(Config{Sniffers: sniff.Default()})
	h := startTunnel(t, reg)
	h.serverApp.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"))
	h.clientApp.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"))
	waitFor(t, func() bool { p, _ := h.tunnel.Protocol(); return p == "ssh" })
	h.clientApp.CloseWrite()
	h.serverApp.CloseWrite()
	io.Copy(io.Discard, h.clientApp)
	io.Copy(io.Discard, h.serverApp)
	h.wait(t)
}

func TestSnapshotsAndRates(t *testing.T) {
	// Sampling is driven by hand below, with a fake clock.
	reg := NewRegistry(Config{RateInterval: time.Hour})
	var hs []*tunnelHarness
	for range 3 {
		hs = append(hs, startTunnel(t, reg))
	}
	snaps := reg.Snapshots()
	if len(snaps) != 3 || snaps[0].ID != hs[0].tunnel.ID {
		t.Fatalf("snapshots: %d, oldest first: %v", len(snaps), snaps[0].ID == hs[0].tunnel.ID)
	}
	move := func(n int) {
		want := hs[0].tunnel.BytesUp() + uint64(n)
		hs[0].clientApp.Write(make([]byte, n))
		io.ReadFull(hs[0].serverApp, make([]byte, n))
		// The pump counts a chunk after writing it on: the reader can be first.
		waitFor(t, func() bool { return hs[0].tunnel.BytesUp() == want })
	}
	move(1000)
	t0 := hs[0].tunnel.CreatedAt
	reg.sample(t0.Add(2*time.Second), nil)
	move(3000)
	// Readers see the rate of the last sampling interval, however many of them
	// read and however often: reading changes nothing.
	for range 3 {
		if s := hs[0].tunnel.Snapshot(); s.BytesUp != 4000 || s.UpBps != 500 || s.DownBps != 0 {
			t.Fatalf("bytes %d, rates %.0f/%.0f B/s, want 4000 and 500/0 (1000 B over 2 s)", s.BytesUp, s.UpBps, s.DownBps)
		}
	}
	reg.sample(t0.Add(3*time.Second), nil)
	if s := reg.Snapshots()[0]; s.UpBps != 3000 {
		t.Fatalf("rate %.0f B/s, want 3000 (3000 B over the last 1 s)", s.UpBps)
	}
	reg.sample(t0.Add(5*time.Second), nil)
	if s := reg.Snapshots()[0]; s.UpBps != 0 {
		t.Fatalf("rate %.0f B/s after an idle interval, want 0", s.UpBps)
	}
	for _, h := range hs {
		h.tunnel.Kill()
		h.wait(t)
	}
}

// The registry's sampler runs on its own while tunnels are live, and stops
// (goleak checks) once the last one is gone.
func TestRateSamplerRunsWithTunnels(t *testing.T) {
	reg := NewRegistry(Config{RateInterval: 20 * time.Millisecond})
	for round := range 2 { // the sampler stops with the last tunnel and starts with the next
		h := startTunnel(t, reg)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			buf := make([]byte, 4096)
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.clientApp.Write(buf)
				io.ReadFull(h.serverApp, buf)
			}
		})
		waitFor(t, func() bool { return h.tunnel.Snapshot().UpBps > 0 })
		close(stop)
		wg.Wait()
		h.tunnel.Kill()
		h.wait(t)
		reg.mu.RLock()
		running := reg.sampler != nil
		reg.mu.RUnlock()
		if running {
			t.Fatalf("round %d: sampler still set with no tunnel", round)
		}
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached")
}

// loopbackIP is a random 127.x.y.z. The machine's tests leave tens of thousands
// of loopback connections in TIME_WAIT; once the even ephemeral ports run out,
// a dial from 127.0.0.1 can pick a source port that mirrors a TIME_WAIT entry of
// a fresh 127.0.0.1 listener and be reset. Own addresses keep tuples apart.
func loopbackIP() string {
	return net.IPv4(127, byte(1+rand.IntN(254)), byte(rand.IntN(256)), byte(1+rand.IntN(254))).String()
}
