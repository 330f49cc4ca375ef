package sniff

import "bytes"

// HTTP recognises HTTP/1.x by the client's request line (RFC 9112 section 3) and reads the
// Host header. The method must be upper-case letters, '-' or '_' (every registered method
// is), which turns binary and banner protocols down at their first odd byte. A request for
// HTTP/2 with prior knowledge ("PRI * HTTP/2.0") has the same shape and is reported with
// version "2.0".
//
// Properties: method, path (the request target without its query, which often carries
// secrets; "*" for OPTIONS *), version ("1.1"), and host: from the Host header, or from
// the target itself for the absolute form (proxy requests) and the authority form
// (CONNECT), where RFC 9112 section 3.2 puts it.
type HTTP struct{}

// Name implements Sniffer.
func (HTTP) Name() string { return "http" }

const (
	httpMaxMethod      = 24
	httpMaxRequestLine = 16 << 10 // past this servers answer 414 anyway
	// httpMaxHead bounds how far into the request we look for Host: the request line and
	// the header lines that end within it.
	httpMaxHead       = 16 << 10
	httpVersionPrefix = "HTTP/"
)

// Sniff implements Sniffer.
func (HTTP) Sniff(fromClient, fromServer []byte) Result {
	var p props
	c := fromClient
	m := 0
	for m < len(c) && m <= httpMaxMethod && isMethodByte(c[m]) {
		m++
	}
	switch {
	case m == len(c) && m <= httpMaxMethod:
		return p.result(Undecided, false)
	case m == 0 || m > httpMaxMethod || c[m] != ' ':
		return p.result(NotMine, false)
	}
	method := c[:m]
	rest := c[m+1:]
	t := 0
	for t < len(rest) && rest[t] != ' ' {
		if rest[t] < 0x20 || rest[t] == 0x7f {
			return p.result(NotMine, false)
		}
		if t++; m+1+t > httpMaxRequestLine {
			return p.result(NotMine, false)
		}
	}
	if t == len(rest) {
		return p.result(Undecided, false)
	}
	if t == 0 {
		return p.result(NotMine, false)
	}
	target := rest[:t]
	v := rest[t+1:]
	// "HTTP/" DIGIT "." DIGIT, then CR LF (a bare LF is tolerated, as servers do).
	const versionLen = len(httpVersionPrefix) + 3
	if !hasPrefixPart(v, httpVersionPrefix) {
		return p.result(NotMine, false)
	}
	for i := len(httpVersionPrefix); i < min(len(v), versionLen); i++ {
		if ok := i == len(httpVersionPrefix)+1 && v[i] == '.' || i != len(httpVersionPrefix)+1 && isDigit(v[i]); !ok {
			return p.result(NotMine, false)
		}
	}
	eol := v[min(len(v), versionLen):]
	switch {
	case len(eol) == 0, len(eol) == 1 && eol[0] == '\r':
		return p.result(Undecided, false)
	case eol[0] == '\n', eol[0] == '\r' && eol[1] == '\n':
	default:
		return p.result(NotMine, false)
	}
	p.set("method", method)
	p.set("version", v[len(httpVersionPrefix):versionLen])

	headers := eol[bytes.IndexByte(eol, '\n')+1:]
	headEnd := len(c) - len(headers) // where the header lines start in c
	truncated := len(c) >= httpMaxHead
	headers = headers[:max(0, min(len(headers), httpMaxHead-headEnd))]
	switch {
	case string(method) == "CONNECT":
		p.set("host", target)
		return p.result(Match, true)
	case target[0] == '/' || string(target) == "*":
		p.set("path", cutQuery(target))
	default:
		if host, path, ok := splitAbsoluteTarget(target); ok {
			p.set("host", host)
			p.set("path", cutQuery(path))
			return p.result(Match, true)
		}
		p.set("path", cutQuery(target))
	}
	host, done := findHostHeader(headers)
	p.set("host", host)
	return p.result(Match, done || truncated)
}

func isMethodByte(b byte) bool { return b >= 'A' && b <= 'Z' || b == '-' || b == '_' }

func isDigit(b byte) bool { return b >= '0' && b <= '9' }

func cutQuery(target []byte) []byte {
	if q := bytes.IndexAny(target, "?#"); q >= 0 {
		return target[:q]
	}
	return target
}

// splitAbsoluteTarget splits "scheme://authority/path" into the authority (without any
// userinfo) and the path ("/" when absent).
func splitAbsoluteTarget(target []byte) (host, path []byte, ok bool) {
	i := bytes.Index(target, []byte("://"))
	if i <= 0 {
		return nil, nil, false
	}
	rest := target[i+3:]
	end := bytes.IndexAny(rest, "/?#")
	if end < 0 {
		end = len(rest)
	}
	host, path = rest[:end], rest[end:]
	if at := bytes.LastIndexByte(host, '@'); at >= 0 {
		host = host[at+1:]
	}
	if len(path) == 0 || path[0] != '/' {
		path = []byte("/")
	}
	return host, path, true
}

// findHostHeader scans header lines for Host. done is true once Host is found or the
// header block has ended without one.
func findHostHeader(h []byte) (host []byte, done bool) {
	for {
		nl := bytes.IndexByte(h, '\n')
		if nl < 0 {
			return nil, false
		}
		line := bytes.TrimSuffix(h[:nl], []byte("\r"))
		h = h[nl+1:]
		if len(line) == 0 {
			return nil, true
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if ok && bytes.EqualFold(name, []byte("host")) {
			return bytes.Trim(value, " \t"), true
		}
	}
}
