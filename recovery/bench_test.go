package recovery

import (
	"fmt"
	"math/rand/v2"
	"net"
	"testing"
)

// BenchmarkCoding is the coding path: encode one group and rebuild half its parity
// worth of lost data shards, the calls the layer makes per group, on 1400-byte
// QUIC packets. MB/s counts data bytes through encode plus decode, on one core.
//
//	go test -run '^$' -bench BenchmarkCoding ./recovery/
func BenchmarkCoding(b *testing.B) {
	const payload = PacketSize
	for _, sh := range []struct{ k, m int }{{64, 1}, {64, 2}, {64, 6}, {64, 22}, {128, 32}, {10, 3}} {
		b.Run(fmt.Sprintf("%d+%d", sh.k, sh.m), func(b *testing.B) {
			var cs codecs
			enc, err := cs.get(sh.k, sh.m)
			if err != nil {
				b.Fatal(err)
			}
			L := 2 + payload
			shards := make([][]byte, sh.k+sh.m)
			backing := make([][]byte, sh.k+sh.m)
			rng := rand.New(rand.NewPCG(1, 1))
			for i := range shards {
				backing[i] = make([]byte, L)
				for j := range backing[i] {
					backing[i][j] = byte(rng.Uint32())
				}
			}
			work := make([][]byte, len(shards))
			lost := max(1, sh.m/2)
			b.SetBytes(int64(sh.k * payload))
			b.ReportAllocs()
			for b.Loop() {
				copy(shards, backing)
				if err := enc.Encode(shards); err != nil {
					b.Fatal(err)
				}
				copy(work, shards)
				for i := range lost {
					work[i*sh.k/lost] = backing[i*sh.k/lost][:0] // lost, its buffer reused
				}
				if err := enc.ReconstructData(work); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkLayerWrite measures the per-datagram cost of the layer's send path:
// framing, keeping the datagram for its group, coding and parity, against a bare
// UDP socket. The receiving socket is not read, so the kernel discards what
// overflows it; only the writer is measured.
//
//	go test -run '^$' -bench BenchmarkLayerWrite -benchmem ./recovery/
func BenchmarkLayerWrite(b *testing.B) {
	for _, mode := range []string{"udp", "fixed-64-2", "fixed-64-6"} {
		b.Run(mode, func(b *testing.B) {
			a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer sink.Close()
			var w net.PacketConn = a
			if mode != "udp" {
				cfg := Config{Mode: Fixed}
				fmt.Sscanf(mode, "fixed-%d-%d", &cfg.Data, &cfg.Parity)
				c, err := NewConn(a, cfg)
				if err != nil {
					b.Fatal(err)
				}
				frameFor(c, sink.LocalAddr(), [16]byte{1})
				w = c
			}
			defer w.Close()
			to := sink.LocalAddr()
			p := make([]byte, PacketSize)
			p[0] = 0x40
			b.SetBytes(PacketSize)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.WriteTo(p, to); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
