package rtsys

import (
	"encoding/binary"
	"errors"
	"runtime"
	"testing"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func eventfd(t *testing.T) int {
	t.Helper()
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestPpollReadWrite(t *testing.T) {
	fd := eventfd(t)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	ts := unix.NsecToTimespec(1e6)
	if n, err := Ppoll(fds, &ts); n != 0 || err != nil {
		t.Fatalf("ppoll on an idle eventfd: %d, %v; want a timeout", n, err)
	}
	var b [8]byte
	if _, err := Read(fd, b[:]); !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("read of an idle non-blocking eventfd: %v, want EAGAIN", err)
	}
	binary.NativeEndian.PutUint64(b[:], 3)
	if n, err := Write(fd, b[:]); n != 8 || err != nil {
		t.Fatalf("write: %d, %v", n, err)
	}
	if n, err := Ppoll(fds, nil); n != 1 || err != nil || fds[0].Revents&unix.POLLIN == 0 {
		t.Fatalf("ppoll on a ready eventfd: %d, %v, revents %#x", n, err, fds[0].Revents)
	}
	clear(b[:])
	if n, err := Read(fd, b[:]); n != 8 || err != nil || binary.NativeEndian.Uint64(b[:]) != 3 {
		t.Fatalf("read: %d, %v, value %d", n, err, binary.NativeEndian.Uint64(b[:]))
	}
	if _, err := Ppoll(nil, nil); !errors.Is(err, unix.EINVAL) {
		t.Fatalf("ppoll of nothing: %v, want EINVAL", err)
	}
}

// A goroutine blocked in Ppoll without a timeout holds its P; the collector must still
// stop the world (its preemption signal ends the call with EINTR).
func TestBlockedPpollDoesNotHoldOffTheCollector(t *testing.T) {
	fd := eventfd(t)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := Ppoll(fds, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err == nil && n == 0 {
				err = errors.New("ppoll without a timeout returned nothing ready")
			}
			done <- err
			return
		}
	}()
	for range 5 {
		runtime.GC() // hangs, failing the test by its timeout, if the blocked call held it off
	}
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	if _, err := Write(fd, one[:]); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
