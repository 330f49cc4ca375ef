package sniff

// Recorded byte fixtures and the recording TCP proxy that makes them.
//
// A capture file holds one TCP connection as the sniffer actor sees it: the chunks each
// side sent, in the order the proxy read them, cut at captureLimit bytes per direction.
// Format (testdata/*.cap): the line "quictun-capture v1\n", then records of
// one direction byte ('c' client to server, 's' server to client), a big-endian uint32
// length, and that many bytes.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
)

const (
	captureMagic = "quictun-capture v1\n"
	// captureLimit is what the engine captures per direction by default.
	captureLimit = 64 << 10
)

type chunk struct {
	fromServer bool
	data       []byte
}

// capture is one recorded connection.
type capture struct {
	chunks []chunk
}

// streams returns the two directions' bytes as the sniffer sees them at the end.
func (c capture) streams() (fromClient, fromServer []byte) {
	for _, ch := range c.chunks {
		if ch.fromServer {
			fromServer = append(fromServer, ch.data...)
		} else {
			fromClient = append(fromClient, ch.data...)
		}
	}
	return fromClient, fromServer
}

func (c capture) marshal() []byte {
	var b bytes.Buffer
	b.WriteString(captureMagic)
	for _, ch := range c.chunks {
		dir := byte('c')
		if ch.fromServer {
			dir = 's'
		}
		b.WriteByte(dir)
		b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(ch.data))))
		b.Write(ch.data)
	}
	return b.Bytes()
}

func parseCapture(data []byte) (capture, error) {
	r := bufio.NewReader(bytes.NewReader(data))
	magic := make([]byte, len(captureMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != captureMagic {
		return capture{}, errors.New("not a quictun capture file")
	}
	var c capture
	for {
		dir, err := r.ReadByte()
		if err == io.EOF {
			return c, nil
		}
		var n [4]byte
		if _, err := io.ReadFull(r, n[:]); err != nil {
			return capture{}, fmt.Errorf("record %d: truncated header", len(c.chunks))
		}
		if dir != 'c' && dir != 's' {
			return capture{}, fmt.Errorf("record %d: bad direction %q", len(c.chunks), dir)
		}
		size := binary.BigEndian.Uint32(n[:])
		if size > captureLimit {
			return capture{}, fmt.Errorf("record %d: %d bytes is over the capture limit", len(c.chunks), size)
		}
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return capture{}, fmt.Errorf("record %d: truncated data", len(c.chunks))
		}
		c.chunks = append(c.chunks, chunk{fromServer: dir == 's', data: buf})
	}
}

func loadCapture(t testing.TB, path string) capture {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseCapture(data)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// recordingProxy is a TCP proxy on loopback that forwards each accepted connection to a
// target and records the first captureLimit bytes of each direction. It owns its accept
// loop and the two copy routines of every connection; Close stops and waits for them all.
type recordingProxy struct {
	ln      net.Listener
	network string // of the target: "tcp" or "unix"
	target  string
	wg      sync.WaitGroup

	mu    sync.Mutex
	conns []*recordedConn
	done  bool
}

type recordedConn struct {
	client, server net.Conn
	captured       [2]int // bytes recorded from client, from server
	rec            capture
}

func newRecordingProxy(t testing.TB, network, target string) *recordingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProxy{ln: ln, network: network, target: target}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.Close)
	return p
}

func (p *recordingProxy) addr() string { return p.ln.Addr().String() }

func (p *recordingProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		server, err := net.Dial(p.network, p.target)
		if err != nil {
			client.Close()
			continue
		}
		rc := &recordedConn{client: client, server: server}
		p.mu.Lock()
		if p.done {
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		p.conns = append(p.conns, rc)
		p.wg.Add(2)
		p.mu.Unlock()
		var pumps sync.WaitGroup
		pumps.Add(2)
		closeBoth := func() {
			pumps.Wait()
			client.Close()
			server.Close()
		}
		go func() { defer p.wg.Done(); defer pumps.Done(); p.copyRecorded(rc, server, client, false) }()
		go func() { defer p.wg.Done(); defer pumps.Done(); p.copyRecorded(rc, client, server, true) }()
		p.wg.Add(1)
		go func() { defer p.wg.Done(); closeBoth() }()
	}
}

// copyRecorded copies src to dst, recording what passes; EOF is passed on as a
// half-close so the other direction keeps flowing.
func (p *recordingProxy) copyRecorded(rc *recordedConn, dst, src net.Conn, fromServer bool) {
	dir := 0
	if fromServer {
		dir = 1
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			if keep := min(n, captureLimit-rc.captured[dir]); keep > 0 {
				rc.rec.chunks = append(rc.rec.chunks, chunk{fromServer: fromServer, data: bytes.Clone(buf[:keep])})
				rc.captured[dir] += keep
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if cw, ok := dst.(interface{ CloseWrite() error }); ok && errors.Is(err, io.EOF) {
				cw.CloseWrite()
			} else {
				dst.Close()
			}
			return
		}
	}
}

// captures returns a copy of what was recorded so far, one capture per connection in the
// order they were accepted.
func (p *recordingProxy) captures() []capture {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]capture, len(p.conns))
	for i, rc := range p.conns {
		out[i] = capture{chunks: append([]chunk(nil), rc.rec.chunks...)}
	}
	return out
}

// Close stops accepting, closes every connection and waits for all routines. It is
// idempotent.
func (p *recordingProxy) Close() {
	p.mu.Lock()
	already := p.done
	p.done = true
	conns := p.conns
	p.mu.Unlock()
	if already {
		return
	}
	p.ln.Close()
	for _, rc := range conns {
		rc.client.Close()
		rc.server.Close()
	}
	p.wg.Wait()
}
