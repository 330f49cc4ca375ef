package endpoints

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/engine"
)

// replayLimit bounds what a tunnel keeps for a replay: its header and the
// application's first bytes, sent before the server's status came back.
const replayLimit = 64 << 10

// clientStream is the client's side of a tunnel's stream, as the pumps see it.
//
// The first read consumes the server's status frame; a refusal becomes the
// read error, which the supervisor turns into closing the application.
//
// Until that status arrives, it also keeps what it sent (the header and the
// application's first bytes, up to replayLimit). A session can look alive to
// the client while the server has lost it: the server restarted, and its first
// answer on the old session is a stateless reset. Such a session never reached
// a server that knew it, so nothing was delivered, and the tunnel is sent again
// on the next session: the application does not notice the restart. Any other
// failure is not replayed, because the server may already have acted on the
// bytes.
type clientStream struct {
	sessions *sessionKeeper
	wait     time.Duration // how long a replay waits for the next session
	ctx      context.Context

	mu         sync.Mutex
	stream     *quic.Stream
	conn       *quic.Conn
	sent       []byte        // kept for a replay; nil once the status came or past the limit
	replayable bool          // still possible to replay
	confirmed  bool          // the server's status came back OK
	finished   bool          // CloseWrite was called
	aborted    bool          // Abort was called
	changed    chan struct{} // closed when the stream is replaced or replay is ruled out
	status     bool          // the reader has consumed the status frame (reader-only)
	// replayed, when set (before the pumps start), is told of each new stream.
	replayed func(*quic.Stream, *quic.Conn)
}

// openClientStream opens a stream and sends the header on it.
func openClientStream(ctx context.Context, sessions *sessionKeeper, wait time.Duration, hdr []byte) (*clientStream, error) {
	for {
		st, conn, err := sessions.openStream(ctx)
		if err != nil {
			return nil, err
		}
		// The header goes out now and the application's bytes right behind
		// it, without waiting for the server's answer: no extra round trip.
		if _, err := st.Write(hdr); err != nil {
			st.CancelRead(quic.StreamErrorCode(preamble.CodeInternal))
			if sessionWasLost(conn, err) {
				continue // reset between open and write: nothing was sent
			}
			return nil, err
		}
		return &clientStream{sessions: sessions, wait: wait, ctx: context.WithoutCancel(ctx),
			stream: st, conn: conn, sent: append([]byte(nil), hdr...), replayable: true,
			changed: make(chan struct{})}, nil
	}
}

func (s *clientStream) current() (*quic.Stream, *quic.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream, s.conn
}

func (s *clientStream) Write(p []byte) (int, error) {
	s.mu.Lock()
	st, conn, changed := s.stream, s.conn, s.changed
	kept := false
	if s.replayable && !s.confirmed {
		if len(s.sent)+len(p) <= replayLimit {
			s.sent = append(s.sent, p...)
			kept = true
		} else {
			s.noReplay()
		}
	}
	s.mu.Unlock()
	n, err := st.Write(p)
	if err == nil || !kept || !sessionWasLost(conn, err) {
		return n, s.peerError(err)
	}
	// p is kept: the reader either replays it on a new stream or gives up.
	<-changed
	s.mu.Lock()
	replayed := s.stream != st
	s.mu.Unlock()
	if replayed {
		return len(p), nil
	}
	return n, s.peerError(err)
}

// SetInteractive sets the current stream's priority (engine.Prioritized); a
// replay's new stream starts at the default and gets it with the next change.
func (s *clientStream) SetInteractive(on bool) {
	st, _ := s.current()
	engine.SetStreamInteractive(st, on)
}

func (s *clientStream) Read(p []byte) (int, error) {
	if !s.status {
		if err := s.readStatus(); err != nil {
			return 0, err
		}
		s.status = true
	}
	st, _ := s.current()
	n, err := st.Read(p)
	return n, s.peerError(err)
}

// awaitStatus reads the server's answer before the pumps start, for a proxy
// that must tell its application the verdict before any byte flows. Read
// then goes straight to the data.
func (s *clientStream) awaitStatus() error {
	if err := s.readStatus(); err != nil {
		return err
	}
	s.status = true
	return nil
}

func (s *clientStream) readStatus() error {
	for replays := 0; ; replays++ {
		st, conn := s.current()
		status, err := preamble.ReadStatus(st)
		if err == nil {
			s.mu.Lock()
			s.confirmed = status.Code == preamble.CodeOK
			s.noReplay()
			s.mu.Unlock()
			return status.Err()
		}
		if replays == 0 && sessionWasLost(conn, err) && s.replay() == nil {
			continue
		}
		s.mu.Lock()
		s.noReplay()
		s.mu.Unlock()
		return s.peerError(err)
	}
}

// replay sends everything kept on a stream of the next session, then makes it
// the current stream. Bytes that writers keep meanwhile are sent too before the
// switch, so the order on the new stream is the order of the writes.
func (s *clientStream) replay() error {
	s.mu.Lock()
	ok := s.replayable && !s.aborted
	s.mu.Unlock()
	if !ok {
		return errors.New("nothing to replay")
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.wait)
	defer cancel()
	st, conn, err := s.sessions.openStream(ctx)
	if err != nil {
		return err
	}
	for written := 0; ; {
		s.mu.Lock()
		if s.aborted || !s.replayable {
			s.mu.Unlock()
			st.CancelRead(quic.StreamErrorCode(preamble.CodeInternal))
			st.CancelWrite(quic.StreamErrorCode(preamble.CodeInternal))
			return errors.New("replay abandoned")
		}
		rest := s.sent[written:]
		if len(rest) == 0 {
			s.stream, s.conn = st, conn
			if s.finished {
				_ = st.Close()
			}
			close(s.changed)
			s.changed = make(chan struct{})
			s.mu.Unlock()
			if s.replayed != nil {
				s.replayed(st, conn)
			}
			return nil
		}
		chunk := append([]byte(nil), rest...)
		s.mu.Unlock()
		if _, err := st.Write(chunk); err != nil {
			return err
		}
		written += len(chunk)
	}
}

// noReplay rules replay out for good and wakes writers waiting for one. The
// caller holds mu.
func (s *clientStream) noReplay() {
	if !s.replayable {
		return
	}
	s.replayable, s.sent = false, nil
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *clientStream) CloseWrite() error {
	s.mu.Lock()
	s.finished = true
	st := s.stream
	s.mu.Unlock()
	return st.Close()
}

func (s *clientStream) Abort(code uint64) {
	s.mu.Lock()
	s.aborted = true
	s.noReplay()
	st := s.stream
	s.mu.Unlock()
	st.CancelRead(quic.StreamErrorCode(code))
	st.CancelWrite(quic.StreamErrorCode(code))
}

func (s *clientStream) Close() error {
	st, _ := s.current()
	st.CancelRead(0)
	return nil
}

// StreamID is the current stream's ID.
func (s *clientStream) StreamID() int64 {
	st, _ := s.current()
	return int64(st.StreamID())
}

// sessionWasLost says whether conn ended with a stateless reset: its server
// did not know it, so nothing sent on it was acted on. err is what a stream
// of conn failed with: quic-go fails the streams of a closing connection with
// its cause a moment before it cancels the connection's context, so a reader
// can learn of the reset before conn.Context() says so.
func sessionWasLost(conn *quic.Conn, err error) bool {
	var sr *quic.StatelessResetError
	if errors.As(err, &sr) {
		return true
	}
	if conn.Context().Err() == nil {
		return false
	}
	return errors.As(context.Cause(conn.Context()), &sr)
}

// peerError says what a stream error from the server endpoint means for the
// tunnel. A reset before the server's OK status is its refusal, and the code
// is the status (the status frame may have been lost to the reset); a reset
// after it ends a tunnel that ran: the server application's connection failed,
// an operator killed it, the server shut down.
func (s *clientStream) peerError(err error) error {
	var se *quic.StreamError
	if !errors.As(err, &se) || !se.Remote {
		return err
	}
	s.mu.Lock()
	confirmed := s.confirmed
	s.mu.Unlock()
	if confirmed {
		return &PeerResetError{Code: preamble.Code(se.ErrorCode), Peer: engine.ServerEndpoint}
	}
	return refusal(err)
}

// refusal reads a reset from the server that came before its status (of a
// tunnel or of a session's hello) as the status it stands for.
func refusal(err error) error {
	var se *quic.StreamError
	if errors.As(err, &se) && se.Remote {
		return &preamble.StatusError{Status: preamble.Status{Code: preamble.Code(se.ErrorCode)}}
	}
	return err
}

// PeerResetError is a tunnel that ran until the other endpoint reset its
// stream, with the code it gave.
type PeerResetError struct {
	Code preamble.Code
	Peer engine.Endpoint // the side that reset it
}

func (e *PeerResetError) Error() string {
	return fmt.Sprintf("tunnel reset by the %s endpoint: %s", e.Peer, e.Code)
}

// isPeerReset says whether a tunnel's end was a reset by the other endpoint:
// a PeerResetError (client side) or a remote quic.StreamError (server side).
func isPeerReset(err error) bool {
	if pe := (*PeerResetError)(nil); errors.As(err, &pe) {
		return true
	}
	se := (*quic.StreamError)(nil)
	return errors.As(err, &se) && se.Remote
}
