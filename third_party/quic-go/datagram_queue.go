package quic

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go/internal/utils"
	"github.com/quic-go/quic-go/internal/utils/ringbuffer"
	"github.com/quic-go/quic-go/internal/wire"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

const (
	maxDatagramSendQueueLen = 32
	// maxDatagramRcvQueueLen is the receive queue of a connection whose
	// application did not choose one (SetDatagramReceiveQueue).
	maxDatagramRcvQueueLen = 128
)

type datagramQueue struct {
	sendMx    sync.Mutex
	sendQueue ringbuffer.RingBuffer[*wire.DatagramFrame]
	// urgent frames are sent before sendQueue's, and may go out past a full
	// congestion window (quictun's patch set: SendDatagramUrgent). peekedUrgent
	// says which queue Peek's frame came from, for Pop.
	urgent       ringbuffer.RingBuffer[*wire.DatagramFrame]
	peekedUrgent bool
	sent         chan struct{} // used to notify Add that a datagram was dequeued
	// Counted for ConnectionStats (quictun's patch set): frames dropped unsent
	// (too large for the packet), Add calls that waited, and the ns they waited.
	sendDropped, sendWaits, sendWait atomic.Uint64

	rcvMx    sync.Mutex
	rcvQueue [][]byte
	rcvLimit int           // frames rcvQueue holds at most
	rcvd     chan struct{} // used to notify Receive that a new datagram was received
	dropped  atomic.Uint64 // received frames discarded because rcvQueue was full

	closeErr error
	closed   chan struct{}

	hasData func()

	logger  utils.Logger
	qlogger qlogwriter.Recorder
}

func newDatagramQueue(hasData func(), logger utils.Logger, qlogger qlogwriter.Recorder) *datagramQueue {
	return &datagramQueue{
		hasData:  hasData,
		rcvLimit: maxDatagramRcvQueueLen,
		rcvd:     make(chan struct{}, 1),
		sent:     make(chan struct{}, 1),
		closed:   make(chan struct{}),
		logger:   logger,
		qlogger:  qlogger,
	}
}

// Add queues a new DATAGRAM frame for sending.
// Up to 32 DATAGRAM frames will be queued.
// Once that limit is reached, Add blocks until the queue size has reduced.
func (h *datagramQueue) Add(f *wire.DatagramFrame) error { return h.add(f, false) }

// AddUrgent queues a DATAGRAM frame ahead of those Add queued; it waits as Add
// does once 32 urgent frames wait.
func (h *datagramQueue) AddUrgent(f *wire.DatagramFrame) error { return h.add(f, true) }

func (h *datagramQueue) add(f *wire.DatagramFrame, urgent bool) error {
	h.sendMx.Lock()
	queue := &h.sendQueue
	if urgent {
		queue = &h.urgent
	}

	var waitStart time.Time
	for {
		// don't queue frames after the connection is closed
		select {
		case <-h.closed:
			h.sendMx.Unlock()
			return h.closeErr
		default:
		}

		if queue.Len() < maxDatagramSendQueueLen {
			queue.PushBack(f)
			h.sendMx.Unlock()
			if !waitStart.IsZero() {
				h.sendWaits.Add(1)
				h.sendWait.Add(uint64(time.Since(waitStart)))
			}
			h.hasData()
			return nil
		}
		if waitStart.IsZero() {
			waitStart = time.Now()
		}
		select {
		case <-h.sent: // drain any stale notification, so we don't wake up immediately below
		default:
		}
		h.sendMx.Unlock()
		// The queue is full. Wait until a frame is dequeued.
		select {
		case <-h.closed:
			return h.closeErr
		case <-h.sent:
		}
		h.sendMx.Lock()
	}
}

// Peek gets the next DATAGRAM frame for sending.
// If actually sent out, Pop needs to be called before the next call to Peek.
func (h *datagramQueue) Peek() *wire.DatagramFrame {
	h.sendMx.Lock()
	defer h.sendMx.Unlock()
	if h.peekedUrgent = !h.urgent.Empty(); h.peekedUrgent {
		return h.urgent.PeekFront()
	}
	if h.sendQueue.Empty() {
		return nil
	}
	return h.sendQueue.PeekFront()
}

// PeekUrgent is Peek of the urgent frames only.
func (h *datagramQueue) PeekUrgent() *wire.DatagramFrame {
	h.sendMx.Lock()
	defer h.sendMx.Unlock()
	if h.peekedUrgent = !h.urgent.Empty(); h.peekedUrgent {
		return h.urgent.PeekFront()
	}
	return nil
}

// HasUrgent reports whether urgent frames wait.
func (h *datagramQueue) HasUrgent() bool {
	h.sendMx.Lock()
	defer h.sendMx.Unlock()
	return !h.urgent.Empty()
}

func (h *datagramQueue) Pop() {
	h.sendMx.Lock()
	defer h.sendMx.Unlock()
	if h.peekedUrgent {
		_ = h.urgent.PopFront()
	} else {
		_ = h.sendQueue.PopFront()
	}
	select {
	case h.sent <- struct{}{}:
	default:
	}
}

// HandleDatagramFrame handles a received DATAGRAM frame.
func (h *datagramQueue) HandleDatagramFrame(f *wire.DatagramFrame) {
	data := make([]byte, len(f.Data))
	copy(data, f.Data)
	var queued bool
	h.rcvMx.Lock()
	if len(h.rcvQueue) < h.rcvLimit {
		h.rcvQueue = append(h.rcvQueue, data)
		queued = true
		select {
		case h.rcvd <- struct{}{}:
		default:
		}
	}
	h.rcvMx.Unlock()

	if !queued {
		h.dropped.Add(1)
		if h.logger.Debug() {
			h.logger.Debugf("Discarding received DATAGRAM frame (%d bytes payload)", len(f.Data))
		}
		if h.qlogger != nil {
			h.qlogger.RecordEvent(qlog.DatagramDropped{
				Direction: qlog.DirectionReceiving,
				Raw:       qlog.RawInfo{Length: len(f.Data), PayloadLength: qlog.OmitLength},
				Trigger:   "buffer_full",
			})
		}
	}
}

// SetReceiveQueue sets how many received frames wait for Receive at most;
// n <= 0 restores the default. Frames queued beyond a lowered limit stay.
func (h *datagramQueue) SetReceiveQueue(n int) {
	if n <= 0 {
		n = maxDatagramRcvQueueLen
	}
	h.rcvMx.Lock()
	h.rcvLimit = n
	h.rcvMx.Unlock()
}

// Receive gets a received DATAGRAM frame.
func (h *datagramQueue) Receive(ctx context.Context) ([]byte, error) {
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	for {
		h.rcvMx.Lock()
		if len(h.rcvQueue) > 0 {
			data := h.rcvQueue[0]
			h.rcvQueue = h.rcvQueue[1:]
			h.rcvMx.Unlock()
			return data, nil
		}
		h.rcvMx.Unlock()
		select {
		case <-h.rcvd:
			continue
		case <-h.closed:
			return nil, h.closeErr
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
}

func (h *datagramQueue) CloseWithError(e error) {
	h.closeErr = e
	close(h.closed)
}
