//go:build linux

package recovery

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"syscall"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// sockAddr is a peer's address as sendmsg(2) takes it.
type sockAddr = unix.Sockaddr

// probeGSO says whether the kernel takes UDP_SEGMENT on this socket.
func probeGSO(raw syscall.RawConn) bool {
	var serr error
	err := raw.Control(func(fd uintptr) {
		_, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	})
	return err == nil && serr == nil
}

// enableGRO asks the kernel to coalesce received runs (UDP_GRO) and says
// whether it agreed.
func enableGRO(raw syscall.RawConn) bool {
	var serr error
	err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1)
	})
	return err == nil && serr == nil
}

// groOOBSize holds the UDP_GRO control message (an int) and room for others.
const groOOBSize = 64

// groSegmentSize is the size of each datagram of a coalesced run, from its
// UDP_GRO control message; 0 when there is none (one datagram).
func groSegmentSize(oob []byte) int {
	for len(oob) > 0 {
		h, body, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && len(body) >= 4 {
			return int(binary.NativeEndian.Uint32(body))
		}
		oob = rest
	}
	return 0
}

func (w *socket) sendGSO(segs [][]byte, size int, sa unix.Sockaddr) error {
	var oob [unix.SizeofCmsghdr + 8]byte // CmsgSpace(2) on every 64-bit Linux
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.IPPROTO_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(size))
	var serr error
	err := w.raw.Write(func(fd uintptr) bool {
		_, serr = unix.SendmsgBuffers(int(fd), segs, oob[:unix.CmsgSpace(2)], sa, 0)
		return !errors.Is(serr, unix.EAGAIN)
	})
	if err != nil {
		return err
	}
	return serr
}

// isGSOUnsupported: the error with which Linux refuses UDP segmentation on a
// device that cannot checksum it (quic-go falls back on the same).
func isGSOUnsupported(err error) bool { return errors.Is(err, unix.EIO) }

// sockaddr converts a peer's address for sendmsg on this socket, nil when
// it cannot (then datagrams go singly through WriteTo).
func (w *socket) sockaddr(a net.Addr) unix.Sockaddr {
	u, ok := a.(*net.UDPAddr)
	if !ok || w.udp == nil || u.Zone != "" {
		return nil
	}
	ap := u.AddrPort()
	ip := ap.Addr()
	if w.v6 {
		return &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ip.As16()}
	}
	if !ip.Is4() && !ip.Is4In6() {
		return nil
	}
	return &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ip.Unmap().As4()}
}

// segmentSize finds the GSO segment size in quic-go's control messages, 0 if none.
func segmentSize(oob []byte) (int, error) {
	for len(oob) > 0 {
		h, body, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0, fmt.Errorf("recovery: control message: %w", err)
		}
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_SEGMENT && len(body) >= 2 {
			return int(binary.NativeEndian.Uint16(body)), nil
		}
		oob = rest
	}
	return 0, nil
}

// batchConn reads many datagrams per recvmmsg(2).
func batchConn(u *net.UDPConn) *ipv4.PacketConn { return ipv4.NewPacketConn(u) }
