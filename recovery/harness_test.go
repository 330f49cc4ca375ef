package recovery

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/quictun/quictun/internal/quicconf"
	"github.com/quictun/quictun/internal/testtls"
	"github.com/quictun/quictun/netem"
)

// testALPN is the ALPN of the test connections.
const testALPN = "quictun-recovery-test"

func clientTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, NextProtos: []string{testALPN}} //nolint:gosec // test peer with a throwaway certificate
}

// endpoint is one side of a test link: a loopback UDP socket, optionally the
// netem impairment of its egress, optionally a recovery Conn, and a quic-go
// Transport on top.
type endpoint struct {
	udp       *net.UDPConn
	emu       emulator
	rec       *Conn
	transport *quic.Transport
}

// emulator is the egress impairment of an endpoint: netem's PacketConn, or for
// benchmarks a netem Pipe on a real-time thread (see realtimeEmulator).
type emulator interface {
	net.PacketConn
	Stats() netem.Stats
}

// side says how to build one endpoint.
type side struct {
	model    *netem.Model // egress impairment; nil: none
	recovery *Config      // nil: quic-go directly on the (emulated) socket
	seed     int64
	realtime bool // emulate with a real-time scheduler thread (benchmarks)
}

// realtimeEmulator is netem's Pipe with its scheduler on a SCHED_FIFO thread, in
// front of a UDP socket: on this shared machine an ordinary goroutine is woken tens
// of milliseconds late under load, which would measure the machine, not the layer.
//
// It deliberately has only the net.PacketConn methods (plus the buffer setters):
// embedding *net.UDPConn would hand quic-go WriteMsgUDP and let it write around
// the emulator.
type realtimeEmulator struct {
	udp  *net.UDPConn
	pipe *netem.Pipe
}

func newRealtimeEmulator(udp *net.UDPConn, m netem.Model, seed int64) (*realtimeEmulator, error) {
	pipe, err := netem.NewPipe(m, seed, func(b []byte, addr net.Addr) error {
		_, err := udp.WriteTo(b, addr)
		return err
	}, netem.RealtimeScheduler(50))
	if err != nil {
		return nil, err
	}
	return &realtimeEmulator{udp: udp, pipe: pipe}, nil
}

func (e *realtimeEmulator) LocalAddr() net.Addr                { return e.udp.LocalAddr() }
func (e *realtimeEmulator) SetDeadline(t time.Time) error      { return e.udp.SetDeadline(t) }
func (e *realtimeEmulator) SetReadDeadline(t time.Time) error  { return e.udp.SetReadDeadline(t) }
func (e *realtimeEmulator) SetWriteDeadline(t time.Time) error { return e.udp.SetWriteDeadline(t) }
func (e *realtimeEmulator) SetReadBuffer(n int) error          { return e.udp.SetReadBuffer(n) }
func (e *realtimeEmulator) SetWriteBuffer(n int) error         { return e.udp.SetWriteBuffer(n) }

func (e *realtimeEmulator) WriteTo(b []byte, addr net.Addr) (int, error) {
	if err := e.pipe.Send(b, addr); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (e *realtimeEmulator) ReadFrom(b []byte) (int, net.Addr, error) { return e.udp.ReadFrom(b) }

func (e *realtimeEmulator) Stats() netem.Stats { return e.pipe.Stats() }

func (e *realtimeEmulator) Close() error {
	e.pipe.Close()
	return e.udp.Close()
}

func newEndpoint(tb testing.TB, s side) *endpoint {
	tb.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		tb.Fatal(err)
	}
	e := &endpoint{udp: udp}
	var pc net.PacketConn = udp
	switch {
	case s.model != nil && s.realtime:
		emu, err := newRealtimeEmulator(udp, *s.model, s.seed)
		if err != nil {
			udp.Close()
			tb.Fatal(err)
		}
		e.emu, pc = emu, emu
	case s.model != nil:
		emu := netem.NewPacketConn(udp, *s.model, s.seed)
		e.emu, pc = emu, emu
	}
	if s.recovery != nil {
		e.rec, err = NewConn(pc, *s.recovery)
		if err != nil {
			tb.Fatal(err)
		}
		pc = e.rec
	}
	e.transport = &quic.Transport{Conn: pc}
	return e
}

// proveAccepted tells the endpoint's layer that QUIC accepted conn, until conn
// ends, as the server endpoint does.
func (e *endpoint) proveAccepted(conn *quic.Conn) {
	if e.rec != nil {
		context.AfterFunc(conn.Context(), e.rec.Prove(conn.RemoteAddr()))
	}
}

func (e *endpoint) close() {
	e.transport.Close()
	switch {
	case e.rec != nil:
		e.rec.Close()
	case e.emu != nil:
		e.emu.Close()
	default:
		e.udp.Close()
	}
}

// quicConfig is the endpoints' quic-go config over the layer.
func quicConfig() *quic.Config { return quicConfigOver(true) }

// quicConfigOver is the endpoints' quic-go config (internal/quicconf), tuned for
// the layer when quic-go runs over it, as the endpoints do.
func quicConfigOver(layer bool) *quic.Config {
	cfg := quicconf.Tunnel()
	if err := quicconf.SetCongestion(cfg, *goodputCongestion); err != nil {
		panic(err)
	}
	if w := uint64(*goodputStreamWindow) << 20; w > 0 {
		cfg.MaxStreamReceiveWindow = w
		cfg.InitialConnectionReceiveWindow = max(cfg.InitialConnectionReceiveWindow, 4*w)
		cfg.MaxConnectionReceiveWindow = max(cfg.MaxConnectionReceiveWindow, 8*w)
	}
	if layer {
		TuneQUICConfig(cfg)
	}
	return cfg
}

// tracedConfigs are the server's and the client's quic-go configs (each over the
// layer or not), with their loss recovery traced into trace when it is set.
func tracedConfigs(trace *lossTrace, serverLayer, clientLayer bool) (server, client *quic.Config) {
	server, client = quicConfigOver(serverLayer), quicConfigOver(clientLayer)
	if trace != nil {
		server.Tracer = func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return &trace.server }
		client.Tracer = func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return trace }
	}
	return server, client
}

// pair is a connected client and server.
type pair struct {
	client, server         *endpoint
	clientConn, serverConn *quic.Conn
	listener               *quic.Listener
	// link, when set, reads the counters of the emulator of the client-to-server
	// direction (the client's netem egress, or the host testbed's), for traces.
	link func() netem.Stats
}

func dialPair(tb testing.TB, ctx context.Context, cs, ss side) *pair {
	return dialPairTraced(tb, ctx, cs, ss, nil)
}

// dialPairTraced is dialPair with quic-go's loss recovery of the client traced.
func dialPairTraced(tb testing.TB, ctx context.Context, cs, ss side, trace *lossTrace) *pair {
	tb.Helper()
	if cs.recovery != nil {
		dialer := *cs.recovery
		dialer.Dialer = true // as the client endpoint's
		cs.recovery = &dialer
	}
	p := &pair{client: newEndpoint(tb, cs), server: newEndpoint(tb, ss)}
	if p.client.emu != nil {
		p.link = p.client.emu.Stats
	}
	scfg, ccfg := tracedConfigs(trace, ss.recovery != nil, cs.recovery != nil)
	ln, err := p.server.transport.Listen(testtls.Server(tb, testALPN), scfg)
	if err != nil {
		p.close()
		tb.Fatal(err)
	}
	p.listener = ln
	accepted := make(chan *quic.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := ln.Accept(ctx)
		if err != nil {
			acceptErr <- err
			return
		}
		p.server.proveAccepted(c)
		accepted <- c
	}()
	cc, err := p.client.transport.Dial(ctx, p.server.udp.LocalAddr(), clientTLS(), ccfg)
	if err != nil {
		p.close()
		<-acceptErr
		tb.Fatalf("dial: %v", err)
	}
	p.clientConn = cc
	select {
	case p.serverConn = <-accepted:
	case err := <-acceptErr:
		p.close()
		tb.Fatalf("accept: %v", err)
	}
	return p
}

func (p *pair) close() {
	if p.clientConn != nil {
		p.clientConn.CloseWithError(0, "")
	}
	if p.serverConn != nil {
		p.serverConn.CloseWithError(0, "")
	}
	if p.listener != nil {
		p.listener.Close()
	}
	p.client.close()
	p.server.close()
}

// receiveAll accepts one stream on the server and reads it to EOF, reporting the
// byte count and a running hash through sink. It returns when the stream ends.
func receiveAll(ctx context.Context, conn *quic.Conn, sink io.Writer) (int64, error) {
	st, err := conn.AcceptStream(ctx)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 64<<10)
	var total int64
	for {
		n, err := st.Read(buf)
		total += int64(n)
		if sink != nil {
			sink.Write(buf[:n])
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// lossTrace counts what quic-go's loss recovery decides, for the goodput trace: it
// is a qlog trace that keeps only counters.
type lossTrace struct {
	mu                    sync.Mutex
	lostTime, lostReorder int
	spurious              int
	maxTimeReorder        time.Duration
	timeThreshold         float64
	packetThresholdOff    bool
	// blocked counts DATA_BLOCKED and STREAM_DATA_BLOCKED frames the client
	// sent: its quic-go ran out of the peer's flow-control credit.
	blocked int
	// inflightMax is the most bytes quic-go had in flight in the interval.
	inflightMax int
	server      dropTrace
}

// dropTrace counts the datagrams the server's quic-go drops.
type dropTrace struct {
	mu      sync.Mutex
	dropped map[qlog.PacketDropReason]int
}

func (t *dropTrace) AddProducer() qlogwriter.Recorder { return t }
func (t *dropTrace) Close() error                     { return nil }

func (t *dropTrace) RecordEvent(e qlogwriter.Event) {
	if ev, ok := e.(qlog.PacketDropped); ok {
		t.mu.Lock()
		if t.dropped == nil {
			t.dropped = make(map[qlog.PacketDropReason]int)
		}
		t.dropped[ev.Trigger]++
		t.mu.Unlock()
	}
}

func (t *lossTrace) AddProducer() qlogwriter.Recorder { return t }
func (t *lossTrace) Close() error                     { return nil }

func (t *lossTrace) RecordEvent(e qlogwriter.Event) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch ev := e.(type) {
	case qlog.PacketLost:
		if ev.Trigger == qlog.PacketLossTimeThreshold {
			t.lostTime++
		} else {
			t.lostReorder++
		}
	case qlog.SpuriousLoss:
		t.spurious++
		t.maxTimeReorder = max(t.maxTimeReorder, ev.TimeReordering)
	case qlog.MetricsUpdated:
		t.inflightMax = max(t.inflightMax, ev.BytesInFlight)
	case qlog.RecoveryParametersSet:
		t.timeThreshold = ev.TimeThreshold
		t.packetThresholdOff = ev.PacketThresholdDisabled
	case qlog.PacketSent:
		for _, f := range ev.Frames {
			switch f.Frame.(type) {
			case *qlog.DataBlockedFrame, *qlog.StreamDataBlockedFrame:
				t.blocked++
			}
		}
	}
}

// take returns the counters and resets them.
func (t *lossTrace) take() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := fmt.Sprintf("lost time %d reord %d spurious %d (max %v) thr %.2f pktthr-off %v blocked %d inflight-max %d pkts",
		t.lostTime, t.lostReorder, t.spurious, t.maxTimeReorder.Round(time.Millisecond), t.timeThreshold, t.packetThresholdOff, t.blocked, t.inflightMax/1400)
	t.lostTime, t.lostReorder, t.spurious, t.maxTimeReorder, t.blocked, t.inflightMax = 0, 0, 0, 0, 0, 0
	t.server.mu.Lock()
	if len(t.server.dropped) > 0 {
		s += fmt.Sprintf(" | server dropped %v", t.server.dropped)
		clear(t.server.dropped)
	}
	t.server.mu.Unlock()
	return s
}
