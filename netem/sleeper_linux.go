package netem

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/quictun/quictun/internal/rtsys"
	"golang.org/x/sys/unix"
)

// threadSleeper waits in ppoll(2) on an eventfd, on the scheduler's own locked OS
// thread: the kernel wakes that thread directly when the timeout expires or Send
// writes the eventfd, with no Go timer or netpoller thread in between, and the raw
// call keeps the thread's P (see internal/rtsys), so a real-time priority on the
// thread is enough to be woken on time on a busy machine.
type threadSleeper struct {
	efd     int
	stopped atomic.Bool
}

func newThreadSleeper() (*threadSleeper, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	return &threadSleeper{efd: fd}, nil
}

func (s *threadSleeper) wait(d time.Duration) bool {
	fds := []unix.PollFd{{Fd: int32(s.efd), Events: unix.POLLIN}}
	var ts *unix.Timespec
	if d >= 0 {
		t := unix.NsecToTimespec(int64(d))
		ts = &t
	}
	n, err := rtsys.Ppoll(fds, ts)
	if err == nil && n > 0 {
		var buf [8]byte
		_, _ = rtsys.Read(s.efd, buf[:]) // reset the counter
	}
	return !s.stopped.Load()
}

func (s *threadSleeper) wake() {
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	// EAGAIN means the counter is already non-zero: the scheduler will wake anyway.
	_, _ = rtsys.Write(s.efd, one[:])
}

func (s *threadSleeper) stop() {
	s.stopped.Store(true)
	s.wake()
}

func (s *threadSleeper) release() { _ = unix.Close(s.efd) }

// setRealtimePriority puts the calling OS thread (locked by the caller) in SCHED_FIFO.
// The thread only blocks in ppoll or does short bursts of work, so it cannot starve
// the machine; the kernel's real-time throttling bounds it anyway.
func setRealtimePriority(prio int) error {
	err := unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: uint32(prio)}, 0)
	if err != nil {
		return fmt.Errorf("SCHED_FIFO priority %d: %w", prio, err)
	}
	return nil
}
