//go:build linux

package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"time"
)

// LatencyConfig is one echo latency measurement.
type LatencyConfig struct {
	Target       string        // host:port of the echo server (or of a tunnel to it)
	Requests     int           // request/response round trips, the first included
	MessageBytes int           // size of each request
	Timeout      time.Duration // bound on the whole measurement
	Congestion   string        // TCP congestion control for the connection; "" = host default
}

// LatencyResult is what Latency measured, in milliseconds.
type LatencyResult struct {
	// FirstEchoMs runs from the start of the dial to the first complete echo: it
	// includes connection (and tunnel) setup.
	FirstEchoMs float64 `json:"first_echo_ms"`
	// TotalMs runs from the start of the dial to the last echo of Requests round trips.
	TotalMs    float64 `json:"total_ms"`
	RoundTrips int     `json:"round_trips"`
	// P50Ms and P99Ms are over the round trips after the first.
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
}

// Latency dials cfg.Target and times cfg.Requests request/response round trips, checking
// that every echo matches its request.
func Latency(ctx context.Context, cfg LatencyConfig) (LatencyResult, error) {
	if cfg.Requests < 1 || cfg.MessageBytes < 1 || cfg.Timeout <= 0 {
		return LatencyResult{}, fmt.Errorf("latency: requests (%d), message size (%d) and timeout (%s) must be positive", cfg.Requests, cfg.MessageBytes, cfg.Timeout)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	start := time.Now()
	conn, err := dialer(cfg.Congestion).DialContext(ctx, "tcp", cfg.Target)
	if err != nil {
		return LatencyResult{}, fmt.Errorf("latency: dial %s: %w", cfg.Target, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	request := make([]byte, cfg.MessageBytes)
	echo := make([]byte, cfg.MessageBytes)
	var res LatencyResult
	rtts := make([]time.Duration, 0, cfg.Requests-1)
	for i := range cfg.Requests {
		// A distinct request each time, so a stale or misrouted echo cannot pass.
		for j := range request {
			request[j] = byte(i*31 + j)
		}
		sent := time.Now()
		if _, err := conn.Write(request); err != nil {
			return res, fmt.Errorf("latency: request %d: write: %w", i+1, err)
		}
		if _, err := io.ReadFull(conn, echo); err != nil {
			return res, fmt.Errorf("latency: request %d: read echo: %w", i+1, err)
		}
		if !bytes.Equal(request, echo) {
			return res, fmt.Errorf("latency: request %d: echo differs from request", i+1)
		}
		now := time.Now()
		if i == 0 {
			res.FirstEchoMs = ms(now.Sub(start))
		} else {
			rtts = append(rtts, now.Sub(sent))
		}
		res.RoundTrips++
	}
	res.TotalMs = ms(time.Since(start))
	if len(rtts) > 0 {
		slices.Sort(rtts)
		res.P50Ms = ms(rtts[len(rtts)/2])
		res.P99Ms = ms(rtts[min(len(rtts)-1, len(rtts)*99/100)])
	}
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
