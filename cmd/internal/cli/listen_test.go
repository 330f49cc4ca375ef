package cli

import (
	"net"
	"path/filepath"
	"testing"

	"github.com/quictun/quictun/internal/logtap"
)

// A client listener that other hosts can reach is announced; loopback and
// UNIX sockets are not.
func TestWarnOpenListener(t *testing.T) {
	for _, c := range []struct {
		network, addr string
		warn          bool
	}{
		{"tcp", "127.0.0.1:0", false},
		{"tcp", "127.3.4.5:0", false},
		{"tcp", "[::1]:0", false},
		{"tcp", "localhost:0", false},
		{"tcp", "0.0.0.0:0", true},
		{"tcp", "[::]:0", true},
		{"unix", filepath.Join(t.TempDir(), "app.sock"), false},
		{"udp", "127.0.0.1:0", false},
		{"udp", "0.0.0.0:0", true},
	} {
		var addr net.Addr
		if c.network == "udp" {
			pc, err := net.ListenPacket(c.network, c.addr)
			if err != nil {
				t.Fatal(err)
			}
			addr = pc.LocalAddr()
			pc.Close()
		} else {
			ln, err := net.Listen(c.network, c.addr)
			if err != nil {
				t.Logf("%s %s: %v (skipped)", c.network, c.addr, err)
				continue
			}
			addr = ln.Addr()
			ln.Close()
		}
		var logs logtap.Tap
		WarnOpenListener(logs.Logger(0), "default", addr)
		warned := len(logs.Lines("level=WARN", "ANYONE WHO CAN CONNECT TO THIS CLIENT", "forward=default listen="+c.network+":")) == 1
		if warned != c.warn {
			t.Errorf("%s %s: warned %v, want %v; log: %s", c.network, c.addr, warned, c.warn, logs.String())
		}
	}
}
