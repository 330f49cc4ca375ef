package quicconf

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"

	"github.com/quictun/quictun/internal/testtls"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// session is one quic-go connection over loopback UDP between a client and a
// server that both run qc; the server keeps every stream it accepts, reading
// none of them.
type session struct {
	cli, srv *quic.Conn
	accepted chan *quic.Stream
	stop     func()
}

func newSession(t *testing.T, qc *quic.Config) *session {
	t.Helper()
	return newWrappedSession(t, qc, nil)
}

// newWrappedSession is newSession with the client's UDP socket seen through
// wrap (when not nil).
func newWrappedSession(t *testing.T, qc *quic.Config, wrap func(net.PacketConn) net.PacketConn) *session {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var closers []func()
	stop := func() {
		cancel()
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			stop()
			t.Fatal(err)
		}
		closers = append(closers, func() { c.Close() })
		return c
	}
	srvUDP, cliUDP := listen(), listen()
	var cliConn net.PacketConn = cliUDP
	if wrap != nil {
		cliConn = wrap(cliUDP)
	}
	srvTr, cliTr := &quic.Transport{Conn: srvUDP}, &quic.Transport{Conn: cliConn}
	closers = append(closers, func() { cliTr.Close(); srvTr.Close() })
	ln, err := srvTr.Listen(testtls.Server(t, "quicconf-test"), qc)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	closers = append(closers, func() { ln.Close() })
	s := &session{accepted: make(chan *quic.Stream, 1024)}
	cli, err := cliTr.Dial(ctx, srvUDP.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"quicconf-test"}}, qc)
	if err != nil {
		stop()
		t.Fatal(err)
	}
	s.cli = cli
	closers = append(closers, func() { cli.CloseWithError(0, "") })
	if s.srv, err = ln.Accept(ctx); err != nil {
		stop()
		t.Fatal(err)
	}
	var accepting sync.WaitGroup
	accepting.Go(func() {
		for {
			str, err := s.srv.AcceptStream(ctx)
			if err != nil {
				return
			}
			s.accepted <- str
		}
	})
	closers = append(closers, func() { s.srv.CloseWithError(0, ""); accepting.Wait() })
	s.stop = stop
	return s
}

// stallAfter is how long a write may move no byte before the test calls the
// stream stalled: flow control that withholds credit does so for ever, a busy
// machine only slows it.
const stallAfter = 10 * time.Second

// send writes n bytes on str, chunk by chunk, adding what got through to
// sent; it fails when a chunk moves nothing for stallAfter.
func send(str *quic.Stream, n int, sent *atomic.Int64) error {
	chunk := make([]byte, 256<<10)
	for n > 0 {
		str.SetWriteDeadline(time.Now().Add(stallAfter))
		m, err := str.Write(chunk[:min(n, len(chunk))])
		sent.Add(int64(m))
		n -= m
		if err != nil {
			return err
		}
	}
	return nil
}

// The windows keep the promise their comment makes: StuckTolerance tunnels
// stuck at the full stream window and a new tunnel at its full window fit in
// the connection window with a stream window to spare, and a stranger's
// session (whose connection window never grows) still gets the initial one.
func TestWindowsLeaveRoomPastStuckTunnels(t *testing.T) {
	c := Tunnel()
	if StuckTolerance < 8 {
		t.Errorf("a session carries %d tunnels stuck at %d MiB, want at least 8", StuckTolerance, MaxStreamWindow>>20)
	}
	// quic-go (patched) lets a stream window grow while the connection
	// window can stay two stream windows above their sum.
	if need := (StuckTolerance + 1 + 2) * int64(c.MaxStreamReceiveWindow); need > int64(c.MaxConnectionReceiveWindow) {
		t.Errorf("%d stuck tunnels and a new one need %d MiB of connection window, the cap is %d MiB", StuckTolerance, need>>20, c.MaxConnectionReceiveWindow>>20)
	}
	if c.InitialStreamReceiveWindow > c.MaxStreamReceiveWindow || c.InitialConnectionReceiveWindow > c.MaxConnectionReceiveWindow {
		t.Errorf("windows out of order: stream %d..%d, connection %d..%d", c.InitialStreamReceiveWindow, c.MaxStreamReceiveWindow, c.InitialConnectionReceiveWindow, c.MaxConnectionReceiveWindow)
	}
}

// StuckTolerance streams that stopped reading, each holding a full stream
// window, leave a new stream of the same connection its own full window: it
// carries two windows' worth while they hold theirs. Stock quic-go stalls
// the third of them (it grows the connection window only while the
// application reads fast, or to 1.5 stream windows).
func TestStuckStreamsLeaveANewStreamItsWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 176 MiB: not in -short")
	}
	qc := Tunnel()
	// Streams start at the full window, as tunnels that ran fast end there.
	qc.InitialStreamReceiveWindow = MaxStreamWindow
	s := newSession(t, qc)
	defer s.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var sent atomic.Int64
	for i := range StuckTolerance {
		str, err := s.cli.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := send(str, MaxStreamWindow, &sent); err != nil {
			t.Fatalf("stuck stream %d of %d stalled filling its window (%d MiB sent in all): %v", i+1, StuckTolerance, sent.Load()>>20, err)
		}
	}
	str, err := s.cli.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	var read int64
	var readErr error
	wg.Go(func() {
		for range StuckTolerance {
			<-s.accepted // stuck: never read
		}
		healthy := <-s.accepted
		read, readErr = io.Copy(io.Discard, healthy)
	})
	if err := send(str, 2*MaxStreamWindow, &sent); err != nil {
		t.Fatalf("a stream stalled behind %d streams stuck at %d MiB: %v", StuckTolerance, MaxStreamWindow>>20, err)
	}
	str.Close()
	wg.Wait()
	if readErr != nil || read != 2*MaxStreamWindow {
		t.Fatalf("the server read %d of %d bytes: %v", read, 2*MaxStreamWindow, readErr)
	}
}

// buffered is what a quic-go stream takes from Write without flow-control
// credit: it copies the tail of a write into its next frame (under a
// packet's worth) and returns.
const buffered = 1500

// fill opens n streams on s's client and writes on each until the server's
// flow control holds it; it returns once the streams' writes together took
// want bytes and nothing more moved for a while, or fails when they stop
// short. The writes take up to n x buffered more than the receiver granted.
func fill(t *testing.T, s *session, n int, want int64) int64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sent atomic.Int64
	var writers sync.WaitGroup
	for range n {
		str, err := s.cli.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		writers.Go(func() {
			chunk := make([]byte, 64<<10)
			for ctx.Err() == nil {
				str.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
				m, err := str.Write(chunk)
				sent.Add(int64(m))
				if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
					return
				}
			}
		})
	}
	defer writers.Wait()
	last, since := sent.Load(), time.Now()
	for ; ; time.Sleep(20 * time.Millisecond) {
		now := sent.Load()
		if now != last {
			last, since = now, time.Now()
		}
		// Past want nothing must move: a round trip on loopback is well under
		// the half second waited.
		if now >= want && time.Since(since) > 500*time.Millisecond {
			break
		}
		if time.Since(since) > stallAfter {
			t.Fatalf("%d streams got %d KiB through and stopped, want %d KiB", n, now>>10, want>>10)
		}
	}
	cancel()
	return sent.Load()
}

// A peer that opens many streams and never has them read cannot make the
// receiver hold more than the connection window's cap, however many stream
// windows it opens: the connection window follows their sum only up to it.
func TestStreamsNeverReadHoldAtMostTheCap(t *testing.T) {
	qc := Tunnel()
	qc.InitialStreamReceiveWindow, qc.MaxStreamReceiveWindow = 1<<20, 1<<20
	qc.InitialConnectionReceiveWindow, qc.MaxConnectionReceiveWindow = 4<<20, 16<<20
	s := newSession(t, qc)
	defer s.stop()
	if got := fill(t, s, 32, 16<<20); got > 16<<20+32*buffered {
		t.Errorf("32 streams of 1 MiB windows, never read, got %d KiB into the receiver, want the cap, %d KiB", got>>10, 16<<10)
	}
}

// Before its session is allowed to grow the connection window (a stranger
// before its hello), a peer gets no more than the initial one, whatever its
// streams' windows add up to.
func TestStrangerGetsTheInitialConnectionWindow(t *testing.T) {
	qc := Tunnel()
	qc.InitialStreamReceiveWindow, qc.MaxStreamReceiveWindow = 1<<20, 1<<20
	qc.InitialConnectionReceiveWindow, qc.MaxConnectionReceiveWindow = 4<<20, 16<<20
	qc.AllowConnectionWindowIncrease = func(*quic.Conn, uint64) bool { return false }
	s := newSession(t, qc)
	defer s.stop()
	if got := fill(t, s, 32, 4<<20); got > 4<<20+32*buffered {
		t.Errorf("a stranger's 32 streams got %d KiB into the receiver, want the initial connection window, %d KiB", got>>10, 4<<10)
	}
}
