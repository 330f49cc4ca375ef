package recovery

import (
	"context"
	"crypto/sha256"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/quictun/quictun/internal/testtls"
	"github.com/quictun/quictun/netem"
)

// transferIntact moves size bytes from client to server over a fresh pair and
// checks they arrive intact, by SHA-256.
func transferIntact(t *testing.T, cs, ss side, size int) *pair {
	t.Helper()
	return transferIntactTraced(t, cs, ss, size, nil)
}

// transferIntactTraced is transferIntact with the client's quic-go loss recovery
// traced.
func transferIntactTraced(t *testing.T, cs, ss side, size int, trace *lossTrace) *pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := dialPairTraced(t, ctx, cs, ss, trace)

	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(data)

	type result struct {
		n   int64
		sum [32]byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		h := sha256.New()
		n, err := receiveAll(ctx, p.serverConn, h)
		var r result
		r.n, r.err = n, err
		copy(r.sum[:], h.Sum(nil))
		done <- r
	}()
	st, err := p.clientConn.OpenStreamSync(ctx)
	if err != nil {
		p.close()
		t.Fatal(err)
	}
	if _, err := st.Write(data); err != nil {
		p.close()
		t.Fatal(err)
	}
	st.Close()
	r := <-done
	if r.err != nil {
		p.close()
		t.Fatalf("receive: %v", r.err)
	}
	if r.n != int64(size) || r.sum != want {
		p.close()
		t.Fatalf("received %d bytes with sha256 %x, want %d bytes with %x", r.n, r.sum, size, want)
	}
	return p
}

// TestTenPercentLossIntact: quic-go over recovery over a link that loses 10% of the
// datagrams each way moves data intact, and the layer really repaired losses.
func TestTenPercentLossIntact(t *testing.T) {
	defer goleak.VerifyNone(t)
	lossy := netem.Model{Delay: 5 * time.Millisecond, Loss: 0.10}
	auto := DefaultConfig()
	p := transferIntact(t,
		side{model: &lossy, recovery: &auto, seed: 1},
		side{model: &lossy, recovery: &auto, seed: 2},
		4<<20)
	cst, sst := p.client.rec.Stats(), p.server.rec.Stats()
	p.close()
	t.Logf("client: %+v", cst)
	t.Logf("server: %+v", sst)
	if cst.FramedPeers != 1 || sst.FramedPeers != 1 {
		t.Fatalf("framing not negotiated: client framed peers %d, server %d", cst.FramedPeers, sst.FramedPeers)
	}
	if sst.Lost == 0 || sst.Repaired == 0 {
		t.Fatalf("server saw %d lost and repaired %d: the link or the layer did nothing", sst.Lost, sst.Repaired)
	}
	if cst.ParitySent == 0 {
		t.Fatal("client sent no repairs")
	}
	// Most losses must be rebuilt; quic-go retransmits the rest.
	if float64(sst.Repaired) < 0.8*float64(sst.Lost)*float64(cst.DataSent)/float64(cst.DataSent+cst.ParitySent) {
		t.Fatalf("repaired %d of about %d lost sources", sst.Repaired, sst.Lost)
	}
}

// TestTrainerTeachesQUICGoToWait: while a bulk transfer runs, the receiving
// layer holds back a few datagrams until quic-go's sender has relaxed its loss
// detection to a whole round trip (its time threshold reaches 2 x RTT), says so
// in Feedback, and the sending layer then codes over longer groups. Without the
// trainer the threshold stays near its start (1.125 x RTT) on a link whose
// losses the layer repairs within milliseconds.
func TestTrainerTeachesQUICGoToWait(t *testing.T) {
	defer goleak.VerifyNone(t)
	link := netem.Model{Delay: 10 * time.Millisecond, Loss: 0.01, RateBps: 40_000_000, QueueDelay: 20 * time.Millisecond}
	auto := DefaultConfig()
	trace := new(lossTrace)
	// 40 Mbit/s for about 3 s: training starts a second in.
	p := transferIntactTraced(t,
		side{model: &link, recovery: &auto, seed: 3},
		side{model: &link, recovery: &auto, seed: 4},
		15<<20, trace)
	cst := p.client.rec.Stats()
	p.close()
	trace.mu.Lock()
	threshold, packetOff := trace.timeThreshold, trace.packetThresholdOff
	trace.mu.Unlock()
	t.Logf("quic-go time threshold %.3f x RTT, packet threshold off %v; client shape %d+%d", threshold, packetOff, cst.Data, cst.Parity)
	if threshold < 2 || !packetOff {
		t.Fatalf("quic-go's time threshold is %.3f x RTT (packet threshold off: %v), want 2 and off", threshold, packetOff)
	}
	if cst.Data != defaultAutoData {
		t.Fatalf("the sender codes groups of %d after training, want %d", cst.Data, defaultAutoData)
	}
}

// TestNegotiationMatrix: every combination of settings connects and moves data,
// including plain quic-go on either side, and frames exactly when both offer.
func TestNegotiationMatrix(t *testing.T) {
	defer goleak.VerifyNone(t)
	off, auto, fixed := Config{Mode: Off}, DefaultConfig(), Config{Mode: Fixed, Data: 10, Parity: 3}
	settings := []struct {
		name string
		cfg  *Config
	}{{"plain", nil}, {"off", &off}, {"auto", &auto}, {"fixed", &fixed}}
	for _, c := range settings {
		for _, s := range settings {
			t.Run(c.name+"-"+s.name, func(t *testing.T) {
				p := transferIntact(t, side{recovery: c.cfg}, side{recovery: s.cfg}, 256<<10)
				defer p.close()
				// A direction is framed when its sender offers (not Off) and its
				// receiver runs the layer at all (Off answers offers).
				frames := func(from, to *Config) bool { return from != nil && from.Mode != Off && to != nil }
				for _, d := range []struct {
					e        *endpoint
					from, to *Config
				}{{p.client, c.cfg, s.cfg}, {p.server, s.cfg, c.cfg}} {
					if d.e.rec == nil {
						continue
					}
					framing := frames(d.from, d.to)
					st := d.e.rec.Stats()
					if got := st.FramedPeers == 1; got != framing {
						t.Fatalf("framed peers %d, want framing=%v", st.FramedPeers, framing)
					}
					if framing && st.DataSent == 0 {
						t.Fatal("framing negotiated but nothing sent framed")
					}
				}
			})
		}
	}
}

// rebindingConn is a client socket whose local port changes under a running
// connection, as behind a NAT that rebinds.
type rebindingConn struct {
	mu  sync.Mutex
	cur *net.UDPConn
}

func (r *rebindingConn) conn() *net.UDPConn { r.mu.Lock(); defer r.mu.Unlock(); return r.cur }

func (r *rebindingConn) rebind(t *testing.T) {
	fresh, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Error(err)
		return
	}
	r.mu.Lock()
	old := r.cur
	r.cur = fresh
	r.mu.Unlock()
	old.Close()
}

func (r *rebindingConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c := r.conn()
		n, a, err := c.ReadFrom(b)
		if err != nil && c != r.conn() {
			continue // swapped under the read
		}
		return n, a, err
	}
}
func (r *rebindingConn) WriteTo(b []byte, a net.Addr) (int, error) { return r.conn().WriteTo(b, a) }
func (r *rebindingConn) Close() error                              { return r.conn().Close() }
func (r *rebindingConn) LocalAddr() net.Addr                       { return r.conn().LocalAddr() }
func (r *rebindingConn) SetDeadline(t time.Time) error             { return r.conn().SetDeadline(t) }
func (r *rebindingConn) SetReadDeadline(t time.Time) error         { return r.conn().SetReadDeadline(t) }
func (r *rebindingConn) SetWriteDeadline(t time.Time) error        { return r.conn().SetWriteDeadline(t) }

// TestNATRebinding: when the client's port changes mid-transfer, the server meets
// it as a new peer and starts its sequence and group numbers afresh; the client,
// which still remembers the old ones, must follow rather than drop the new
// datagrams as duplicates, and the transfer goes on.
func TestNATRebinding(t *testing.T) {
	defer goleak.VerifyNone(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	nat := &rebindingConn{cur: first}
	cc, err := NewConn(nat, Config{Mode: Auto, Dialer: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := newEndpoint(t, side{recovery: &Config{Mode: Auto}})
	cli := &endpoint{udp: first, rec: cc, transport: &quic.Transport{Conn: cc}}
	defer cli.close()
	defer srv.close()
	ln, err := srv.transport.Listen(testtls.Server(t, testALPN), quicConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var received atomic.Int64
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		c, err := ln.Accept(ctx)
		if err != nil {
			return
		}
		srv.proveAccepted(c)
		defer c.CloseWithError(0, "")
		receiveAll(ctx, c, countingWriter{&received})
	}()
	qc := quicConfig()
	qc.MaxIdleTimeout = 5 * time.Second
	conn, err := cli.transport.Dial(ctx, srv.udp.LocalAddr(), clientTLS(), qc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	write := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); {
			st.SetWriteDeadline(time.Now().Add(3 * time.Second))
			if _, err := st.Write(buf); err != nil {
				t.Fatalf("write: %v", err)
			}
		}
	}
	write(300 * time.Millisecond)
	nat.rebind(t)
	atRebind := received.Load()
	write(time.Second)
	sst := srv.rec.Stats()
	st.Close()
	<-recvDone
	if after := received.Load() - atRebind; after < 1<<20 {
		t.Fatalf("only %d bytes arrived after the rebinding", after)
	}
	// The new address is a stranger: the endpoint proved the old one.
	if sst.Peers != 2 || sst.ProvenPeers != 1 {
		t.Fatalf("server peers %d (proven %d), want the old and the new address (the old proven)", sst.Peers, sst.ProvenPeers)
	}
}

type countingWriter struct{ n *atomic.Int64 }

func (w countingWriter) Write(b []byte) (int, error) { w.n.Add(int64(len(b))); return len(b), nil }

// TestSlowStartGuardSparesTheQueue: on a clean long fat path with a one-BDP
// drop-tail queue, quic-go's slow start (whose delay test can miss the queue
// building up) would overshoot until the queue drops a round's worth of
// datagrams, enough holes in one stream to approach quic-go's limit of 1000,
// past which it closes the connection. The receiving layer's guard ends slow
// start first, so the queue drops little or nothing.
func TestSlowStartGuardSparesTheQueue(t *testing.T) {
	defer goleak.VerifyNone(t)
	// 40 Mbit/s x 200 ms: about 690 datagrams in flight, a queue as deep.
	link := netem.Model{Delay: 100 * time.Millisecond, RateBps: 40_000_000, QueueDelay: 200 * time.Millisecond}
	auto := DefaultConfig()
	auto.noRamp = *goodputNoRamp
	p := transferIntact(t,
		side{model: &link, recovery: &auto, seed: 5},
		side{model: &link, recovery: &auto, seed: 6},
		16<<20)
	drops := p.link().DroppedQueue
	sst := p.server.rec.Stats()
	p.close()
	t.Logf("queue drops %d, withheld by the server's layer %d", drops, sst.Withheld)
	if drops > 150 {
		t.Fatalf("the queue dropped %d datagrams in slow start", drops)
	}
}
