package e2e

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Per-client identities through the real binaries: alice and bob each prove
// their own secret, /tunnels names who opened what, and SIGHUP after bob's
// line is removed closes bob's session and refuses him, while alice's live
// tunnel carries on untouched. A broken file on SIGHUP is refused whole and
// the running identities stay.
func TestIdentitiesAndRevocationBySIGHUP(t *testing.T) {
	target := echoServer(t)
	udp, api := freePort(t, "udp"), freePort(t, "tcp")
	ids := filepath.Join(t.TempDir(), "identities")
	write := func(text string) {
		if err := os.WriteFile(ids, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	const alice = "alice alice-secret-0123456789 max-tunnels=4\n"
	write(alice + "bob bob-secret-0123456789abc\n")
	srv := start(t, "quictun-server", "--listen-on", udp, "--identities", ids, "--httpd-listen-on", api, "--allow", "127.0.0.0/8:*")
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	client := func(name, secret string) (string, *proc) {
		listen := freePort(t, "tcp")
		p := startEnv(t, []string{"QUICTUN_SECRET=" + secret}, "quictun-client", "--listen-on", "tcp:"+listen,
			"--server-endpoint", udp, "--token-source", "tcp:"+target, "--server-fingerprint", fp, "--identity", name)
		p.waitLog(t, "session established")
		return listen, p
	}
	aliceListen, _ := client("alice", "alice-secret-0123456789")
	bobListen, bob := client("bob", "bob-secret-0123456789abc")

	aliceConn := echoes(t, aliceListen, "alice")
	defer aliceConn.Close()
	bobConn := echoes(t, bobListen, "bob")
	defer bobConn.Close()
	var tunnels []struct{ Identity string }
	getJSON(t, "http://"+api+"/tunnels", &tunnels)
	var names []string
	for _, tun := range tunnels {
		names = append(names, tun.Identity)
	}
	if slices.Sort(names); strings.Join(names, ",") != "alice,bob" {
		t.Fatalf("/tunnels names identities %q, want alice and bob", names)
	}

	// A broken file is refused whole: bob still gets tunnels.
	write(alice + "bob\n")
	srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog(t, `reload refused.*identities:2:`)
	echoes(t, bobListen, "bob after the broken reload").Close()

	// Bob's line removed: his session is closed, his next tunnels refused.
	write(alice)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	srv.waitLog(t, `identities and rules reloaded.*sessions_closed=1`)
	bob.waitLog(t, "refused this client's credentials")
	c, err := net.DialTimeout("tcp", bobListen, 5*time.Second)
	if err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte("x"))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a revoked identity got a tunnel")
		}
		c.Close()
	}
	// Alice's tunnel from before both reloads carries on.
	aliceConn.SetDeadline(time.Now().Add(5 * time.Second))
	aliceConn.Write([]byte("still"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(aliceConn, buf); err != nil || string(buf) != "still" {
		t.Fatalf("alice's live tunnel after the reload: %q, %v", buf, err)
	}
}

// echoes opens a tunnel through listen and checks one echo; the connection
// stays open for the caller.
func echoes(t *testing.T, listen, msg string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(msg))
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
		t.Fatalf("%s: echoed %q, %v", msg, buf, err)
	}
	return c
}
