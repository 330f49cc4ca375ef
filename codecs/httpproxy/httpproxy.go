// Package httpproxy reads what an HTTP client sends its proxy: a CONNECT
// request (RFC 9110 section 9.3.6), after which the connection is a tunnel,
// or a plain request with an absolute URI (RFC 9112 section 3.2.2), which the
// proxy passes on in origin form. The request head is bounded (MaxHead); the
// parsing is net/http's.
package httpproxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// MaxHead bounds a request's line and headers.
const MaxHead = 16 << 10

// Request is what a client asked its proxy for.
type Request struct {
	// Connect is a CONNECT request: after the proxy's 200 the connection
	// carries the client's bytes to Target unchanged.
	Connect bool
	// Target is HOST:PORT, IPv6 in brackets; a plain request's port is 80
	// when the URI gives none.
	Target string
	// Head is a plain request as the origin server is to get it: origin-form
	// request line, the proxy's own headers (Proxy-*, hop-by-hop) left out,
	// "Connection: close" (one request per tunnel). Its body, if any, follows
	// it unchanged from the client. Nil for CONNECT.
	Head []byte
	// Username and Password are from Proxy-Authorization: Basic; HasAuth says
	// whether it came.
	Username, Password string
	HasAuth            bool
}

// Error is a request that a proxy must refuse with Status.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("http proxy: %d %s", e.Status, e.Msg) }

func fail(status int, format string, args ...any) error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// headLimit is a reader that allows MaxHead bytes until lifted: the head is
// parsed under the limit, the body and the tunnel's bytes after it are not.
type headLimit struct {
	r    io.Reader
	left int
	hit  bool
}

func (l *headLimit) Read(p []byte) (int, error) {
	if l.left < 0 {
		return l.r.Read(p)
	}
	if l.left == 0 {
		l.hit = true
		return 0, errHeadTooLarge
	}
	if len(p) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= n
	return n, err
}

var errHeadTooLarge = errors.New("request head too large")

// ReadRequest reads one request from r. It returns the reader to go on
// with: it holds what the client sent after the head (a body, or a TLS
// ClientHello sent right behind a CONNECT), then reads r. Bad requests are
// *Error with the status to answer; a client that went away is another error.
func ReadRequest(r io.Reader) (*Request, *bufio.Reader, error) {
	lim := &headLimit{r: r, left: MaxHead}
	br := bufio.NewReaderSize(lim, 4<<10)
	req, err := http.ReadRequest(br)
	if err != nil {
		switch {
		case lim.hit:
			return nil, nil, fail(http.StatusRequestHeaderFieldsTooLarge, "request head over %d bytes", MaxHead)
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return nil, nil, fmt.Errorf("http proxy: read request: %w", err)
		}
		return nil, nil, fail(http.StatusBadRequest, "malformed request: %v", err)
	}
	lim.left = -1
	out := &Request{}
	out.Username, out.Password, out.HasAuth = basicAuth(req.Header.Get("Proxy-Authorization"))
	if req.Method == http.MethodConnect {
		// net/http keeps CONNECT's authority in URL.Host, or in RequestURI
		// when it has no port.
		host, port, err := net.SplitHostPort(req.RequestURI)
		host = strings.Trim(host, "[]")
		if err != nil || !validHost(host) || !validPort(port) {
			return nil, nil, fail(http.StatusBadRequest, "CONNECT needs HOST:PORT, got %q", req.RequestURI)
		}
		out.Connect, out.Target = true, net.JoinHostPort(host, port)
		return out, br, nil
	}
	if !req.URL.IsAbs() {
		return nil, nil, fail(http.StatusBadRequest, "a proxy request needs an absolute URI (http://HOST/...), got %q", req.RequestURI)
	}
	if req.URL.Scheme != "http" {
		return nil, nil, fail(http.StatusBadRequest, "scheme %q: plain requests are http only; use CONNECT for https", req.URL.Scheme)
	}
	host, port := req.URL.Hostname(), req.URL.Port()
	if port == "" {
		port = "80"
	}
	if !validHost(host) || !validPort(port) {
		return nil, nil, fail(http.StatusBadRequest, "bad host in %q", req.RequestURI)
	}
	out.Target = net.JoinHostPort(host, port)
	out.Head = originHead(req)
	return out, br, nil
}

// validHost takes an IP address or a DNS name (letters, digits, '-', '_',
// '.'), so a target the server gets is one it can resolve, never a path.
func validHost(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	if net.ParseIP(h) != nil {
		return true
	}
	for _, c := range []byte(h) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}

// hopByHop are the headers that concern the proxy, not the origin server
// (RFC 9110 section 7.6.1), and the proxy's credentials.
var hopByHop = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authorization", "Proxy-Authenticate",
	"Te", "Trailer", "Upgrade", "Transfer-Encoding"}

// originHead writes req's head as the origin server is to get it.
func originHead(req *http.Request) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\n", req.Method, req.URL.RequestURI())
	fmt.Fprintf(&b, "Host: %s\r\n", req.Host)
	h := req.Header.Clone()
	for _, v := range h.Values("Connection") { // and the headers Connection names
		for _, name := range strings.Split(v, ",") {
			h.Del(textproto.TrimString(name))
		}
	}
	for _, name := range hopByHop {
		h.Del(name)
	}
	h.Del("Host")
	_ = h.Write(&b)
	// net/http took Transfer-Encoding out of the header; the body still
	// comes chunked.
	if len(req.TransferEncoding) > 0 {
		fmt.Fprintf(&b, "Transfer-Encoding: %s\r\n", strings.Join(req.TransferEncoding, ", "))
	}
	b.WriteString("Connection: close\r\n\r\n")
	return b.Bytes()
}

// basicAuth decodes "Basic BASE64(user:pass)".
func basicAuth(h string) (user, pass string, ok bool) {
	scheme, cred, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Basic") {
		return "", "", false
	}
	dec, err := base64.StdEncoding.DecodeString(strings.TrimSpace(cred))
	if err != nil {
		return "", "", false
	}
	user, pass, ok = strings.Cut(string(dec), ":")
	return user, pass, ok
}

// AppendResponse appends a proxy's answer without a body worth reading: the
// status line, a short text body for errors, and for 407 the challenge.
func AppendResponse(b []byte, status int, msg string) []byte {
	b = fmt.Appendf(b, "HTTP/1.1 %d %s\r\n", status, http.StatusText(status))
	if status == http.StatusOK {
		return append(b, "\r\n"...)
	}
	if status == http.StatusProxyAuthRequired {
		b = append(b, "Proxy-Authenticate: Basic realm=\"quictun\"\r\n"...)
	}
	body := msg + "\n"
	b = fmt.Appendf(b, "Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
	return b
}
