package netem

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// arrivalLog records what a Pipe delivers, with the time it arrived.
type arrivalLog struct {
	mu   sync.Mutex
	seqs []byte
	at   []time.Time
}

func (l *arrivalLog) deliver(b []byte, _ net.Addr) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seqs = append(l.seqs, b[0])
	l.at = append(l.at, time.Now())
	return nil
}

func (l *arrivalLog) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seqs)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// schedulers are the two ways a Pipe can wait; tests that time deliveries run on both.
var schedulers = []struct {
	name string
	opts []PipeOption
}{
	{"timer", nil},
	{"realtime", []PipeOption{RealtimeScheduler(10)}}, // normal priority unless root
}

func TestPipeDelaysInOrder(t *testing.T) {
	for _, sc := range schedulers {
		t.Run(sc.name, func(t *testing.T) { testPipeDelaysInOrder(t, sc.opts) })
	}
}

func testPipeDelaysInOrder(t *testing.T, opts []PipeOption) {
	defer goleak.VerifyNone(t)
	const delay = 30 * time.Millisecond
	var log arrivalLog
	p, err := NewPipe(Model{Delay: delay, Jitter: 10 * time.Millisecond}, 1, log.deliver, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const n = 100
	sentAt := make([]time.Time, n)
	for i := range n {
		sentAt[i] = time.Now()
		if err := p.Send([]byte{byte(i), 0, 0}, nil); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	waitFor(t, "all packets", func() bool { return log.count() == n })
	log.mu.Lock()
	defer log.mu.Unlock()
	for i, seq := range log.seqs {
		if int(seq) != i {
			t.Fatalf("arrival %d is packet %d: jitter reordered a FIFO link", i, seq)
		}
		// Timers fire late on a busy machine, never early: only the lower bound is exact.
		if early := sentAt[i].Add(delay - 10*time.Millisecond).Sub(log.at[i]); early > 0 {
			t.Errorf("packet %d arrived %v before its minimum delay", i, early)
		}
	}
	if s := p.Stats(); s.Sent != n || s.Delivered != n || s.DeliveredBytes != 3*n {
		t.Errorf("stats %+v, want %d sent and delivered", s, n)
	}
}

func TestPipeCountsEveryFate(t *testing.T) {
	defer goleak.VerifyNone(t)
	var log arrivalLog
	// 8 Mbit/s with a 10-packet queue and 20% loss; a burst of 200 packets.
	p, err := NewPipe(Model{RateBps: 8e6, QueueBytes: 10 * 1000, Loss: 0.2}, 5, log.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	buf := make([]byte, 1000)
	for range 200 {
		if err := p.Send(buf, nil); err != nil {
			t.Fatal(err)
		}
	}
	var s Stats
	waitFor(t, "the queue to drain", func() bool {
		s = p.Stats()
		return s.Delivered+s.DroppedLoss+s.DroppedQueue == s.Sent
	})
	if s.Sent != 200 || s.DroppedQueue < 180 || s.DroppedLoss == 0 || s.Delivered == 0 {
		t.Errorf("stats %+v: want 200 sent, most dropped at the queue, some lost, some delivered", s)
	}
}

func TestPipeBypassAndModelChange(t *testing.T) {
	defer goleak.VerifyNone(t)
	var log arrivalLog
	p, err := NewPipe(Model{}, 1, log.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Send([]byte{0}, nil); err != nil {
		t.Fatal(err)
	}
	if log.count() != 1 {
		t.Fatal("the perfect link did not deliver inline")
	}
	if err := p.SetModel(Model{Loss: 2}); err == nil {
		t.Error("SetModel accepted loss 2")
	}
	if err := p.SetModel(Model{Delay: 20 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if err := p.Send([]byte{1}, nil); err != nil {
		t.Fatal(err)
	}
	if log.count() != 1 {
		t.Fatal("a delayed packet was delivered inline")
	}
	// Back to perfect while one is in flight: the next must queue behind it, not pass.
	if err := p.SetModel(Model{}); err != nil {
		t.Fatal(err)
	}
	if err := p.Send([]byte{2}, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both packets", func() bool { return log.count() == 3 })
	if log.seqs[1] != 1 || log.seqs[2] != 2 {
		t.Errorf("order %v, want [0 1 2]", log.seqs)
	}
}

func TestPipeClose(t *testing.T) {
	for _, sc := range schedulers {
		t.Run(sc.name, func(t *testing.T) { testPipeClose(t, sc.opts) })
	}
}

func testPipeClose(t *testing.T, opts []PipeOption) {
	defer goleak.VerifyNone(t)
	var log arrivalLog
	p, err := NewPipe(Model{Delay: 50 * time.Second}, 1, log.deliver, opts...)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		_ = p.Send(make([]byte, 100), nil)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := p.Send([]byte{1}, nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close = %v, want net.ErrClosed", err)
	}
	if log.count() != 0 {
		t.Error("packets delivered after Close")
	}
}

func TestNewPipeRejectsBadInput(t *testing.T) {
	if _, err := NewPipe(Model{Loss: -1}, 1, func([]byte, net.Addr) error { return nil }); err == nil {
		t.Error("NewPipe accepted loss -1")
	}
	if _, err := NewPipe(Model{}, 1, nil); err == nil {
		t.Error("NewPipe accepted a nil DeliverFunc")
	}
}

func TestArrivalQueueOrder(t *testing.T) {
	var q arrivalQueue
	ats := []time.Duration{5, 3, 9, 3, 1, 7, 3, 0, 8}
	for i, at := range ats {
		q.push(arrivalEntry{at: at, seq: uint64(i)})
	}
	var prev arrivalEntry
	for i := 0; q.len() > 0; i++ {
		e := q.pop()
		if i > 0 && (e.at < prev.at || (e.at == prev.at && e.seq < prev.seq)) {
			t.Fatalf("popped (%v,%d) after (%v,%d)", e.at, e.seq, prev.at, prev.seq)
		}
		prev = e
	}
}

// A scheduler held up (here by a slow receiver) delivers the packets behind late;
// TakeWorstLate reports the worst of it once, for one measurement, while Stats keeps
// the worst of the Pipe's life.
func TestPipeReportsItsOwnLatenessPerMeasurement(t *testing.T) {
	const hold = 40 * time.Millisecond
	var calls sync.WaitGroup
	calls.Add(2)
	first := true
	deliver := func([]byte, net.Addr) error {
		if first {
			first = false
			time.Sleep(hold) // the scheduler delivers in its own goroutine, one batch at a time
		}
		calls.Done()
		return nil
	}
	p, err := NewPipe(Model{Delay: time.Millisecond}, 1, deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if w := p.TakeWorstLate(); w != 0 {
		t.Fatalf("worst lateness %v before any packet", w)
	}
	p.Send([]byte{1}, nil)
	time.Sleep(5 * time.Millisecond) // the first is being delivered when the second is due
	p.Send([]byte{2}, nil)
	calls.Wait()
	w := p.TakeWorstLate()
	if w < hold/2 || w > 10*hold {
		t.Fatalf("worst lateness %v behind a %v hold", w, hold)
	}
	if again := p.TakeWorstLate(); again != 0 {
		t.Fatalf("worst lateness %v on the second take", again)
	}
	// The second packet waited behind the hold; on a busy machine the first one
	// may have been delivered late too.
	if st := p.Stats(); st.MaxLate != w || st.Late < 1 || st.Late > 2 {
		t.Fatalf("stats: max late %v (took %v), late %d packets, want 1 or 2", st.MaxLate, w, st.Late)
	}
}
