package address

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestParse(t *testing.T) {
	good := map[string]Address{
		"tcp:127.0.0.1:22":       {TCP, "127.0.0.1:22"},
		"127.0.0.1:22":           {TCP, "127.0.0.1:22"},
		"tcp:[::1]:22":           {TCP, "[::1]:22"},
		"[::1]:6500":             {TCP, "[::1]:6500"},
		"tcp:localhost:80":       {TCP, "localhost:80"},
		"unix:/run/app.sock":     {Unix, "/run/app.sock"},
		"unix:@abstract":         {Unix, "@abstract"},
		"unix:relative/app.sock": {Unix, "relative/app.sock"},
		"udp:127.0.0.1:53":       {UDP, "127.0.0.1:53"},
		"udp:[::1]:51820":        {UDP, "[::1]:51820"},
		"udp:dns.internal:53":    {UDP, "dns.internal:53"},
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil || got != want {
			t.Errorf("Parse(%q) = %v, %v; want %v", in, got, err, want)
		}
		if again, err := Parse(got.String()); err != nil || again != got {
			t.Errorf("Parse(%q.String()) = %v, %v", in, again, err)
		}
	}
	for _, in := range []string{"", "tcp:", "unix:", "tcp:host", "host:99999", "tcp::22",
		"host:port", "::1:22", "tcp:a b:1", "unix:" + string(make([]byte, 200)),
		"udp:", "udp::53", "udp:host", "udp:unix:/x", "udp:tcp:1.2.3.4:5", "udp:udp:1.2.3.4:5", "udp:h:70000"} {
		if a, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %v, want an error", in, a)
		}
	}
	if a, err := ParseListen("udp::5353"); err != nil || a != (Address{UDP, ":5353"}) {
		t.Errorf("ParseListen(udp::5353) = %v, %v", a, err)
	}
	if _, err := (Address{UDP, "127.0.0.1:0"}).Listen(); err == nil {
		t.Error("Listen on a UDP address: want an error (ListenPacket)")
	}
	if a, err := ParseListen(":6500"); err != nil || a.Addr != ":6500" {
		t.Errorf("ParseListen(:6500) = %v, %v", a, err)
	}
}

func TestDisplay(t *testing.T) {
	for in, want := range map[string]string{
		"tcp:172.18.31.97:22": "172.18.31.97:22",
		"172.18.31.97:22":     "172.18.31.97:22",
		"tcp:[::1]:22":        "[::1]:22",
		"tcp:db.internal:22":  "db.internal:22",
		"unix:/run/app.sock":  "unix:/run/app.sock",
		"udp:10.0.0.5:51820":  "udp:10.0.0.5:51820",
	} {
		a, err := Parse(in)
		if err != nil || a.Display() != want {
			t.Errorf("Parse(%q).Display() = %q, %v; want %q", in, a.Display(), err, want)
		}
	}
}

func TestDisplayConn(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, a := range []Address{{TCP, "[::1]:0"}, {Unix, filepath.Join(t.TempDir(), "app.sock")}} {
		ln, err := a.Listen()
		if err != nil {
			t.Fatal(err)
		}
		c, err := net.Dial(ln.Addr().Network(), ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		want := c.LocalAddr().String()
		if a.Network == Unix {
			want = "unix:" + a.Addr
		}
		if got := DisplayConn(s); got != want {
			t.Errorf("%s: DisplayConn = %q, want %q", a, got, want)
		}
		s.Close()
		c.Close()
		ln.Close()
	}
}

func TestListenRemovesOnlyStaleSockets(t *testing.T) {
	defer goleak.VerifyNone(t)
	path := filepath.Join(t.TempDir(), "app.sock")
	a := Address{Unix, path}
	ln, err := a.Listen()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Listen(); err == nil {
		t.Fatal("second listener stole a live socket")
	}
	// Leave the file behind the way a crashed process does.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln, err = a.Listen()
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer ln.Close()
	c, err := a.Dial(context.Background(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// ParseListen and Parse take any string without panicking; what they accept
// prints as an address they read back the same, and Parse accepts a subset of
// what ParseListen does.
func FuzzParseListen(f *testing.F) {
	for _, s := range []string{"tcp:127.0.0.1:22", "[::1]:6500", ":6500", "unix:/run/a.sock", "unix:@x", "tcp:[fe80::1%eth0]:1", "tcp::", "unix:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseListen(s)
		if err != nil {
			if p, err := Parse(s); err == nil {
				t.Fatalf("Parse accepts %q (%v) but ParseListen does not", s, p)
			}
			return
		}
		if a.Network != TCP && a.Network != Unix || a.Addr == "" {
			t.Fatalf("%q parsed to %+v", s, a)
		}
		if again, err := ParseListen(a.String()); err != nil || again != a {
			t.Fatalf("%q parsed to %+v, which reads back as %+v, %v", s, a, again, err)
		}
		if p, err := Parse(s); err == nil && p != a {
			t.Fatalf("Parse(%q) = %+v, ParseListen = %+v", s, p, a)
		}
	})
}

// ParseHostPort takes any string without panicking; what it accepts splits
// into a host and a port number.
func FuzzParseHostPort(f *testing.F) {
	for _, s := range []string{"127.0.0.1:7500", "[::1]:7500", "h:1", "nohost", ":", "[::1]", "a b:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ParseHostPort(s) != nil {
			return
		}
		_, port, err := net.SplitHostPort(s)
		if err != nil || checkPort(port) != nil {
			t.Fatalf("%q accepted: %v", s, err)
		}
	})
}
