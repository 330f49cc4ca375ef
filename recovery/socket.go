package recovery

import (
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
)

// socket moves datagrams on the inner PacketConn. On a *net.UDPConn (Linux) it
// reads many datagrams per recvmmsg(2) and sends runs of equal-sized datagrams
// to one peer with one sendmsg(2) and UDP generic segmentation offload (GSO), the
// way quic-go does on a bare socket: one system call per datagram costs about as
// much CPU as all of QUIC's crypto. On anything else (netem in tests) it falls
// back to one ReadFrom/WriteTo per datagram.
//
// Where the kernel takes UDP_GRO it also hands over runs of datagrams from one
// peer as one buffer (on loopback a sender's GSO run arrives unsplit), which
// readBatch splits into the caller's buffers: the kernel then allocates and
// queues one socket buffer per run instead of one per datagram.
type socket struct {
	inner net.PacketConn
	udp   *net.UDPConn    // inner, when it is a UDP socket
	raw   syscall.RawConn // udp's, for sendmsg with GSO
	batch *ipv4.PacketConn
	gso   bool // the kernel takes UDP_SEGMENT
	v6    bool // udp is an AF_INET6 socket: IPv4 peers need mapped addresses
	gro   *groReader
}

// groReader holds coalesced runs read with UDP_GRO until readBatch has split
// them all: msgs[next:count] are left, the first of them from offset off.
type groReader struct {
	bufs        [groBatchSize][]byte
	oob         [groBatchSize][]byte
	msgs        [groBatchSize]ipv4.Message
	count, next int
	off         int
}

// groBatchSize runs of at most 64 KiB each per recvmmsg(2): 512 KiB per socket.
const (
	groBatchSize = 8
	groBufSize   = 1 << 16
)

func newGROReader() *groReader {
	g := &groReader{}
	for i := range g.msgs {
		g.bufs[i] = make([]byte, groBufSize)
		g.oob[i] = make([]byte, groOOBSize)
		g.msgs[i].Buffers = [][]byte{g.bufs[i]}
	}
	return g
}

// Limits of one GSO send (Linux: UDP_MAX_SEGMENTS, and the 64 KiB of a datagram).
const (
	maxGSOSegments = 64
	maxGSOBytes    = 65000
)

func newSocket(inner net.PacketConn) *socket {
	w := &socket{inner: inner}
	u, ok := inner.(*net.UDPConn)
	if !ok {
		return w
	}
	raw, err := u.SyscallConn()
	if err != nil {
		return w
	}
	w.udp, w.raw, w.batch = u, raw, batchConn(u)
	if la, ok := u.LocalAddr().(*net.UDPAddr); ok && la.IP.To4() == nil {
		w.v6 = true
	}
	w.gso = probeGSO(raw)
	if w.batch != nil && enableGRO(raw) {
		w.gro = newGROReader()
	}
	return w
}

// readBatch reads at least one datagram into the buffers of ms (each Buffers[0]
// set by the caller) and reports how many it filled, with N and Addr set.
func (w *socket) readBatch(ms []ipv4.Message) (int, error) {
	if w.gro != nil {
		return w.readGRO(ms)
	}
	if w.batch != nil {
		return w.batch.ReadBatch(ms, 0)
	}
	n, addr, err := w.inner.ReadFrom(ms[0].Buffers[0])
	if err != nil {
		return 0, err
	}
	ms[0].N, ms[0].Addr = n, addr
	return 1, nil
}

// readGRO is readBatch through the groReader: it reads only when every run read
// before has been handed out, and then fills ms with as many datagrams as fit.
// A datagram longer than its buffer in ms is cut short, as recvmmsg cuts it.
func (w *socket) readGRO(ms []ipv4.Message) (int, error) {
	g := w.gro
	if g.next == g.count {
		for i := range g.msgs {
			g.msgs[i].OOB = g.oob[i]
		}
		n, err := w.batch.ReadBatch(g.msgs[:], 0)
		if err != nil {
			return 0, err
		}
		g.count, g.next, g.off = n, 0, 0
	}
	k := 0
	for k < len(ms) && g.next < g.count {
		m := &g.msgs[g.next]
		run := g.bufs[g.next][:m.N]
		seg := groSegmentSize(m.OOB[:m.NN])
		if seg <= 0 || seg > len(run) {
			seg = len(run)
		}
		end := min(g.off+seg, len(run))
		ms[k].N = copy(ms[k].Buffers[0], run[g.off:end])
		ms[k].Addr = m.Addr
		k++
		g.off = end
		if g.off >= len(run) {
			g.next, g.off = g.next+1, 0
		}
	}
	return k, nil
}

// writeBatch sends the datagrams in order to one address. It reports the first
// error; datagrams after a failed run are still tried, as a socket error for one
// run (a full buffer) says nothing about the next.
func (w *socket) writeBatch(dgrams [][]byte, addr net.Addr, sa sockAddr) error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for len(dgrams) > 0 {
		if !w.gso || sa == nil || len(dgrams) == 1 {
			_, err := w.inner.WriteTo(dgrams[0], addr)
			keep(err)
			dgrams = dgrams[1:]
			continue
		}
		// A GSO run: equal sizes, the last may be shorter, within the limits.
		size := len(dgrams[0])
		n, total := 1, size
		for n < len(dgrams) && n < maxGSOSegments && total+len(dgrams[n]) <= maxGSOBytes && len(dgrams[n]) <= size {
			total += len(dgrams[n])
			n++
			if len(dgrams[n-1]) < size {
				break
			}
		}
		if n == 1 {
			_, err := w.inner.WriteTo(dgrams[0], addr)
			keep(err)
		} else {
			err := w.sendGSO(dgrams[:n], size, sa)
			if isGSOUnsupported(err) {
				w.gso = false // the route or device refuses it: send singly from now on
				continue
			}
			keep(err)
		}
		dgrams = dgrams[n:]
	}
	return first
}
