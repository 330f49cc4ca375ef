//go:build linux

package loadgen

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ScaleConfig is one many-tunnel run: Tunnels connections at once, each sending its
// share of TotalBytes through the echo server and checking every byte that returns.
type ScaleConfig struct {
	Target     string
	Tunnels    int
	TotalBytes int64
	Timeout    time.Duration
	Congestion string // TCP congestion control for every connection; "" = host default
}

// ScaleResult is what Scale measured.
type ScaleResult struct {
	Tunnels  int `json:"tunnels"`
	Verified int `json:"verified"` // tunnels whose every byte came back intact
	Failed   int `json:"failed"`
	// BytesVerified counts one direction: bytes that went out and came back intact.
	BytesVerified int64   `json:"bytes_verified"`
	ElapsedS      float64 `json:"elapsed_s"`
	// GoodputMbps is BytesVerified over the elapsed time: one direction's rate.
	GoodputMbps float64 `json:"goodput_mbps"`
	// FirstError describes one failure, when there were any.
	FirstError string `json:"first_error,omitempty"`
}

// Scale runs the tunnels and waits for all of them; failures are counted, not fatal.
func Scale(ctx context.Context, cfg ScaleConfig) (ScaleResult, error) {
	if cfg.Tunnels < 1 || cfg.TotalBytes < int64(cfg.Tunnels) || cfg.Timeout <= 0 {
		return ScaleResult{}, fmt.Errorf("scale: need tunnels >= 1 (%d), at least one byte per tunnel (%d) and a timeout (%s)", cfg.Tunnels, cfg.TotalBytes, cfg.Timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	per := cfg.TotalBytes / int64(cfg.Tunnels)

	var (
		wg       sync.WaitGroup
		verified atomic.Int64
		bytesOK  atomic.Int64
		errOnce  sync.Once
		firstErr string
	)
	start := time.Now()
	for i := range cfg.Tunnels {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := echoAndVerify(ctx, dialer(cfg.Congestion), cfg.Target, uint64(i), per); err != nil {
				errOnce.Do(func() { firstErr = fmt.Sprintf("tunnel %d: %v", i, err) })
				return
			}
			verified.Add(1)
			bytesOK.Add(per)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	res := ScaleResult{
		Tunnels:       cfg.Tunnels,
		Verified:      int(verified.Load()),
		BytesVerified: bytesOK.Load(),
		ElapsedS:      elapsed.Seconds(),
		FirstError:    firstErr,
	}
	res.Failed = res.Tunnels - res.Verified
	res.GoodputMbps = float64(res.BytesVerified) * 8 / 1e6 / elapsed.Seconds()
	return res, nil
}

// echoAndVerify sends n bytes of the tunnel's own pseudo-random stream and reads the
// echo back, comparing as it goes; the writer is a goroutine owned and waited for here.
func echoAndVerify(ctx context.Context, d *net.Dialer, target string, tunnel uint64, n int64) error {
	conn, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	writeErr := make(chan error, 1)
	go func() {
		writeErr <- sendPattern(conn, tunnel, n)
	}()
	readErr := checkPattern(conn, tunnel, n)
	if readErr != nil {
		// Unblock the writer before waiting for it.
		conn.SetDeadline(time.Unix(1, 0))
	}
	werr := <-writeErr
	if readErr != nil {
		return readErr
	}
	if werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	return nil
}

const patternChunk = 32 << 10

// pattern is the byte stream of one tunnel: PCG output seeded by the tunnel number, so
// that bytes of another tunnel, lost, duplicated or reordered bytes all fail the check.
type pattern struct{ rng *rand.PCG }

func newPattern(tunnel uint64) pattern { return pattern{rand.NewPCG(tunnel, 0x9e3779b97f4a7c15)} }

func (p pattern) fill(b []byte) {
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, p.rng.Uint64())
		b = b[8:]
	}
	if len(b) > 0 {
		var last [8]byte
		binary.LittleEndian.PutUint64(last[:], p.rng.Uint64())
		copy(b, last[:])
	}
}

func sendPattern(conn net.Conn, tunnel uint64, n int64) error {
	p := newPattern(tunnel)
	buf := make([]byte, patternChunk)
	for n > 0 {
		// checkPattern cuts the stream at the same boundaries, so both generators
		// stay in step even when the last chunk is not a multiple of 8 bytes.
		chunk := buf[:min(int64(len(buf)), n)]
		p.fill(chunk)
		if _, err := conn.Write(chunk); err != nil {
			return err
		}
		n -= int64(len(chunk))
	}
	// No half-close: kcptun (smux) does not carry one and would cut the echo short.
	// Both ends know the length, so the reader stops after n bytes instead.
	return nil
}

func checkPattern(conn net.Conn, tunnel uint64, n int64) error {
	p := newPattern(tunnel)
	want := make([]byte, patternChunk)
	got := make([]byte, patternChunk)
	var offset int64
	for offset < n {
		chunk := min(int64(patternChunk), n-offset)
		if _, err := io.ReadFull(conn, got[:chunk]); err != nil {
			return fmt.Errorf("read at byte %d of %d: %w", offset, n, err)
		}
		p.fill(want[:chunk])
		for i := range chunk {
			if got[i] != want[i] {
				return fmt.Errorf("byte %d differs: got %#x, want %#x", offset+i, got[i], want[i])
			}
		}
		offset += chunk
	}
	return nil
}
