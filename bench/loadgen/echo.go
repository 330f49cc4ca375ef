//go:build linux

// Package loadgen is the harness's own load generator, for what iperf3 does not measure:
// request/response latency through a tunnel and many concurrent tunnels with every byte
// checked. The bench binary runs it inside the test namespaces through a hidden
// subcommand, so each function here is a complete program step that reports JSON.
package loadgen

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
)

// echoBufferBytes is the copy chunk of the echo server: large enough that a bulk echo
// is not syscall-bound, small enough for thousands of connections.
const echoBufferBytes = 32 << 10

// EchoServer echoes every byte it receives back on the same connection and honours
// half-close: EOF from the peer becomes a FIN back once all bytes are echoed.
type EchoServer struct {
	listener net.Listener
	// mixed: the first byte of a connection says what it wants, SendKind a bulk
	// download (bytes until the connection breaks), anything else an echo of the rest.
	mixed bool

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup // one per connection handler
}

// NewEchoServer serves on ln; Serve runs it.
func NewEchoServer(ln net.Listener) *EchoServer {
	return &EchoServer{listener: ln, conns: map[net.Conn]struct{}{}}
}

// SendKind, as the first byte of a connection to a mixed server, asks for a bulk
// download; any other first byte for an echo of what follows.
const SendKind = 'd'

// NewMixedServer serves the interactive load on ln: bulk downloads and echoes on one
// port, told apart by their first byte, so that both go through the same forward.
func NewMixedServer(ln net.Listener) *EchoServer {
	return &EchoServer{listener: ln, conns: map[net.Conn]struct{}{}, mixed: true}
}

// Serve accepts connections until ctx ends, then closes the listener and every
// connection and waits for their handlers. It returns nil on a clean stop.
func (s *EchoServer) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		s.listener.Close()
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
	})
	defer stop()
	defer s.wg.Wait()
	for {
		conn, err := s.listener.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		s.mu.Lock()
		if ctx.Err() != nil {
			s.mu.Unlock()
			conn.Close()
			return nil
		}
		s.conns[conn] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.echoConnection(conn)
	}
}

func (s *EchoServer) echoConnection(conn net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, conn)
		s.mu.Unlock()
		conn.Close()
	}()
	buf := make([]byte, echoBufferBytes)
	if s.mixed {
		if _, err := io.ReadFull(conn, buf[:1]); err != nil {
			return
		}
		if buf[0] == SendKind {
			for { // until the peer closes (or the server stops)
				if _, err := conn.Write(buf); err != nil {
					return
				}
			}
		}
	}
	for {
		n, rerr := conn.Read(buf)
		if n > 0 {
			if _, werr := conn.Write(buf[:n]); werr != nil {
				return
			}
		}
		if rerr != nil {
			if cw, ok := conn.(interface{ CloseWrite() error }); ok && errors.Is(rerr, io.EOF) {
				cw.CloseWrite()
			}
			return
		}
	}
}
