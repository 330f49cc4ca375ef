package preamble

import (
	"fmt"
	"io"

	"github.com/quic-go/quic-go/quicvarint"
)

// Code is the outcome of a tunnel request. The same numbers are the application
// error codes with which a failed stream is reset, so a client that misses the
// status frame still learns the reason from the reset.
type Code uint64

// Status codes. Zero is success; the rest name who is at fault so that the client
// can log something an operator can act on.
const (
	CodeOK          Code = 0
	CodeBadToken    Code = 1  // the token does not parse to an address
	CodeForbidden   Code = 2  // the target is not allowed by the server's policy
	CodeUnreachable Code = 3  // the server could not connect to the target
	CodeAuthFailed  Code = 4  // the shared secret is wrong or missing
	CodeOverloaded  Code = 5  // a limit of the server is reached; try later
	CodeBadPreamble Code = 6  // the header frame is malformed or too large
	CodeInternal    Code = 7  // the server failed for a reason of its own
	CodeShutdown    Code = 8  // the endpoint is shutting down
	CodeKilled      Code = 9  // an operator closed the tunnel
	CodeInUse       Code = 10 // a bind request's address is held by another client
)

var codeNames = map[Code]string{
	CodeOK:          "ok",
	CodeBadToken:    "bad token",
	CodeForbidden:   "forbidden target",
	CodeUnreachable: "target unreachable",
	CodeAuthFailed:  "authentication failed",
	CodeOverloaded:  "server overloaded",
	CodeBadPreamble: "bad preamble",
	CodeInternal:    "internal error",
	CodeShutdown:    "shutting down",
	CodeKilled:      "closed by operator",
	CodeInUse:       "address in use",
}

func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("status %d", uint64(c))
}

// Status is what a server endpoint answers to a header.
type Status struct {
	Code    Code
	Message string // for humans; may be empty
}

// Err returns nil for CodeOK and a *StatusError otherwise.
func (s Status) Err() error {
	if s.Code == CodeOK {
		return nil
	}
	return &StatusError{Status: s}
}

// StatusError is a refusal by the server, as the client sees it.
type StatusError struct{ Status Status }

func (e *StatusError) Error() string {
	if e.Status.Message == "" {
		return "server refused tunnel: " + e.Status.Code.String()
	}
	return "server refused tunnel: " + e.Status.Code.String() + ": " + e.Status.Message
}

// AppendStatus appends the encoding of s to b; an over-long message is cut.
func AppendStatus(b []byte, s Status) []byte {
	msg := s.Message
	if len(msg) > MaxMessageLen {
		msg = msg[:MaxMessageLen]
	}
	b = append(b, Version)
	b = quicvarint.Append(b, uint64(s.Code))
	b = quicvarint.Append(b, uint64(len(msg)))
	return append(b, msg...)
}

// ReadStatus reads exactly one status frame from r.
func ReadStatus(r io.Reader) (Status, error) {
	br := byteReader{r: r}
	version, err := br.ReadByte()
	if err != nil {
		return Status{}, fmt.Errorf("read status: %w", err)
	}
	if version != Version {
		return Status{}, fmt.Errorf("%w: status version %d, this client speaks %d", ErrMalformed, version, Version)
	}
	code, err := quicvarint.Read(&br)
	if err != nil {
		return Status{}, fmt.Errorf("read status code: %w", err)
	}
	n, err := quicvarint.Read(&br)
	if err != nil {
		return Status{}, fmt.Errorf("read status message length: %w", err)
	}
	if n > MaxMessageLen {
		return Status{}, fmt.Errorf("%w: status message of %d bytes exceeds the limit of %d", ErrMalformed, n, MaxMessageLen)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return Status{}, fmt.Errorf("read status message: %w", err)
	}
	return Status{Code: Code(code), Message: string(msg)}, nil
}
