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
type socket struct {
	inner net.PacketConn
	udp   *net.UDPConn    // inner, when it is a UDP socket
	raw   syscall.RawConn // udp's, for sendmsg with GSO
	batch *ipv4.PacketConn
	gso   bool // the kernel takes UDP_SEGMENT
	v6    bool // udp is an AF_INET6 socket: IPv4 peers need mapped addresses
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
	return w
}

// readBatch reads at least one datagram into the buffers of ms (each Buffers[0]
// set by the caller) and reports how many it filled, with N and Addr set.
func (w *socket) readBatch(ms []ipv4.Message) (int, error) {
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
