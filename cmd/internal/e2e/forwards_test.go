package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// greetServer is a server application that says its name, then echoes.
func greetServer(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); c.Write([]byte(name + "\n")); io.Copy(c, c) })
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// greeting dials addr and returns the first line, or the error.
func greeting(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), err
}

func forwardTable(name, listen, target string) string {
	return fmt.Sprintf("[[forward]]\nname = %q\nlisten-on = \"tcp:%s\"\ntoken-source = \"tcp:%s\"\n\n", name, listen, target)
}

// One client process carries forwards from the config file's [[forward]]
// tables and from --forward flags over one session; /tunnels names each
// tunnel's forward. SIGHUP then removes one forward and adds another while a
// transfer on a third runs with every byte checked, and a broken config on
// SIGHUP leaves the running forwards as they were.
func TestManyForwardsAndReload(t *testing.T) {
	a, b, c := greetServer(t, "a"), greetServer(t, "b"), greetServer(t, "c")
	echo := echoServer(t)
	udp, api := freePort(t, "udp"), freePort(t, "tcp")
	la, lb, lc, le := freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp"), freePort(t, "tcp")
	srv := start(t, "quictun-server", "--listen-on", udp)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cfg := filepath.Join(t.TempDir(), "client.toml")
	head := fmt.Sprintf("server-endpoint = %q\nserver-fingerprint = %q\nhttpd-listen-on = %q\n\n", udp, fp, api)
	os.WriteFile(cfg, []byte(head+forwardTable("a", la, a)+forwardTable("b", lb, b)), 0o600)
	cli := start(t, "quictun-client", "--config", cfg, "--forward", "tcp:"+le+"=tcp:"+echo)
	cli.waitLog(t, "quictun-client listening.* forwards=3")

	for addr, want := range map[string]string{la: "a", lb: "b"} {
		if got, err := greeting(addr); got != want {
			t.Fatalf("forward on %s: %q, %v; want %q", addr, got, err, want)
		}
	}

	// A transfer on the --forward forward runs across the reloads.
	data := make([]byte, 16<<20)
	rand.NewChaCha8([32]byte{3}).Read(data)
	tc, err := net.DialTimeout("tcp", le, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	got := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		io.Copy(h, tc)
		got <- [32]byte(h.Sum(nil))
	}()
	tc.Write(data[:len(data)/3])

	// The greetings' tunnels end once both sides have closed: wait for that.
	var tunnels []map[string]any
	for deadline := time.Now().Add(10 * time.Second); ; {
		getJSON(t, "http://"+api+"/tunnels", &tunnels)
		if len(tunnels) <= 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(tunnels) != 1 || tunnels[0]["forward"] != "tcp:"+le {
		t.Fatalf("tunnels: %v", tunnels)
	}
	var sessions struct{ Sessions []any }
	getJSON(t, "http://"+api+"/sessions", &sessions)
	if len(sessions.Sessions) != 1 {
		t.Fatalf("sessions: %v", sessions)
	}

	// A forward added through the API, which the reload leaves alone.
	ld := freePort(t, "tcp")
	resp, err := http.Post("http://"+api+"/forwards", "application/json",
		strings.NewReader(fmt.Sprintf(`{"name": "from-api", "listenOn": "tcp:%s", "tokenSource": "tcp:%s"}`, ld, a)))
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /forwards: %v %v", resp, err)
	}
	resp.Body.Close()

	// Remove a, keep b, add c.
	os.WriteFile(cfg, []byte(head+forwardTable("b", lb, b)+forwardTable("c", lc, c)), 0o600)
	cli.cmd.Process.Signal(syscall.SIGHUP)
	cli.waitLog(t, `msg="forward stopped" forward=a`)
	cli.waitLog(t, `msg=reloaded forwards=4`)
	tc.Write(data[len(data)/3 : 2*len(data)/3])
	if got, err := greeting(lc); got != "c" {
		t.Fatalf("added forward: %q, %v", got, err)
	}
	if got, err := greeting(lb); got != "b" {
		t.Fatalf("kept forward: %q, %v", got, err)
	}
	if _, err := greeting(la); err == nil {
		t.Fatal("removed forward still answers")
	}
	if got, err := greeting(ld); got != "a" {
		t.Fatalf("the API's forward after the reload: %q, %v", got, err)
	}
	var listed []struct{ Name, Origin string }
	getJSON(t, "http://"+api+"/forwards", &listed)
	if fmt.Sprint(listed) != fmt.Sprintf("[{tcp:%s config} {b config} {from-api api} {c config}]", le) {
		t.Errorf("GET /forwards: %v", listed)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+api+"/forwards/from-api", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("DELETE /forwards/from-api: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	if _, err := greeting(ld); err == nil {
		t.Fatal("deleted forward still answers")
	}

	// A broken config is refused whole.
	os.WriteFile(cfg, []byte(head+forwardTable("c", lc, c)+"[[forward]]\nname = \"bad\"\nlisten-on = \"tcp:127.0.0.1:1\"\ntoken-sauce = \"x\"\n"), 0o600)
	cli.cmd.Process.Signal(syscall.SIGHUP)
	cli.waitLog(t, `reload refused.*token-sauce`)
	for addr, want := range map[string]string{lb: "b", lc: "c"} {
		if got, err := greeting(addr); got != want {
			t.Fatalf("after a refused reload, forward on %s: %q, %v; want %q", addr, got, err, want)
		}
	}

	tc.Write(data[2*len(data)/3:])
	tc.(*net.TCPConn).CloseWrite()
	select {
	case sum := <-got:
		if sum != sha256.Sum256(data) {
			t.Fatal("transfer across the reloads: bytes differ")
		}
	case <-time.After(60 * time.Second):
		t.Fatal("transfer did not end")
	}
	if !bytes.Contains([]byte(cli.logText()), []byte(`forward=b`)) {
		t.Error("log lines do not name forwards")
	}
}
