package endpoints

import (
	"io"
	"net"
	"testing"

	"github.com/quictun/quictun/recovery"
)

// BenchmarkTunnel pushes b.N x 1 MiB through a client and a server endpoint on
// loopback to a server application that discards it, with the loss-recovery
// layer off (plain quic-go) and on. Compare the two as a ratio, and against
// BenchmarkDirectTCP from the same run.
func BenchmarkTunnel(b *testing.B) {
	for _, mode := range []string{"off", "auto"} {
		b.Run("fec="+mode, func(b *testing.B) {
			rc, err := recovery.ParseConfig(mode)
			if err != nil {
				b.Fatal(err)
			}
			sink := startApp(b, loopbackTCP(), func(c net.Conn) { io.Copy(io.Discard, c) })
			defer sink.close()
			p := startPair(b, pairOptions{token: sink.addr.String(),
				clientMods: func(c *ClientConfig) { c.Recovery = &rc },
				serverMods: func(c *ServerConfig) { c.Recovery = &rc }})
			defer p.stop()
			c := dialApp(b, p.client.Addr())
			defer c.Close()
			send(b, c)
		})
	}
}

// BenchmarkDirectTCP is the baseline: the same load over one loopback TCP
// connection with no tunnel.
func BenchmarkDirectTCP(b *testing.B) {
	sink := startApp(b, loopbackTCP(), func(c net.Conn) { io.Copy(io.Discard, c) })
	defer sink.close()
	c := dialApp(b, sink.ln.Addr())
	defer c.Close()
	send(b, c)
}

func send(b *testing.B, c net.Conn) {
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
}
