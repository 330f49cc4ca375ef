package engine

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"

	"github.com/quictun/quictun/internal/testtls"
)

func TestWritePace(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	type write struct {
		ms, n int
		want  bool
	}
	for _, tc := range []struct {
		name   string
		writes []write
	}{
		{"keystrokes stay interactive", []write{{0, 64, true}, {50, 64, true}, {100, 64, true}, {10000, 64, true}}},
		{"a bulk flow turns bulk on the chunk past the budget", []write{{0, 32 << 10, true}, {1, 32 << 10, true}, {2, 32 << 10, false}, {3, 32 << 10, false}}},
		{"bulk again only after a quiet window", []write{{0, 128 << 10, false}, {100, 64, false}, {400, 64, false}, {800, 64, true}}},
		{"a steady rate under the budget stays interactive", []write{{0, 16 << 10, true}, {100, 16 << 10, true}, {200, 16 << 10, true}, {300, 16 << 10, true}, {400, 16 << 10, true}}},
		{"a steady rate over the budget turns bulk", []write{{0, 48 << 10, true}, {100, 48 << 10, false}, {200, 48 << 10, false}, {300, 48 << 10, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w writePace
			for i, wr := range tc.writes {
				if got := w.write(at(wr.ms), wr.n, interactiveBudget); got != wr.want {
					t.Errorf("write %d (%d bytes at %d ms): interactive %v, want %v", i, wr.n, wr.ms, got, wr.want)
				}
			}
		})
	}
}

func TestInteractiveProtocols(t *testing.T) {
	for _, tc := range []struct {
		name  string
		props map[string]string
		want  bool
	}{
		{"ssh", nil, true},
		{"rfb", nil, true},
		{"spice", map[string]string{"channelType": "inputs"}, true},
		{"spice", map[string]string{"channelType": "display"}, false},
		{"http", nil, false},
		{"tls", nil, false},
	} {
		if got := interactiveProtocol(tc.name, tc.props); got != tc.want {
			t.Errorf("%s %v: interactive %v, want %v", tc.name, tc.props, got, tc.want)
		}
	}
}

// frameLog is a qlog trace of the packets a connection sends: for each, the
// streams its STREAM frames belong to (with the end offset of each), in the
// order quic-go packed them; marks placed by the test land between them.
type frameLog struct {
	mu      sync.Mutex
	packets [][]streamChunk // a nil entry is a mark
	marks   []int           // index into packets of each mark
}

type streamChunk struct {
	id  int64
	end int64
}

func (l *frameLog) AddProducer() qlogwriter.Recorder { return l }
func (l *frameLog) Close() error                     { return nil }

func (l *frameLog) RecordEvent(ev qlogwriter.Event) {
	ps, ok := ev.(qlog.PacketSent)
	if !ok {
		return
	}
	var chunks []streamChunk
	for _, f := range ps.Frames {
		if sf, ok := f.Frame.(*qlog.StreamFrame); ok {
			chunks = append(chunks, streamChunk{int64(sf.StreamID), sf.Offset + sf.Length})
		}
	}
	if chunks == nil {
		return
	}
	l.mu.Lock()
	l.packets = append(l.packets, chunks)
	l.mu.Unlock()
}

func (l *frameLog) mark() {
	l.mu.Lock()
	l.marks = append(l.marks, len(l.packets))
	l.mu.Unlock()
}

// overtaken is, for the mark-th mark, how many packets carrying only other
// streams' data quic-go packed after the mark and before the packet that
// carries stream id up to offset end.
func (l *frameLog) overtaken(mark int, id, end int64) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for i, p := range l.packets {
		carries := false
		for _, c := range p {
			if c.id == id && c.end >= end {
				carries = true
			}
		}
		if carries {
			return n, true
		}
		if i >= l.marks[mark] {
			n++
		}
	}
	return 0, false
}

// alone reports whether the packets that carry stream id up to offset end
// carry no other stream's data.
func (l *frameLog) alone(id, end int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.packets {
		carries, others := false, false
		for _, c := range p {
			carries = carries || c.id == id && c.end >= end
			others = others || c.id != id
		}
		if carries {
			return !others
		}
	}
	return false
}

// dropping drops every nth datagram it is asked to send, so that the sender
// has lost data to resend.
type dropping struct {
	*net.UDPConn
	n, sent int
}

func (d *dropping) WriteTo(p []byte, addr net.Addr) (int, error) {
	if d.sent++; d.n > 0 && d.sent%d.n == 0 {
		return len(p), nil
	}
	return d.UDPConn.WriteTo(p, addr)
}

// A tunnel that writes small and rarely is sent ahead of bulk tunnels of the
// same session: the client side of 8 bulk tunnels and one that sends a
// 64-byte message every 20 ms run as the client endpoint runs them (the
// upstream pump writes into the QUIC stream), and quic-go's own trace of the
// packets it packs shows each message in the first or second packet after
// its write returned. Sent round-robin with the bulk streams instead, a
// message waits for up to 8 bulk packets; and where packets are lost, stock
// quic-go resends the bulk tunnels' lost data ahead of any new data.
func TestInteractiveTunnelOvertakesBulk(t *testing.T) {
	t.Run("no loss", func(t *testing.T) { interactiveOvertakesBulk(t, 0) })
	t.Run("every 10th packet lost", func(t *testing.T) { interactiveOvertakesBulk(t, 10) })
}

func interactiveOvertakesBulk(t *testing.T, dropEvery int) {
	const bulk, messages = 8, 30
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := &frameLog{}
	cliUDP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer cliUDP.Close()
	srvUDP, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srvUDP.Close()
	var cliConn net.PacketConn = cliUDP
	if dropEvery > 0 {
		cliConn = &dropping{UDPConn: cliUDP, n: dropEvery}
	}
	cliTr, srvTr := &quic.Transport{Conn: cliConn}, &quic.Transport{Conn: srvUDP}
	defer srvTr.Close()
	defer cliTr.Close()
	ln, err := srvTr.Listen(testtls.Server(t, "priority-test"), &quic.Config{MaxIncomingStreams: 100})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := cliTr.Dial(ctx, srvUDP.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"priority-test"}},
		&quic.Config{Tracer: func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return log }})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.CloseWithError(0, "")
	srv, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// The far end reads every stream; bulk bytes are counted, messages handed on.
	var received atomic.Int64
	got := make(chan int64, messages) // end offsets of the message stream as read
	var readers sync.WaitGroup
	defer readers.Wait()
	defer srv.CloseWithError(0, "")
	readers.Go(func() {
		for {
			st, err := srv.AcceptStream(ctx)
			if err != nil {
				return
			}
			readers.Go(func() {
				var head [1]byte
				if _, err := io.ReadFull(st, head[:]); err != nil {
					return
				}
				if head[0] == 'b' {
					buf := make([]byte, 64<<10)
					for {
						n, err := st.Read(buf)
						received.Add(int64(n))
						if err != nil {
							return
						}
					}
				}
				buf, end := make([]byte, 64), int64(1)
				for {
					if _, err := io.ReadFull(st, buf); err != nil {
						return
					}
					end += 64
					got <- end
				}
			})
		}
	})

	reg := NewRegistry(Config{})
	type tun struct {
		app  *net.TCPConn
		t    *Tunnel
		done chan error
		id   int64
	}
	start := func(head byte) tun {
		app, side := tcpPair(t)
		st, err := cli.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		tn := tun{app: app, t: reg.Open(ctx, Info{Endpoint: ClientEndpoint}), done: make(chan error, 1), id: int64(st.StreamID())}
		go func() { tn.done <- tn.t.Run(ConnSide(side), StreamSide(st)) }()
		if _, err := app.Write([]byte{head}); err != nil {
			t.Fatal(err)
		}
		return tn
	}
	var tunnels []tun
	defer func() {
		for _, tn := range tunnels {
			tn.app.Close()
			tn.t.Kill()
			<-tn.done
		}
	}()
	stop := make(chan struct{})
	var writers sync.WaitGroup
	defer writers.Wait()
	defer close(stop)
	for range bulk {
		tn := start('b')
		tunnels = append(tunnels, tn)
		writers.Go(func() {
			chunk := make([]byte, 64<<10)
			for {
				select {
				case <-stop:
					return
				default:
				}
				tn.app.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := tn.app.Write(chunk); err != nil && !isTimeout(err) {
					return
				}
			}
		})
	}
	// The bulk tunnels run past their interactive start before the messages.
	for received.Load() < bulk*(1<<20) {
		select {
		case <-ctx.Done():
			t.Fatalf("the bulk tunnels moved only %d KiB", received.Load()>>10)
		case <-time.After(10 * time.Millisecond):
		}
	}
	echo := start('e')
	tunnels = append(tunnels, echo)

	// The echo's pump writes into the stream; the test marks the trace when
	// its write returned.
	msg := make([]byte, 64)
	for i := range messages {
		before := echo.t.BytesUp()
		if _, err := echo.app.Write(msg); err != nil {
			t.Fatal(err)
		}
		for echo.t.BytesUp() == before { // counted after the pump's write into the stream returned
			select {
			case <-ctx.Done():
				t.Fatal("the message never left the pump")
			case <-time.After(100 * time.Microsecond):
			}
		}
		log.mark()
		select {
		case end := <-got:
			if want := int64(1 + 64*(i+1)); end != want {
				t.Fatalf("message %d read up to offset %d, want %d", i, end, want)
			}
		case <-ctx.Done():
			t.Fatalf("message %d never arrived", i)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, tn := range tunnels[:bulk] {
		if tn.t.Snapshot().Interactive {
			t.Errorf("bulk tunnel on stream %d is sent as interactive", tn.id)
		}
	}
	if !echo.t.Snapshot().Interactive {
		t.Errorf("the tunnel of small messages is not sent as interactive")
	}
	worst := 0
	for i := range messages {
		n, ok := log.overtaken(i, echo.id, int64(1+64*(i+1)))
		if !ok {
			t.Fatalf("message %d is not in the trace", i)
		}
		worst = max(worst, n)
		// The packet being packed when the write returned may go out first.
		if n > 2 {
			t.Errorf("message %d: %d packets of bulk data were packed after its write and before it", i, n)
		}
		// Small, so that the loss-recovery layer copies it.
		if !log.alone(echo.id, int64(1+64*(i+1))) {
			t.Errorf("message %d shares its packet with bulk data", i)
		}
	}
	t.Logf("%d messages beside %d bulk tunnels (%d MiB): at most %d bulk packets packed ahead of one", messages, bulk, received.Load()>>20, worst)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
