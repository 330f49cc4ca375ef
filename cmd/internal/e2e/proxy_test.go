package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/quictun/quictun/internal/livetest"
)

// proxyClient runs a server that denies the targets in deny and a client
// with a SOCKS5 and an HTTP proxy; it returns the proxies' addresses.
func proxyClient(t *testing.T, deny []string, extra ...string) (socksAt, httpAt string, cli *proc) {
	t.Helper()
	udp := freePort(t, "udp")
	args := []string{"--listen-on", udp}
	for _, d := range deny {
		args = append(args, "--deny", d)
	}
	srv := start(t, "quictun-server", args...)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	socksAt, httpAt = freePort(t, "tcp"), freePort(t, "tcp")
	cli = start(t, "quictun-client", append([]string{"--server-endpoint", udp, "--server-fingerprint", fp,
		"--socks-listen-on", "tcp:" + socksAt, "--http-proxy-listen-on", "tcp:" + httpAt}, extra...)...)
	cli.waitLog(t, `msg="forward accepting" forward=http-proxy`)
	return socksAt, httpAt, cli
}

// curl runs curl with args and returns its output and exit status.
func curl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", append([]string{"-sS", "--max-time", "20"}, args...)...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// curl through both proxies, as users run it: --socks5-hostname (the name
// resolved on the server side), -x with a plain request and with
// --proxytunnel (CONNECT). A target the server's policy denies is refused as
// each protocol says: SOCKS reply 2, HTTP 403, and the page never leaks.
func TestProxiesWithCurl(t *testing.T) {
	livetest.RequireTools(t, "curl")
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "page %s for %s", r.URL.Path, r.Host)
	}))
	defer web.Close()
	secret := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "leaked") }))
	defer secret.Close()
	webPort := strings.TrimPrefix(web.URL, "http://127.0.0.1:")
	secretAddr := strings.TrimPrefix(secret.URL, "http://")
	socksAt, httpAt, cli := proxyClient(t, []string{secretAddr})

	if out, code := curl(t, "--socks5-hostname", socksAt, "http://localhost:"+webPort+"/s"); code != 0 || out != "page /s for localhost:"+webPort {
		t.Errorf("curl --socks5-hostname: %d %q", code, out)
	}
	if out, code := curl(t, "--socks5", socksAt, web.URL+"/ip"); code != 0 || !strings.HasPrefix(out, "page /ip") {
		t.Errorf("curl --socks5: %d %q", code, out)
	}
	if out, code := curl(t, "-x", "http://"+httpAt, web.URL+"/plain"); code != 0 || out != "page /plain for 127.0.0.1:"+webPort {
		t.Errorf("curl -x plain: %d %q", code, out)
	}
	if out, code := curl(t, "-x", "http://"+httpAt, "--proxytunnel", web.URL+"/tunnel"); code != 0 || out != "page /tunnel for 127.0.0.1:"+webPort {
		t.Errorf("curl -x --proxytunnel: %d %q", code, out)
	}

	// Refusals. curl 7.88 reports a SOCKS reply code as "(2)" in its error.
	if out, code := curl(t, "--socks5-hostname", socksAt, secret.URL+"/"); code == 0 || strings.Contains(out, "leaked") || !strings.Contains(out, "(2)") {
		t.Errorf("denied through SOCKS: %d %q", code, out)
	}
	if out, code := curl(t, "-x", "http://"+httpAt, "-o", "/dev/null", "-w", "%{http_code}", secret.URL+"/"); code != 0 || out != "403" {
		t.Errorf("denied plain: %d %q", code, out)
	}
	if out, code := curl(t, "-x", "http://"+httpAt, "--proxytunnel", "-o", "/dev/null", "-w", "%{http_connect}", secret.URL+"/"); code == 0 || !strings.Contains(out, "response 403") {
		t.Errorf("denied CONNECT: %d %q", code, out)
	}
	cli.waitLog(t, `tunnel refused" forward=socks .*forbidden target`)
	cli.waitLog(t, `tunnel refused" forward=http-proxy .*forbidden target`)
}

// The proxies ask for credentials when given them: curl with the right ones
// gets through, without or with wrong ones it is refused (SOCKS method or
// auth failure, HTTP 407).
func TestProxyCredentialsWithCurl(t *testing.T) {
	livetest.RequireTools(t, "curl")
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer web.Close()
	socksAt, httpAt, _ := proxyClient(t, nil, "--proxy-username", "alice", "--proxy-password", "s3cret")
	if out, code := curl(t, "--socks5-hostname", socksAt, "--proxy-user", "alice:s3cret", web.URL); code != 0 || out != "ok" {
		t.Errorf("socks with credentials: %d %q", code, out)
	}
	if out, code := curl(t, "--socks5-hostname", socksAt, "--proxy-user", "alice:guess", web.URL); code == 0 || out == "ok" {
		t.Errorf("socks with a wrong password: %d %q", code, out)
	}
	if out, code := curl(t, "--socks5-hostname", socksAt, web.URL); code == 0 || out == "ok" {
		t.Errorf("socks without credentials: %d %q", code, out)
	}
	if out, code := curl(t, "-x", "http://alice:s3cret@"+httpAt, web.URL); code != 0 || out != "ok" {
		t.Errorf("http with credentials: %d %q", code, out)
	}
	if out, code := curl(t, "-x", "http://"+httpAt, "-o", "/dev/null", "-w", "%{http_code}", web.URL); out != "407" {
		t.Errorf("http without credentials: %d %q", code, out)
	}
}

// ssh logs into a local sshd through the SOCKS5 proxy with OpenBSD netcat as
// its ProxyCommand, as users set it up.
func TestSSHThroughSOCKSWithNetcat(t *testing.T) {
	livetest.RequireTools(t, "ssh", "ssh-keygen", "nc")
	if out, _ := exec.Command("nc", "-h").CombinedOutput(); !strings.Contains(string(out), "OpenBSD") {
		t.Skip("nc is not OpenBSD netcat (package netcat-openbsd)")
	}
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		if _, statErr := os.Stat("/usr/sbin/sshd"); statErr != nil {
			t.Skip("sshd is not installed (package openssh-server)")
		}
		sshd = "/usr/sbin/sshd"
	}
	if os.Geteuid() == 0 {
		// sshd refuses to start as root without its privilege separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Skipf("cannot create /run/sshd: %v", err)
		}
	}
	dir := t.TempDir()
	hostKey, userKey := filepath.Join(dir, "host"), filepath.Join(dir, "user")
	for _, k := range []string{hostKey, userKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, _ := os.ReadFile(userKey + ".pub")
	authorized := filepath.Join(dir, "authorized_keys")
	os.WriteFile(authorized, pub, 0o600)
	port := livetest.FreeLoopbackPort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	livetest.StartProcess(t, nil, sshd, "-D", "-e", "-f", "/dev/null", "-h", hostKey,
		"-o", "ListenAddress="+addr, "-o", "PidFile=none", "-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no", "-o", "AuthorizedKeysFile="+authorized,
		"-o", "StrictModes=no", "-o", "PermitRootLogin=prohibit-password")
	livetest.WaitForSocket(t, "tcp", addr)

	socksAt, _, cli := proxyClient(t, nil)
	user := os.Getenv("USER")
	if user == "" {
		user = "root"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-i", userKey, "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
		"-o", "ProxyCommand=nc -X 5 -x "+socksAt+" %h %p", "-p", strconv.Itoa(port), user+"@127.0.0.1",
		"echo logged in as $(id -un)").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "logged in as "+user) {
		t.Fatalf("ssh through the proxy: %v\n%s", err, out)
	}
	cli.waitLog(t, `msg="tunnel closed" forward=socks .*target=127.0.0.1:`+strconv.Itoa(port))
}

// Headless Chromium loads a page served behind the server endpoint through
// the SOCKS5 proxy (loopback is not bypassed, so the proxy is really used).
func TestChromiumThroughSOCKS(t *testing.T) {
	livetest.RequireTools(t, "chromium")
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "<html><body><p id=x>through quictun</p></body></html>")
	}))
	defer web.Close()
	socksAt, _, cli := proxyClient(t, nil)
	u, _ := url.Parse(web.URL)
	_, port, _ := net.SplitHostPort(u.Host)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--user-data-dir="+t.TempDir(), "--proxy-server=socks5://"+socksAt, "--proxy-bypass-list=<-loopback>",
		"--dump-dom", "http://localhost:"+port+"/")
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), "through quictun") {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	cli.waitLog(t, `forward=socks .*target=localhost:`+port)
}
