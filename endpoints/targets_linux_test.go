package endpoints

import (
	"bytes"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quictun/quictun/codecs/preamble"
	"github.com/quictun/quictun/endpoints/address"
	"github.com/quictun/quictun/endpoints/policy"
)

// ownNetnsEnv marks the copy of the test binary that runs in a network
// namespace of its own.
const ownNetnsEnv = "QUICTUN_TEST_OWN_NETNS"

// inOwnNetns runs the calling test again, alone, in a copy of the test binary
// inside a new network namespace, and returns true there; in the parent it
// waits for the copy, reports its outcome, and returns false. The namespace
// holds only what the test makes (loopback up, and the routes it adds), so
// its dials reach nothing else, and it vanishes with the copy.
func inOwnNetns(t *testing.T) bool {
	t.Helper()
	if os.Getenv(ownNetnsEnv) == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("a network namespace of its own needs root")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), ownNetnsEnv+"="+t.Name())
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name())) {
		t.Fatalf("in its own network namespace: %v\n%s", err, out)
	}
	if testing.Verbose() {
		t.Logf("in its own network namespace:\n%s", out)
	}
	return false
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// bait is a listener where a stranger's token points: a service the server
// must never connect to.
type bait struct {
	ln   net.Listener
	name string
}

func listenBait(t *testing.T, network, addr, name string) *bait {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &bait{ln: ln, name: name}
}

// untouched asserts that nothing but this check ever connected: it connects
// itself and sends a mark, and the first connection in the accept queue must
// be its own. A connection the server made before would be first in line.
func (b *bait) untouched(t *testing.T) {
	t.Helper()
	c, err := net.DialTimeout(b.ln.Addr().Network(), b.ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("m"))
	first, err := b.ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	mark := make([]byte, 1)
	if _, err := io.ReadFull(first, mark); err != nil || mark[0] != 'm' {
		t.Errorf("%s: the server connected to it (%q, %v)", b.name, mark, err)
	}
}

// A stranger's tokens against a server that listens beyond loopback without
// authentication and without rules: the server's REST API on loopback, a
// loopback service, cloud metadata, the docker socket, 0.0.0.0 (which dials
// this host) and a link-local address are each refused with CodeForbidden,
// and none of those services sees a connection; an internal service on a
// private address works. A client that holds the secret of a second server
// is refused the same targets, and also reaches the internal service.
//
// It runs in a network namespace of its own, where 169.254.169.254 and a
// private 10.251.7.0/24 are routed to loopback (local routes, not interface
// addresses), so that the metadata bait is a real listener and the internal
// service a private address that is not one of this host's.
func TestStrangerReachesNoSpecialTarget(t *testing.T) {
	if !inOwnNetns(t) {
		return
	}
	ip(t, "link", "set", "lo", "up")
	ip(t, "route", "add", "local", "169.254.169.254/32", "dev", "lo")
	ip(t, "route", "add", "local", "10.251.7.0/24", "dev", "lo")

	api := listenBait(t, "tcp", "127.0.0.1:0", "the REST API")
	service := listenBait(t, "tcp", "127.0.0.1:0", "a loopback service")
	metadata := listenBait(t, "tcp", "169.254.169.254:0", "cloud metadata")
	everywhere := listenBait(t, "tcp", "0.0.0.0:0", "a service on 0.0.0.0")
	docker := listenBait(t, "unix", filepath.Join(t.TempDir(), "docker.sock"), "the docker socket")
	internal := startApp(t, address.Address{Network: "tcp", Addr: "10.251.7.2:0"}, echo)
	defer internal.close()
	_, everywherePort, _ := net.SplitHostPort(everywhere.ln.Addr().String())
	refusedTokens := []string{
		"tcp:" + api.ln.Addr().String(),
		"tcp:" + service.ln.Addr().String(),
		"tcp:" + metadata.ln.Addr().String(),
		"tcp:169.254.169.254:80",
		"tcp:0.0.0.0:" + everywherePort,
		"tcp:[::]:" + everywherePort,
		"tcp:127.0.0.1:" + everywherePort,
		"tcp:[fe80::1%lo]:80",
		"unix:" + docker.ln.Addr().String(),
	}
	baits := []*bait{api, service, metadata, everywhere, docker}

	t.Run("stranger", func(t *testing.T) {
		srv, stop := startServer(t, pairOptions{serverUDP: "0.0.0.0:0", serverMods: func(c *ServerConfig) {
			c.Listening = []string{api.ln.Addr().String()}
		}})
		defer stop()
		conn := helloedSession(t, loopbackOf(srv), credentials{})
		defer conn.CloseWithError(0, "")
		for _, tok := range refusedTokens {
			if status, err := rawHeader(t, conn, preamble.Header{Token: []byte(tok)}); err != nil || status.Code != preamble.CodeForbidden {
				t.Errorf("%s: %v, %v; want %s", tok, status, err, preamble.CodeForbidden)
			}
		}
		if status, err := rawHeader(t, conn, preamble.Header{Token: []byte(internal.addr.String())}); err != nil || status.Code != preamble.CodeOK {
			t.Errorf("the internal service %s: %v, %v", internal.addr, status, err)
		}
		cli, stopClient := startClient(t, loopbackOf(srv).String(), pairOptions{token: internal.addr.String()})
		defer stopClient()
		roundTrip(t, cli.Addr(), "internal service through a real client")
	})

	t.Run("with secret", func(t *testing.T) {
		secret := func(c *ServerConfig) {
			c.Secret = []byte("open sesame")
			c.Listening = []string{api.ln.Addr().String()}
		}
		srv, stop := startServer(t, pairOptions{serverUDP: "0.0.0.0:0", serverMods: secret})
		defer stop()
		const forbidden = `quictun_tunnel_failures_total{endpoint="server",reason="forbidden target"}`
		for i, tok := range refusedTokens {
			cli, stopClient := startClient(t, loopbackOf(srv).String(), pairOptions{token: tok,
				clientMods: func(c *ClientConfig) { c.Secret = []byte("open sesame") }})
			assertClosedPromptly(t, cli.Addr(), true)
			waitUntil(t, func() bool { return gather(t, srv)[forbidden] == float64(i+1) })
			stopClient()
		}
		cli, stopClient := startClient(t, loopbackOf(srv).String(), pairOptions{token: internal.addr.String(),
			clientMods: func(c *ClientConfig) { c.Secret = []byte("open sesame") }})
		defer stopClient()
		roundTrip(t, cli.Addr(), "internal service with the secret")
	})

	for _, b := range baits {
		b.untouched(t)
	}
}

// A unix:DIR/* rule does not follow a symbolic link in DIR to a socket out of
// it, and refuses a regular file, through real sessions; a socket in DIR
// works.
func TestUnixDirectoryRuleStaysInItsDirectory(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	docker := listenBait(t, "unix", filepath.Join(outside, "docker.sock"), "the docker socket out of the directory")
	app := startApp(t, address.Address{Network: "unix", Addr: filepath.Join(dir, "app.sock")}, echo)
	defer app.close()
	if err := os.Symlink(docker.ln.Addr().String(), filepath.Join(dir, "escape.sock")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	rules, err := policy.Parse([]string{"unix:" + dir + "/*"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, stop := startServer(t, pairOptions{serverUDP: "0.0.0.0:0", serverMods: func(c *ServerConfig) { c.Rules = rules }})
	defer stop()
	conn := helloedSession(t, loopbackOf(srv), credentials{})
	defer conn.CloseWithError(0, "")
	for _, name := range []string{"escape.sock", "file", "../" + filepath.Base(outside) + "/docker.sock"} {
		tok := "unix:" + filepath.Join(dir, name)
		if status, err := rawHeader(t, conn, preamble.Header{Token: []byte(tok)}); err != nil || status.Code != preamble.CodeForbidden {
			t.Errorf("%s: %v, %v; want %s", tok, status, err, preamble.CodeForbidden)
		}
	}
	if status, err := rawHeader(t, conn, preamble.Header{Token: []byte(app.addr.String())}); err != nil || status.Code != preamble.CodeOK {
		t.Errorf("%s in the directory: %v, %v", app.addr, status, err)
	}
	docker.untouched(t)
}

// loopbackOf is the loopback address of a server bound to every address.
func loopbackOf(srv *Server) net.Addr {
	return &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: srv.Addr().(*net.UDPAddr).Port}
}
