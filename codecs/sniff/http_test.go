package sniff

import (
	"bytes"
	"strings"
	"testing"
)

func httpCases() []sniffCase {
	get := map[string]string{"method": "GET", "host": "app.example", "path": "/a/b", "version": "1.1"}
	return []sniffCase{
		{name: "nothing yet", verdict: Undecided},
		{name: "method in part", client: []byte("GE"), verdict: Undecided},
		{name: "target in part", client: []byte("GET /a/b"), verdict: Undecided},
		{name: "version in part", client: []byte("GET /a/b HTTP/1."), verdict: Undecided},
		{name: "CR without LF yet", client: []byte("GET /a/b HTTP/1.1\r"), verdict: Undecided},
		{name: "request with host", client: []byte("GET /a/b?token=secret HTTP/1.1\r\nUser-Agent: x\r\nhOsT:  app.example \r\n\r\n"),
			verdict: Match, done: true, props: get},
		{name: "host not yet seen", client: []byte("GET /a/b HTTP/1.1\r\nUser-Agent: x\r\n"), verdict: Match,
			props: map[string]string{"method": "GET", "path": "/a/b", "version": "1.1"}},
		{name: "headers end without host", client: []byte("GET /a/b HTTP/1.0\r\nUser-Agent: x\r\n\r\n"), verdict: Match, done: true,
			props: map[string]string{"method": "GET", "path": "/a/b", "version": "1.0"}},
		{name: "bare LF line ends", client: []byte("GET /a/b HTTP/1.1\nHost: app.example\n\n"), verdict: Match, done: true, props: get},
		{name: "absolute form", client: []byte("GET http://user:pw@app.example/a/b#frag HTTP/1.1\r\nHost: other\r\n\r\n"),
			verdict: Match, done: true, props: get},
		{name: "absolute form without path", client: []byte("GET http://app.example HTTP/1.1\r\n"), verdict: Match, done: true,
			props: map[string]string{"method": "GET", "host": "app.example", "path": "/", "version": "1.1"}},
		{name: "connect", client: []byte("CONNECT app.example:443 HTTP/1.1\r\nHost: app.example:443\r\n\r\n"), verdict: Match, done: true,
			props: map[string]string{"method": "CONNECT", "host": "app.example:443", "version": "1.1"}},
		{name: "options asterisk", client: []byte("OPTIONS * HTTP/1.1\r\nHost: app.example\r\n\r\n"), verdict: Match, done: true,
			props: map[string]string{"method": "OPTIONS", "host": "app.example", "path": "*", "version": "1.1"}},
		{name: "http2 prior knowledge", client: []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), verdict: Match, done: true,
			props: map[string]string{"method": "PRI", "path": "*", "version": "2.0"}},
		{name: "webdav method", client: []byte("M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n"), verdict: Match, done: true,
			props: map[string]string{"method": "M-SEARCH", "host": "239.255.255.250:1900", "path": "*", "version": "1.1"}},
		{name: "lower-case method", client: []byte("get / HTTP/1.1\r\n"), verdict: NotMine},
		{name: "response from the client side", client: []byte("HTTP/1.1 200 OK\r\n"), verdict: NotMine},
		{name: "HTTP/0.9", client: []byte("GET /\r\n"), verdict: NotMine},
		{name: "empty target", client: []byte("GET  HTTP/1.1\r\n"), verdict: NotMine},
		{name: "control character in target", client: []byte("GET /\x00 HTTP/1.1\r\n"), verdict: NotMine},
		{name: "bad version", client: []byte("GET / HTTP/x.1\r\n"), verdict: NotMine},
		{name: "junk after version", client: []byte("GET / HTTP/1.1 extra\r\n"), verdict: NotMine},
		{name: "method too long", client: []byte(strings.Repeat("A", httpMaxMethod+1)), verdict: NotMine},
		{name: "request line too long", client: cat([]byte("GET /"), bytes.Repeat([]byte("a"), httpMaxRequestLine)), verdict: NotMine},
		{name: "ssh", client: []byte("SSH-2.0-OpenSSH_9.2p1\r\n"), verdict: NotMine},
		{name: "rfb", client: []byte("RFB 003.008\n"), verdict: NotMine},
		{name: "long path cut", client: []byte("GET /" + strings.Repeat("p", 1000) + " HTTP/1.1\r\n\r\n"), verdict: Match, done: true,
			props: map[string]string{"method": "GET", "path": "/" + strings.Repeat("p", MaxValueLen-1), "version": "1.1"}},
	}
}

func TestHTTPCases(t *testing.T) { runSniffCases(t, HTTP{}, httpCases()) }

// TestHTTPWorkBounded checks that header lines past httpMaxHead are not searched for Host,
// and that the sniffer is done there instead of being asked again up to the capture limit.
func TestHTTPWorkBounded(t *testing.T) {
	head := cat([]byte("GET / HTTP/1.1\r\n"), bytes.Repeat([]byte("X-Pad: 0123456789\r\n"), httpMaxHead/19))
	r := HTTP{}.Sniff(cat(head, []byte("Host: late.example\r\n\r\n")), nil)
	if !r.Done || r.Props["host"] != "" {
		t.Fatalf("done=%v props=%v, want done without a host", r.Done, r.Props)
	}
	r = HTTP{}.Sniff(head[:httpMaxHead-100], nil)
	if r.Done {
		t.Fatalf("done before the bound")
	}
}
