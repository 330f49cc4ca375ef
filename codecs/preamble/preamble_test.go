package preamble

import (
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

func TestHeaderRoundTripLeavesApplicationBytes(t *testing.T) {
	for _, h := range []Header{
		{Token: []byte("tcp:127.0.0.1:22")},
		{Token: []byte("unix:/run/app.sock")},
		{Token: bytes.Repeat([]byte("x"), MaxTokenLen)},
		{Hello: true, Proof: bytes.Repeat([]byte{7}, ProofLen)},
		{Hello: true, Identity: strings.Repeat("i", MaxIdentityLen), Proof: bytes.Repeat([]byte{7}, ProofLen)},
		{Hello: true},
		{Bind: "tcp:0.0.0.0:2222", Name: "ssh"},
		{Bind: "unix:/run/x.sock"},
		{Token: []byte("tcp:0.0.0.0:2222"), Origin: "198.18.0.7:40000"},
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
		if !sameHeader(got, h) {
			t.Fatalf("round trip: got %+v, want %+v", got, h)
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != "application bytes" {
			t.Fatalf("decoder read past the header: left %q", rest)
		}
	}
}

func TestAppendHeaderRefusesBadInput(t *testing.T) {
	for name, h := range map[string]Header{
		"empty token":     {},
		"long token":      {Token: make([]byte, MaxTokenLen+1)},
		"hello token":     {Hello: true, Token: []byte("a")},
		"long identity":   {Hello: true, Identity: strings.Repeat("i", MaxIdentityLen+1)},
		"short proof":     {Hello: true, Proof: []byte{1}},
		"tunnel identity": {Token: []byte("a"), Identity: "i"},
		"bind and token":  {Bind: "tcp:1.2.3.4:5", Token: []byte("a")},
		"bind and hello":  {Bind: "tcp:1.2.3.4:5", Hello: true},
		"name alone":      {Token: []byte("a"), Name: "n"},
		"origin in bind":  {Bind: "tcp:1.2.3.4:5", Origin: "o"},
		"origin alone":    {Hello: true, Origin: "o"},
		"long bind":       {Bind: strings.Repeat("b", MaxBindLen+1)},
		"long name":       {Bind: "b", Name: strings.Repeat("n", MaxNameLen+1)},
		"long origin":     {Token: []byte("a"), Origin: strings.Repeat("o", MaxOriginLen+1)},
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
		"short proof":      {1, 5, fieldHello, 0, fieldProof, 1, 'x'},
		"empty identity":   {1, 4, fieldHello, 0, fieldIdentity, 0},
		"token identity":   {1, 6, fieldToken, 1, 'a', fieldIdentity, 1, 'i'},
		"bind and token":   {1, 6, fieldBind, 1, 'b', fieldToken, 1, 'a'},
		"bind and hello":   {1, 5, fieldBind, 1, 'b', fieldHello, 0},
		"bind twice":       {1, 6, fieldBind, 1, 'b', fieldBind, 1, 'c'},
		"empty bind":       {1, 2, fieldBind, 0},
		"name alone":       {1, 6, fieldToken, 1, 'a', fieldName, 1, 'n'},
		"origin in bind":   {1, 6, fieldBind, 1, 'b', fieldOrigin, 1, 'o'},
		"origin in hello":  {1, 5, fieldHello, 0, fieldOrigin, 1, 'o'},
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
	ok, _ := AppendHeader(nil, Header{Token: []byte("tcp:127.0.0.1:22")})
	f.Add(ok)
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 0xff, 0xff})
	hello, _ := AppendHeader(nil, Header{Hello: true, Identity: "alice", Proof: make([]byte, ProofLen)})
	f.Add(hello)
	bind, _ := AppendHeader(nil, Header{Bind: "tcp:0.0.0.0:2222", Name: "ssh"})
	f.Add(bind)
	rev, _ := AppendHeader(nil, Header{Token: []byte("tcp:0.0.0.0:2222"), Origin: "198.18.0.1:1"})
	f.Add(rev)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ReadHeader(bytes.NewReader(b))
		if err != nil {
			return
		}
		kinds := 0
		for _, k := range []bool{h.Hello, len(h.Token) > 0, h.Bind != ""} {
			if k {
				kinds++
			}
		}
		if kinds != 1 || len(h.Bind) > MaxBindLen || len(h.Name) > MaxNameLen || len(h.Origin) > MaxOriginLen ||
			(h.Name != "" && h.Bind == "") || (h.Origin != "" && len(h.Token) == 0) {
			t.Fatalf("accepted a header of no single kind or out of bounds: %+v", h)
		}
		if len(h.Token) > MaxTokenLen || len(h.Identity) > MaxIdentityLen ||
			(h.Proof != nil && len(h.Proof) != ProofLen) || (!h.Hello && (h.Identity != "" || h.Proof != nil)) {
			t.Fatalf("accepted out-of-bounds header: %+v", h)
		}
		// What decodes must re-encode to something that decodes the same.
		again, err := AppendHeader(nil, h)
		if err != nil {
			t.Fatalf("decoded header does not re-encode: %v", err)
		}
		h2, err := ReadHeader(bytes.NewReader(again))
		if err != nil || !sameHeader(h2, h) {
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

func sameHeader(a, b Header) bool {
	return bytes.Equal(a.Token, b.Token) && a.Hello == b.Hello && a.Identity == b.Identity && bytes.Equal(a.Proof, b.Proof) &&
		a.Bind == b.Bind && a.Name == b.Name && a.Origin == b.Origin
}

// A header that announces more than it sends costs the reader what arrived,
// not what was announced.
func TestAnnouncedLengthIsNotAllocated(t *testing.T) {
	b := []byte{1, 0x7f, 0xff} // 16383 bytes announced, 1 sent
	b = append(b, fieldToken)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	for range 100 {
		_, _ = ReadHeader(bytes.NewReader(b))
	}
	runtime.ReadMemStats(&ms)
	if per := (ms.TotalAlloc - before) / 100; per > 2048 {
		t.Fatalf("a header announcing 16 KiB and sending 1 byte made the reader allocate %d bytes", per)
	}
}

// A legacy header's raw secret (field 0x02) is skipped, never kept.
func TestRetiredSecretFieldIsSkipped(t *testing.T) {
	h, err := ReadHeader(bytes.NewReader([]byte{1, 7, fieldToken, 1, 'a', 0x02, 2, 's', 's'}))
	if err != nil || string(h.Token) != "a" {
		t.Fatalf("got %+v, %v", h, err)
	}
}

type fakeTLS []byte

func (f fakeTLS) export(label string, _ []byte, n int) ([]byte, error) {
	if label != ExporterLabel || n != ExporterLen {
		return nil, errors.New("unexpected exporter input")
	}
	return f, nil
}

func TestProofBindsSecretIdentityAndSession(t *testing.T) {
	session := fakeTLS(bytes.Repeat([]byte{1}, ExporterLen))
	other := fakeTLS(bytes.Repeat([]byte{2}, ExporterLen))
	p, err := Proof([]byte("s3cret"), "alice", session.export)
	if err != nil || len(p) != ProofLen {
		t.Fatalf("proof: %x, %v", p, err)
	}
	if !VerifyProof(p, []byte("s3cret"), "alice", session.export) {
		t.Fatal("the right proof is refused")
	}
	for name, ok := range map[string]bool{
		"other secret":   VerifyProof(p, []byte("s3creT"), "alice", session.export),
		"other identity": VerifyProof(p, []byte("s3cret"), "alicf", session.export),
		"other session":  VerifyProof(p, []byte("s3cret"), "alice", other.export),
		"truncated":      VerifyProof(p[:31], []byte("s3cret"), "alice", session.export),
		"no secret":      VerifyProof(p, nil, "alice", session.export),
	} {
		if ok {
			t.Errorf("%s: accepted", name)
		}
	}
	if bytes.Contains(p, []byte("s3cret")) {
		t.Fatal("the proof carries the secret")
	}
}
