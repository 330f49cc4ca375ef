package endpoints

import (
	"fmt"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// The redial wait is drawn from the upper half of a ceiling that doubles from
// minRedialBackoff to maxRedialBackoff, varies at random, and starts over after
// a reset.
func TestRedialBackoffIsCappedExponentialWithJitter(t *testing.T) {
	var b redialBackoff
	ceiling := minRedialBackoff
	for i := range 12 {
		if d := b.next(); d < ceiling/2 || d > ceiling {
			t.Fatalf("wait %d: %v, want within [%v, %v]", i, d, ceiling/2, ceiling)
		}
		ceiling = min(2*ceiling, maxRedialBackoff)
	}
	if ceiling != maxRedialBackoff {
		t.Fatalf("ceiling %v after 12 waits", ceiling)
	}
	seen := map[time.Duration]bool{}
	for range 20 {
		d := b.next()
		if d < maxRedialBackoff/2 || d > maxRedialBackoff {
			t.Fatalf("capped wait %v, want within [%v, %v]", d, maxRedialBackoff/2, maxRedialBackoff)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("%d distinct waits out of 20: no jitter", len(seen))
	}
	b.reset()
	if d := b.next(); d < minRedialBackoff/2 || d > minRedialBackoff {
		t.Fatalf("after reset: %v", d)
	}
}

// A client that the server accepts and closes at once (here: too many
// sessions) backs off like one that cannot reach it, instead of looping on
// handshakes: the handshake alone does not reset its backoff.
func TestRefusedClientDoesNotHammerTheServer(t *testing.T) {
	app := startApp(t, loopbackTCP(), echo)
	defer app.close()
	srv, stopServer := startServer(t, pairOptions{serverMods: func(c *ServerConfig) { c.Limits.MaxSessions = 1 }})
	defer stopServer()
	first, stopFirst := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String()})
	defer stopFirst()
	roundTrip(t, first.Addr(), "first")

	refusals := func() float64 {
		return gather(t, srv)[`quictun_hellos_total{endpoint="server",identity="",result="overloaded"}`]
	}
	_, stopSecond := startClient(t, srv.Addr().String(), pairOptions{token: app.addr.String()})
	time.Sleep(3 * time.Second)
	stopSecond()
	// Waits from [50, 100] ms doubling: the 7th dial comes after 3.15 s at the
	// earliest, the 5th about 1.5 s in at the latest (a loop that redials at
	// once would make hundreds).
	if n := refusals(); n < 3 || n > 6 {
		t.Fatalf("%v sessions refused in 3 s, want 3 to 6", n)
	}
	roundTrip(t, first.Addr(), "first still works")
}

// A stream learns of a stateless reset a moment before its session's context
// does (quic-go fails the streams first): the stream's error alone must be
// enough to replay the tunnel, or a client racing that moment drops the
// application instead (seen in CI as a reset application connection in
// TestServerCrashTunnelReplayedOnNextSession).
func TestStreamErrorAloneSaysTheSessionWasLost(t *testing.T) {
	reset := fmt.Errorf("read status: %w", &quic.StatelessResetError{})
	if !sessionWasLost(nil, reset) {
		t.Error("a stateless reset on the stream was not taken for a lost session")
	}
	if !sessionGone(reset) {
		t.Error("sessionGone does not know a stateless reset")
	}
}
