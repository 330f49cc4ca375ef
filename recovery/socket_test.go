package recovery

import (
	"bytes"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/ipv4"
)

// TestSocketSplitsCoalescedRuns sends GSO runs over loopback and reads them
// back through readBatch with fewer buffers than a run holds: every datagram
// comes out whole, in order, with its sender's address, whether or not the
// kernel coalesced them (UDP_GRO).
func TestSocketSplitsCoalescedRuns(t *testing.T) {
	defer goleak.VerifyNone(t)
	rx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	tx, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	r, w := newSocket(rx), newSocket(tx)
	t.Logf("GSO %v, GRO %v", w.gso, r.gro != nil)

	var want [][]byte
	for run := range 3 {
		var dgrams [][]byte
		for i := range 20 {
			n := 1200
			if i == 19 {
				n = 700 // a run's last datagram may be shorter
			}
			d := bytes.Repeat([]byte{byte(run*20 + i)}, n)
			dgrams = append(dgrams, d)
		}
		if err := w.writeBatch(dgrams, rx.LocalAddr(), w.sockaddr(rx.LocalAddr())); err != nil {
			t.Fatal(err)
		}
		want = append(want, dgrams...)
	}

	ms := make([]ipv4.Message, 7)
	bufs := make([][]byte, len(ms))
	for i := range ms {
		bufs[i] = make([]byte, 2048)
	}
	rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := 0
	for got < len(want) {
		for i := range ms {
			ms[i].Buffers = [][]byte{bufs[i]}
		}
		n, err := r.readBatch(ms)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", got, err)
		}
		for _, m := range ms[:n] {
			if !bytes.Equal(m.Buffers[0][:m.N], want[got]) {
				t.Fatalf("datagram %d: %d bytes of %d, want %d bytes of %d",
					got, m.N, m.Buffers[0][0], len(want[got]), want[got][0])
			}
			if m.Addr.String() != tx.LocalAddr().String() {
				t.Fatalf("datagram %d from %v, want %v", got, m.Addr, tx.LocalAddr())
			}
			got++
		}
	}
}
