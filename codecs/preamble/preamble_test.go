package preamble

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestHeaderRoundTripLeavesApplicationBytes(t *testing.T) {
	for _, h := range []Header{
		{Token: []byte("tcp:127.0.0.1:22")},
		{Token: []byte("unix:/run/app.sock"), Secret: []byte("s3cret")},
		{Token: bytes.Repeat([]byte("x"), MaxTokenLen), Secret: bytes.Repeat([]byte("y"), MaxSecretLen)},
		{Hello: true, Secret: []byte("s3cret")},
		{Hello: true},
	} {
		b, err := AppendHeader(nil, h)
		if err != nil {
			t.Fatal(err)
		}
		b = append(b, "application bytes"...)
		r := bytes.NewReader(b)
		got, err := ReadHeader(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Token, h.Token) || !bytes.Equal(got.Secret, h.Secret) || got.Hello != h.Hello {
			t.Fatalf("round trip: got %q/%q/%v, want %q/%q/%v", got.Token, got.Secret, got.Hello, h.Token, h.Secret, h.Hello)
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != "application bytes" {
			t.Fatalf("decoder read past the header: left %q", rest)
		}
	}
}

func TestAppendHeaderRefusesBadInput(t *testing.T) {
	for name, h := range map[string]Header{
		"empty token": {},
		"long token":  {Token: make([]byte, MaxTokenLen+1)},
		"long secret": {Token: []byte("a"), Secret: make([]byte, MaxSecretLen+1)},
		"hello token": {Hello: true, Token: []byte("a")},
	} {
		if _, err := AppendHeader(nil, h); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestReadHeaderRejectsMalformed(t *testing.T) {
	cases := map[string][]byte{
		"wrong version":    {2, 0},
		"oversized":        {1, 0x80, 0x01, 0x00, 0x00}, // 4-byte varint 65536
		"no token":         {1, 0},
		"field overruns":   {1, 3, fieldToken, 10, 'a'},
		"token twice":      {1, 6, fieldToken, 1, 'a', fieldToken, 1, 'b'},
		"truncated varint": {1, 1, 0x40},
		"hello and token":  {1, 5, fieldHello, 0, fieldToken, 1, 'a'},
		"hello twice":      {1, 4, fieldHello, 0, fieldHello, 0},
		"hello with value": {1, 3, fieldHello, 1, 'x'},
	}
	for name, b := range cases {
		_, err := ReadHeader(bytes.NewReader(b))
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", name, err)
		}
	}
	// A peer that closes early is an I/O error, not a malformed frame.
	_, err := ReadHeader(bytes.NewReader([]byte{1, 5, fieldToken}))
	if err == nil || errors.Is(err, ErrMalformed) {
		t.Errorf("short body: got %v, want an I/O error", err)
	}
}

func TestUnknownFieldsAreSkipped(t *testing.T) {
	b := []byte{1, 7, 0x3f, 2, 'z', 'z', fieldToken, 1, 'a'}
	h, err := ReadHeader(bytes.NewReader(b))
	if err != nil || string(h.Token) != "a" {
		t.Fatalf("got %q, %v", h.Token, err)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	for _, s := range []Status{
		{Code: CodeOK},
		{Code: CodeUnreachable, Message: "dial tcp 127.0.0.1:1: connection refused"},
		{Code: Code(77), Message: "from the future"},
	} {
		b := AppendStatus(nil, s)
		got, err := ReadStatus(bytes.NewReader(append(b, 'x')))
		if err != nil || got != s {
			t.Fatalf("got %+v, %v; want %+v", got, err, s)
		}
	}
	long := Status{Code: CodeInternal, Message: strings.Repeat("m", MaxMessageLen+10)}
	got, err := ReadStatus(bytes.NewReader(AppendStatus(nil, long)))
	if err != nil || len(got.Message) != MaxMessageLen {
		t.Fatalf("long message: %d bytes, %v", len(got.Message), err)
	}
	if (Status{Code: CodeOK}).Err() != nil {
		t.Fatal("OK status must not be an error")
	}
	var se *StatusError
	if err := (Status{Code: CodeForbidden, Message: "10.0.0.1:22"}).Err(); !errors.As(err, &se) || !strings.Contains(err.Error(), "forbidden target") {
		t.Fatalf("forbidden: %v", err)
	}
}

func FuzzReadHeader(f *testing.F) {
	ok, _ := AppendHeader(nil, Header{Token: []byte("tcp:127.0.0.1:22"), Secret: []byte("k")})
	f.Add(ok)
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 0xff, 0xff})
	hello, _ := AppendHeader(nil, Header{Hello: true, Secret: []byte("k")})
	f.Add(hello)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		if (len(h.Token) == 0) != h.Hello || len(h.Token) > MaxTokenLen || len(h.Secret) > MaxSecretLen {
			t.Fatalf("accepted out-of-bounds header: token %d secret %d hello %v", len(h.Token), len(h.Secret), h.Hello)
		}
		// What decodes must re-encode to something that decodes the same.
		again, err := AppendHeader(nil, h)
		if err != nil {
			t.Fatalf("decoded header does not re-encode: %v", err)
		}
		h2, err := ReadHeader(bytes.NewReader(again))
		if err != nil || !bytes.Equal(h2.Token, h.Token) || !bytes.Equal(h2.Secret, h.Secret) || h2.Hello != h.Hello {
			t.Fatalf("re-encoded header differs: %v", err)
		}
	})
}

func FuzzReadStatus(f *testing.F) {
	f.Add(AppendStatus(nil, Status{Code: CodeBadToken, Message: "no"}))
	f.Add([]byte{1, 0xc0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ReadStatus(bytes.NewReader(b))
		if err == nil && len(s.Message) > MaxMessageLen {
			t.Fatalf("message of %d bytes accepted", len(s.Message))
		}
	})
}

func TestReadHeaderLimit(t *testing.T) {
	b, _ := AppendHeader(nil, Header{Token: bytes.Repeat([]byte("t"), 100)})
	if _, err := ReadHeaderLimit(bytes.NewReader(b), 64); !errors.Is(err, ErrMalformed) {
		t.Fatalf("over a lowered limit: %v", err)
	}
	if _, err := ReadHeaderLimit(bytes.NewReader(b), 200); err != nil {
		t.Fatalf("within the limit: %v", err)
	}
}
