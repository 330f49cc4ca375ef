package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quictun/quictun/internal/livetest"
)

// localSSHD runs an sshd on loopback that takes the key it returns; it
// skips when ssh or sshd is missing.
func localSSHD(t *testing.T) (addr, userKey string) {
	t.Helper()
	livetest.RequireTools(t, "ssh", "ssh-keygen")
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
	addr = "127.0.0.1:" + strconv.Itoa(livetest.FreeLoopbackPort(t))
	livetest.StartProcess(t, nil, sshd, "-D", "-e", "-f", "/dev/null", "-h", hostKey,
		"-o", "ListenAddress="+addr, "-o", "PidFile=none", "-o", "PasswordAuthentication=no",
		"-o", "KbdInteractiveAuthentication=no", "-o", "AuthorizedKeysFile="+authorized,
		"-o", "StrictModes=no", "-o", "PermitRootLogin=prohibit-password")
	livetest.WaitForSocket(t, "tcp", addr)
	return addr, userKey
}

// sshLogin runs a command over ssh to addr and says whether it logged in.
func sshLogin(t *testing.T, addr, userKey string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := sshCommand(ctx, addr, userKey, "echo logged in as $(id -un)").CombinedOutput()
	if err == nil && !strings.Contains(string(out), "logged in as "+sshUser()) {
		err = fmt.Errorf("no greeting")
	}
	return string(out), err
}

func sshUser() string {
	if user := os.Getenv("USER"); user != "" {
		return user
	}
	return "root"
}

// sshCommand is ssh to addr with userKey, running command.
func sshCommand(ctx context.Context, addr, userKey, command string) *exec.Cmd {
	host, port, _ := strings.Cut(addr, ":")
	return exec.CommandContext(ctx, "ssh", "-F", "/dev/null", "-i", userKey, "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
		"-p", port, sshUser()+"@"+host, command)
}

// ssh to the server's published port logs into an sshd on the client's
// side; /tunnels on both sides names the reverse forward and its direction.
// /forwards on both sides lists the reverse forward. The client is then
// killed (SIGKILL: the server hears nothing) while that ssh session is open,
// and started again from a config file's [[reverse]] table: it takes the port
// over, and ssh gets through again.
func TestReverseSSHAndRestartedClient(t *testing.T) {
	sshdAddr, userKey := localSSHD(t)
	udp := freePort(t, "udp")
	published := freePort(t, "tcp")
	srvAPI, cliAPI := freePort(t, "tcp"), freePort(t, "tcp")
	secret := "QUICTUN_SECRET=reverse-secret-0123456789"
	srv := startEnv(t, []string{secret}, "quictun-server", "--listen-on", udp, "--allow-bind", published, "--httpd-listen-on", srvAPI)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli := startEnv(t, []string{secret}, "quictun-client", "--server-endpoint", udp, "--server-fingerprint", fp,
		"--reverse", "tcp:"+published+"="+"tcp:"+sshdAddr, "--httpd-listen-on", cliAPI)
	cli.waitLog(t, `msg="reverse forward bound on the server"`)
	if out, err := sshLogin(t, published, userKey); err != nil {
		t.Fatalf("ssh through the reverse forward: %v\n%s", err, out)
	}
	// While an ssh session is open, both APIs show its tunnel.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hold := sshCommand(ctx, published, userKey, "sleep 30")
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	for _, api := range []string{srvAPI, cliAPI} {
		var tunnels []map[string]any
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			getJSON(t, "http://"+api+"/tunnels", &tunnels)
			if len(tunnels) == 1 || time.Now().After(deadline) {
				break
			}
		}
		if len(tunnels) != 1 || tunnels[0]["direction"] != "reverse" || tunnels[0]["forward"] != "tcp:"+published {
			t.Fatalf("%s/tunnels: %v", api, tunnels)
		}
	}
	// /forwards on both sides lists the reverse forward.
	var cliForwards, srvForwards []map[string]any
	getJSON(t, "http://"+cliAPI+"/forwards", &cliForwards)
	getJSON(t, "http://"+srvAPI+"/forwards", &srvForwards)
	if len(cliForwards) != 1 || cliForwards[0]["direction"] != "reverse" || cliForwards[0]["listenOn"] != "tcp:"+published ||
		cliForwards[0]["target"] != "tcp:"+sshdAddr {
		t.Fatalf("client's /forwards: %v", cliForwards)
	}
	if len(srvForwards) != 1 || srvForwards[0]["listenOn"] != published || srvForwards[0]["held"] != true ||
		srvForwards[0]["name"] != "tcp:"+published {
		t.Fatalf("server's /forwards: %v", srvForwards)
	}

	// Killed mid-run: the ssh session is still open.
	cli.cmd.Process.Signal(syscall.SIGKILL)
	<-cli.done
	killed := time.Now()
	conf := filepath.Join(t.TempDir(), "client.toml")
	os.WriteFile(conf, fmt.Appendf(nil, "server-endpoint = %q\nserver-fingerprint = %q\n\n[[reverse]]\nname = \"ssh\"\nlisten-on = %q\ntarget = %q\n",
		udp, fp, "tcp:"+published, "tcp:"+sshdAddr), 0o600)
	again := startEnv(t, []string{secret}, "quictun-client", "--config", conf)
	again.waitLog(t, `msg="reverse forward bound on the server" reverse=ssh`)
	// Taken over by the ping on the old control stream, not the 30 s idle timeout.
	t.Logf("port taken over %v after the kill", time.Since(killed).Round(time.Millisecond))
	for range 3 {
		if out, err := sshLogin(t, published, userKey); err != nil {
			t.Fatalf("ssh after the client's restart: %v\n%s", err, out)
		}
	}
	srv.waitLog(t, `msg="tunnel closed" .*reverse=ssh`)
	cancel()
	hold.Wait()
}

// waitLogCount waits until the log has n lines matching re.
func (p *proc) waitLogCount(t *testing.T, re string, n int, within time.Duration) {
	t.Helper()
	rx := regexp.MustCompile(re)
	for deadline := time.Now().Add(within); len(rx.FindAllString(p.logText(), -1)) < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d log lines matching %q within %v", n, re, within)
		}
	}
}

// The server is killed (SIGKILL: no goodbye) and started again with its
// key: the client learns of it by the stateless reset of its next probe,
// redials, and binds its reverse forward again; connections get through.
func TestReverseServerKilledAndRestarted(t *testing.T) {
	udp := freePort(t, "udp")
	published := freePort(t, "tcp")
	state := t.TempDir()
	secret := "QUICTUN_SECRET=reverse-secret-0123456789"
	args := []string{"--listen-on", udp, "--allow-bind", published, "--state-dir", state}
	srv := startEnv(t, []string{secret}, "quictun-server", args...)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli := startEnv(t, []string{secret}, "quictun-client", "--server-endpoint", udp, "--server-fingerprint", fp,
		"--reverse", "tcp:"+published+"=tcp:"+echoServer(t))
	cli.waitLog(t, `msg="reverse forward bound on the server"`)
	echoThrough(t, published, "first")

	srv.cmd.Process.Signal(syscall.SIGKILL)
	<-srv.done
	killed := time.Now()
	again := startEnv(t, []string{secret}, "quictun-server", args...)
	again.waitLog(t, `msg="reverse forward bound"`)
	cli.waitLogCount(t, `msg="reverse forward bound on the server"`, 2, 30*time.Second)
	t.Logf("bound again %v after the kill", time.Since(killed).Round(time.Millisecond))
	echoThrough(t, published, "again")
}

// echoThrough sends msg to an echo server behind a reverse forward.
func echoThrough(t *testing.T, listen, msg string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", listen, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte(msg))
	b := make([]byte, len(msg))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != msg {
		t.Fatalf("echo through %s: %q, %v", listen, b, err)
	}
}

// A bind that the server's rules do not permit is refused with a clear line
// on both sides, and the port stays closed.
func TestReverseBindRefusedThroughBinaries(t *testing.T) {
	udp := freePort(t, "udp")
	published := freePort(t, "tcp")
	secret := "QUICTUN_SECRET=reverse-secret-0123456789"
	srv := startEnv(t, []string{secret}, "quictun-server", "--listen-on", udp)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	cli := startEnv(t, []string{secret}, "quictun-client", "--server-endpoint", udp, "--server-fingerprint", fp,
		"--reverse", "tcp:"+published+"=tcp:"+echoServer(t))
	cli.waitLog(t, `level=ERROR msg="the server refused the reverse forward" .*status="forbidden target".*does not let this client listen on tcp:`+published)
	srv.waitLog(t, `msg="reverse forward refused" .*status="forbidden target"`)
	if c, err := net.DialTimeout("tcp", published, time.Second); err == nil {
		c.Close()
		t.Fatal("the refused port accepts connections")
	}
}

// SIGHUP applies the [[reverse]] tables: a removed one is withdrawn on the
// server at once, an added one is bound on the running session.
func TestReverseReloadBySIGHUP(t *testing.T) {
	udp := freePort(t, "udp")
	first, second := freePort(t, "tcp"), freePort(t, "tcp")
	secret := "QUICTUN_SECRET=reverse-secret-0123456789"
	srv := startEnv(t, []string{secret}, "quictun-server", "--listen-on", udp, "--allow-bind", first, "--allow-bind", second)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	echo := echoServer(t)
	conf := filepath.Join(t.TempDir(), "client.toml")
	write := func(name, listen string) {
		os.WriteFile(conf, fmt.Appendf(nil, "server-endpoint = %q\nserver-fingerprint = %q\n\n[[reverse]]\nname = %q\nlisten-on = %q\ntarget = %q\n",
			udp, fp, name, "tcp:"+listen, "tcp:"+echo), 0o600)
	}
	write("one", first)
	cli := startEnv(t, []string{secret}, "quictun-client", "--config", conf)
	cli.waitLog(t, `msg="reverse forward bound on the server" reverse=one`)
	write("two", second)
	cli.cmd.Process.Signal(syscall.SIGHUP)
	cli.waitLog(t, `msg="reverse forward bound on the server" reverse=two`)
	srv.waitLog(t, `msg="reverse forward withdrawn by the client"`)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.DialTimeout("tcp", first, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the withdrawn port still accepts connections")
		}
	}
	c, err := net.DialTimeout("tcp", second, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("ping\n"))
	b := make([]byte, 5)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping\n" {
		t.Fatalf("echo through the added reverse forward: %q, %v", b, err)
	}
}
