//go:build linux

package recovery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/quictun/quictun/internal/testtls"
	"github.com/quictun/quictun/netem"
	"github.com/quictun/quictun/netem/host"
)

// hostTestbed makes a two-namespace testbed joined by an emulated link, or skips
// when this machine cannot (not root, no TUN). Kernel TCP and the quic-go flows of
// these benchmarks cross the same emulated bottleneck queue.
func hostTestbed(b *testing.B, name string, link netem.Link) *host.Testbed {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root for network namespaces")
	}
	if backends, why := host.Available(); len(backends) == 0 {
		b.Skipf("no host emulation here: %v", why)
	}
	// The process id keeps two benchmark processes (two agents) off each other's
	// testbeds, and the cleanup off the other's namespaces.
	name = fmt.Sprintf("%.7s%03d", name, os.Getpid()%1000)
	host.CleanupStale(name)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tb, err := host.New(ctx, host.Config{Name: name, Link: link, Seed: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tb.Close() })
	return tb
}

// hostQUIC dials one quic-go connection from the client namespace to the server
// namespace, each side on its own UDP socket, with recovery when cfg is set and
// quic-go's loss recovery traced when trace is.
func hostQUIC(b *testing.B, ctx context.Context, tb *host.Testbed, cfg *Config, trace *lossTrace) *pair {
	b.Helper()
	var cu, su *net.UDPConn
	if err := tb.Do(host.Server, func() (err error) {
		su, err = net.ListenUDP("udp", &net.UDPAddr{IP: tb.ServerAddr.AsSlice()})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	if err := tb.Do(host.Client, func() (err error) {
		cu, err = net.ListenUDP("udp", &net.UDPAddr{IP: tb.ClientAddr.AsSlice()})
		return err
	}); err != nil {
		b.Fatal(err)
	}
	mk := func(u *net.UDPConn, dialer bool) *endpoint {
		e := &endpoint{udp: u}
		var pc net.PacketConn = u
		if cfg != nil {
			rcfg := *cfg
			rcfg.Dialer = dialer
			rc, err := NewConn(u, rcfg)
			if err != nil {
				b.Fatal(err)
			}
			e.rec, pc = rc, rc
		}
		e.transport = &quic.Transport{Conn: pc}
		return e
	}
	p := &pair{client: mk(cu, true), server: mk(su, false)}
	scfg, ccfg := tracedConfigs(trace, cfg != nil, cfg != nil)
	ln, err := p.server.transport.Listen(testtls.Server(b, testALPN), scfg)
	if err != nil {
		p.close()
		b.Fatal(err)
	}
	p.listener = ln
	accepted := make(chan *quic.Conn, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err == nil {
			p.server.proveAccepted(c)
			accepted <- c
		}
		close(accepted)
	}()
	cc, err := p.client.transport.Dial(ctx, su.LocalAddr(), clientTLS(), ccfg)
	if err != nil {
		p.close()
		<-accepted
		b.Fatalf("dial: %v", err)
	}
	p.clientConn = cc
	p.link = func() netem.Stats { st, _ := tb.Stats(); return st.Up }
	p.serverConn = <-accepted
	if p.serverConn == nil {
		p.close()
		b.Fatal("accept failed")
	}
	return p
}

// quicBulk sends on one stream until ctx ends, counting what the server receives.
func quicBulk(ctx context.Context, p *pair, received *atomic.Int64) (done <-chan struct{}) {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		st, err := p.serverConn.AcceptStream(ctx)
		if err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for {
			n, err := st.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	go func() {
		st, err := p.clientConn.OpenStreamSync(ctx)
		if err != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for ctx.Err() == nil {
			if _, err := st.Write(buf); err != nil {
				return
			}
		}
		st.CancelWrite(0)
	}()
	return ch
}

// tcpBulk runs one kernel TCP flow (congestion control cc) from the client
// namespace to the server namespace until ctx ends, counting received bytes.
func tcpBulk(b *testing.B, ctx context.Context, tb *host.Testbed, cc string, received *atomic.Int64) (done <-chan struct{}) {
	b.Helper()
	var ln net.Listener
	if err := tb.Do(host.Server, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(tb.ServerAddr.String(), "0"))
		return err
	}); err != nil {
		b.Fatal(err)
	}
	var conn net.Conn
	if err := tb.Do(host.Client, func() (err error) {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc) })
			return errors.Join(err, serr)
		}}
		conn, err = d.DialContext(ctx, "tcp", ln.Addr().String())
		return err
	}); err != nil {
		ln.Close()
		b.Fatal(err)
	}
	ch := make(chan struct{})
	srv, err := ln.Accept()
	ln.Close()
	if err != nil {
		conn.Close()
		b.Fatal(err)
	}
	go func() {
		defer close(ch)
		defer srv.Close()
		buf := make([]byte, 64<<10)
		for {
			n, err := srv.Read(buf)
			received.Add(int64(n))
			if err != nil {
				return
			}
		}
	}()
	go func() {
		defer conn.Close()
		buf := make([]byte, 64<<10)
		for ctx.Err() == nil {
			conn.SetWriteDeadline(time.Now().Add(time.Second))
			if _, err := conn.Write(buf); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
		}
	}()
	return ch
}

// BenchmarkHostFairness: one quictun flow and one TCP cubic flow share a clean
// 100 Mbit/s, 50 ms link with a one-BDP drop-tail queue (host testbed, kernel TCP).
// A full queue is congestion, and the layer must let quic-go see it: the issue's
// bound is that quictun takes no more than 2/3 of the link. Reported: both
// goodputs and quictun's share, over the second half of the run (after both
// flows' start-up). Root only.
//
//	go test -run '^$' -bench BenchmarkHostFairness -benchtime 1x ./recovery/
func BenchmarkHostFairness(b *testing.B) {
	link := netem.Symmetric(wanModel(50*time.Millisecond, 0, nil))
	for _, md := range []struct {
		name string
		cfg  *Config
	}{{"quic-off", nil}, {"quic-auto", autoConfig()}} {
		b.Run(md.name, func(b *testing.B) {
			for b.Loop() {
				tb := hostTestbed(b, "qtrfair", link)
				q, t := shareRun(b, tb, md.cfg, 2*(*goodputDuration))
				tb.Close()
				b.ReportMetric(q, "quic-Mbit/s")
				b.ReportMetric(t, "tcp-Mbit/s")
				b.ReportMetric(q/(q+t), "quic-share")
				b.ReportMetric(0, "ns/op")
			}
		})
	}
}

func shareRun(b *testing.B, tb *host.Testbed, cfg *Config, d time.Duration) (quicMbps, tcpMbps float64) {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	trace := goodputTracer()
	p := hostQUIC(b, ctx, tb, cfg, trace)
	defer p.close()
	runCtx, stop := context.WithTimeout(ctx, d)
	defer stop()
	var qBytes, tBytes atomic.Int64
	qDone := quicBulk(runCtx, p, &qBytes)
	traced := traceWhile(b, runCtx, p, &qBytes, trace)
	tDone := tcpBulk(b, runCtx, tb, "cubic", &tBytes)
	time.Sleep(d / 2)
	q0, t0, start := qBytes.Load(), tBytes.Load(), time.Now()
	<-runCtx.Done()
	el := time.Since(start).Seconds()
	quicMbps = float64(qBytes.Load()-q0) * 8 / el / 1e6
	tcpMbps = float64(tBytes.Load()-t0) * 8 / el / 1e6
	traced()
	if p.client.rec != nil {
		st := p.server.rec.Stats()
		cs := p.client.rec.Stats()
		b.Logf("quic %.1f Mbit/s, tcp %.1f Mbit/s | sender: repairs %.1f%% | receiver: lost %d congestion %d ambiguous %d repaired %d unrepaired %d withheld %d",
			quicMbps, tcpMbps, 100*cs.Overhead, st.Lost, st.CongestionLost, st.AmbiguousLost, st.Repaired, st.Unrepaired, st.Withheld)
	}
	p.clientConn.CloseWithError(0, "")
	<-tDone
	<-qDone
	return quicMbps, tcpMbps
}

// BenchmarkHostGoodput is BenchmarkGoodput through the host testbed: the kernel's
// UDP path and the TUN forwarder instead of the in-process emulator, closer to the
// bench harness. Root only.
//
//	go test -run '^$' -bench BenchmarkHostGoodput -benchtime 1x ./recovery/
func BenchmarkHostGoodput(b *testing.B) {
	ge, err := netem.NewBurstLoss(0.02, 3)
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range []struct {
		name string
		m    netem.Model
	}{
		{"rtt50-loss0", wanModel(50*time.Millisecond, 0, nil)},
		{"rtt50-loss1", wanModel(50*time.Millisecond, 0.01, nil)},
		{"rtt50-loss5", wanModel(50*time.Millisecond, 0.05, nil)},
		{"rtt50-loss10", wanModel(50*time.Millisecond, 0.10, nil)},
		{"rtt200-loss0", wanModel(200*time.Millisecond, 0, nil)},
		{"rtt200-loss1", wanModel(200*time.Millisecond, 0.01, nil)},
		{"rtt200-loss5", wanModel(200*time.Millisecond, 0.05, nil)},
		{"rtt200-loss10", wanModel(200*time.Millisecond, 0.10, nil)},
		{"rtt50-ge2b3", wanModel(50*time.Millisecond, 0, ge)},
		// The report suite's LAN: what the layer costs where the link is
		// fast and the RTT short (run alone with -bench 'HostGoodput/lan').
		{"lan-loss0", lanModel(0)},
		{"lan-loss1", lanModel(0.01)},
	} {
		for _, md := range []struct {
			name string
			cfg  *Config
		}{{"off", nil}, {"auto", autoConfig()}} {
			b.Run(fmt.Sprintf("%s/%s", l.name, md.name), func(b *testing.B) {
				for b.Loop() {
					tb := hostTestbed(b, "qtrgood", netem.Symmetric(l.m))
					mbps := hostGoodput(b, tb, md.cfg, *goodputDuration)
					tb.Close()
					b.ReportMetric(mbps, "Mbit/s")
					b.ReportMetric(0, "ns/op")
				}
			})
		}
	}
}

func hostGoodput(b *testing.B, tb *host.Testbed, cfg *Config, d time.Duration) float64 {
	ctx, cancel := context.WithTimeout(context.Background(), d+30*time.Second)
	defer cancel()
	trace := goodputTracer()
	p := hostQUIC(b, ctx, tb, cfg, trace)
	defer p.close()
	runCtx, stop := context.WithTimeout(ctx, d)
	defer stop()
	var n atomic.Int64
	done := quicBulk(runCtx, p, &n)
	traced := traceWhile(b, runCtx, p, &n, trace)
	start := time.Now()
	<-runCtx.Done()
	mbps := float64(n.Load()) * 8 / time.Since(start).Seconds() / 1e6
	traced()
	if p.client.rec != nil {
		logStats(b, goodputResult{mbps: mbps, client: p.client.rec.Stats(), server: p.server.rec.Stats()})
	}
	p.clientConn.CloseWithError(0, "")
	<-done
	return mbps
}
