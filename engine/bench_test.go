package engine

import (
	"io"
	"net"
	"sync"
	"testing"

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
		// Teardown waits for the sniffer actor: let it go once the data is through.
		return func() { close(release); <-done }
	})
}
