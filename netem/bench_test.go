package netem

import (
	"net"
	"sync"
	"testing"
	"time"
)

// The sender in a benchmark loop outruns any link; a Pipe under such a flood drops at
// MaxPendingBytes like a router would, which would make ns/op measure drops. So the
// loops below wait for the emulated wire to drain every drainEvery packets (a 1 ms
// delay makes that wait short) and fail on any drop: the figures are sustained
// throughput of packets that really crossed.
const drainEvery = 4096

func drain(b *testing.B, p *Pipe) {
	for {
		s := p.Stats()
		if s.DroppedQueue+s.DroppedLoss+s.DeliverErrors > 0 {
			b.Fatalf("benchmark dropped packets: %+v", s)
		}
		if s.Delivered == s.Sent {
			return
		}
		time.Sleep(50 * time.Microsecond)
	}
}

// BenchmarkPipe measures the emulator's own cost per packet (Send, queue, scheduler,
// delivery to a no-op), reported as the Mbit/s of 1200-byte datagrams it carries.
func BenchmarkPipe(b *testing.B) {
	for _, c := range []struct {
		name string
		m    Model
	}{
		{"perfect", Model{}},
		{"delay1ms", Model{Delay: time.Millisecond}},
		{"delay1ms-jitter-rate10G", Model{Delay: time.Millisecond, Jitter: 100 * time.Microsecond, RateBps: 10e9, QueueBytes: 32 << 20}},
	} {
		b.Run(c.name, func(b *testing.B) {
			p, err := NewPipe(c.m, 1, func([]byte, net.Addr) error { return nil })
			if err != nil {
				b.Fatal(err)
			}
			pkt := make([]byte, 1200)
			b.SetBytes(int64(len(pkt)))
			i := 0
			for b.Loop() {
				_ = p.Send(pkt, nil)
				if i++; i%drainEvery == 0 {
					drain(b, p)
				}
			}
			drain(b, p)
			b.StopTimer()
			_ = p.Close()
			b.ReportMetric(float64(b.N)*1200*8/b.Elapsed().Seconds()/1e6, "Mbit/s")
		})
	}
}

// BenchmarkUDPWrite compares writing 1200-byte datagrams to a loopback socket directly
// (the baseline) with writing them through a PacketConn with 1 ms of delay, so every
// datagram goes through the queue and the scheduler goroutine, which makes the real
// write. The ratio of the two ns/op is the emulator's cost on a real socket.
func BenchmarkUDPWrite(b *testing.B) {
	run := func(b *testing.B, m *Model) {
		recv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Go(func() { // drain so the receiver's buffer never makes writes fail
			buf := make([]byte, 2048)
			for {
				if _, _, err := recv.ReadFrom(buf); err != nil {
					return
				}
			}
		})
		sender, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		var conn net.PacketConn = sender
		var nc *PacketConn
		if m != nil {
			nc = NewPacketConn(sender, *m, 1)
			conn = nc
		}
		dst := recv.LocalAddr()
		pkt := make([]byte, 1200)
		b.SetBytes(int64(len(pkt)))
		i := 0
		for b.Loop() {
			if _, err := conn.WriteTo(pkt, dst); err != nil {
				b.Fatal(err)
			}
			if i++; nc != nil && i%drainEvery == 0 {
				drain(b, nc.pipe)
			}
		}
		if nc != nil {
			drain(b, nc.pipe)
		}
		b.StopTimer()
		_ = conn.Close()
		_ = recv.Close()
		wg.Wait()
	}
	b.Run("direct", func(b *testing.B) { run(b, nil) })
	b.Run("netem-delay1ms", func(b *testing.B) { run(b, &Model{Delay: time.Millisecond}) })
}
