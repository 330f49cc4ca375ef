package speedtest

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"
)

func TestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{Op: OpPing}, {Op: OpDownload, Duration: 5 * time.Second, Bytes: 1 << 30},
		{Op: OpUpload, Duration: MaxDuration, Bytes: MaxBytes}, {Op: OpReport},
	} {
		got, err := ReadRequest(bytes.NewReader(AppendRequest(nil, r)))
		if err != nil || got != r {
			t.Errorf("%+v: got %+v, %v", r, got, err)
		}
	}
	rep := Report{Bytes: 123456789, Elapsed: 4500 * time.Millisecond, PacketsSent: 99999, PacketsLost: 42}
	b := AppendReport(nil, rep)
	got, err := ReadReport(bytes.NewReader(append(b, "after"...)))
	if err != nil || got != rep {
		t.Fatalf("report: %+v, %v", got, err)
	}
}

func TestBadFramesAreMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"unknown op":         {'x', 0, 0},
		"truncated duration": {'d'},
		"truncated bytes":    {'d', 0},
		"too long":           AppendRequest(nil, Request{Op: OpDownload, Duration: MaxDuration + time.Second}),
		"too many bytes":     AppendRequest(nil, Request{Op: OpDownload, Bytes: MaxBytes + 1}),
	} {
		if _, err := ReadRequest(bytes.NewReader(b)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	for name, b := range map[string][]byte{
		"oversized":     {0x21},
		"short body":    {4, 1, 2},
		"missing field": {3, 1, 2, 3},
		"trailing":      {5, 1, 2, 3, 4, 5},
		"elapsed":       append([]byte{11, 0, 0xc0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, 0, 0),
	} {
		if _, err := ReadReport(bytes.NewReader(b)); !errors.Is(err, ErrMalformed) {
			t.Errorf("report %s: %v, want ErrMalformed", name, err)
		}
	}
	if _, err := ReadRequest(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("empty: %v, want EOF", err)
	}
}

func FuzzReadRequest(f *testing.F) {
	f.Add(AppendRequest(nil, Request{Op: OpUpload, Duration: time.Second, Bytes: 1 << 20}))
	f.Add(AppendReport(nil, Report{Bytes: 1, Elapsed: time.Second, PacketsSent: 3, PacketsLost: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if r, err := ReadRequest(bytes.NewReader(b)); err == nil {
			if again, err := ReadRequest(bytes.NewReader(AppendRequest(nil, r))); err != nil || again != r {
				t.Fatalf("%+v does not round-trip: %+v %v", r, again, err)
			}
		}
		if r, err := ReadReport(bytes.NewReader(b)); err == nil {
			if again, err := ReadReport(bytes.NewReader(AppendReport(nil, r))); err != nil || again != r {
				t.Fatalf("%+v does not round-trip: %+v %v", r, again, err)
			}
		}
	})
}
