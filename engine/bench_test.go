package engine

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quictun/quictun/codecs/sniff"
)

// benchmarkRelay pushes b.N x 1 MiB from one application through a relay to
// another over loopback TCP. relay copies between the two inner sockets.
func benchmarkRelay(b *testing.B, relay func(b *testing.B, client, server *net.TCPConn) (wait func())) {
	clientApp, clientSide := tcpPair(b)
	serverSide, serverApp := tcpPair(b)
	defer clientApp.Close()
	defer serverApp.Close()
	wait := relay(b, clientSide, serverSide)
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	var wg sync.WaitGroup
	wg.Go(func() {
		for range b.N {
			clientApp.Write(chunk)
		}
		clientApp.CloseWrite()
	})
	io.Copy(io.Discard, serverApp)
	wg.Wait()
	b.StopTimer()
	serverApp.CloseWrite()
	wait()
}

// BenchmarkRelayTunnel is the engine's data path: supervisor, pumps, pooled
// buffers, counters.
func BenchmarkRelayTunnel(b *testing.B) {
	benchmarkRelay(b, func(b *testing.B, client, server *net.TCPConn) func() {
		reg := NewRegistry(Config{})
		t := reg.Open(b.Context(), Info{})
		done := make(chan struct{})
		go func() { t.Run(ConnSide(client), ConnSide(server)); close(done) }()
		return func() { <-done }
	})
}

// BenchmarkRelayTunnelSniffed adds the sniffer tap (the default sniffers see
// the first 64 KiB of each direction).
func BenchmarkRelayTunnelSniffed(b *testing.B) {
	benchmarkRelay(b, func(b *testing.B, client, server *net.TCPConn) func() {
		reg := NewRegistry(Config{Sniffers: sniff.Default()})
		t := reg.Open(b.Context(), Info{})
		done := make(chan struct{})
		go func() { t.Run(ConnSide(client), ConnSide(server)); close(done) }()
		return func() { <-done }
	})
}

// BenchmarkRelayIOCopy is the baseline: io.Copy both ways, which on two TCP
// sockets uses splice(2) in the kernel, something a QUIC stream cannot do.
func BenchmarkRelayIOCopy(b *testing.B) {
	benchmarkRelay(b, func(b *testing.B, client, server *net.TCPConn) func() {
		var wg sync.WaitGroup
		wg.Go(func() { io.Copy(server, client); server.CloseWrite() })
		wg.Go(func() { io.Copy(client, server); client.CloseWrite() })
		return func() { wg.Wait(); client.Close(); server.Close() }
	})
}

// BenchmarkRelayTunnelStuckSniffer has a sniffer that never returns: the tap
// drops what the sniffer cannot take, so throughput must match
// BenchmarkRelayTunnel (the sniffer misses data, not the tunnel).
func BenchmarkRelayTunnelStuckSniffer(b *testing.B) {
	benchmarkRelay(b, func(b *testing.B, client, server *net.TCPConn) func() {
		release := make(chan struct{})
		reg := NewRegistry(Config{Sniffers: []sniff.Sniffer{stuckSniffer{release}}})
		t := reg.Open(b.Context(), Info{})
		done := make(chan struct{})
		go func() { t.Run(ConnSide(client), ConnSide(server)); close(done) }()
		// Teardown must not wait for the stuck sniffer: it is let go only
		// after the tunnel has ended (so that it does not outlive the test).
		return func() { <-done; close(release) }
	})
}

// slowSniffer takes delay per call and never decides: the sniffer actor falls
// behind the data, the pumps must not.
type slowSniffer struct{ delay time.Duration }

func (s slowSniffer) Name() string { return "slow" }
func (s slowSniffer) Sniff(_, _ []byte) sniff.Result {
	time.Sleep(s.delay)
	return sniff.Result{Verdict: sniff.Undecided}
}

// BenchmarkRelayTunnelSlowSniffer has a sniffer that sleeps 10 ms per call:
// throughput must match BenchmarkRelayTunnel.
func BenchmarkRelayTunnelSlowSniffer(b *testing.B) {
	benchmarkRelay(b, func(b *testing.B, client, server *net.TCPConn) func() {
		reg := NewRegistry(Config{Sniffers: []sniff.Sniffer{slowSniffer{10 * time.Millisecond}}})
		t := reg.Open(b.Context(), Info{})
		done := make(chan struct{})
		go func() { t.Run(ConnSide(client), ConnSide(server)); close(done) }()
		return func() { <-done }
	})
}
