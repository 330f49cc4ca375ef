package e2e

import (
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The server process is killed (SIGKILL) in the middle of a transfer and
// started again on the same port: the client's next packets on the old session
// meet a stateless reset from the new process (the reset key is derived from the
// kept key pair), so the live tunnel ends at once (or, if it had nothing in
// flight, at the next keep-alive) instead of hanging until the idle timeout, and
// a new application connection works at the first try.
func TestServerKilledMidTransfer(t *testing.T) {
	target := echoServer(t)
	udp, listen := freePort(t, "udp"), freePort(t, "tcp")
	state := t.TempDir()
	srv := start(t, "quictun-server", "--listen-on", udp, "--state-dir", state)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli := start(t, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
		"--token-source", "tcp:"+target, "--server-fingerprint", fp)
	cli.waitLog(t, "quictun-client listening")

	live, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	// Keep a transfer running: write and read back in a loop.
	stopped := make(chan error, 1)
	go func() {
		buf := make([]byte, 32<<10)
		for {
			rand.Read(buf)
			if _, err := live.Write(buf); err != nil {
				stopped <- err
				return
			}
			if _, err := io.ReadFull(live, buf); err != nil {
				stopped <- err
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	killed := time.Now()
	start(t, "quictun-server", "--listen-on", udp, "--state-dir", state).waitLog(t, "quictun-server listening")

	select {
	case <-stopped:
		t.Logf("live tunnel ended %v after the kill", time.Since(killed).Round(time.Millisecond))
	case <-time.After(12 * time.Second):
		t.Fatal("the live tunnel hung after the server was killed and restarted")
	}
	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	c.Write([]byte("again"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "again" {
		t.Fatalf("after the restart: %q, %v\nclient log:\n%s", buf, err, cli.logText())
	}
}

// The shared secret works end to end and shows up in no log line and no API
// answer, on either side, at debug level.
func TestSecretNeverLeaks(t *testing.T) {
	const secret = "correct-horse-battery-staple"
	target := echoServer(t)
	udp, listen, api := freePort(t, "udp"), freePort(t, "tcp"), freePort(t, "tcp")
	secretFile := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secretFile, []byte(secret+"\n"), 0o600)
	srv := start(t, "quictun-server", "--listen-on", udp, "--secret-file", secretFile,
		"--httpd-listen-on", api, "--log-level", "debug")
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	// The client takes it from the environment, the other way to give it.
	good := startEnv(t, []string{"QUICTUN_SECRET=" + secret}, "quictun-client", "--listen-on", "tcp:"+listen,
		"--server-endpoint", udp, "--token-source", "tcp:"+target, "--server-fingerprint", fp,
		"--httpd-listen-on", freePort(t, "tcp"), "--log-level", "debug")
	good.waitLog(t, "quictun-client listening")
	live, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	live.SetDeadline(time.Now().Add(10 * time.Second))
	live.Write([]byte("ping"))
	if _, err := io.ReadFull(live, make([]byte, 4)); err != nil {
		t.Fatalf("the right secret got no tunnel: %v", err)
	}

	badListen := freePort(t, "tcp")
	bad := start(t, "quictun-client", "--listen-on", "tcp:"+badListen, "--server-endpoint", udp,
		"--token-source", "tcp:"+target, "--server-fingerprint", fp, "--secret", "wrong", "--log-level", "debug")
	bad.waitLog(t, "quictun-client listening")
	// Refused: the connection is reset, sometimes before the dial returns.
	if c, err := net.DialTimeout("tcp", badListen, 5*time.Second); err == nil {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("a wrong secret got a tunnel")
		}
		c.Close()
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatal(err)
	}
	srv.waitLog(t, `session refused: authentication failed.*reason="wrong proof"`)

	body := getBody(t, "http://"+api+"/tunnels")
	if !strings.Contains(body, "serverAppAddr") || strings.Contains(body, secret) {
		t.Errorf("API answer (live tunnel expected, secret not): %s", body)
	}
	for _, p := range []*proc{srv, good, bad} {
		if strings.Contains(p.logText(), secret) {
			t.Errorf("the secret is in a log:\n%s", p.logText())
		}
	}
}
