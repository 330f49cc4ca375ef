package endpoints

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/codecs/speedtest"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/recovery"
)

// SpeedTestConfig is what a speed test needs: how to reach and prove itself
// to the server (as ClientConfig), and how long to measure.
type SpeedTestConfig struct {
	ServerEndpoint string
	TLS            *tls.Config
	Secret         []byte
	Identity       string
	// Recovery configures the loss-recovery layer of the run with it; nil is
	// recovery.DefaultConfig. The other run leaves the layer out.
	Recovery *recovery.Config
	// Congestion names the congestion controller of both runs ("" for BBR).
	Congestion string
	// Duration is how long each direction is measured in each run (0: 5 s;
	// the server may cut it shorter).
	Duration time.Duration
	// Pings is how many round trips measure the RTT (0: 20).
	Pings   int
	WrapUDP func(net.PacketConn) net.PacketConn
	Logger  *slog.Logger
}

// SpeedTestRun is what one run measured: with the loss-recovery layer, or
// plain QUIC.
type SpeedTestRun struct {
	Recovery       bool
	RTTMin, RTTAvg time.Duration
	// UpBps and DownBps are goodput: application bytes per second.
	UpBps, DownBps     float64
	UpBytes, DownBytes uint64
	// PathLossUp and PathLossDown are the fraction of datagrams the path lost:
	// with the recovery layer what it saw missing (down) and what the server's
	// layer measured (up), before any repair; without it what QUIC declared
	// lost. -1: not measured.
	PathLossUp, PathLossDown float64
	// QUICLossUp and QUICLossDown are the fraction of packets QUIC declared
	// lost, on the client (up) and on the server (down): with the recovery
	// layer, the loss it did not hide.
	QUICLossUp, QUICLossDown float64
	// Overhead and OverheadDown are repair datagrams per data datagram, sent up
	// and sent down (0 without the layer). Down is counted from what arrived,
	// scaled by the path's loss down.
	Overhead, OverheadDown float64
	// Repaired and Lost are the datagrams the client's layer rebuilt and saw
	// missing during the download.
	Repaired, Lost uint64
}

// SpeedTestResult is a whole test: the run with the recovery layer first.
type SpeedTestResult struct {
	Server   string
	Duration time.Duration
	Runs     []SpeedTestRun
}

// SpeedTest measures the path to a server endpoint twice, with the
// loss-recovery layer and without it: RTT, goodput each way, loss each way,
// repair overhead. The server takes part only for a client that proves an
// identity (a secret or mutual TLS), one test at a time per identity.
func SpeedTest(ctx context.Context, cfg SpeedTestConfig) (*SpeedTestResult, error) {
	if cfg.TLS == nil {
		return nil, errors.New("speed test: TLS config is required")
	}
	if err := validateSecret(cfg.Secret); err != nil {
		return nil, err
	}
	if err := address.ParseHostPort(cfg.ServerEndpoint); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := errors.Join(orDefault("Duration", &cfg.Duration, 5*time.Second), orDefault("Pings", &cfg.Pings, 20)); err != nil {
		return nil, fmt.Errorf("speed test: %w", err)
	}
	with := recovery.DefaultConfig()
	if cfg.Recovery != nil {
		with = *cfg.Recovery
	}
	if with.Mode == recovery.Off {
		with.Mode = recovery.Auto
	}
	without := with
	without.Mode = recovery.Off
	res := &SpeedTestResult{Server: cfg.ServerEndpoint, Duration: cfg.Duration}
	for _, rc := range []recovery.Config{with, without} {
		run, err := speedTestRun(ctx, cfg, rc)
		if err != nil {
			return res, fmt.Errorf("speed test %s: %w", map[bool]string{true: "with the recovery layer", false: "without the recovery layer"}[rc.Mode != recovery.Off], err)
		}
		res.Runs = append(res.Runs, run)
	}
	return res, nil
}

// speedTestRun measures over a session of its own, through a socket of its own.
func speedTestRun(ctx context.Context, cfg SpeedTestConfig, rc recovery.Config) (SpeedTestRun, error) {
	run := SpeedTestRun{Recovery: rc.Mode != recovery.Off, PathLossUp: -1, PathLossDown: -1}
	udp, err := net.ListenUDP("udp", nil)
	if err != nil {
		return run, fmt.Errorf("open UDP socket: %w", err)
	}
	qc, err := quicConfigFor(cfg.Congestion)
	if err != nil {
		udp.Close()
		return run, err
	}
	pc, rec, err := linkLayers(udp, cfg.WrapUDP, &rc, false, qc)
	if err != nil {
		return run, err
	}
	tr := &quic.Transport{Conn: pc}
	// Quiet: a speed test prints a table, not the keeper's session log.
	keeper := newSessionKeeper(tr, cfg.ServerEndpoint, cfg.TLS, qc, credentials{cfg.Identity, cfg.Secret}, slog.New(slog.DiscardHandler))
	kctx, stop := context.WithCancel(ctx)
	var kept sync.WaitGroup
	kept.Go(func() { keeper.run(kctx) })
	defer func() {
		stop()
		kept.Wait()
		tr.Close()
		pc.Close()
	}()
	sctx, cancel := context.WithTimeout(ctx, dialTimeout)
	conn, err := keeper.get(sctx)
	cancel()
	if err != nil {
		return run, err
	}
	t := &speedTestSession{conn: conn, keeper: keeper}

	if run.RTTMin, run.RTTAvg, err = t.ping(ctx, cfg.Pings); err != nil {
		return run, fmt.Errorf("pings: %w", err)
	}

	before, err := t.report(ctx)
	if err != nil {
		return run, fmt.Errorf("report: %w", err)
	}
	var recBefore recovery.Stats
	if rec != nil {
		recBefore = rec.Stats()
	}
	run.DownBytes, run.DownBps, err = t.download(ctx, cfg.Duration)
	if err != nil {
		return run, fmt.Errorf("download: %w", err)
	}
	after, err := t.report(ctx)
	if err != nil {
		return run, fmt.Errorf("report: %w", err)
	}
	run.QUICLossDown = ratio(after.PacketsLost-before.PacketsLost, after.PacketsSent-before.PacketsSent)
	if rec != nil {
		r := rec.Stats()
		run.Lost = r.Lost + r.CongestionLost + r.AmbiguousLost - recBefore.Lost - recBefore.CongestionLost - recBefore.AmbiguousLost
		run.Repaired = r.Repaired - recBefore.Repaired
		arrived := (r.DatagramsReceived - recBefore.DatagramsReceived) - run.Repaired
		run.PathLossDown = ratio(run.Lost, arrived+run.Lost)
		if repairs := (r.FramedReceived - recBefore.FramedReceived) - arrived; arrived+run.Lost > 0 && run.PathLossDown < 1 {
			run.OverheadDown = float64(repairs) / (1 - run.PathLossDown) / float64(arrived+run.Lost)
		}
		recBefore = r
	} else {
		run.PathLossDown = run.QUICLossDown
	}

	quicBefore := conn.ConnectionStats()
	rep, err := t.upload(ctx, cfg.Duration)
	if err != nil {
		return run, fmt.Errorf("upload: %w", err)
	}
	quicAfter := conn.ConnectionStats()
	run.UpBytes = rep.Bytes
	if rep.Elapsed > 0 {
		run.UpBps = float64(rep.Bytes) / rep.Elapsed.Seconds()
	}
	run.QUICLossUp = ratio(quicAfter.PacketsLost-quicBefore.PacketsLost, quicAfter.PacketsSent-quicBefore.PacketsSent)
	if rec != nil {
		r := rec.Stats()
		run.Overhead = ratio(r.ParitySent-recBefore.ParitySent, r.DataSent-recBefore.DataSent)
		run.PathLossUp = r.PeerLoss
	} else {
		run.PathLossUp = run.QUICLossUp
	}
	return run, nil
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// speedTestSession opens the streams of one run.
type speedTestSession struct {
	conn   *quic.Conn
	keeper *sessionKeeper
}

// open starts a speed-test stream with req and reads the server's answer.
func (t *speedTestSession) open(ctx context.Context, req speedtest.Request) (*quic.Stream, error) {
	st, err := t.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	hdr, err := preamble.AppendHeader(nil, preamble.Header{Token: []byte(speedtest.Token)})
	if err != nil {
		return nil, err
	}
	if _, err := st.Write(speedtest.AppendRequest(hdr, req)); err != nil {
		return nil, err
	}
	_ = st.SetReadDeadline(time.Now().Add(dialTimeout))
	status, err := preamble.ReadStatus(st)
	if err == nil {
		err = status.Err()
	}
	if err != nil {
		st.CancelRead(0)
		st.CancelWrite(0)
		return nil, refusal(err)
	}
	_ = st.SetReadDeadline(time.Time{})
	return st, nil
}

func (t *speedTestSession) ping(ctx context.Context, n int) (minRTT, avg time.Duration, err error) {
	st, err := t.open(ctx, speedtest.Request{Op: speedtest.OpPing})
	if err != nil {
		return 0, 0, err
	}
	defer st.CancelRead(0)
	_ = st.SetDeadline(time.Now().Add(time.Duration(n) * dialTimeout))
	var ping, echo [speedtest.PingLen]byte
	var sum time.Duration
	for i := range n {
		binary.BigEndian.PutUint64(ping[:], uint64(i))
		sent := time.Now()
		if _, err := st.Write(ping[:]); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(st, echo[:]); err != nil {
			return 0, 0, err
		}
		if echo != ping {
			return 0, 0, fmt.Errorf("echo %x of ping %x", echo, ping)
		}
		rtt := time.Since(sent)
		if i == 0 || rtt < minRTT {
			minRTT = rtt
		}
		sum += rtt
	}
	_ = st.Close()
	_, _ = io.Copy(io.Discard, st)
	return minRTT, sum / time.Duration(n), nil
}

func (t *speedTestSession) report(ctx context.Context) (speedtest.Report, error) {
	st, err := t.open(ctx, speedtest.Request{Op: speedtest.OpReport})
	if err != nil {
		return speedtest.Report{}, err
	}
	defer st.CancelRead(0)
	_ = st.Close()
	_ = st.SetReadDeadline(time.Now().Add(dialTimeout))
	return speedtest.ReadReport(st)
}

// download counts what the server sends; goodput runs from the first byte
// to the last, so that the request's round trip is not counted.
func (t *speedTestSession) download(ctx context.Context, d time.Duration) (uint64, float64, error) {
	st, err := t.open(ctx, speedtest.Request{Op: speedtest.OpDownload, Duration: d})
	if err != nil {
		return 0, 0, err
	}
	defer st.CancelRead(0)
	_ = st.Close()
	_ = st.SetReadDeadline(time.Now().Add(d + speedTestGrace + dialTimeout))
	buf := make([]byte, speedTestChunk)
	var n uint64
	var first, last time.Time
	for {
		r, err := st.Read(buf)
		if r > 0 {
			if n == 0 {
				first = time.Now()
			}
			n += uint64(r)
			last = time.Now()
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, 0, err
		}
	}
	if el := last.Sub(first); el > 0 {
		return n, float64(n) / el.Seconds(), nil
	}
	return n, 0, nil
}

// upload sends for d, then reads the server's report of what came.
func (t *speedTestSession) upload(ctx context.Context, d time.Duration) (speedtest.Report, error) {
	st, err := t.open(ctx, speedtest.Request{Op: speedtest.OpUpload, Duration: d})
	if err != nil {
		return speedtest.Report{}, err
	}
	defer st.CancelRead(0)
	end := time.Now().Add(d)
	_ = st.SetWriteDeadline(end.Add(speedTestGrace))
	for time.Now().Before(end) {
		if _, err := st.Write(speedTestData); err != nil {
			// The server stops reading at its bound and says so.
			var se *quic.StreamError
			if errors.As(err, &se) && se.Remote && preamble.Code(se.ErrorCode) == preamble.CodeOK {
				break
			}
			return speedtest.Report{}, err
		}
	}
	_ = st.Close()
	_ = st.SetReadDeadline(time.Now().Add(speedTestGrace + dialTimeout))
	return speedtest.ReadReport(st)
}
