// Package preamble is the wire format a tunnel starts with (ALPN quictun/1).
//
// On every new bidirectional stream the client endpoint sends one Header frame and
// then, without waiting, the application's bytes. The server endpoint answers with one
// Status frame and then the server application's bytes. Both frames are
// length-prefixed with QUIC variable-length integers, so a decoder knows how much to
// read before it parses anything, and it can refuse an oversized frame without
// reading it.
//
//	Header = version:u8 bodyLen:varint body
//	body   = *(fieldType:varint fieldLen:varint fieldValue)
//	Status = version:u8 code:varint msgLen:varint msg
//
// Header fields are TLVs so later versions can add fields; unknown field types are
// skipped, so an older server keeps working with a newer client.
//
// A hello is a header that opens no tunnel: it carries the hello field and no
// token. The client sends one on a stream of its own right after each handshake,
// so that a session proves its secret before any application connects; the server
// answers it with a status frame and closes sessions that present no valid
// header within its handshake timeout.
package preamble

import (
	"errors"
	"fmt"
	"io"

	"github.com/quic-go/quic-go/quicvarint"
)

// Version is the preamble version this package speaks.
const Version = 1

// ALPN is the TLS application protocol of a quictun session.
const ALPN = "quictun/1"

// Limits a decoder enforces before it allocates.
const (
	// MaxHeaderLen bounds a whole header body: token, secret and anything else.
	MaxHeaderLen = 16 << 10
	// MaxTokenLen bounds the token inside a header.
	MaxTokenLen = 8 << 10
	// MaxSecretLen bounds the shared secret inside a header.
	MaxSecretLen = 1 << 10
	// MaxMessageLen bounds the human-readable message of a status frame.
	MaxMessageLen = 1 << 10
)

// Header field types.
const (
	fieldToken  = 0x01
	fieldSecret = 0x02
	fieldHello  = 0x03 // empty value
)

// Header is what a client endpoint says first on a stream.
type Header struct {
	// Token names the server application; a token parser on the server turns it
	// into an address.
	Token []byte
	// Secret is the shared secret of the client, empty when none is configured.
	Secret []byte
	// Hello marks a header that opens no tunnel and carries no token: the
	// client's proof, once per session, that it holds the secret.
	Hello bool
}

// ErrMalformed wraps every decoding failure caused by the peer's bytes, so that a
// server can answer it with CodeBadPreamble rather than treat it as an I/O error.
var ErrMalformed = errors.New("malformed preamble")

// AppendHeader appends the encoding of h to b.
func AppendHeader(b []byte, h Header) ([]byte, error) {
	if h.Hello && len(h.Token) > 0 {
		return b, errors.New("preamble: a hello carries no token")
	}
	if !h.Hello && len(h.Token) == 0 {
		return b, errors.New("preamble: empty token")
	}
	if len(h.Token) > MaxTokenLen {
		return b, fmt.Errorf("preamble: token of %d bytes exceeds the limit of %d", len(h.Token), MaxTokenLen)
	}
	if len(h.Secret) > MaxSecretLen {
		return b, fmt.Errorf("preamble: secret of %d bytes exceeds the limit of %d", len(h.Secret), MaxSecretLen)
	}
	bodyLen := 0
	if h.Hello {
		bodyLen += fieldLen(fieldHello, 0)
	} else {
		bodyLen += fieldLen(fieldToken, len(h.Token))
	}
	if len(h.Secret) > 0 {
		bodyLen += fieldLen(fieldSecret, len(h.Secret))
	}
	b = append(b, Version)
	b = quicvarint.Append(b, uint64(bodyLen))
	if h.Hello {
		b = appendField(b, fieldHello, nil)
	} else {
		b = appendField(b, fieldToken, h.Token)
	}
	if len(h.Secret) > 0 {
		b = appendField(b, fieldSecret, h.Secret)
	}
	return b, nil
}

func fieldLen(typ uint64, n int) int {
	return quicvarint.Len(typ) + quicvarint.Len(uint64(n)) + n
}

func appendField(b []byte, typ uint64, v []byte) []byte {
	b = quicvarint.Append(b, typ)
	b = quicvarint.Append(b, uint64(len(v)))
	return append(b, v...)
}

// ReadHeader reads exactly one header frame from r and nothing beyond it, so the
// application bytes that follow stay in r. Errors caused by the bytes themselves
// wrap ErrMalformed; I/O errors (including a peer that closed early) are returned
// as they are, wrapped with context.
func ReadHeader(r io.Reader) (Header, error) { return ReadHeaderLimit(r, MaxHeaderLen) }

// ReadHeaderLimit is ReadHeader with a lower bound on the header's size, for a
// server that wants to accept less than MaxHeaderLen.
func ReadHeaderLimit(r io.Reader, limit int) (Header, error) {
	limit = min(limit, MaxHeaderLen)
	br := byteReader{r: r}
	version, err := br.ReadByte()
	if err != nil {
		return Header{}, fmt.Errorf("read preamble version: %w", err)
	}
	if version != Version {
		return Header{}, fmt.Errorf("%w: version %d, this server speaks %d", ErrMalformed, version, Version)
	}
	n, err := quicvarint.Read(&br)
	if err != nil {
		return Header{}, fmt.Errorf("read preamble length: %w", err)
	}
	if n > uint64(limit) {
		return Header{}, fmt.Errorf("%w: header of %d bytes exceeds the limit of %d", ErrMalformed, n, limit)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, fmt.Errorf("read preamble body: %w", err)
	}
	return ParseHeaderBody(body)
}

// ParseHeaderBody decodes the TLV fields of a header body.
func ParseHeaderBody(body []byte) (Header, error) {
	var h Header
	for len(body) > 0 {
		typ, n, err := quicvarint.Parse(body)
		if err != nil {
			return Header{}, fmt.Errorf("%w: field type: %v", ErrMalformed, err)
		}
		body = body[n:]
		l, n, err := quicvarint.Parse(body)
		if err != nil {
			return Header{}, fmt.Errorf("%w: field length: %v", ErrMalformed, err)
		}
		body = body[n:]
		if l > uint64(len(body)) {
			return Header{}, fmt.Errorf("%w: field 0x%x claims %d bytes, %d left", ErrMalformed, typ, l, len(body))
		}
		v := body[:l]
		body = body[l:]
		switch typ {
		case fieldToken:
			if h.Token != nil {
				return Header{}, fmt.Errorf("%w: token given twice", ErrMalformed)
			}
			if len(v) > MaxTokenLen {
				return Header{}, fmt.Errorf("%w: token of %d bytes exceeds the limit of %d", ErrMalformed, len(v), MaxTokenLen)
			}
			h.Token = v
		case fieldSecret:
			if h.Secret != nil {
				return Header{}, fmt.Errorf("%w: secret given twice", ErrMalformed)
			}
			if len(v) > MaxSecretLen {
				return Header{}, fmt.Errorf("%w: secret of %d bytes exceeds the limit of %d", ErrMalformed, len(v), MaxSecretLen)
			}
			h.Secret = v
		case fieldHello:
			if h.Hello {
				return Header{}, fmt.Errorf("%w: hello given twice", ErrMalformed)
			}
			if len(v) != 0 {
				return Header{}, fmt.Errorf("%w: hello field of %d bytes, want none", ErrMalformed, len(v))
			}
			h.Hello = true
		default:
			// A field from a newer version: skip it.
		}
	}
	switch {
	case h.Hello && h.Token != nil:
		return Header{}, fmt.Errorf("%w: a hello with a token", ErrMalformed)
	case !h.Hello && len(h.Token) == 0:
		return Header{}, fmt.Errorf("%w: no token", ErrMalformed)
	}
	return h, nil
}

// byteReader reads one byte at a time without buffering ahead, so that a reader
// positioned after the preamble holds exactly the application bytes.
type byteReader struct {
	r   io.Reader
	one [1]byte
}

func (b *byteReader) ReadByte() (byte, error) {
	if _, err := io.ReadFull(b.r, b.one[:]); err != nil {
		return 0, err
	}
	return b.one[0], nil
}

var _ io.ByteReader = (*byteReader)(nil)
