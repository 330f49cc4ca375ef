//go:build linux

package host

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/quictun/quictun/internal/rtsys"
	"github.com/quictun/quictun/netem"
	"golang.org/x/sys/unix"
)

// forwarder is the user-space link between the two TUN devices: per direction, one
// reader goroutine (forwardRoutine) takes IP packets from the sending side's TUN and
// offers them to a netem.Pipe, whose scheduler writes the survivors into the receiving
// side's TUN at their arrival time. The Pipe is the same code the in-process
// PacketConn uses. On a perfect link the Pipe delivers inline, so the reader writes
// straight through with no goroutine hop.
//
// Timing is the emulator's accuracy: a packet's place in the emulated queue is decided
// by the time the reader takes it from the TUN, and a reader woken late turns a smooth
// TCP flow into a burst that overflows a queue the real link would not. On a machine
// busy with the endpoints under test (and on a 2-core one, everything else), ordinary
// goroutines are woken tens of milliseconds late. So the readers and the schedulers
// run on their own OS threads at SCHED_FIFO priority, block in poll(2) on the TUN fd
// directly (no netpoller thread in between) without giving up their P (internal/rtsys),
// and drain every ready packet per wake-up.
type forwarder struct {
	fds        [2]int // TUN devices: client, server namespace
	stopFD     int    // eventfd: readable once close has begun
	up, down   *netem.Pipe
	readErrors [2]atomic.Uint64 // per direction: reads that failed
	realtime   [2]atomic.Bool   // per reader: got SCHED_FIFO
	stopping   sync.WaitGroup
	closeOnce  sync.Once
}

// Each forwarder adds threadsPerForwarder to GOMAXPROCS while it runs. Its four
// threads are locked and mostly blocked in poll, but each needs a P (Go's right to run
// Go code) the moment it wakes; with GOMAXPROCS = CPUs, Ps are often held by ordinary
// goroutines of this process whose threads the kernel has descheduled, and a woken
// real-time thread then waits for them: measured here with four CPU burners on two
// cores, that made packets up to 150-260 ms late; with spare Ps, at most ~20 ms.
const threadsPerForwarder = 4

var extraProcs struct {
	sync.Mutex
	forwarders int
	base       int // GOMAXPROCS before the first forwarder
}

func reserveProcs() {
	extraProcs.Lock()
	defer extraProcs.Unlock()
	if extraProcs.forwarders == 0 {
		extraProcs.base = runtime.GOMAXPROCS(0)
	}
	extraProcs.forwarders++
	runtime.GOMAXPROCS(extraProcs.base + threadsPerForwarder*extraProcs.forwarders)
}

func releaseProcs() {
	extraProcs.Lock()
	defer extraProcs.Unlock()
	extraProcs.forwarders--
	runtime.GOMAXPROCS(extraProcs.base + threadsPerForwarder*extraProcs.forwarders)
}

// realtimePriority is low among real-time priorities: above every ordinary process,
// below the kernel's own real-time threads. It is the readers'; the Pipes' schedulers
// run one above, because SCHED_FIFO threads of equal priority never preempt each
// other: on two cores, two readers draining their TUNs held the schedulers off their
// due deliveries, and the emulator was 28-61 ms late in most runs of a TCP bbr flow at
// 100 Mbit/s and 5% loss. With the schedulers above, 5-10 ms in 8 of 9 such runs
// (32 ms in the other).
const realtimePriority = 10

// newForwarder takes ownership of the two TUN fds (also on error).
func newForwarder(client, server int, link netem.Link, seed int64) (*forwarder, error) {
	f := &forwarder{fds: [2]int{client, server}}
	stopFD, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(client)
		unix.Close(server)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	f.stopFD = stopFD
	rt := netem.RealtimeScheduler(realtimePriority + 1) // see realtimePriority
	if f.up, err = netem.NewPipe(link.Up, seed, writeTo(server), rt); err != nil {
		f.closeFDs()
		return nil, fmt.Errorf("up: %w", err)
	}
	if f.down, err = netem.NewPipe(link.Down, seed+1, writeTo(client), rt); err != nil {
		_ = f.up.Close()
		f.closeFDs()
		return nil, fmt.Errorf("down: %w", err)
	}
	reserveProcs()
	f.stopping.Add(2)
	var started sync.WaitGroup
	started.Add(2)
	go f.forwardRoutine(0, f.up, &started)
	go f.forwardRoutine(1, f.down, &started)
	started.Wait()
	return f, nil
}

func writeTo(fd int) netem.DeliverFunc {
	return func(b []byte, _ net.Addr) error {
		_, err := rtsys.Write(fd, b)
		return err
	}
}

// maxPacket is the largest IP packet a TUN hands over (the MTU is 1500, but a read
// buffer smaller than a packet would truncate it silently).
const maxPacket = 65535

// forwardRoutine reads direction dir (0: client to server) until close. Owned by the
// forwarder. Its thread stays locked to it until it exits, so the runtime retires the
// real-time thread instead of reusing it for other goroutines.
func (f *forwarder) forwardRoutine(dir int, pipe *netem.Pipe, started *sync.WaitGroup) {
	defer f.stopping.Done()
	runtime.LockOSThread()
	f.realtime[dir].Store(setRealtime() == nil)
	started.Done()
	src := f.fds[dir]
	buf := make([]byte, maxPacket)
	fds := []unix.PollFd{{Fd: int32(src), Events: unix.POLLIN}, {Fd: int32(f.stopFD), Events: unix.POLLIN}}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := rtsys.Ppoll(fds, nil); err != nil && !errors.Is(err, unix.EINTR) {
			f.readErrors[dir].Add(1)
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		// Drain everything that is ready before polling again.
		for {
			n, err := rtsys.Read(src, buf)
			if err != nil {
				if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
					f.readErrors[dir].Add(1)
				}
				break
			}
			if pipe.Send(buf[:n], nil) != nil {
				return // pipe closed
			}
		}
	}
}

func setRealtime() error {
	return unix.SchedSetAttr(0, &unix.SchedAttr{Policy: unix.SCHED_FIFO, Priority: realtimePriority}, 0)
}

// realtimeOK reports whether all four threads (two readers, two schedulers) run at
// real-time priority.
func (f *forwarder) realtimeOK() bool {
	return f.realtime[0].Load() && f.realtime[1].Load() && f.up.Realtime() && f.down.Realtime()
}

func (f *forwarder) setLink(l netem.Link) error {
	if err := f.up.SetModel(l.Up); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := f.down.SetModel(l.Down); err != nil {
		return fmt.Errorf("down: %w", err)
	}
	return nil
}

// close stops both directions, waits for every goroutine, and closes the TUNs, which
// removes the devices.
func (f *forwarder) close() error {
	var err error
	f.closeOnce.Do(func() {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		if _, werr := unix.Write(f.stopFD, one[:]); werr != nil {
			err = fmt.Errorf("signal forwarder stop: %w", werr)
		}
		f.stopping.Wait()
		err = errors.Join(err, f.up.Close(), f.down.Close())
		f.closeFDs()
		releaseProcs()
	})
	return err
}

func (f *forwarder) closeFDs() {
	for _, fd := range f.fds {
		unix.Close(fd)
	}
	unix.Close(f.stopFD)
}
