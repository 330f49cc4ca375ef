package packaging

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The .deb is installed on this machine, used and purged again: it needs root, and
// runs only when QUICTUN_DEB_TEST=1 (scripts/test.sh sets it). Whatever it installs
// it removes, also when it fails; the quictun system user goes too if it made it.
func TestDebianPackage(t *testing.T) {
	dist := distDir(t)
	if os.Getenv("QUICTUN_DEB_TEST") != "1" {
		t.Skip("QUICTUN_DEB_TEST is not 1: this test installs the package on this machine (scripts/test.sh runs it)")
	}
	if os.Geteuid() != 0 {
		t.Skip("dpkg -i needs root")
	}
	debs, _ := filepath.Glob(filepath.Join(dist, "quictun_*_amd64.deb"))
	if len(debs) != 1 {
		t.Fatalf("want one amd64 .deb in %s, found %v", dist, debs)
	}
	if installed(t) {
		t.Log("a quictun package is installed (an earlier run that died?): purging it first")
		run(t, "dpkg", "--purge", "quictun")
	}
	_, err := user.Lookup("quictun")
	userExisted := err == nil
	t.Cleanup(func() {
		if installed(t) {
			exec.Command("dpkg", "--purge", "quictun").Run()
		}
		os.RemoveAll("/etc/quictun")
		if !userExisted {
			exec.Command("userdel", "quictun").Run()
		}
	})

	run(t, "dpkg", "-i", debs[0])
	files := run(t, "dpkg", "-L", "quictun")
	for _, want := range []string{"/usr/bin/quictun-server", "/usr/bin/quictun-client",
		"/usr/lib/systemd/system/quictun-server.service", "/usr/lib/systemd/system/quictun-client@.service",
		"/usr/lib/sysctl.d/90-quictun.conf", "/usr/lib/sysusers.d/quictun.conf",
		"/usr/share/doc/quictun/examples/server.toml", "/usr/share/doc/quictun/copyright"} {
		if !strings.Contains(files, want+"\n") {
			t.Errorf("the package does not install %s", want)
		}
	}
	if _, err := user.Lookup("quictun"); err != nil {
		t.Fatalf("postinst made no quictun user: %v", err)
	}
	if b, err := os.ReadFile("/proc/sys/net/core/rmem_max"); err == nil {
		if n, _ := strconv.Atoi(strings.TrimSpace(string(b))); n < 7500000 {
			t.Errorf("net.core.rmem_max is %d after install, want at least 7500000 (90-quictun.conf)", n)
		}
	}

	t.Run("systemd-analyze verify", func(t *testing.T) { verifyUnits(t) })
	t.Run("tunnel as the units run it", func(t *testing.T) { tunnelAsUnits(t) })

	run(t, "dpkg", "-r", "quictun")
	for _, gone := range []string{"/usr/bin/quictun-server", "/usr/bin/quictun-client", "/usr/lib/systemd/system/quictun-server.service"} {
		if _, err := os.Stat(gone); err == nil {
			t.Errorf("dpkg -r left %s", gone)
		}
	}
	run(t, "dpkg", "--purge", "quictun")
	if installed(t) {
		t.Error("dpkg --purge left the package known to dpkg")
	}
	if _, err := os.Stat("/var/lib/quictun"); err == nil {
		t.Error("purge left /var/lib/quictun (the key pair and known_hosts)")
	}
}

// verifyUnits has systemd-analyze check both units, the template as an instance, and
// logs its exposure score for each.
func verifyUnits(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("no systemd-analyze (apt-get install systemd; scripts/test.sh does)")
	}
	dir := t.TempDir()
	units := map[string]string{
		"quictun-server.service":      "/usr/lib/systemd/system/quictun-server.service",
		"quictun-client@demo.service": "/usr/lib/systemd/system/quictun-client@.service",
	}
	for name, src := range units {
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		// A template is verified as one of its instances.
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
		out, err = exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", path).CombinedOutput()
		if err != nil {
			t.Errorf("systemd-analyze security %s: %v\n%s", name, err, out)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		t.Logf("%s: %s", name, lines[len(lines)-1])
	}
}

// unitCommand reads how a unit starts its program: ExecStart, User and Environment,
// with %S (the state root) and %i (the instance) filled in.
func unitCommand(t *testing.T, path, instance string) (argv, env []string, userName string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	expand := strings.NewReplacer("%S", "/var/lib", "%i", instance).Replace
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, value, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(key, "#") {
			continue
		}
		switch key {
		case "ExecStart":
			argv = strings.Fields(expand(value))
		case "Environment":
			env = append(env, expand(value))
		case "User":
			userName = value
		}
	}
	if len(argv) == 0 || userName == "" {
		t.Fatalf("%s: no ExecStart or User", path)
	}
	return argv, env, userName
}

// tunnelAsUnits starts the installed programs the way their units do (as the quictun
// user, with the units' command lines and environment, in the state directory systemd
// would make) and carries a checksummed transfer through them.
func tunnelAsUnits(t *testing.T) {
	echo := startEcho(t)
	udpPort, tcpPort := freePort(t, "udp"), freePort(t, "tcp")
	if err := os.MkdirAll("/etc/quictun", 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, "/etc/quictun/server.toml", fmt.Sprintf("listen-on = \"127.0.0.1:%d\"\nallow = [\"%s\"]\n", udpPort, echo))
	writeFile(t, "/etc/quictun/client-demo.toml", fmt.Sprintf("listen-on = \"tcp:127.0.0.1:%d\"\nserver-endpoint = \"127.0.0.1:%d\"\ntoken-source = \"tcp:%s\"\n", tcpPort, udpPort, echo))
	// What StateDirectory=quictun and StateDirectoryMode=0700 make.
	u, err := user.Lookup("quictun")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.MkdirAll("/var/lib/quictun", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown("/var/lib/quictun", uid, gid); err != nil {
		t.Fatal(err)
	}

	start := func(unit, instance string) *exec.Cmd {
		argv, env, userName := unitCommand(t, "/usr/lib/systemd/system/"+unit, instance)
		if userName != "quictun" {
			t.Fatalf("%s runs as %s, want quictun", unit, userName)
		}
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=/nonexistent"}, env...)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
		var log bytes.Buffer
		cmd.Stdout, cmd.Stderr = &log, &log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			if t.Failed() {
				t.Logf("%s said:\n%s", unit, log.String())
			}
		})
		return cmd
	}
	server := start("quictun-server.service", "")
	client := start("quictun-client@.service", "demo")

	conn := dialWithin(t, fmt.Sprintf("127.0.0.1:%d", tcpPort), 20*time.Second)
	defer conn.Close()
	payload := make([]byte, 4<<20)
	rand.Read(payload)
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	got, err := io.ReadAll(conn)
	if werr := <-errc; werr != nil {
		t.Fatalf("write: %v", werr)
	}
	if err != nil || sha256.Sum256(got) != sha256.Sum256(payload) {
		t.Fatalf("echo through the tunnel: %d of %d bytes back, %v", len(got), len(payload), err)
	}
	for _, f := range []string{"/var/lib/quictun/server.crt", "/var/lib/quictun/server.key", "/var/lib/quictun/known_hosts"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Errorf("the state directory has no %s: %v", filepath.Base(f), err)
			continue
		}
		if st.Sys().(*syscall.Stat_t).Uid != uint32(uid) {
			t.Errorf("%s is not owned by the quictun user", f)
		}
	}
	// Stopping is what systemctl stop does: SIGTERM, and a clean exit after the drain.
	for _, c := range []*exec.Cmd{client, server} {
		c.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s after SIGTERM: %v", c.Path, err)
			}
		case <-time.After(30 * time.Second): // the units' TimeoutStopSec
			c.Process.Kill()
			<-done
			t.Errorf("%s did not stop within 30 s of SIGTERM", c.Path)
		}
	}
}

func installed(t *testing.T) bool {
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "quictun").Output()
	return strings.Contains(string(out), "installed") && !strings.Contains(string(out), "not-installed")
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startEcho serves TCP echo on loopback until the test ends; returns its address.
func startEcho(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t *testing.T, network string) int {
	t.Helper()
	if network == "udp" {
		c, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// dialWithin dials until something listens there or the time is up.
func dialWithin(t *testing.T, addr string, limit time.Duration) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c
		}
		if ctx.Err() != nil || !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("dial %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
