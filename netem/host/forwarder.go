package host

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"

	"github.com/quictun/quictun/netem"
)

// forwarder is the user-space link between the two TUN devices: per direction, one
// reader goroutine (forwardRoutine) takes IP packets from the sending side's TUN and
// offers them to a netem.Pipe, whose scheduler goroutine writes the survivors into the
// receiving side's TUN at their arrival time. The Pipe is the same code the in-process
// PacketConn uses. On a perfect link the Pipe delivers inline, so the reader writes
// straight through with no goroutine hop.
type forwarder struct {
	client, server *os.File // TUN devices, in the client and server namespaces
	up, down       *netem.Pipe
	readErrors     [2]atomic.Uint64 // per direction: reads that failed other than by Close
	stopping       sync.WaitGroup
	closeOnce      sync.Once
}

func newForwarder(client, server *os.File, link netem.Link, seed int64) (*forwarder, error) {
	f := &forwarder{client: client, server: server}
	var err error
	if f.up, err = netem.NewPipe(link.Up, seed, writeTo(server)); err != nil {
		return nil, fmt.Errorf("up: %w", err)
	}
	if f.down, err = netem.NewPipe(link.Down, seed+1, writeTo(client)); err != nil {
		_ = f.up.Close()
		return nil, fmt.Errorf("down: %w", err)
	}
	f.stopping.Add(2)
	go f.forwardRoutine(client, f.up, &f.readErrors[0])
	go f.forwardRoutine(server, f.down, &f.readErrors[1])
	return f, nil
}

func writeTo(dst *os.File) netem.DeliverFunc {
	return func(b []byte, _ net.Addr) error {
		_, err := dst.Write(b)
		return err
	}
}

// maxPacket is the largest IP packet a TUN hands over (the MTU is 1500, but a read
// buffer smaller than a packet would truncate it silently).
const maxPacket = 65535

// forwardRoutine reads one direction until its TUN is closed. Owned by the forwarder.
func (f *forwarder) forwardRoutine(src *os.File, pipe *netem.Pipe, readErrors *atomic.Uint64) {
	defer f.stopping.Done()
	buf := make([]byte, maxPacket)
	failures := 0
	for {
		n, err := src.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			// A TUN read fails only in odd states (device going down): count it and go
			// on, but give up on a device that fails every time instead of spinning.
			readErrors.Add(1)
			if failures++; failures > maxConsecutiveReadErrors {
				return
			}
			continue
		}
		failures = 0
		if pipe.Send(buf[:n], nil) != nil {
			return // pipe closed
		}
	}
}

const maxConsecutiveReadErrors = 100

func (f *forwarder) setLink(l netem.Link) error {
	if err := f.up.SetModel(l.Up); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := f.down.SetModel(l.Down); err != nil {
		return fmt.Errorf("down: %w", err)
	}
	return nil
}

// close stops both directions and waits for every goroutine; it closes the TUNs, which
// removes the devices.
func (f *forwarder) close() error {
	var err error
	f.closeOnce.Do(func() {
		// Closing the files unblocks the readers; the pipes then stop their schedulers.
		err = errors.Join(f.client.Close(), f.server.Close())
		f.stopping.Wait()
		err = errors.Join(err, f.up.Close(), f.down.Close())
	})
	return err
}
