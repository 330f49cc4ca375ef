//go:build linux

package main

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// buildCLI builds this command into a folder anyone may read.
func buildCLI(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "quictun-bench-cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "quictun-bench")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func TestCLI(t *testing.T) {
	bin := buildCLI(t)

	t.Run("list", func(t *testing.T) {
		out, err := exec.Command(bin, "--suite", "quick", "--list").CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if !strings.Contains(string(out), "rate100-rtt50-loss1") || !strings.Contains(string(out), "suite quick") {
			t.Fatalf("listing:\n%s", out)
		}
	})

	t.Run("unknown suite", func(t *testing.T) {
		out, err := exec.Command(bin, "--suite", "nope", "--list").CombinedOutput()
		if err == nil || !strings.Contains(string(out), `unknown suite "nope"`) {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})

	t.Run("bad scenario file names the key", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "bad.toml")
		os.WriteFile(file, []byte("suite = \"x\"\n[[scenario]]\nloss = 2\n"), 0o644)
		out, err := exec.Command(bin, "--scenarios", file, "--suite", "x", "--list").CombinedOutput()
		if err == nil || !strings.Contains(string(out), "loss 2 must be a fraction") {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})

	t.Run("unknown contender", func(t *testing.T) {
		out, err := exec.Command(bin, "--contenders", "wireguard", "--list").CombinedOutput()
		if err == nil || !strings.Contains(string(out), `unknown contender "wireguard"`) {
			t.Fatalf("err %v, output:\n%s", err, out)
		}
	})

	t.Run("missing tools fail before any run", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "results")
		cmd := exec.Command(bin, "--suite", "quick", "--backend", "loopback", "--out", out)
		cmd.Env = append(os.Environ(), "PATH="+t.TempDir())
		got, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Fatalf("want exit status 2, got %v:\n%s", err, got)
		}
		for _, want := range []string{"missing before any run started", "iperf3: needed for", "go: needed for", "apt-get install iperf3"} {
			if !strings.Contains(string(got), want) {
				t.Errorf("output lacks %q:\n%s", want, got)
			}
		}
		if _, err := os.Stat(out); err == nil {
			t.Error("a refused run wrote results")
		}
	})

	t.Run("a contender asked for by name must run", func(t *testing.T) {
		iperf, err := exec.LookPath("iperf3")
		if err != nil {
			t.Skip("no iperf3 (scripts/test.sh installs it)")
		}
		path := t.TempDir()
		if err := os.Symlink(iperf, filepath.Join(path, "iperf3")); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "results")
		cmd := exec.Command(bin, "--suite", "quick", "--backend", "loopback", "--contenders", "kcptun", "--out", out)
		cmd.Env = append(os.Environ(), "PATH="+path)
		got, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(got), "kcptun-server not found") {
			t.Fatalf("want exit status 2 naming kcptun-server, got %v:\n%s", err, got)
		}
		if _, err := os.Stat(out); err == nil {
			t.Error("a refused run wrote results")
		}
	})

	t.Run("echo server sets congestion control", func(t *testing.T) {
		testEchoCongestion(t, bin)
	})

	t.Run("not root", func(t *testing.T) {
		if os.Geteuid() != 0 {
			out, err := exec.Command(bin, "--suite", "quick", "--out", t.TempDir()).CombinedOutput()
			checkNotRoot(t, out, err)
			return
		}
		// As root, run it as nobody to see what a user without root sees.
		cmd := exec.Command(bin, "--suite", "quick", "--out", "/nonexistent")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		checkNotRoot(t, out, err)
	})
}

func checkNotRoot(t *testing.T, out []byte, err error) {
	t.Helper()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("want exit status 2, got %v", err)
	}
	if !strings.Contains(string(out), "this needs root") {
		t.Fatalf("output does not say root is needed:\n%s", out)
	}
}

// testEchoCongestion starts `loadgen echo --congestion X` with an algorithm other than
// the default and reads the algorithm of the accepted socket back with ss.
func testEchoCongestion(t *testing.T, bin string) {
	if _, err := exec.LookPath("ss"); err != nil {
		t.Skip("ss (iproute2) not installed")
	}
	def, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_congestion_control")
	avail, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_congestion_control")
	want := ""
	for _, name := range strings.Fields(string(avail)) {
		if name != strings.TrimSpace(string(def)) {
			want = name
			break
		}
	}
	if want == "" {
		t.Skipf("the kernel offers only %q", def)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	echo := exec.CommandContext(ctx, bin, "loadgen", "echo", "--listen", addr, "--congestion", want)
	if err := echo.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		echo.Process.Signal(syscall.SIGTERM)
		echo.Wait()
	}()
	var conn net.Conn
	for conn == nil {
		if conn, err = net.Dial("tcp", addr); err != nil {
			if ctx.Err() != nil {
				t.Fatalf("echo server never listened: %v", err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	defer conn.Close()
	// One echo, so the server has surely accepted.
	if _, err := conn.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ss", "-tinH", "state", "established", "sport", "= :"+strconv.Itoa(port)).Output()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(" "+strings.Join(strings.Fields(string(out)), " ")+" ", " "+want+" ") {
		t.Errorf("accepted socket does not use %s; ss says:\n%s", want, out)
	}
}
