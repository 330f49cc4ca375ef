// Package speedtest is the wire format of quictun's speed test. A client opens a
// stream whose preamble header carries Token instead of a server application's
// address, then sends one Request frame; the server answers with a preamble status
// frame and then what the request's Op asks for:
//
//	Request = op:u8 durationMs:varint bytes:varint
//	Report  = bodyLen:varint body, body = bytes:varint elapsedUs:varint packetsSent:varint packetsLost:varint
//
// OpPing: the server echoes each 8-byte ping until the client's FIN. OpDownload: the
// server sends for Duration or Bytes, whichever ends first, then FIN. OpUpload: the
// server reads until the client's FIN, Duration or Bytes, then sends a Report of what
// it received. OpReport: the server sends a Report of its QUIC counters for the session
// (Bytes and Elapsed zero), so that the client learns the loss on the way down.
package speedtest

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/quic-go/quic-go/quicvarint"
)

// Token is the header token of a speed-test stream. It is no address, so a server
// that does not know speed tests refuses it as a bad token.
const Token = "quictun-speedtest/1"

// Op is what a request asks of the server.
type Op byte

// The ops.
const (
	OpPing     Op = 'p'
	OpDownload Op = 'd'
	OpUpload   Op = 'u'
	OpReport   Op = 'r'
)

// PingLen is the size of one ping and of its echo.
const PingLen = 8

// Limits a decoder enforces: a request for more is malformed, not clamped (the
// server clamps what it accepts to its own, smaller bounds).
const (
	MaxDuration  = 10 * time.Minute
	MaxBytes     = 1 << 40
	maxReportLen = 4 * 8
)

// ErrMalformed wraps every decoding failure caused by the peer's bytes.
var ErrMalformed = errors.New("malformed speed-test frame")

// Request is what a client asks for on a speed-test stream.
type Request struct {
	Op       Op
	Duration time.Duration // at millisecond resolution
	Bytes    uint64
}

// AppendRequest appends the encoding of r to b.
func AppendRequest(b []byte, r Request) []byte {
	b = append(b, byte(r.Op))
	b = quicvarint.Append(b, uint64(r.Duration/time.Millisecond))
	return quicvarint.Append(b, r.Bytes)
}

// ReadRequest reads one request.
func ReadRequest(r io.Reader) (Request, error) {
	br := byteReader{r: r}
	op, err := br.ReadByte()
	if err != nil {
		return Request{}, err
	}
	req := Request{Op: Op(op)}
	switch req.Op {
	case OpPing, OpDownload, OpUpload, OpReport:
	default:
		return Request{}, fmt.Errorf("%w: unknown op 0x%02x", ErrMalformed, op)
	}
	ms, err := quicvarint.Read(&br)
	if err != nil {
		return Request{}, truncated(err)
	}
	if ms > uint64(MaxDuration/time.Millisecond) {
		return Request{}, fmt.Errorf("%w: duration of %d ms exceeds %s", ErrMalformed, ms, MaxDuration)
	}
	req.Duration = time.Duration(ms) * time.Millisecond
	if req.Bytes, err = quicvarint.Read(&br); err != nil {
		return Request{}, truncated(err)
	}
	if req.Bytes > MaxBytes {
		return Request{}, fmt.Errorf("%w: %d bytes exceeds %d", ErrMalformed, req.Bytes, uint64(MaxBytes))
	}
	return req, nil
}

// Report is what the server measured.
type Report struct {
	Bytes                    uint64        // received (OpUpload)
	Elapsed                  time.Duration // from the request to the last byte received (OpUpload)
	PacketsSent, PacketsLost uint64        // the session's QUIC counters on the server
}

// AppendReport appends the encoding of r to b.
func AppendReport(b []byte, r Report) []byte {
	var body []byte
	body = quicvarint.Append(body, r.Bytes)
	body = quicvarint.Append(body, uint64(max(r.Elapsed, 0)/time.Microsecond))
	body = quicvarint.Append(body, r.PacketsSent)
	body = quicvarint.Append(body, r.PacketsLost)
	b = quicvarint.Append(b, uint64(len(body)))
	return append(b, body...)
}

// ReadReport reads one report.
func ReadReport(r io.Reader) (Report, error) {
	br := byteReader{r: r}
	n, err := quicvarint.Read(&br)
	if err != nil {
		return Report{}, err
	}
	if n > maxReportLen {
		return Report{}, fmt.Errorf("%w: report of %d bytes exceeds %d", ErrMalformed, n, maxReportLen)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Report{}, truncated(err)
	}
	var v [4]uint64
	for i := range v {
		x, l, err := quicvarint.Parse(body)
		if err != nil {
			return Report{}, fmt.Errorf("%w: report field %d: %v", ErrMalformed, i, err)
		}
		v[i], body = x, body[l:]
	}
	if len(body) != 0 {
		return Report{}, fmt.Errorf("%w: %d bytes after the report's fields", ErrMalformed, len(body))
	}
	if v[1] > uint64(MaxDuration/time.Microsecond) {
		return Report{}, fmt.Errorf("%w: elapsed %d µs exceeds %s", ErrMalformed, v[1], MaxDuration)
	}
	return Report{Bytes: v[0], Elapsed: time.Duration(v[1]) * time.Microsecond, PacketsSent: v[2], PacketsLost: v[3]}, nil
}

func truncated(err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %w", ErrMalformed, err)
}

// byteReader reads one byte at a time, so that a decoder never reads past its
// frame into the data that follows it.
type byteReader struct {
	r   io.Reader
	buf [1]byte
}

func (b *byteReader) ReadByte() (byte, error) {
	if _, err := io.ReadFull(b.r, b.buf[:]); err != nil {
		return 0, err
	}
	return b.buf[0], nil
}
