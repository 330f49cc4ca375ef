package endpoints

import (
	"context"
	"testing"

	"github.com/quictun/quictun/internal/logtap"
)

// A forward whose Http token source asks over cleartext beyond loopback has
// its warning in the client's log, once, naming the forward.
func TestForwardWarnsOfCleartextTokenSource(t *testing.T) {
	var logs logtap.Tap
	cli, stopClient := startClient(t, "127.0.0.1:1", pairOptions{token: "tcp:127.0.0.1:1", clientMods: func(c *ClientConfig) {
		c.Logger = logs.Logger(0, "side", "client")
		c.Forwards = []ForwardSpec{{Name: "web", ListenOn: loopbackTCP().String(), TokenSourcePlugin: "Http",
			TokenSource: "http://198.18.0.1:9/token?key=k3y"}}
	}})
	defer stopClient()
	// 198.18.0.1 routes off this machine here, so the forward's source is
	// asked with a cancelled context and no request leaves; the warning
	// comes before the request.
	cli.forwards.Lock()
	src := cli.forwards.live["web"].tokens
	cli.forwards.Unlock()
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for range 3 {
		if _, err := src.Token(cancelled, nil); err == nil {
			t.Fatal("a cancelled lookup succeeded")
		}
	}
	if lines := logs.Lines("level=WARN", "cleartext http://", "side=client", "forward=web", "url=http://198.18.0.1:9/token"); len(lines) != 1 {
		t.Fatalf("%d cleartext warnings naming the forward, want 1:\n%s", len(lines), logs.String())
	}
}
