//go:build linux

package main

import (
	"context"
	"encoding/json"
	"os"
	"time"

	"github.com/quictun/quictun/bench/loadgen"
)

type loadgenCmd struct {
	Echo    echoCmd    `cmd:"" help:"Echo every byte back until SIGTERM."`
	Latency latencyCmd `cmd:"" help:"Time request/response round trips; print JSON."`
	Scale   scaleCmd   `cmd:"" help:"Echo and verify bytes over many tunnels at once; print JSON."`
	// Interactive talks to `echo --mixed`.
	Interactive interactiveCmd `cmd:"" help:"Time a small echo beside bulk downloads (and stuck connections); print JSON."`
	Wait        waitCmd        `cmd:"" help:"Wait until something listens on a port of this namespace."`
}

type echoCmd struct {
	Listen     string `required:"" help:"HOST:PORT to listen on."`
	Congestion string `help:"TCP congestion control of every accepted connection (empty: host default)."`
	Mixed      bool   `help:"A connection's first byte says what it wants: d a bulk download, anything else an echo (for loadgen interactive)."`
}

func (c echoCmd) Run(ctx context.Context) error {
	ln, err := loadgen.Listen(ctx, c.Listen, c.Congestion)
	if err != nil {
		return err
	}
	if c.Mixed {
		return loadgen.NewMixedServer(ln).Serve(ctx)
	}
	return loadgen.NewEchoServer(ln).Serve(ctx)
}

type interactiveCmd struct {
	Target       string        `required:"" help:"HOST:PORT of the mixed echo server or the tunnel to it."`
	Bulk         int           `default:"2" help:"Bulk downloads."`
	Echo         bool          `help:"Time an echo beside them."`
	EchoInterval time.Duration `default:"50ms" help:"Period of the echo."`
	MessageBytes int           `default:"64" help:"Bytes per echo."`
	Stuck        int           `help:"Connections that first download --stuck-bytes alone, then stop reading."`
	StuckBytes   int64         `default:"50331648" help:"What each stuck connection downloads first."`
	Warmup       time.Duration `default:"2s" help:"Not counted at the start."`
	Duration     time.Duration `default:"6s" help:"Counted."`
	Timeout      time.Duration `default:"120s" help:"Bound on the whole run."`
	Congestion   string        `help:"TCP congestion control for every connection (empty: host default)."`
}

func (c interactiveCmd) Run(ctx context.Context) error {
	res, err := loadgen.Interactive(ctx, loadgen.InteractiveConfig{Target: c.Target, Bulk: c.Bulk, Echo: c.Echo,
		EchoInterval: c.EchoInterval, MessageBytes: c.MessageBytes, Stuck: c.Stuck, StuckBytes: c.StuckBytes,
		Warmup: c.Warmup, Duration: c.Duration, Timeout: c.Timeout, Congestion: c.Congestion})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

type latencyCmd struct {
	Target       string        `required:"" help:"HOST:PORT of the echo server or the tunnel to it."`
	Requests     int           `default:"100" help:"Round trips."`
	MessageBytes int           `default:"64" help:"Bytes per request."`
	Timeout      time.Duration `default:"60s" help:"Bound on the whole measurement."`
	Congestion   string        `help:"TCP congestion control for the connection (empty: host default)."`
}

func (c latencyCmd) Run(ctx context.Context) error {
	res, err := loadgen.Latency(ctx, loadgen.LatencyConfig{Target: c.Target, Requests: c.Requests, MessageBytes: c.MessageBytes, Timeout: c.Timeout, Congestion: c.Congestion})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

type scaleCmd struct {
	Target     string        `required:"" help:"HOST:PORT of the echo server or the tunnel to it."`
	Tunnels    int           `default:"10" help:"Concurrent connections."`
	TotalBytes int64         `default:"104857600" help:"Bytes over all tunnels, split evenly."`
	Timeout    time.Duration `default:"120s" help:"Bound on the whole run."`
	Congestion string        `help:"TCP congestion control for every connection (empty: host default)."`
}

func (c scaleCmd) Run(ctx context.Context) error {
	res, err := loadgen.Scale(ctx, loadgen.ScaleConfig{Target: c.Target, Tunnels: c.Tunnels, TotalBytes: c.TotalBytes, Timeout: c.Timeout, Congestion: c.Congestion})
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

type waitCmd struct {
	Protocol string        `enum:"tcp,udp" default:"tcp" help:"tcp or udp."`
	Port     int           `required:"" help:"Port to wait for."`
	Timeout  time.Duration `default:"10s" help:"Give up after this long."`
}

func (c waitCmd) Run(ctx context.Context) error {
	return loadgen.WaitListening(ctx, c.Protocol, c.Port, c.Timeout)
}
