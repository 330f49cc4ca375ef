package recovery

import (
	"fmt"
	"net"
	"testing"
)

// BenchmarkLayerWrite measures the per-datagram cost of the layer's send path:
// framing, keeping the datagram in the window, tagging and repairs, against a bare
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
