package endpoints

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
)

// A flow's queue keeps order, refuses past its count, its bytes and the
// endpoint's budget, moves its rest down when it never empties, and gives
// its bytes back when it closes; a closed queue or a done pump ends pop.
func TestDatagramQueueBounds(t *testing.T) {
	var budget atomic.Int64
	q := newDatagramQueue(&budget)
	for i := range flowQueueLen {
		if !q.push(fmt.Appendf(nil, "%06d", i)) {
			t.Fatalf("datagram %d refused", i)
		}
	}
	if q.push([]byte("one more")) {
		t.Fatal("a datagram past the count taken")
	}
	// Half out, half in again, twice: the queue compacts and keeps its order.
	next, in := 0, flowQueueLen
	for range 2 {
		for range flowQueueLen / 2 {
			d, ok := q.pop(nil)
			if !ok || string(d) != fmt.Sprintf("%06d", next) {
				t.Fatalf("pop %q, want %06d", d, next)
			}
			next++
		}
		for range flowQueueLen / 2 {
			if !q.push(fmt.Appendf(nil, "%06d", in)) {
				t.Fatalf("datagram %d refused", in)
			}
			in++
		}
	}
	if len(q.q) > flowQueueLen+flowQueueLen/2 {
		t.Fatalf("%d slots held for %d datagrams", len(q.q), flowQueueLen)
	}
	if got := budget.Load(); got != int64(6*flowQueueLen) {
		t.Fatalf("budget %d, want %d", got, 6*flowQueueLen)
	}
	q.close()
	if got := budget.Load(); got != 0 {
		t.Fatalf("budget %d after close", got)
	}
	if _, ok := q.pop(nil); ok {
		t.Fatal("a closed queue popped")
	}

	big := bytes.Repeat([]byte("x"), 32<<10)
	q2 := newDatagramQueue(&budget)
	n := 0
	for q2.push(big) {
		n++
	}
	if n != flowQueueBytes/len(big) {
		t.Fatalf("%d datagrams of 32 KiB taken, want %d", n, flowQueueBytes/len(big))
	}
	// The endpoint's budget: other flows get what is left of it, then none.
	var flows []*datagramQueue
	for budget.Load()+int64(len(big)) <= endpointQueueSize {
		f := newDatagramQueue(&budget)
		for f.push(big) && budget.Load()+int64(len(big)) <= endpointQueueSize {
		}
		flows = append(flows, f)
	}
	if newDatagramQueue(&budget).push(big) {
		t.Fatal("a datagram past the endpoint's budget taken")
	}
	for _, f := range append(flows, q2) {
		f.close()
	}
	if got := budget.Load(); got != 0 {
		t.Fatalf("budget %d after every close", got)
	}
	done := make(chan struct{})
	close(done)
	if _, ok := newDatagramQueue(&budget).pop(done); ok {
		t.Fatal("pop of an empty queue returned with its pump done")
	}
}
