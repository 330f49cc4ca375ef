package engine

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/quic-go/quic-go"
)

// Side is one end of a tunnel as the pumps see it: the application connection on
// one endpoint, the QUIC stream on the other. It hides the two ways each end can
// stop: a half-close (FIN after all data) and an abort (reset, data in flight is
// discarded).
type Side interface {
	io.Reader
	io.Writer
	// CloseWrite ends the write direction after everything written so far; the
	// read direction keeps flowing (TCP FIN, QUIC stream FIN).
	CloseWrite() error
	// Abort tears both directions down at once (TCP RST, QUIC stream reset with
	// code). It unblocks a concurrent Read or Write, is idempotent and safe to
	// call from any goroutine.
	Abort(code uint64)
	// Close releases the side once both directions ended cleanly.
	Close() error
}

// ConnSide adapts an application connection (TCP or UNIX socket).
func ConnSide(c net.Conn) Side { return &connSide{conn: c} }

type connSide struct {
	conn  net.Conn
	abort sync.Once
}

func (s *connSide) Read(p []byte) (int, error)  { return s.conn.Read(p) }
func (s *connSide) Write(p []byte) (int, error) { return s.conn.Write(p) }

func (s *connSide) CloseWrite() error {
	if hc, ok := s.conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	// A connection without half-close cannot tell EOF from the end: closing it is
	// the only way to pass the EOF on.
	return s.conn.Close()
}

func (s *connSide) Abort(uint64) {
	s.abort.Do(func() {
		if tc, ok := s.conn.(interface{ SetLinger(int) error }); ok {
			// Linger 0 makes Close send RST: the application learns that the
			// tunnel broke rather than seeing a clean end of data.
			_ = tc.SetLinger(0)
		}
		_ = s.conn.Close()
	})
}

func (s *connSide) Close() error {
	err := s.conn.Close()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// StreamSide adapts a QUIC stream. quic-go's Stream.Close closes only the send
// direction, which is exactly a half-close.
func StreamSide(st *quic.Stream) Side { return &streamSide{stream: st} }

type streamSide struct {
	stream *quic.Stream
	abort  sync.Once
}

func (s *streamSide) Read(p []byte) (int, error)  { return s.stream.Read(p) }
func (s *streamSide) Write(p []byte) (int, error) { return s.stream.Write(p) }
func (s *streamSide) CloseWrite() error           { return s.stream.Close() }

func (s *streamSide) Abort(code uint64) {
	s.abort.Do(func() {
		s.stream.CancelRead(quic.StreamErrorCode(code))
		s.stream.CancelWrite(quic.StreamErrorCode(code))
	})
}

// Close has nothing left to do after a clean end: the send side was closed by
// CloseWrite and the receive side reached EOF. CancelRead(0) is a no-op then and
// frees flow-control credit if the peer still had data in flight.
func (s *streamSide) Close() error {
	s.stream.CancelRead(0)
	return nil
}
