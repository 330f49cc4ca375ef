package endpoints

import (
	"sync"
	"sync/atomic"
)

// Bounds of one flow's receive queue (datagrams waiting for its pump), and of
// all an endpoint's flows together: a pump that falls behind drops
// datagrams, as a full socket buffer would. A flow holds up to ~400 ms of a
// 50 Mbit/s stream of 1200-byte datagrams: quic-go sends datagrams only as
// its congestion window lets it, and a stream that starts on a session that
// carried little waits out a slow start from 32 packets (TestUDPResidualLoss
// dropped 320-440 datagrams there with a 256-datagram queue), or a window cut
// after a loss it declared. The endpoint's budget keeps 4096 flows of a
// forward from holding gigabytes.
const (
	flowQueueLen      = 2048
	flowQueueBytes    = 2 << 20
	endpointQueueSize = 64 << 20
)

// datagramQueue is one flow's datagrams on their way to its pump. It grows as
// datagrams wait (a channel of the bound's size would be allocated whole
// for every flow) and charges their bytes to the endpoint's budget.
type datagramQueue struct {
	mu     sync.Mutex
	q      [][]byte
	head   int
	bytes  int
	closed bool
	ready  chan struct{} // a datagram (or the close) since the pump last looked
	budget *atomic.Int64 // bytes queued in all the endpoint's flows
}

func newDatagramQueue(budget *atomic.Int64) *datagramQueue {
	return &datagramQueue{ready: make(chan struct{}, 1), budget: budget}
}

// push queues d; false when a bound is reached (the caller counts the drop).
// A closed queue takes nothing and reports no drop.
func (q *datagramQueue) push(d []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return true
	}
	if len(q.q)-q.head >= flowQueueLen || q.bytes+len(d) > flowQueueBytes {
		return false
	}
	if q.budget.Add(int64(len(d))) > endpointQueueSize {
		q.budget.Add(-int64(len(d)))
		return false
	}
	q.q = append(q.q, d)
	q.bytes += len(d)
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return true
}

// pop returns the next datagram, waiting for one; false once the queue is
// closed or done is.
func (q *datagramQueue) pop(done <-chan struct{}) ([]byte, bool) {
	for {
		q.mu.Lock()
		if q.head < len(q.q) {
			d := q.q[q.head]
			q.q[q.head] = nil
			q.head++
			switch {
			case q.head == len(q.q):
				q.q, q.head = q.q[:0], 0
			case q.head >= 1024 && 2*q.head >= len(q.q):
				// A queue that never empties moves its rest down, so that it does
				// not grow without end.
				n := copy(q.q, q.q[q.head:])
				clear(q.q[n:])
				q.q, q.head = q.q[:n], 0
			}
			q.bytes -= len(d)
			q.budget.Add(-int64(len(d)))
			q.mu.Unlock()
			return d, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		select {
		case <-q.ready:
		case <-done:
			return nil, false
		}
	}
}

// close drops what waits (giving its bytes back to the budget) and takes no
// more.
func (q *datagramQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	q.budget.Add(-int64(q.bytes))
	clear(q.q)
	q.q, q.head, q.bytes = nil, 0, 0
	select {
	case q.ready <- struct{}{}:
	default:
	}
}
