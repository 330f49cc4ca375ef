package endpoints

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/codecs/speedtest"
)

// SpeedTestLimits bound what one speed-test stream may cost the server. A
// client runs a test as a few streams one after the other (pings, a download,
// an upload, reports), and each is bounded on its own; a test needs a session
// that proved an identity (a secret or mutual TLS), and an identity runs one
// stream at a time.
type SpeedTestLimits struct {
	// Off refuses every speed test.
	Off bool
	// MaxDuration bounds one download or upload (0: 10 s).
	MaxDuration time.Duration
	// MaxBytes bounds what one download sends or one upload reads (0: 1 GiB).
	MaxBytes uint64
	// MaxConcurrent bounds the speed-test streams of all identities at once (0: 2).
	MaxConcurrent int
}

const (
	speedTestMaxPings = 1000
	speedTestChunk    = 32 << 10
	// speedTestGrace is how long past its duration a stream may take to end
	// (the client's FIN, the last writes leaving) before it is reset.
	speedTestGrace = 5 * time.Second
)

func (l *SpeedTestLimits) setDefaults() error {
	if l.MaxBytes == 0 {
		l.MaxBytes = 1 << 30
	}
	return errors.Join(
		orDefault("SpeedTest.MaxDuration", &l.MaxDuration, 10*time.Second),
		orDefault("SpeedTest.MaxConcurrent", &l.MaxConcurrent, 2),
	)
}

// speedTests is who runs a speed-test stream now.
type speedTests struct {
	sync.Mutex
	busy map[string]*speedTestSlot // by identity name
	n    int
}

// speedTestSlot is an identity's running speed-test stream.
type speedTestSlot struct {
	sess *serverSession
	done chan struct{} // closed when the stream ends
}

// speedTestData is what downloads send: random, so that nothing on the path
// can compress it.
var speedTestData = func() []byte {
	b := make([]byte, speedTestChunk)
	r := rand.NewChaCha8([32]byte{'q', 'u', 'i', 'c', 't', 'u', 'n'})
	_, _ = r.Read(b)
	return b
}()

// serveSpeedTest runs one speed-test stream (see package speedtest) for an
// authenticated session.
func (s *Server) serveSpeedTest(ctx context.Context, sess *serverSession, stream *quic.Stream, log *slog.Logger) {
	l := &s.cfg.SpeedTest
	if l.Off {
		s.refuse(stream, preamble.CodeForbidden, "this server runs no speed tests")
		return
	}
	if !s.auth.Load().required {
		log.Warn("speed test refused: the server authenticates no client")
		s.refuse(stream, preamble.CodeForbidden, "speed tests are for authenticated clients: the server needs a secret, identities or mutual TLS")
		return
	}
	release, why := s.admitSpeedTest(ctx, sess)
	if why != "" {
		log.Info("speed test refused", "why", why)
		s.refuse(stream, preamble.CodeOverloaded, why)
		return
	}
	defer release()
	stop := context.AfterFunc(ctx, func() {
		stream.CancelRead(quic.StreamErrorCode(preamble.CodeShutdown))
		stream.CancelWrite(quic.StreamErrorCode(preamble.CodeShutdown))
	})
	defer stop()
	_ = stream.SetReadDeadline(time.Now().Add(s.cfg.PreambleTimeout))
	req, err := speedtest.ReadRequest(stream)
	if err != nil {
		log.Warn("speed test refused", "err", err)
		s.refuse(stream, preamble.CodeBadPreamble, err.Error())
		return
	}
	start := time.Now()
	dur := min(req.Duration, l.MaxDuration)
	if dur <= 0 {
		dur = l.MaxDuration
	}
	limit := min(req.Bytes, l.MaxBytes)
	if limit == 0 {
		limit = l.MaxBytes
	}
	deadline := start.Add(dur + speedTestGrace)
	_ = stream.SetReadDeadline(deadline)
	_ = stream.SetWriteDeadline(deadline)
	if _, err := stream.Write(preamble.AppendStatus(nil, preamble.Status{Code: preamble.CodeOK})); err != nil {
		stream.CancelRead(quic.StreamErrorCode(preamble.CodeInternal))
		return
	}
	var n uint64
	switch req.Op {
	case speedtest.OpPing:
		err = speedTestEcho(stream)
	case speedtest.OpDownload:
		n, err = speedTestSend(stream, start.Add(dur), limit)
	case speedtest.OpUpload:
		var rep speedtest.Report
		rep, err = speedTestReceive(stream, start, start.Add(dur), limit)
		n = rep.Bytes
		if err == nil {
			_, err = stream.Write(speedtest.AppendReport(nil, rep))
		}
	case speedtest.OpReport:
		st := sess.conn.ConnectionStats()
		_, err = stream.Write(speedtest.AppendReport(nil, speedtest.Report{PacketsSent: st.PacketsSent, PacketsLost: st.PacketsLost}))
	}
	if err != nil {
		log.Info("speed test stream ended early", "op", string(req.Op), "bytes", n, "err", err)
		stream.CancelRead(quic.StreamErrorCode(preamble.CodeInternal))
		stream.CancelWrite(quic.StreamErrorCode(preamble.CodeInternal))
		return
	}
	_ = stream.Close()
	stream.CancelRead(0)
	log.Debug("speed test stream", "op", string(req.Op), "bytes", n, "duration", time.Since(start).Round(time.Millisecond))
}

// admitSpeedTest takes the identity's one speed-test slot and one of the
// server's, or says why not. A client runs its test as streams one after the
// other, and a stream may come a moment before the server is done with the
// one before: a stream of the session that holds the slot waits for it, for
// a bound; any other session of the identity is refused.
func (s *Server) admitSpeedTest(ctx context.Context, sess *serverSession) (release func(), why string) {
	name := sess.identity.Name
	t := &s.speedTests
	wait := time.NewTimer(speedTestGrace)
	defer wait.Stop()
	for {
		t.Lock()
		held := t.busy[name]
		switch {
		case held == nil && t.n >= s.cfg.SpeedTest.MaxConcurrent:
			t.Unlock()
			return nil, fmt.Sprintf("the server runs %d speed tests already", s.cfg.SpeedTest.MaxConcurrent)
		case held == nil:
			if t.busy == nil {
				t.busy = map[string]*speedTestSlot{}
			}
			slot := &speedTestSlot{sess: sess, done: make(chan struct{})}
			t.busy[name] = slot
			t.n++
			t.Unlock()
			return func() {
				t.Lock()
				defer t.Unlock()
				delete(t.busy, name)
				t.n--
				close(slot.done)
			}, ""
		case held.sess != sess:
			t.Unlock()
			return nil, "a speed test of this identity is running: one at a time"
		}
		t.Unlock()
		select {
		case <-held.done:
		case <-wait.C:
			return nil, "this session's previous speed-test stream is still running: one at a time"
		case <-ctx.Done():
			return nil, "server is shutting down"
		}
	}
}

// speedTestEcho answers pings until the client's FIN.
func speedTestEcho(stream *quic.Stream) error {
	var ping [speedtest.PingLen]byte
	for range speedTestMaxPings {
		if _, err := io.ReadFull(stream, ping[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if _, err := stream.Write(ping[:]); err != nil {
			return err
		}
	}
	return fmt.Errorf("more than %d pings", speedTestMaxPings)
}

// speedTestSend sends until the end or the byte limit.
func speedTestSend(stream *quic.Stream, end time.Time, limit uint64) (uint64, error) {
	var n uint64
	for n < limit && time.Now().Before(end) {
		chunk := speedTestData[:min(uint64(len(speedTestData)), limit-n)]
		w, err := stream.Write(chunk)
		n += uint64(w)
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// speedTestReceive reads until the client's FIN, the end or the byte limit,
// and reports what came when.
func speedTestReceive(stream *quic.Stream, start, end time.Time, limit uint64) (speedtest.Report, error) {
	_ = stream.SetReadDeadline(end)
	buf := make([]byte, speedTestChunk)
	var rep speedtest.Report
	for rep.Bytes < limit {
		r, err := stream.Read(buf[:min(uint64(len(buf)), limit-rep.Bytes)])
		rep.Bytes += uint64(r)
		if r > 0 {
			rep.Elapsed = time.Since(start)
		}
		if errors.Is(err, io.EOF) {
			return rep, nil
		}
		var timeout interface{ Timeout() bool }
		if errors.As(err, &timeout) && timeout.Timeout() {
			break
		}
		if err != nil {
			return rep, err
		}
	}
	// Past the bound: tell the client to stop sending, and report.
	stream.CancelRead(quic.StreamErrorCode(preamble.CodeOK))
	return rep, nil
}
