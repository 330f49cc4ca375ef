package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "quictun-e2e")
	if err != nil {
		panic(err)
	}
	binDir = dir
	build := exec.Command("go", "build", "-o", dir, "github.com/quictun/quictun/cmd/quictun-server", "github.com/quictun/quictun/cmd/quictun-client")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// proc is a running quictun binary whose log is captured.
type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  bytes.Buffer
	done chan struct{}
}

func start(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	return startEnv(t, nil, name, args...)
}

// startEnv starts a binary with extra environment variables.
func startEnv(t *testing.T, env []string, name string, args ...string) *proc {
	t.Helper()
	return startCmd(t, env, name, exec.Command(filepath.Join(binDir, name), args...))
}

// startCmd starts cmd, one of the binaries (named name in logs) under a
// wrapper such as `ip netns exec`, which execs it: cmd's process is the
// binary's.
func startCmd(t *testing.T, env []string, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, done: make(chan struct{})}
	p.cmd.Env = append(append(os.Environ(), "XDG_CONFIG_HOME="+t.TempDir()), env...)
	stderr, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("%s log:\n%s", name, p.logText())
		}
	})
	return p
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// waitLog waits for a log line matching re and returns its submatches.
func (p *proc) waitLog(t *testing.T, re string) []string {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m := rx.FindStringSubmatch(p.logText()); m != nil {
			return m
		}
		select {
		case <-p.done:
			t.Fatalf("exited before logging %q", re)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no log line matching %q", re)
	return nil
}

// handedOut are the ports freePort gave, never given twice: the kernel hands a
// port just closed out again, and a test's server and client then collided
// (the client's listener on the server's API port).
var handedOut struct {
	sync.Mutex
	ports map[string]bool
}

func freePort(t *testing.T, network string) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[string]bool{}
	}
	for range 100 {
		var addr string
		if network == "udp" {
			c, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr = c.LocalAddr().String()
			c.Close()
		} else {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			addr = l.Addr().String()
			l.Close()
		}
		if _, port, _ := net.SplitHostPort(addr); !handedOut.ports[port] {
			handedOut.ports[port] = true
			return addr
		}
	}
	t.Fatal("no port free that was not handed out before")
	return ""
}

func echoServer(t *testing.T) string {
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
			wg.Go(func() { defer c.Close(); io.Copy(c, c) })
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

func TestVersionAndHelp(t *testing.T) {
	for _, bin := range []string{"quictun-server", "quictun-client"} {
		out, err := exec.Command(filepath.Join(binDir, bin), "--version").CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) == 0 {
			t.Errorf("%s --version: %q, %v", bin, out, err)
		}
		out, err = exec.Command(filepath.Join(binDir, bin), "--help").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "--listen-on") || !strings.Contains(string(out), "--log-format") {
			t.Errorf("%s --help: %v\n%s", bin, err, out)
		}
	}
}

func TestBadConfigFailsWithLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "server.toml")
	os.WriteFile(path, []byte("listen-on = \"127.0.0.1:0\"\ntoken-parser-plugn = \"Cleartext\"\n"), 0o600)
	out, err := exec.Command(filepath.Join(binDir, "quictun-server"), "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "line 2") || !strings.Contains(string(out), "token-parser-plugn") {
		t.Fatalf("got %v:\n%s", err, out)
	}
	os.WriteFile(path, []byte("\n\nlisten-on = \"no-port\"\n"), 0o600)
	out, err = exec.Command(filepath.Join(binDir, "quictun-server"), "--config", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "line 3: listen-on") {
		t.Fatalf("got %v:\n%s", err, out)
	}
	out, err = exec.Command(filepath.Join(binDir, "quictun-client"), "--server-endpoint", "127.0.0.1:1", "--token-source", "x", "--token-source-plugin", "pigeon").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "pigeon") {
		t.Fatalf("unknown plugin: %v:\n%s", err, out)
	}
}

// Bad values in a config file or on the command line end the program at
// start with one clear error naming the key and line (or the flag), not the
// whole help text.
func TestBadValuesAreOneClearError(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("no PEM here\n"), 0o600)
	const client = "server-endpoint = \"127.0.0.1:1\"\ntoken-source = \"tcp:127.0.0.1:22\"\n"
	for _, c := range []struct {
		bin, file string
		args      []string
		want      string
	}{
		{"quictun-server", "listen-on = \"127.0.0.1:0\"\ndial-timeout = 5\n", nil, `line 2: dial-timeout = 5: a duration needs a unit: write dial-timeout = "5s"`},
		{"quictun-server", "max-sessions = 1.5\n", nil, "line 1: max-sessions = 1.5: must be a whole number"},
		{"quictun-server", "\nmax-tunnels = -1\n", nil, "line 2: max-tunnels = -1: must not be negative"},
		{"quictun-server", "max-preamble-size = 20000\n", nil, "line 1: max-preamble-size = 20000: above the hard cap of 16384 bytes"},
		{"quictun-server", "", []string{"--handshake-timeout=-1s"}, "--handshake-timeout = -1s: must not be negative"},
		{"quictun-server", "# mine\ncert-file = \"" + missing + "\"\nkey-file = \"" + missing + "\"\n", nil, "line 2: cert-file: open " + missing},
		{"quictun-server", "verify-remote-endpoint = true\n\nca-file = \"" + junk + "\"\n", nil, "line 3: ca-file: " + junk + " holds no PEM certificate"},
		{"quictun-server", "secret-file = \"" + missing + "\"\n", nil, "line 1: secret-file: stat " + missing},
		{"quictun-server", "allow = [\"10.0.0.0/8:22\"]\ndeny = [\"10.0.0.1\"]\n", nil, `line 2: deny: deny rule \"10.0.0.1\": want HOST-OR-CIDR:PORTS or unix:PATH`},
		{"quictun-server", "", []string{"--allow", "[::ffff:0:0/95]:*"}, `--allow: allow rule \"[::ffff:0:0/95]:*\": ::ffff:0.0.0.0/95: a prefix of mapped IPv4 addresses needs at least 96 bits`},
		{"quictun-client", client + "verify-remote-endpoint = true\n", nil, "line 3: verify-remote-endpoint: needs --ca-file or --server-fingerprint"},
		{"quictun-client", client, []string{"--verify-remote-endpoint", "--insecure-skip-verify"}, "--verify-remote-endpoint: contradicts --insecure-skip-verify"},
		{"quictun-client", client + "server-fingerprint = \"sha256:00\"\n", nil, "line 3: server-fingerprint: "},
		{"quictun-client", client + "known-hosts = \"" + junk + "\"\n", nil, "line 3: known-hosts: known hosts " + junk + " line 1"},
		{"quictun-client", client + "session-wait = 10\n", nil, `line 3: session-wait = 10: a duration needs a unit: write session-wait = "10s"`},
		{"quictun-client", client + "token-source-timeout = \"-1s\"\n", nil, "line 3: token-source-timeout = -1s: must not be negative"},
	} {
		path := filepath.Join(dir, "config.toml")
		os.WriteFile(path, []byte(c.file), 0o600)
		args := append([]string{"--config", path, "--state-dir", filepath.Join(dir, "state")}, c.args...)
		if c.bin == "quictun-client" {
			args = append([]string{"--config", path, "--listen-on", "tcp:127.0.0.1:0"}, c.args...)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, filepath.Join(binDir, c.bin), args...).CombinedOutput()
		cancel()
		text := strings.TrimSpace(string(out))
		want := c.want
		if strings.HasPrefix(want, "line ") {
			want = path + " " + want
		}
		if err == nil || !strings.Contains(text, want) {
			t.Errorf("%s %q %v: got %v:\n%s\nwant %q", c.bin, c.file, c.args, err, text, want)
			continue
		}
		if n := strings.Count(text, "\n") + 1; n > 2 || strings.Contains(text, "Flags:") {
			t.Errorf("%s %q: %d lines of output for one error:\n%s", c.bin, c.file, n, text)
		}
	}
}

// The README's commands, with a config file for the server, then the API and a
// graceful stop.
func TestCommandsAsAUserRunsThem(t *testing.T) {
	target := echoServer(t)
	udp := freePort(t, "udp")
	apiAddr := freePort(t, "tcp")
	listen := freePort(t, "tcp")
	cfg := filepath.Join(t.TempDir(), "server.toml")
	// The flag overrides the file's listen-on.
	os.WriteFile(cfg, []byte(fmt.Sprintf("listen-on = \"127.0.0.1:1\"\nhttpd-listen-on = %q\nlog-level = \"debug\"\n", apiAddr)), 0o600)
	srv := start(t, "quictun-server", "--config", cfg, "--listen-on", udp)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	srv.waitLog(t, `udp=`+regexp.QuoteMeta(udp))

	cli := start(t, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
		"--token-source", "tcp:"+target, "--server-fingerprint", fp, "--verify-remote-endpoint")
	cli.waitLog(t, "quictun-client listening.* verify=pinned-fingerprint")

	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("hello"))
	buf := make([]byte, 5)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo: %q, %v", buf, err)
	}

	var tunnels []map[string]any
	getJSON(t, "http://"+apiAddr+"/tunnels", &tunnels)
	if len(tunnels) != 1 || tunnels[0]["endpoint"] != "server" || tunnels[0]["serverAppAddr"] != target {
		t.Fatalf("tunnels: %v", tunnels)
	}
	var status struct {
		Sessions []struct {
			Remote string  `json:"remoteEndpointAddr"`
			RTT    float64 `json:"smoothedRttMs"`
		} `json:"sessions"`
		Recovery *struct {
			FramedPeers int `json:"framedPeers"`
		} `json:"recovery"`
	}
	getJSON(t, "http://"+apiAddr+"/sessions", &status)
	if len(status.Sessions) != 1 || status.Sessions[0].RTT <= 0 || status.Recovery == nil || status.Recovery.FramedPeers != 1 {
		t.Fatalf("sessions: %+v, recovery %+v", status.Sessions, status.Recovery)
	}
	id := tunnels[0]["uuid"].(string)
	req, _ := http.NewRequest(http.MethodDelete, "http://"+apiAddr+"/tunnels/"+id, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("DELETE: %v %v", resp, err)
	}
	resp.Body.Close()
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("killed tunnel still delivers: %d bytes", n)
	}
	http.DefaultClient.CloseIdleConnections()

	for _, p := range []*proc{cli, srv} {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			t.Fatal("no exit after SIGTERM")
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("exit code %d after SIGTERM", code)
		}
	}
}

// The server never tunnels to its own REST API, even when a rule covers it,
// and says at start what it dials.
func TestServerNeverTunnelsToItsOwnAPI(t *testing.T) {
	target := echoServer(t)
	udp, apiAddr := freePort(t, "udp"), freePort(t, "tcp")
	srv := start(t, "quictun-server", "--listen-on", udp, "--httpd-listen-on", apiAddr, "--allow", "127.0.0.0/8:*")
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	srv.waitLog(t, `msg="target policy" targets="only --allow 127.0.0.0/8:\*; .*never the server's own listeners `+regexp.QuoteMeta(udp+" "+apiAddr))
	for _, c := range []struct {
		token string
		works bool
	}{{"tcp:" + apiAddr, false}, {"tcp:" + target, true}} {
		listen := freePort(t, "tcp")
		cli := start(t, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
			"--token-source", c.token, "--server-fingerprint", fp)
		cli.waitLog(t, "quictun-client listening")
		conn, err := net.DialTimeout("tcp", listen, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		conn.Write([]byte("GET /tunnels HTTP/1.0\r\n\r\n"))
		n, err := io.ReadFull(conn, make([]byte, 5))
		conn.Close()
		if (err == nil) != c.works {
			t.Fatalf("%s: read %d bytes, %v", c.token, n, err)
		}
	}
	srv.waitLog(t, `msg="tunnel refused" .*target=tcp:`+regexp.QuoteMeta(apiAddr)+` status="forbidden target" err=".*this server listens there`)
}

// --token-source-timeout bounds the Http token source: against a service that
// never answers, the application is closed after it, with the reason logged.
func TestTokenSourceTimeoutFlag(t *testing.T) {
	release := make(chan struct{})
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer web.Close()
	defer close(release)
	udp, listen := freePort(t, "udp"), freePort(t, "tcp")
	srv := start(t, "quictun-server", "--listen-on", udp)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli := start(t, "quictun-client", "--listen-on", "tcp:"+listen, "--server-endpoint", udp,
		"--token-source-plugin", "Http", "--token-source", web.URL+"/token", "--token-source-timeout", "300ms",
		"--server-fingerprint", fp)
	cli.waitLog(t, "quictun-client listening")
	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	begin := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read %d, %v: want the application closed", n, err)
	}
	if took := time.Since(begin); took < 250*time.Millisecond || took > 3*time.Second {
		t.Fatalf("closed after %v, want about 300ms", took)
	}
	cli.waitLog(t, `no token.*gave no answer within 300ms`)
}

func getBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// The commented example configs in examples/ load as they are (with the
// addresses overridden to loopback).
func TestExampleConfigsLoad(t *testing.T) {
	srv := start(t, "quictun-server", "--config", "../../../examples/server.toml",
		"--listen-on", freePort(t, "udp"), "--state-dir", t.TempDir())
	srv.waitLog(t, "quictun-server listening.*fec=auto")
	cli := start(t, "quictun-client", "--config", "../../../examples/client.toml",
		"--listen-on", "tcp:"+freePort(t, "tcp"), "--server-endpoint", freePort(t, "udp"),
		"--known-hosts", filepath.Join(t.TempDir(), "kh"))
	cli.waitLog(t, "quictun-client listening.*fec=auto")
}
