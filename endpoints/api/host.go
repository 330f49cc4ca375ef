package api

import (
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/valyala/fasthttp"
)

// A page from any web site can make a browser send requests to the API: to
// 127.0.0.1 directly (the same-origin policy hides the answers and a DELETE
// needs a preflight the API never grants) or, by DNS rebinding, under a name
// of the attacker's that resolves to the API's address, where the answers are
// the page's to read. Without a token nothing else tells such a request from
// an operator's, so the API then serves only requests that name it: by a
// loopback name or address, or by the address or name it listens on. A
// rebinding page can only send its own name. A state-changing request that
// comes with an Origin must come from the API's own origin, token or not.

// hostName is the Host of a request without port, brackets, zone or the
// final dot of a fully qualified name, in lower case (DNS names are not case
// sensitive).
func hostName(hostport string) string {
	h := hostport
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		h = host
	} else if strings.HasPrefix(h, "[") && strings.HasSuffix(h, "]") {
		h = h[1 : len(h)-1]
	}
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// hostAllowed says whether the name a request was sent to is the API's:
// localhost, a loopback address, the address the connection reached, or the
// host the API was told to listen on.
func (s *Server) hostAllowed(ctx *fasthttp.RequestCtx) bool {
	header := string(ctx.Request.Header.Host())
	if !s.nameIsOurs(ctx, hostName(header)) {
		return false
	}
	// An absolute request target ("GET http://name/ HTTP/1.1") names a host
	// of its own, which fasthttp prefers to the header.
	if uri := string(ctx.URI().Host()); uri != "" && !strings.EqualFold(uri, header) {
		return s.nameIsOurs(ctx, hostName(uri))
	}
	return true
}

func (s *Server) nameIsOurs(ctx *fasthttp.RequestCtx, name string) bool {
	if name == "" {
		return false
	}
	if name == "localhost" || (s.listenName != "" && name == s.listenName) {
		return true
	}
	ip, err := netip.ParseAddr(name)
	if err != nil {
		return false
	}
	ip = ip.WithZone("").Unmap()
	if ip.IsLoopback() {
		return true
	}
	if local, ok := netip.AddrFromSlice(ctx.LocalIP()); ok && !ip.IsUnspecified() && local.Unmap() == ip {
		return true
	}
	return false
}

// originAllowed says whether a state-changing request may go on: one without
// an Origin header is not from a browser's cross-site request, one with it
// must come from the origin the request was sent to.
func originAllowed(ctx *fasthttp.RequestCtx) bool {
	if ctx.IsGet() || ctx.IsHead() {
		return true
	}
	origin := string(ctx.Request.Header.Peek("Origin"))
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return false // "null" (sandboxed pages, files) included
	}
	return strings.EqualFold(u.Host, string(ctx.Request.Header.Host()))
}

func isIP(name string) bool {
	_, err := netip.ParseAddr(name)
	return err == nil
}
