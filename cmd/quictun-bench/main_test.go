//go:build linux

package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
