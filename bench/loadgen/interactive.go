//go:build linux

package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// InteractiveConfig is one run of the interactive load against a mixed server
// (NewMixedServer), every connection through the same Target: first Stuck
// connections, one after another, each download StuckBytes alone as fast as it
// can and then stop reading for the rest of the run; then Bulk downloads start and,
// with Echo, a MessageBytes echo every EchoInterval beside them. Goodput and echo
// round trips count over Duration after Warmup.
type InteractiveConfig struct {
	Target           string
	Bulk             int
	Echo             bool
	EchoInterval     time.Duration
	MessageBytes     int
	Stuck            int
	StuckBytes       int64
	Warmup, Duration time.Duration
	Timeout          time.Duration // bound on the whole run
	Congestion       string        // TCP congestion control for every connection; "" = host default
}

// InteractiveResult is what Interactive measured.
type InteractiveResult struct {
	// BulkMbps is what the bulk downloads got together over Duration, as read by
	// this application.
	BulkMbps  float64 `json:"bulk_mbps"`
	BulkBytes int64   `json:"bulk_bytes"`
	// Echoes counts the round trips sent within Duration; the percentiles are over
	// them, in milliseconds.
	Echoes    int     `json:"echoes"`
	EchoP50Ms float64 `json:"echo_p50_ms"`
	EchoP99Ms float64 `json:"echo_p99_ms"`
	EchoMaxMs float64 `json:"echo_max_ms"`
	// StuckFastS is how long each stuck connection took to download its bytes
	// before it stopped reading.
	StuckFastS []float64 `json:"stuck_fast_s,omitempty"`
	// StuckSettleS is how long the stuck connections were left to fill their
	// windows before the bulk flows started.
	StuckSettleS float64 `json:"stuck_settle_s,omitempty"`
}

// stuckSettle is how long the stuck connections are left at least to fill
// whatever buffers their path has before the bulk flows start; and at the rate
// they downloaded, long enough for each to take in stuckFill more, the largest
// receive window a contender keeps per connection (quictun's 16 MiB stream
// window; Linux TCP's default tcp_rmem maximum is 6 MiB). Until then they still
// share the path with the bulk flows (issue 20: with 2 s, four quictun tunnels
// at 100 Mbit/s were still filling 64 MiB of windows while the bulk ran).
const (
	stuckSettle = 2 * time.Second
	stuckFill   = 16 << 20
)

// Interactive runs the load; the first failure of any connection fails the run.
func Interactive(ctx context.Context, cfg InteractiveConfig) (InteractiveResult, error) {
	var res InteractiveResult
	if cfg.Bulk < 0 || cfg.Stuck < 0 || cfg.StuckBytes < 0 || cfg.Duration <= 0 || cfg.Warmup < 0 || cfg.Timeout <= 0 ||
		(cfg.Echo && (cfg.EchoInterval <= 0 || cfg.MessageBytes < 1)) || (cfg.Bulk == 0 && !cfg.Echo) {
		return res, fmt.Errorf("interactive: bad config %+v", cfg)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	d := dialer(cfg.Congestion)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// dial connects and asks for kind; the connection is cut when life ends.
	dial := func(life context.Context, kind byte) (net.Conn, error) {
		c, err := d.DialContext(ctx, "tcp", cfg.Target)
		if err != nil {
			return nil, fmt.Errorf("interactive: dial %s: %w", cfg.Target, err)
		}
		conns = append(conns, c)
		context.AfterFunc(life, func() { c.SetDeadline(time.Unix(1, 0)) })
		if _, err := c.Write([]byte{kind}); err != nil {
			return nil, fmt.Errorf("interactive: %w", err)
		}
		return c, nil
	}

	var fastFor time.Duration
	for i := range cfg.Stuck {
		c, err := dial(ctx, SendKind)
		if err != nil {
			return res, err
		}
		start := time.Now()
		if n, err := io.CopyN(io.Discard, c, cfg.StuckBytes); err != nil {
			return res, fmt.Errorf("interactive: stuck connection %d read %d of %d bytes: %w", i+1, n, cfg.StuckBytes, err)
		}
		fastFor += time.Since(start)
		res.StuckFastS = append(res.StuckFastS, time.Since(start).Seconds())
	}
	if cfg.Stuck > 0 {
		settle := stuckSettle
		if fastFor > 0 && cfg.StuckBytes > 0 {
			// The stuck connections ran at cfg.Stuck*cfg.StuckBytes/fastFor.
			settle = max(settle, time.Duration(float64(fastFor)*stuckFill/float64(cfg.StuckBytes)))
		}
		res.StuckSettleS = settle.Seconds()
		if err := sleep(ctx, settle); err != nil {
			return res, err
		}
	}

	var (
		wg      sync.WaitGroup
		read    atomic.Int64
		errOnce sync.Once
		runErr  error
	)
	fail := func(err error) {
		errOnce.Do(func() { runErr = err; cancel() })
	}
	bulkCtx, stopBulk := context.WithCancel(ctx)
	defer wg.Wait() // after stopBulk and cancel, which end every goroutine
	defer cancel()
	defer stopBulk()
	for range cfg.Bulk {
		c, err := dial(bulkCtx, SendKind)
		if err != nil {
			return res, err
		}
		wg.Go(func() { bulkReader(bulkCtx, c, &read, fail) })
	}
	start := time.Now()
	from, to := start.Add(cfg.Warmup), start.Add(cfg.Warmup+cfg.Duration)
	var rtts []time.Duration
	echoed := make(chan struct{})
	if cfg.Echo {
		c, err := dial(ctx, 'e')
		if err != nil {
			return res, err
		}
		wg.Go(func() {
			defer close(echoed)
			var err error
			if rtts, err = echoEvery(ctx, c, cfg, from, to); err != nil {
				fail(err)
			}
		})
	} else {
		close(echoed)
	}
	if err := sleep(ctx, time.Until(from)); err != nil {
		return res, errors.Join(runErr, err)
	}
	atFrom := read.Load()
	if err := sleep(ctx, time.Until(to)); err != nil {
		return res, errors.Join(runErr, err)
	}
	res.BulkBytes = read.Load() - atFrom
	res.BulkMbps = float64(res.BulkBytes) * 8 / 1e6 / cfg.Duration.Seconds()
	<-echoed // its last request was sent before to; ctx bounds its answer
	stopBulk()
	wg.Wait()
	if runErr != nil {
		return res, runErr
	}
	if cfg.Echo {
		if len(rtts) == 0 {
			return res, errors.New("interactive: no echo within the measured time")
		}
		slices.Sort(rtts)
		res.Echoes = len(rtts)
		res.EchoP50Ms = ms(rtts[len(rtts)/2])
		res.EchoP99Ms = ms(rtts[min(len(rtts)-1, len(rtts)*99/100)])
		res.EchoMaxMs = ms(rtts[len(rtts)-1])
	}
	return res, nil
}

// bulkReader reads c until ctx ends, counting into read; another end is a failure.
func bulkReader(ctx context.Context, c net.Conn, read *atomic.Int64, fail func(error)) {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		read.Add(int64(n))
		if err != nil {
			if ctx.Err() == nil {
				fail(fmt.Errorf("interactive: bulk download: %w", err))
			}
			return
		}
	}
}

// echoEvery sends an echo request every cfg.EchoInterval (or at once after the
// previous echo when that took longer) until to, checks each echo, and returns the
// round trips of the requests sent from from on.
func echoEvery(ctx context.Context, c net.Conn, cfg InteractiveConfig, from, to time.Time) ([]time.Duration, error) {
	request := make([]byte, cfg.MessageBytes)
	echo := make([]byte, cfg.MessageBytes)
	var rtts []time.Duration
	next := time.Now()
	for i := 0; next.Before(to); i++ {
		if err := sleep(ctx, time.Until(next)); err != nil {
			return nil, err
		}
		for j := range request {
			request[j] = byte(i*31 + j)
		}
		sent := time.Now()
		if _, err := c.Write(request); err != nil {
			return nil, fmt.Errorf("interactive: echo %d: write: %w", i+1, err)
		}
		if _, err := io.ReadFull(c, echo); err != nil {
			return nil, fmt.Errorf("interactive: echo %d: read: %w", i+1, err)
		}
		if !bytes.Equal(request, echo) {
			return nil, fmt.Errorf("interactive: echo %d differs from its request", i+1)
		}
		if !sent.Before(from) {
			rtts = append(rtts, time.Since(sent))
		}
		if next = next.Add(cfg.EchoInterval); next.Before(time.Now()) {
			next = time.Now()
		}
	}
	return rtts, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
