package httpproxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestReadRequest(t *testing.T) {
	for _, c := range []struct {
		name    string
		in      string
		connect bool
		target  string
		head    string // for plain requests
		rest    string // what the returned reader holds after the head
		status  int    // of the error, 0 when it parses
	}{
		{name: "connect", in: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01", connect: true, target: "example.com:443", rest: "\x16\x03\x01"},
		{name: "connect ipv6", in: "CONNECT [2001:db8::1]:22 HTTP/1.1\r\n\r\n", connect: true, target: "[2001:db8::1]:22"},
		{name: "connect without port", in: "CONNECT example.com HTTP/1.1\r\n\r\n", status: 400},
		{name: "connect port 0", in: "CONNECT example.com:0 HTTP/1.1\r\n\r\n", status: 400},
		{name: "connect to a path", in: "CONNECT /:1 HTTP/1.1\r\n\r\n", status: 400},
		{name: "connect to a spaced host", in: "CONNECT a%20b:1 HTTP/1.1\r\n\r\n", status: 400},
		{name: "plain", in: "GET http://intranet:8080/a/b?c=d HTTP/1.1\r\nHost: intranet:8080\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic eDp5\r\nAccept: */*\r\n\r\n",
			target: "intranet:8080", head: "GET /a/b?c=d HTTP/1.1\r\nHost: intranet:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"},
		{name: "plain default port, body", in: "POST http://intranet/x HTTP/1.1\r\nHost: intranet\r\nContent-Length: 5\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\nhello",
			target: "intranet:80", head: "POST /x HTTP/1.1\r\nHost: intranet\r\nContent-Length: 5\r\nConnection: close\r\n\r\n", rest: "hello"},
		{name: "plain chunked", in: "POST http://intranet/x HTTP/1.1\r\nHost: intranet\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			target: "intranet:80", head: "POST /x HTTP/1.1\r\nHost: intranet\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", rest: "5\r\nhello\r\n0\r\n\r\n"},
		{name: "origin form", in: "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "https plain", in: "GET https://a/ HTTP/1.1\r\nHost: a\r\n\r\n", status: 400},
		{name: "garbage", in: "\x05\x01\x00\r\n\r\n", status: 400},
		{name: "huge head", in: "GET http://a/ HTTP/1.1\r\nX: " + strings.Repeat("a", MaxHead) + "\r\n\r\n", status: 431},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, br, err := ReadRequest(strings.NewReader(c.in))
			if c.status != 0 {
				var he *Error
				if !errors.As(err, &he) || he.Status != c.status {
					t.Fatalf("error %v, want status %d", err, c.status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if req.Connect != c.connect || req.Target != c.target || string(req.Head) != c.head {
				t.Fatalf("got connect %v target %q head %q", req.Connect, req.Target, req.Head)
			}
			rest, _ := io.ReadAll(br)
			if string(rest) != c.rest {
				t.Errorf("rest %q, want %q", rest, c.rest)
			}
		})
	}
}

func TestProxyAuthorization(t *testing.T) {
	req, _, err := ReadRequest(strings.NewReader("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic YWxpY2U6czNjOnJldA==\r\n\r\n"))
	if err != nil || !req.HasAuth || req.Username != "alice" || req.Password != "s3c:ret" {
		t.Fatalf("%+v %v", req, err)
	}
	req, _, _ = ReadRequest(strings.NewReader("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Bearer x\r\n\r\n"))
	if req.HasAuth {
		t.Fatal("bearer read as basic")
	}
}

// The head of a plain request is what net/http itself reads as the same
// request, in origin form.
func TestOriginHeadParses(t *testing.T) {
	req, _, err := ReadRequest(strings.NewReader("PUT http://h:81/p HTTP/1.1\r\nHost: h:81\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(append(req.Head, "abc"...))))
	if err != nil || got.Method != "PUT" || got.RequestURI != "/p" || got.Host != "h:81" || got.Header.Get("X-A") != "b" || !got.Close {
		t.Fatalf("%+v %v", got, err)
	}
	body, _ := io.ReadAll(got.Body)
	if string(body) != "abc" {
		t.Fatalf("body %q", body)
	}
}

func TestAppendResponse(t *testing.T) {
	for _, status := range []int{200, 403, 407, 502} {
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(AppendResponse(nil, status, "why"))), nil)
		if err != nil || resp.StatusCode != status {
			t.Fatalf("%d: %v %v", status, resp, err)
		}
		if status == 407 && resp.Header.Get("Proxy-Authenticate") == "" {
			t.Error("407 without a challenge")
		}
	}
}

// FuzzReadRequest: any bytes end in a request or an error, never a panic; a
// request's target has a host and a port, and a plain request's head is one
// that net/http reads back in origin form.
func FuzzReadRequest(f *testing.F) {
	f.Add([]byte("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"))
	f.Add([]byte("GET http://a:8080/x?y HTTP/1.1\r\nHost: a:8080\r\nProxy-Connection: keep-alive\r\n\r\n"))
	f.Add([]byte("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		req, _, err := ReadRequest(bytes.NewReader(in))
		if err != nil {
			return
		}
		if req.Target == "" || strings.ContainsAny(req.Target, " /\\\x00") && req.Connect {
			t.Fatalf("target %q", req.Target)
		}
		if req.Connect {
			return
		}
		back, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(req.Head)))
		if err != nil {
			t.Fatalf("head %q does not parse: %v", req.Head, err)
		}
		if back.URL.IsAbs() || !back.Close {
			t.Fatalf("head %q: not origin form with Connection: close", req.Head)
		}
	})
}
