package sniff

// Live tests: real servers and real clients on loopback, talking through the recording
// proxy; the sniffers are checked on the live bytes. Each test skips with a message when
// its programs are not installed. With -record they also write the captures to testdata/
// as the fixtures the table tests use (see testdata/README.md).

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quictun/quictun/internal/livetest"
)

var record = flag.Bool("record", false, "write the live captures to testdata/ as fixtures")

// fixtureTrim bounds what a fixture keeps of each direction: the sniffers decide within
// the first few KiB, and the rest of a display channel's pixels would only bloat the repo.
const fixtureTrim = 16 << 10

// sniffedAll replays every capture and reports the outcome per connection.
func sniffedAll(caps []capture) []replayOutcome {
	out := make([]replayOutcome, len(caps))
	for i, c := range caps {
		out[i] = replay(nil, Default(), c)
	}
	return out
}

// writeFixture stores a capture, trimmed, as testdata/name.cap.
func writeFixture(t *testing.T, name string, c capture) {
	t.Helper()
	var kept capture
	var n [2]int
	for _, ch := range c.chunks {
		dir := 0
		if ch.fromServer {
			dir = 1
		}
		if keep := min(len(ch.data), fixtureTrim-n[dir]); keep > 0 {
			kept.chunks = append(kept.chunks, chunk{fromServer: ch.fromServer, data: ch.data[:keep]})
			n[dir] += keep
		}
	}
	path := filepath.Join("testdata", name+".cap")
	if err := os.WriteFile(path, kept.marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s (%d chunks)", path, len(kept.chunks))
}

const (
	liveVMName = "quictun-sniff-vm"
	liveVMUUID = "5a1e0c2d-7b3f-4e8a-9c61-0d2f4b6a8e13"
)

// TestLiveSPICE runs qemu's SPICE server and a real SPICE viewer under Xvfb through the
// recording proxy, and checks every channel's tunnel is recognised with the session id of
// the main channel, the VM's name and its UUID.
func TestLiveSPICE(t *testing.T) {
	livetest.RequireTools(t, "qemu-system-x86_64", "Xvfb")
	client := livetest.SPICEViewer(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "spice.sock")
	// No guest runs (-S): the SPICE server, its main channel and the qxl display
	// channel work without one, and it keeps the test light.
	livetest.StartProcess(t, nil, "qemu-system-x86_64",
		"-machine", "pc,accel=tcg", "-m", "32", "-nodefaults", "-S", "-display", "none",
		"-vga", "qxl", "-name", liveVMName, "-uuid", liveVMUUID,
		"-spice", "unix=on,addr="+sock+",disable-ticketing=on")
	livetest.WaitForSocket(t, "unix", sock)
	proxy := newRecordingProxy(t, "unix", sock)
	display := livetest.StartXvfb(t)
	livetest.StartProcess(t, livetest.GUIEnv(t, display), client, "spice://"+proxy.addr())

	// The viewer opens the main channel, learns the channel list, then opens the rest.
	var outcomes []replayOutcome
	complete := livetest.WaitFor(60*time.Second, func() bool {
		outcomes = sniffedAll(proxy.captures())
		var mainDone, othersDone int
		for _, o := range outcomes {
			if o.name != "spice" || !o.result.Done {
				return false
			}
			if o.result.Props["channelType"] == "main" {
				mainDone++
			} else {
				othersDone++
			}
		}
		return mainDone == 1 && othersDone >= 2
	})
	caps := proxy.captures()
	proxy.Close()
	if !complete {
		for i, o := range outcomes {
			t.Logf("connection %d: %s %v %v", i, o.name, o.result.Verdict, o.result.Props)
		}
		t.Fatalf("the viewer's channels were not all recognised within the timeout (%d connections)", len(caps))
	}
	outcomes = sniffedAll(caps)
	for i, o := range outcomes {
		t.Logf("connection %d: %s %v", i, o.name, o.result.Props)
	}
	var session string
	for _, o := range outcomes {
		if o.result.Props["channelType"] == "main" {
			session = o.result.Props["sessionId"]
			want := map[string]string{"version": "2.2", "channelType": "main", "channelId": "0",
				"sessionId": session, "serverName": liveVMName, "serverUUID": liveVMUUID}
			checkProps(t, "main channel", o.result.Props, want)
		}
	}
	if len(session) != 8 || session == "00000000" {
		t.Fatalf("main channel sessionId = %q, want the 8 hex digits the server assigned", session)
	}
	seen := map[string]bool{}
	for i, o := range outcomes {
		typ := o.result.Props["channelType"]
		if typ == "main" {
			continue
		}
		if o.result.Props["sessionId"] != session {
			t.Errorf("connection %d (%s): sessionId %q, want the main channel's %q", i, typ, o.result.Props["sessionId"], session)
		}
		if o.result.Props["version"] != "2.2" {
			t.Errorf("connection %d (%s): version %q", i, typ, o.result.Props["version"])
		}
		seen[typ] = true
	}
	if !seen["display"] {
		t.Errorf("no display channel among %v", seen)
	}
	if *record {
		written := map[string]bool{}
		for i, o := range outcomes {
			name := "spice-" + o.result.Props["channelType"]
			if !written[name] {
				writeFixture(t, name, caps[i])
				written[name] = true
			}
		}
	}
}

// TestLiveRFB runs qemu's VNC server and remote-viewer as the VNC client.
func TestLiveRFB(t *testing.T) {
	livetest.RequireTools(t, "qemu-system-x86_64", "Xvfb", "remote-viewer")
	sock := filepath.Join(t.TempDir(), "vnc.sock")
	livetest.StartProcess(t, nil, "qemu-system-x86_64",
		"-machine", "pc,accel=tcg", "-m", "32", "-nodefaults", "-S", "-vga", "std",
		"-display", "none", "-vnc", "unix:"+sock)
	livetest.WaitForSocket(t, "unix", sock)
	proxy := newRecordingProxy(t, "unix", sock)
	livetest.StartProcess(t, livetest.GUIEnv(t, livetest.StartXvfb(t)), "remote-viewer", "vnc://"+proxy.addr())
	o := waitForOutcome(t, proxy, "rfb")
	checkProps(t, "rfb", o.result.Props, map[string]string{"version": "3.8", "clientVersion": "3.8"})
	if *record {
		writeFixture(t, "rfb-qemu-remote-viewer", proxy.captures()[0])
	}
}

// waitForOutcome waits until the proxy's first connection is sniffed as protocol and Done.
func waitForOutcome(t *testing.T, proxy *recordingProxy, protocol string) replayOutcome {
	t.Helper()
	var o replayOutcome
	ok := livetest.WaitFor(30*time.Second, func() bool {
		caps := proxy.captures()
		if len(caps) == 0 {
			return false
		}
		o = replay(nil, Default(), caps[0])
		return o.name == protocol && o.result.Done
	})
	if !ok {
		t.Fatalf("connection not recognised as %s: got %q %v %v", protocol, o.name, o.result.Verdict, o.result.Props)
	}
	return o
}

// TestLiveSSH runs OpenSSH's sshd on loopback and the ssh client against it. The client's
// login fails (no keys), after the version exchange the sniffer needs.
func TestLiveSSH(t *testing.T) {
	livetest.RequireTools(t, "ssh", "ssh-keygen")
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/sshd"); statErr != nil {
			t.Skip("sshd is not installed (package openssh-server)")
		}
		sshd = "/usr/sbin/sshd"
	}
	if os.Geteuid() == 0 {
		// sshd refuses to start as root without its privilege separation directory,
		// which the Debian service would create at boot.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Skipf("cannot create /run/sshd: %v", err)
		}
	}
	dir := t.TempDir()
	hostKey := filepath.Join(dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	port := livetest.FreeLoopbackPort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	livetest.StartProcess(t, nil, sshd, "-D", "-e", "-f", "/dev/null", "-h", hostKey,
		"-o", "ListenAddress="+addr, "-o", "PidFile=none", "-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no")
	livetest.WaitForSocket(t, "tcp", addr)
	proxy := newRecordingProxy(t, "tcp", addr)
	_, proxyPort, _ := net.SplitHostPort(proxy.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-p", proxyPort, "nobody@127.0.0.1", "true")
	out, _ := cmd.CombinedOutput() // the login is meant to fail
	o := waitForOutcome(t, proxy, "ssh")
	// "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL ...": the banner's software part is the
	// first word.
	sshV, _, _ := strings.Cut(strings.TrimSpace(string(mustOutput(t, "ssh", "-V"))), " ")
	want := map[string]string{"clientVersion": sshV, "serverVersion": sshV}
	if !checkProps(t, "ssh", o.result.Props, want) {
		t.Logf("ssh output: %s", out)
	}
	if *record {
		writeFixture(t, "ssh-openssh", proxy.captures()[0])
	}
}

func mustOutput(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, out)
	}
	return out
}

// TestLiveTLS runs curl and openssl s_client against a Go TLS server on loopback.
func TestLiveTLS(t *testing.T) {
	livetest.RequireTools(t, "curl", "openssl")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	target := srv.Listener.Addr().String()

	cases := []struct {
		fixture string
		args    func(proxyPort string) (string, []string)
		want    map[string]string
	}{
		{"tls-curl", func(port string) (string, []string) {
			return "curl", []string{"-sk", "--max-time", "10", "--resolve", "sniff.example:" + port + ":127.0.0.1",
				"https://sniff.example:" + port + "/"}
		}, map[string]string{"sni": "sniff.example", "alpn": "h2,http/1.1", "tlsVersion": "1.3"}},
		{"tls-openssl-1.2", func(port string) (string, []string) {
			return "openssl", []string{"s_client", "-connect", "127.0.0.1:" + port, "-servername", "legacy.example",
				"-alpn", "http/1.1", "-tls1_2"}
		}, map[string]string{"sni": "legacy.example", "alpn": "http/1.1", "tlsVersion": "1.2"}},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			proxy := newRecordingProxy(t, "tcp", target)
			_, port, _ := net.SplitHostPort(proxy.addr())
			name, args := tc.args(port)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, name, args...)
			cmd.Stdin = strings.NewReader("") // s_client quits at EOF on stdin
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", name, err, livetest.LastLines(string(out), 20))
			}
			o := waitForOutcome(t, proxy, "tls")
			checkProps(t, tc.fixture, o.result.Props, tc.want)
			if *record {
				writeFixture(t, tc.fixture, proxy.captures()[0])
			}
			proxy.Close()
		})
	}
}

// TestLiveHTTP runs curl against a Go HTTP server on loopback, directly and as a proxy
// request (absolute-form target).
func TestLiveHTTP(t *testing.T) {
	livetest.RequireTools(t, "curl")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	}))
	defer srv.Close()
	target := srv.Listener.Addr().String()
	cases := []struct {
		fixture string
		args    func(proxyAddr string) []string
		want    map[string]string
	}{
		{"http-curl", func(addr string) []string {
			return []string{"-s", "--max-time", "10", "-H", "Host: app.example", "http://" + addr + "/v1/tunnels?token=secret"}
		}, map[string]string{"method": "GET", "host": "app.example", "path": "/v1/tunnels", "version": "1.1"}},
		{"http-curl-proxy", func(addr string) []string {
			return []string{"-s", "--max-time", "10", "-X", "POST", "-d", "x=1", "-x", "http://" + addr, "http://upstream.example/form"}
		}, map[string]string{"method": "POST", "host": "upstream.example", "path": "/form", "version": "1.1"}},
	}
	for _, tc := range cases {
		t.Run(tc.fixture, func(t *testing.T) {
			proxy := newRecordingProxy(t, "tcp", target)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if out, err := exec.CommandContext(ctx, "curl", tc.args(proxy.addr())...).CombinedOutput(); err != nil {
				t.Fatalf("curl: %v\n%s", err, out)
			}
			o := waitForOutcome(t, proxy, "http")
			checkProps(t, tc.fixture, o.result.Props, tc.want)
			if *record {
				writeFixture(t, tc.fixture, proxy.captures()[0])
			}
			proxy.Close()
		})
	}
}
