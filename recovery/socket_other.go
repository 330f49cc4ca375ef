//go:build !linux

package recovery

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/net/ipv4"
)

// Off Linux the wire sends one datagram per system call: there is no
// UDP_SEGMENT, and quic-go hands over no GSO batches to split.

// sockAddr is unused off Linux: every datagram goes through WriteTo.
type sockAddr = *struct{}

func probeGSO(syscall.RawConn) bool { return false }

// There is no UDP_GRO off Linux.
func enableGRO(syscall.RawConn) bool { return false }

const groOOBSize = 0

func groSegmentSize([]byte) int { return 0 }

func (w *socket) sendGSO([][]byte, int, sockAddr) error {
	return errors.New("recovery: GSO needs Linux")
}

func isGSOUnsupported(error) bool { return true }

func (w *socket) sockaddr(net.Addr) sockAddr { return nil }

func segmentSize([]byte) (int, error) { return 0, nil }

// batchConn is nil off Linux, where x/net reads one message per call anyway:
// the wire then uses ReadFrom.
func batchConn(*net.UDPConn) *ipv4.PacketConn { return nil }
