//go:build linux

package host

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/quictun/quictun/netem"
)

// The tc-netem backend: a veth pair between the namespaces, and the kernel's netem
// qdisc as the root qdisc of each end, so each direction is shaped on its sender's
// egress (client end: Up, server end: Down).

func (t *Testbed) setupVeth(ctx context.Context) error {
	t.Realtime = true // netem runs in the kernel
	if err := t.createVeth(ctx); err != nil {
		return err
	}
	return t.applyNetem(ctx, t.link)
}

// createVeth joins the namespaces with a plain veth pair (also the baseline in the
// throughput benchmark).
func (t *Testbed) createVeth(ctx context.Context) error {
	if err := run(ctx, "ip", "link", "add", t.devices[0], "type", "veth", "peer", "name", t.devices[1]); err != nil {
		return err
	}
	if err := configureLink(ctx, t.ClientNS, t.devices[0], t.ClientAddr, t.ServerAddr); err != nil {
		return err
	}
	return configureLink(ctx, t.ServerNS, t.devices[1], t.ServerAddr, t.ClientAddr)
}

func (t *Testbed) applyNetem(ctx context.Context, l netem.Link) error {
	for i, m := range []netem.Model{l.Up, l.Down} {
		ns, dev := t.Namespace(Side(i)), t.devices[i]
		args, err := netemArgs(m)
		if err != nil {
			return err
		}
		// replace, not change: the child qdisc (below) may come or go with the model.
		if err := run(ctx, "tc", append([]string{"-n", ns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "netem"}, args...)...); err != nil {
			return err
		}
		if m.Jitter > 0 && !m.Reorder {
			// netem sorts its queue by send time, so jitter reorders; a plain FIFO
			// child makes packets leave in order, as netem.Model promises.
			if err := run(ctx, "tc", "-n", ns, "qdisc", "replace", "dev", dev, "parent", "1:1", "pfifo", "limit", strconv.Itoa(netemLimit(m))); err != nil {
				return err
			}
		}
	}
	return nil
}

// netemArgs translates a Model into netem's arguments. netem has one loss model at a
// time, so random loss together with a Gilbert-Elliott burst model is refused.
func netemArgs(m netem.Model) ([]string, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var args []string
	if m.Delay > 0 || m.Jitter > 0 {
		args = append(args, "delay", usec(m.Delay))
		if m.Jitter > 0 {
			args = append(args, usec(m.Jitter))
		}
	}
	switch {
	case m.Loss > 0 && m.Burst != nil:
		return nil, errors.New("tc netem cannot combine random loss with a burst loss model: use one, or the tun backend")
	case m.Loss > 0:
		args = append(args, "loss", "random", percent(m.Loss))
	case m.Burst != nil:
		// gemodel p r 1-h 1-k: h is the success probability in Bad, k in Good.
		g := m.Burst
		args = append(args, "loss", "gemodel", percent(g.P), percent(g.R), percent(g.LossBad), percent(g.LossGood))
	}
	if m.RateBps > 0 {
		// The rate applies to IP packets, as in the tun backend (a TUN device carries
		// bare IP packets): netem counts the 14-byte Ethernet header of a veth frame,
		// so take it off again with a negative packet overhead.
		args = append(args, "rate", strconv.FormatInt(m.RateBps, 10)+"bit", strconv.Itoa(-ethernetHeader))
	}
	args = append(args, "limit", strconv.Itoa(netemLimit(m)))
	return args, nil
}

// netemLimit is netem's queue limit in packets. netem holds delayed packets in the same
// queue, so the limit is the drop-tail queue plus what is on the wire during the delay,
// in full-size packets. Without a rate there is no queue, only the packets in flight,
// which the sender's own rate bounds: allow plenty.
func netemLimit(m netem.Model) int {
	const unlimited = 100_000
	if m.RateBps == 0 {
		return unlimited
	}
	queue := m.QueueBytes
	if queue == 0 {
		// The same derivation as netem.Model (QueueDelay, else one BDP, at least 64 KiB).
		switch {
		case m.QueueDelay > 0:
			queue = int(float64(m.RateBps) / 8 * m.QueueDelay.Seconds())
		default:
			queue = max(int(float64(m.RateBps)/8*(2*m.Delay).Seconds()), netem.DefaultMinQueueBytes)
		}
	}
	inFlight := int(float64(m.RateBps) / 8 * (m.Delay + m.Jitter).Seconds())
	return max((queue+inFlight+MTU-1)/MTU, 1)
}

// ethernetHeader is what a veth frame adds to an IP packet (no FCS, preamble or gap).
const ethernetHeader = 14

func usec(d time.Duration) string { return strconv.FormatInt(d.Microseconds(), 10) + "us" }

func percent(p float64) string { return strconv.FormatFloat(p*100, 'f', -1, 64) + "%" }

// netemStats reads the root qdisc counters of both ends (tc -s -j).
func (t *Testbed) netemStats(ctx context.Context) (Stats, error) {
	var s Stats
	for i, out := range []*netem.Stats{&s.Up, &s.Down} {
		ns, dev := t.Namespace(Side(i)), t.devices[i]
		b, err := output(ctx, "tc", "-s", "-j", "-n", ns, "qdisc", "show", "dev", dev, "root")
		if err != nil {
			return Stats{}, err
		}
		st, err := parseQdiscStats(b)
		if err != nil {
			return Stats{}, fmt.Errorf("tc stats of %s in %s: %w", dev, ns, err)
		}
		*out = st
	}
	return s, nil
}

func parseQdiscStats(b []byte) (netem.Stats, error) {
	var qdiscs []struct {
		Kind    string `json:"kind"`
		Bytes   uint64 `json:"bytes"`
		Packets uint64 `json:"packets"`
		Drops   uint64 `json:"drops"`
	}
	if err := json.Unmarshal(b, &qdiscs); err != nil {
		return netem.Stats{}, err
	}
	for _, q := range qdiscs {
		if q.Kind == "netem" {
			return netem.Stats{
				Sent:           q.Packets + q.Drops,
				SentBytes:      q.Bytes,
				DroppedLoss:    q.Drops,
				Delivered:      q.Packets,
				DeliveredBytes: q.Bytes,
			}, nil
		}
	}
	return netem.Stats{}, errors.New("no netem qdisc found")
}
