package e2e

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// quictun-client --speedtest against a running server, as a user runs it:
// the table on standard output, exit 0; without the secret, the server
// refuses and the command says so.
func TestSpeedTestCommand(t *testing.T) {
	const secret = "e2e-speed-test-secret-0123456789"
	udp := freePort(t, "udp")
	srv := startEnv(t, []string{"QUICTUN_SECRET=" + secret}, "quictun-server", "--listen-on", udp)
	fp := srv.waitLog(t, `fingerprint=(sha256:[0-9a-f]{64})`)[1]
	srv.waitLog(t, "quictun-server listening")

	cmd := exec.Command(filepath.Join(binDir, "quictun-client"), "--server-endpoint", udp, "--server-fingerprint", fp,
		"--speedtest", "--speedtest-duration", "500ms")
	cmd.Env = append(cmd.Environ(), "QUICTUN_SECRET="+secret, "XDG_CONFIG_HOME="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("speed test: %v\nstdout:\n%s\nstderr:\n%s", err, out, stderr.String())
	}
	for _, want := range []string{"speed test to " + udp, "with recovery layer", "plain QUIC (--fec off)", "RTT min / avg",
		"goodput up", "goodput down", "path loss up / down", "repair overhead up / down", "--fec"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	t.Logf("\n%s", out)

	cmd = exec.Command(filepath.Join(binDir, "quictun-client"), "--server-endpoint", udp, "--server-fingerprint", fp,
		"--speedtest", "--speedtest-duration", "500ms", "--secret", "wrong-secret-wrong-secret")
	cmd.Env = append(cmd.Environ(), "XDG_CONFIG_HOME="+t.TempDir())
	all, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(all), "refused this client") {
		t.Fatalf("wrong secret: %v\n%s", err, all)
	}
}
