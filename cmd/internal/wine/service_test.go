package wine

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// wineRun runs a Windows program (a quictun build, or one of Wine's own such
// as sc) to its end and returns its output.
func wineRun(t *testing.T, program string, args ...string) (string, error) {
	t.Helper()
	return wineRunIn(t, "", program, args...)
}

// wineRunIn is wineRun in the working directory dir.
func wineRunIn(t *testing.T, dir, program string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("wine", append([]string{program}, args...)...)
	cmd.Env, cmd.Dir = wineEnv(), dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitFor polls cond until it holds or the bound passes (Wine starts
// services slowly).
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func healthy(api string) bool {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + api + "/healthz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// The server as a Windows service, as far as Wine's service manager goes:
// --install-service registers it with the rest of its command line, sc start
// runs it (its API answers), sc stop stops it the way SIGTERM does (it
// drains and logs its stop to --log-file), --remove-service removes it.
func TestWindowsService(t *testing.T) {
	needWine(t)
	// One wineserver (and so one service manager) for the whole test: each
	// would otherwise end a few seconds after its last program, and take
	// the service along.
	persist := exec.Command("wineserver", "-p")
	persist.Env = wineEnv()
	if err := persist.Run(); err != nil {
		t.Fatalf("wineserver -p: %v", err)
	}
	// Wine's service manager starts with the first program and inherits its
	// standard output: start it with none, or it holds every later pipe open.
	boot := exec.Command("wine", "cmd", "/c", "exit")
	boot.Env = wineEnv()
	if err := boot.Run(); err != nil {
		t.Fatalf("start Wine's services: %v", err)
	}
	name := fmt.Sprintf("quictun-test-%d", rand.IntN(1e6))
	exe := filepath.Join(bed.winDir, "quictun-server.exe")
	udp, api := freePort(t, "udp"), freePort(t, "tcp")
	// A relative path means what it meant where the service was installed.
	installDir := t.TempDir()
	logFile := filepath.Join(installDir, "service.log")
	out, err := wineRunIn(t, installDir, exe, "--install-service", "--service-name", name, "--listen-on", udp,
		"--httpd-listen-on", api, "--log-file", "service.log", "--drain-timeout", "1s")
	if err != nil || !strings.Contains(out, "service installed") {
		t.Fatalf("install: %v\n%s", err, out)
	}
	removed := false
	defer func() {
		if !removed {
			wineRun(t, "sc", "stop", name)
			wineRun(t, exe, "--remove-service", "--service-name", name)
		}
		b, _ := os.ReadFile(logFile)
		t.Logf("service log:\n%s", b)
	}()
	if out, err := wineRun(t, exe, "--install-service", "--service-name", name); err == nil || !strings.Contains(out, "exists already") {
		t.Fatalf("a second install: %v\n%s", err, out)
	}
	// Wine 8.0's sc start exits 1 with no message even when the service
	// starts: what counts is that it runs.
	if out, err := wineRun(t, "sc", "start", name); err != nil {
		t.Logf("sc start: %v %s", err, out)
	}
	waitFor(t, "the service's API answers", 60*time.Second, func() bool { return healthy(api) })
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "quictun-server listening") {
		t.Fatalf("the service logs elsewhere than --log-file:\n%s", b)
	}

	if out, err := wineRun(t, "sc", "stop", name); err != nil {
		t.Fatalf("sc stop: %v\n%s", err, out)
	}
	waitFor(t, "the service stops and says so", 30*time.Second, func() bool {
		b, _ := os.ReadFile(logFile)
		return !healthy(api) && strings.Contains(string(b), "service stop requested") && strings.Contains(string(b), "msg=stopped")
	})

	if out, err := wineRun(t, exe, "--remove-service", "--service-name", name); err != nil || !strings.Contains(out, "service removed") {
		t.Fatalf("remove: %v\n%s", err, out)
	}
	removed = true
	// The client removes its service without the flags it runs with.
	out, err = wineRun(t, filepath.Join(bed.winDir, "quictun-client.exe"), "--remove-service", "--service-name", name)
	if err == nil || strings.Contains(out, "server-endpoint") {
		t.Fatalf("the client's remove of a missing service: %v\n%s", err, out)
	}
	if out, err := wineRun(t, "sc", "query", name); err == nil && !strings.Contains(out, "1060") {
		t.Fatalf("the service is still there:\n%s", out)
	}
}
