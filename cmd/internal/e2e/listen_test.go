package e2e

import (
	"strings"
	"testing"
)

// quictun-client says so for each forward or proxy that accepts applications
// from other hosts, and stays quiet on loopback.
func TestClientWarnsWhenListeningBeyondLoopback(t *testing.T) {
	pin := "sha256:" + strings.Repeat("0", 64) // no server is dialled here
	loopback := "tcp:" + freePort(t, "tcp")
	for _, c := range []struct {
		args []string
		warn string // the forward warned about; "" for none
	}{
		{[]string{"--listen-on", "tcp:0.0.0.0:0", "--token-source", "tcp:10.0.0.5:22"}, "forward=default"},
		{[]string{"--listen-on", loopback, "--token-source", "tcp:10.0.0.5:22"}, ""},
		{[]string{"--forward", loopback + "=tcp:10.0.0.5:22", "--socks-listen-on", "tcp:0.0.0.0:0"}, "forward=socks"},
		{[]string{"--forward", "tcp:0.0.0.0:0=tcp:10.0.0.6:5432"}, "forward=tcp:0.0.0.0:0"},
	} {
		cli := start(t, "quictun-client", append(c.args, "--server-endpoint", freePort(t, "udp"), "--server-fingerprint", pin)...)
		// The warnings come before the line that says it listens.
		cli.waitLog(t, "quictun-client listening")
		var warned []string
		for _, line := range strings.Split(cli.logText(), "\n") {
			if strings.Contains(line, "level=WARN msg=\"ANYONE WHO CAN CONNECT TO THIS CLIENT") {
				warned = append(warned, line)
			}
		}
		if c.warn == "" && len(warned) != 0 || c.warn != "" && (len(warned) != 1 || !strings.Contains(warned[0], c.warn)) {
			t.Errorf("%q: warned %q, want %q:\n%s", c.args, warned, c.warn, cli.logText())
		}
		cli.cmd.Process.Kill()
		<-cli.done
	}
}
