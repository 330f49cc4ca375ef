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
// A hello is a header that opens no tunnel: it carries the hello field, the
// client's identity and a proof that it holds that identity's secret (see
// Proof), and no token. The client sends it on the first stream of each session
// and opens tunnels only once the server has answered it OK; the server reads
// nothing else from a session before that, so a session proves itself once and
// tunnel headers carry no credential.
//
// A bind request is a header that opens no tunnel either: it carries the bind
// field (an address for the server to listen on, "tcp:HOST:PORT" or
// "unix:PATH") and the name of the client's reverse forward, and no token.
// The server answers with a status and, when OK, keeps the stream as the
// binding's control stream (see package endpoints). Each connection the
// server then accepts there arrives at the client as a server-initiated
// stream whose header's token is the bind address as the client asked for
// it, with the origin field naming the connecting peer; the client answers
// with a status, as a server does in the forward direction.
package preamble

import (
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/quic-go/quic-go/quicvarint"
)

// Version is the preamble version this package speaks.
const Version = 1

// ALPN is the TLS application protocol of a quictun session.
const ALPN = "quictun/1"

// Limits a decoder enforces before it allocates.
const (
	// MaxHeaderLen bounds a whole header body: token and anything else.
	MaxHeaderLen = 16 << 10
	// MaxTokenLen bounds the token inside a header.
	MaxTokenLen = 8 << 10
	// MaxHelloLen bounds a hello's body: what a server reads from a session
	// that has not proved itself.
	MaxHelloLen = 128
	// MaxIdentityLen bounds the identity a hello names.
	MaxIdentityLen = 64
	// MaxSecretLen bounds a secret; it never travels, but a proof is made
	// from it on every session.
	MaxSecretLen = 1 << 10
	// MaxMessageLen bounds the human-readable message of a status frame.
	MaxMessageLen = 1 << 10
	// MaxBindLen bounds a bind request's address, MaxNameLen its forward's
	// name and MaxOriginLen a reverse tunnel's origin.
	MaxBindLen   = 512
	MaxNameLen   = 128
	MaxOriginLen = 256
)

// Header field types.
const (
	fieldToken = 0x01
	// 0x02 carried the raw secret in version 1's first form; it is skipped.
	fieldHello    = 0x03 // empty value
	fieldIdentity = 0x04
	fieldProof    = 0x05
	fieldBind     = 0x06
	fieldName     = 0x07
	fieldOrigin   = 0x08
)

// Header is what a client endpoint says first on a stream.
type Header struct {
	// Token names the server application; a token parser on the server turns it
	// into an address.
	Token []byte
	// Hello marks a header that opens no tunnel and carries no token: the
	// client's proof, once per session, of who it is.
	Hello bool
	// Identity names the client's identity in a hello; empty is the shared
	// secret's (or, without one, no identity).
	Identity string
	// Proof is Proof(secret, Identity, exporter) in a hello, empty when the
	// client has no secret.
	Proof []byte
	// Bind, in a bind request, is the address the client asks the server to
	// listen on; Name is the client's name of that reverse forward.
	Bind, Name string
	// Origin, in a reverse tunnel's header (server to client), names the peer
	// that connected to the server's listener; it may be empty.
	Origin string
}

// ErrMalformed wraps every decoding failure caused by the peer's bytes, so that a
// server can answer it with CodeBadPreamble rather than treat it as an I/O error.
var ErrMalformed = errors.New("malformed preamble")

// AppendHeader appends the encoding of h to b.
func AppendHeader(b []byte, h Header) ([]byte, error) {
	switch {
	case h.Hello && len(h.Token) > 0:
		return b, errors.New("preamble: a hello carries no token")
	case h.Bind != "" && (h.Hello || len(h.Token) > 0 || h.Origin != ""):
		return b, errors.New("preamble: a bind request carries no hello, token or origin")
	case h.Name != "" && h.Bind == "":
		return b, errors.New("preamble: only a bind request carries a name")
	case h.Origin != "" && len(h.Token) == 0:
		return b, errors.New("preamble: only a tunnel header carries an origin")
	case len(h.Bind) > MaxBindLen || len(h.Name) > MaxNameLen || len(h.Origin) > MaxOriginLen:
		return b, fmt.Errorf("preamble: bind, name or origin over its limit (%d, %d, %d bytes)", MaxBindLen, MaxNameLen, MaxOriginLen)
	case !h.Hello && h.Bind == "" && len(h.Token) == 0:
		return b, errors.New("preamble: empty token")
	case !h.Hello && (h.Identity != "" || len(h.Proof) > 0):
		return b, errors.New("preamble: only a hello carries an identity and a proof")
	case len(h.Token) > MaxTokenLen:
		return b, fmt.Errorf("preamble: token of %d bytes exceeds the limit of %d", len(h.Token), MaxTokenLen)
	case len(h.Identity) > MaxIdentityLen:
		return b, fmt.Errorf("preamble: identity of %d bytes exceeds the limit of %d", len(h.Identity), MaxIdentityLen)
	case len(h.Proof) != 0 && len(h.Proof) != ProofLen:
		return b, fmt.Errorf("preamble: proof of %d bytes, want %d", len(h.Proof), ProofLen)
	}
	var body []byte
	if h.Hello {
		body = appendField(body, fieldHello, nil)
		if h.Identity != "" {
			body = appendField(body, fieldIdentity, []byte(h.Identity))
		}
		if len(h.Proof) > 0 {
			body = appendField(body, fieldProof, h.Proof)
		}
	} else if h.Bind != "" {
		body = appendField(body, fieldBind, []byte(h.Bind))
		if h.Name != "" {
			body = appendField(body, fieldName, []byte(h.Name))
		}
	} else {
		body = appendField(body, fieldToken, h.Token)
		if h.Origin != "" {
			body = appendField(body, fieldOrigin, []byte(h.Origin))
		}
	}
	b = append(b, Version)
	b = quicvarint.Append(b, uint64(len(body)))
	return append(b, body...), nil
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
	body, err := readGrowing(r, int(n))
	if err != nil {
		return Header{}, fmt.Errorf("read preamble body: %w", err)
	}
	return ParseHeaderBody(body)
}

// readGrowing reads n bytes, growing its buffer as they arrive: a peer that
// announces a large header and sends little makes the reader hold little.
func readGrowing(r io.Reader, n int) ([]byte, error) {
	const chunk = 512
	buf := make([]byte, 0, min(n, chunk))
	for len(buf) < n {
		next := min(n-len(buf), max(chunk, len(buf)))
		buf = slices.Grow(buf, next)
		if _, err := io.ReadFull(r, buf[len(buf):len(buf)+next]); err != nil {
			return nil, err
		}
		buf = buf[:len(buf)+next]
	}
	return buf, nil
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
		case fieldIdentity:
			if h.Identity != "" || len(v) == 0 {
				return Header{}, fmt.Errorf("%w: identity given twice or empty", ErrMalformed)
			}
			if len(v) > MaxIdentityLen {
				return Header{}, fmt.Errorf("%w: identity of %d bytes exceeds the limit of %d", ErrMalformed, len(v), MaxIdentityLen)
			}
			h.Identity = string(v)
		case fieldProof:
			if h.Proof != nil {
				return Header{}, fmt.Errorf("%w: proof given twice", ErrMalformed)
			}
			if len(v) != ProofLen {
				return Header{}, fmt.Errorf("%w: proof of %d bytes, want %d", ErrMalformed, len(v), ProofLen)
			}
			h.Proof = v
		case fieldHello:
			if h.Hello {
				return Header{}, fmt.Errorf("%w: hello given twice", ErrMalformed)
			}
			if len(v) != 0 {
				return Header{}, fmt.Errorf("%w: hello field of %d bytes, want none", ErrMalformed, len(v))
			}
			h.Hello = true
		case fieldBind, fieldName, fieldOrigin:
			dst, limit := &h.Bind, MaxBindLen
			if typ == fieldName {
				dst, limit = &h.Name, MaxNameLen
			} else if typ == fieldOrigin {
				dst, limit = &h.Origin, MaxOriginLen
			}
			if *dst != "" || len(v) == 0 || len(v) > limit {
				return Header{}, fmt.Errorf("%w: field 0x%x given twice, empty or over %d bytes", ErrMalformed, typ, limit)
			}
			*dst = string(v)
		default:
			// A field from a newer version: skip it.
		}
	}
	switch {
	case h.Hello && h.Token != nil:
		return Header{}, fmt.Errorf("%w: a hello with a token", ErrMalformed)
	case h.Bind != "" && (h.Hello || h.Token != nil || h.Origin != ""):
		return Header{}, fmt.Errorf("%w: a bind request with a hello, token or origin", ErrMalformed)
	case h.Name != "" && h.Bind == "":
		return Header{}, fmt.Errorf("%w: a name outside a bind request", ErrMalformed)
	case h.Origin != "" && h.Token == nil:
		return Header{}, fmt.Errorf("%w: an origin outside a tunnel header", ErrMalformed)
	case !h.Hello && (h.Identity != "" || h.Proof != nil):
		return Header{}, fmt.Errorf("%w: an identity or proof outside a hello", ErrMalformed)
	case h.Bind != "":
		return h, nil
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
