package endpoints

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"

	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/policy"
)

// proxyPair is a server that allows only the targets in allow, and a client
// with a SOCKS5 and an HTTP proxy forward (on TCP or UNIX sockets).
func proxyPair(t *testing.T, allow []string, creds [2]string, unix bool) *pair {
	t.Helper()
	rules, err := policy.Parse(allow, nil)
	if err != nil {
		t.Fatal(err)
	}
	socksAt, httpAt := loopbackTCP(), loopbackTCP()
	if unix {
		dir := t.TempDir()
		socksAt = address.Address{Network: address.Unix, Addr: filepath.Join(dir, "socks.sock")}
		httpAt = address.Address{Network: address.Unix, Addr: filepath.Join(dir, "http.sock")}
	}
	return startPair(t, pairOptions{token: "tcp:127.0.0.1:1",
		serverMods: func(cfg *ServerConfig) { cfg.Rules = rules },
		clientMods: func(cfg *ClientConfig) {
			cfg.Forwards = []ForwardSpec{
				{Name: "socks", ListenOn: socksAt.String(), Proxy: ProxySOCKS5, Username: creds[0], Password: creds[1]},
				{Name: "http", ListenOn: httpAt.String(), Proxy: ProxyHTTP, Username: creds[0], Password: creds[1]},
			}
		}})
}

func socksDial(t *testing.T, at net.Addr, auth *proxy.Auth, target string) (net.Conn, error) {
	t.Helper()
	d, err := proxy.SOCKS5(at.Network(), at.String(), auth, &net.Dialer{Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", target)
}

// Go's own SOCKS5 client reaches allowed targets by IP and by name (resolved
// on the server side), gets "not allowed by ruleset" for a target the
// server's policy refuses, and the refusal leaves the other tunnels alone.
func TestSOCKS5Proxy(t *testing.T) {
	for _, unix := range []bool{false, true} {
		name := "tcp"
		if unix {
			name = "unix"
		}
		t.Run(name, func(t *testing.T) {
			a := startApp(t, address.Address{Network: "tcp", Addr: "127.0.0.1:0"}, greeter("a"))
			defer a.close()
			b := startApp(t, loopbackTCP(), greeter("b"))
			defer b.close()
			p := proxyPair(t, []string{a.addr.Addr}, [2]string{}, unix)
			defer p.stop()
			at := p.client.ForwardAddr("socks")

			held, err := socksDial(t, at, nil, a.addr.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer held.Close()
			readLine(t, held, "a")
			_, port, _ := net.SplitHostPort(a.addr.Addr)
			byName, err := socksDial(t, at, nil, "localhost:"+port)
			if err != nil {
				t.Fatal(err)
			}
			readLine(t, byName, "a")
			byName.Close()

			if _, err := socksDial(t, at, nil, b.addr.Addr); err == nil || !strings.Contains(err.Error(), "not allowed by ruleset") {
				t.Fatalf("forbidden target: %v", err)
			}
			if _, err := socksDial(t, at, nil, "no-such-host.invalid:80"); err == nil {
				t.Fatal("unresolvable name reached")
			}
			held.Write([]byte("ping"))
			buf := make([]byte, 4)
			if _, err := io.ReadFull(held, buf); err != nil || string(buf) != "ping" {
				t.Fatalf("held tunnel after refusals: %q, %v", buf, err)
			}
			// The closed tunnels end once both sides have closed: wait for that.
			deadline := time.Now().Add(10 * time.Second)
			for p.client.Registry().Len() > 1 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if snaps := p.client.Registry().Snapshots(); len(snaps) != 1 || snaps[0].Info.Forward != "socks" || snaps[0].Info.ServerAppAddr != a.addr.Addr {
				t.Fatalf("registry: %+v", snaps)
			}
			// Both refusals: the server's policy refuses a name that resolves
			// to no address too.
			m := gather(t, p.client)
			if k := `quictun_forward_failures_total{endpoint="client",forward="socks",reason="forbidden target"}`; m[k] != 2 {
				t.Errorf("%s = %v", k, m[k])
			}
		})
	}
}

func TestSOCKS5ProxyCredentials(t *testing.T) {
	a := startApp(t, loopbackTCP(), greeter("a"))
	defer a.close()
	p := proxyPair(t, []string{a.addr.Addr}, [2]string{"alice", "s3cret"}, false)
	defer p.stop()
	at := p.client.ForwardAddr("socks")
	c, err := socksDial(t, at, &proxy.Auth{User: "alice", Password: "s3cret"}, a.addr.Addr)
	if err != nil {
		t.Fatal(err)
	}
	readLine(t, c, "a")
	c.Close()
	for _, auth := range []*proxy.Auth{nil, {User: "alice", Password: "guess"}, {User: "bob", Password: "s3cret"}} {
		if c, err := socksDial(t, at, auth, a.addr.Addr); err == nil {
			c.Close()
			t.Errorf("auth %+v accepted", auth)
		}
	}
}

// Go's HTTP client through the HTTP proxy: a plain request and an https one
// (CONNECT) reach servers behind the server endpoint; a target the policy
// refuses is 403 both ways; missing credentials are 407.
func TestHTTPProxy(t *testing.T) {
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "plain "+r.URL.Path+" via "+r.Header.Get("Proxy-Connection")+r.Header.Get("Proxy-Authorization"))
	}))
	defer plain.Close()
	secure := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secure "+r.URL.Path) }))
	defer secure.Close()
	forbidden := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "leaked") }))
	defer forbidden.Close()
	hostport := func(s *httptest.Server) string { u, _ := url.Parse(s.URL); return u.Host }
	p := proxyPair(t, []string{hostport(plain), hostport(secure)}, [2]string{"alice", "s3cret"}, false)
	defer p.stop()

	client := func(user string) *http.Client {
		pu := &url.URL{Scheme: "http", Host: p.client.ForwardAddr("http").String(), User: url.UserPassword(user, "s3cret")}
		tr := &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}
		return &http.Client{Transport: tr, Timeout: 15 * time.Second}
	}
	get := func(c *http.Client, u string) (int, string, error) {
		resp, err := c.Get(u)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	good := client("alice")
	if code, body, err := get(good, plain.URL+"/x"); err != nil || code != 200 || body != "plain /x via " {
		t.Errorf("plain: %d %q %v", code, body, err)
	}
	if code, body, err := get(good, secure.URL+"/y"); err != nil || code != 200 || body != "secure /y" {
		t.Errorf("CONNECT: %d %q %v", code, body, err)
	}
	if code, body, err := get(good, forbidden.URL+"/z"); err != nil || code != http.StatusForbidden || strings.Contains(body, "leaked") {
		t.Errorf("forbidden plain: %d %q %v", code, body, err)
	}
	if code, _, err := get(client("mallory"), plain.URL+"/x"); err != nil || code != http.StatusProxyAuthRequired {
		t.Errorf("wrong user: %d %v", code, err)
	}
	fs := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "leaked") }))
	defer fs.Close()
	if _, _, err := get(good, fs.URL+"/"); err == nil || !strings.Contains(err.Error(), "Forbidden") {
		t.Errorf("forbidden CONNECT: %v", err)
	}
}

func readLine(t *testing.T, c net.Conn, want string) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, len(want)+1)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != want+"\n" {
		t.Fatalf("read %q, %v; want %q", buf, err, want)
	}
	c.SetReadDeadline(time.Time{})
}

// Bad requests get their protocol's error (an HTTP 400; a SOCKS
// connection closed, or the reply for an unsupported command) and leave a
// running tunnel untouched.
func TestBadProxyRequestsLeaveTunnelsAlone(t *testing.T) {
	a := startApp(t, loopbackTCP(), greeter("a"))
	defer a.close()
	p := proxyPair(t, []string{a.addr.Addr}, [2]string{}, false)
	defer p.stop()
	held, err := socksDial(t, p.client.ForwardAddr("socks"), nil, a.addr.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	readLine(t, held, "a")

	exchange := func(at net.Addr, send string) string {
		c := dialApp(t, at)
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		c.Write([]byte(send))
		b, _ := io.ReadAll(c)
		return string(b)
	}
	if got := exchange(p.client.ForwardAddr("http"), "\x05\x01\x00garbage\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400 ") {
		t.Errorf("garbage to the HTTP proxy: %q", got)
	}
	if got := exchange(p.client.ForwardAddr("http"), "GET /relative HTTP/1.1\r\nHost: a\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 400 ") {
		t.Errorf("origin-form request to the HTTP proxy: %q", got)
	}
	if got := exchange(p.client.ForwardAddr("socks"), "GET / HTTP/1.1\r\n\r\n"); got != "" {
		t.Errorf("HTTP to the SOCKS proxy: %q", got)
	}
	if got := exchange(p.client.ForwardAddr("socks"), "\x05\x01\x00\x05\x02\x00\x01\x01\x02\x03\x04\x00\x16"); got != "\x05\x00\x05\x07\x00\x01\x00\x00\x00\x00\x00\x00" {
		t.Errorf("BIND to the SOCKS proxy: %q", got)
	}
	held.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(held, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("held tunnel after bad requests: %q, %v", buf, err)
	}
}

// Removing a proxy forward ends a handshake under way at once, not after
// SessionWait (here a minute).
func TestRemovedProxyEndsHandshakes(t *testing.T) {
	p := startPair(t, pairOptions{token: "tcp:127.0.0.1:1", clientMods: func(cfg *ClientConfig) {
		cfg.Forwards = []ForwardSpec{{Name: "socks", ListenOn: loopbackTCP().String(), Proxy: ProxySOCKS5}}
		cfg.SessionWait = time.Minute
	}})
	defer p.stop()
	c := dialApp(t, p.client.ForwardAddr("socks"))
	defer c.Close()
	c.Write([]byte{5, 1}) // and the method never comes
	if err := p.client.RemoveForward("socks"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadAll(c); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("handshake still waiting after its forward was removed")
	}
}
