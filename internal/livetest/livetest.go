// Package livetest starts the real programs that live tests drive (servers,
// viewers, a virtual X display) and cleans them up with the test. A test whose
// programs are missing skips with a message naming them.
package livetest

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RequireTools skips the test unless every program is on PATH.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s is not installed (apt-get install the package that has it to run this test)", n)
		}
	}
}

// StartProcess starts a program whose output goes to a log file in the test's temp dir.
// The test's cleanup kills it and waits for it, on success and failure alike.
func StartProcess(t testing.TB, env []string, name string, args ...string) *exec.Cmd {
	t.Helper()
	log, err := os.CreateTemp(t.TempDir(), filepath.Base(name)+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if t.Failed() {
			out, _ := os.ReadFile(log.Name())
			t.Logf("%s output:\n%s", name, LastLines(string(out), 30))
		}
	})
	return cmd
}

// LastLines is the end of a program's output, for a failure message.
func LastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// StartXvfb starts a virtual X server on a free display and returns its DISPLAY value.
func StartXvfb(t testing.TB) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	log, err := os.CreateTemp(t.TempDir(), "Xvfb-*.log")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("Xvfb", "-displayfd", "3", "-screen", "0", "1024x768x24", "-nolisten", "tcp")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Start(); err != nil {
		w.Close()
		t.Fatalf("start Xvfb: %v", err)
	}
	w.Close()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		log.Close()
		if t.Failed() {
			out, _ := os.ReadFile(log.Name())
			t.Logf("Xvfb output:\n%s", LastLines(string(out), 30))
		}
	})
	// Xvfb writes the number and the newline separately, and dies if the second write
	// fails: read the whole line before closing the pipe.
	r.SetReadDeadline(time.Now().Add(20 * time.Second))
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("Xvfb did not report its display: %v", err)
	}
	display := strings.TrimSpace(line)
	WaitForSocket(t, "unix", "/tmp/.X11-unix/X"+display)
	return ":" + display
}

// WaitFor polls cond every 50 ms until it holds or the timeout passes.
func WaitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cond()
}

// WaitForSocket waits until something accepts connections at network/addr.
func WaitForSocket(t testing.TB, network, addr string) {
	t.Helper()
	ok := WaitFor(20*time.Second, func() bool {
		c, err := net.DialTimeout(network, addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if !ok {
		t.Fatalf("nothing listens on %s %s", network, addr)
	}
}

// FreeLoopbackPort finds a TCP port that was free a moment ago, for servers that cannot
// be handed a listening socket.
func FreeLoopbackPort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// GUIEnv is the environment a GTK viewer needs under Xvfb, with its state kept in the
// test's temp dir.
func GUIEnv(t testing.TB, display string) []string {
	home := t.TempDir()
	runtime := filepath.Join(home, "run")
	if err := os.Mkdir(runtime, 0o700); err != nil {
		t.Fatal(err)
	}
	return []string{"DISPLAY=" + display, "HOME=" + home, "XDG_RUNTIME_DIR=" + runtime,
		"GDK_BACKEND=x11", "NO_AT_BRIDGE=1"}
}

// SPICEViewer is the installed SPICE client (remote-viewer, else spicy); the test
// skips when there is none.
func SPICEViewer(t testing.TB) string {
	for _, v := range []string{"remote-viewer", "spicy"} {
		if _, err := exec.LookPath(v); err == nil {
			return v
		}
	}
	t.Skip("no SPICE client (remote-viewer from virt-viewer, or spicy from spice-client-gtk) is installed")
	return ""
}
