//go:build linux

package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"time"

	"github.com/quictun/quictun/bench/contender"
)

// iperfResult is the part of `iperf3 -J` output the harness reads.
type iperfResult struct {
	Error string `json:"error"`
	End   struct {
		SumSent struct {
			Bytes       int64   `json:"bytes"`
			Retransmits int64   `json:"retransmits"`
			Seconds     float64 `json:"seconds"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			Seconds       float64 `json:"seconds"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
}

// parseIperf reads an iperf3 -J report; goodput is what the receiver got.
func parseIperf(out []byte) (mbps float64, bytes int64, err error) {
	var r iperfResult
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, 0, fmt.Errorf("iperf3 output is not JSON: %w: %.200q", err, out)
	}
	if r.Error != "" {
		return 0, 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	rx := r.End.SumReceived
	if rx.Seconds <= 0 || rx.Bytes <= 0 {
		return 0, 0, errors.New("iperf3 reported no received bytes")
	}
	return rx.BitsPerSecond / 1e6, rx.Bytes, nil
}

// iperfServer starts a one-test iperf3 server on the server host and waits for it.
func iperfServer(ctx context.Context, bed Bed) (*contender.Process, netip.AddrPort, error) {
	port, err := bed.FreePort(contender.ServerSide, "tcp")
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	addr := bed.Addr(contender.ServerSide)
	cmd := bed.Command(ctx, contender.ServerSide, "iperf3", "-s", "-1", "-B", addr.String(), "-p", strconv.Itoa(port))
	p, err := contender.StartProcess("iperf3-server", cmd)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	if err := bed.WaitListening(ctx, contender.ServerSide, "tcp", port, 10*time.Second); err != nil {
		p.Stop()
		return nil, netip.AddrPort{}, fmt.Errorf("iperf3 server: %w: %s", err, p.Output())
	}
	return p, netip.AddrPortFrom(addr, uint16(port)), nil
}

// iperfClient is a started iperf3 client whose JSON report lands in out.
type iperfClient struct {
	proc *contender.Process
	out  *bytes.Buffer
}

func startIperfClient(ctx context.Context, bed Bed, dial netip.AddrPort, congestion string, d, warmup time.Duration) (*iperfClient, error) {
	args := []string{"-c", dial.Addr().String(), "-p", strconv.Itoa(int(dial.Port())),
		"-t", strconv.Itoa(int(d.Round(time.Second).Seconds())), "-J", "--connect-timeout", "10000"}
	if warmup > 0 {
		args = append(args, "--omit", strconv.Itoa(int(warmup.Round(time.Second).Seconds())))
	}
	if congestion != "" {
		args = append(args, "-C", congestion)
	}
	cmd := bed.Command(ctx, contender.ClientSide, "iperf3", args...)
	out := &bytes.Buffer{}
	cmd.Stdout = out
	p, err := contender.StartProcess("iperf3-client", cmd)
	if err != nil {
		return nil, err
	}
	return &iperfClient{proc: p, out: out}, nil
}

// finish waits for the client, at most timeout, and reads its report.
func (c *iperfClient) finish(timeout time.Duration) (float64, int64, error) {
	werr := c.proc.Wait(timeout)
	mbps, n, perr := parseIperf(c.out.Bytes())
	if perr == nil {
		return mbps, n, nil
	}
	if werr != nil && c.out.Len() == 0 {
		return 0, 0, werr
	}
	return 0, 0, perr
}
