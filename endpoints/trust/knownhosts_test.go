package trust

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// DNS names are not case sensitive: a server first trusted as Example.COM is
// the one expected at example.com, so another key there is a changed key,
// not a second first use; the same holds for spellings of one IP address.
func TestKnownHostsHostIsCaseInsensitive(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	srv, err := LoadServer(ServerOptions{StateDir: filepath.Join(dir, "a")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	other, err := LoadServer(ServerOptions{StateDir: filepath.Join(dir, "b")}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ first, later string }{
		{"Example.COM:7500", "example.com:7500"},
		{"tunnel.example.net:7500", "TUNNEL.Example.Net.:7500"},
		{"[0:0::1]:7500", "[::1]:7500"},
		{"[::ffff:127.0.0.1]:7500", "127.0.0.1:7500"},
	} {
		kh := filepath.Join(t.TempDir(), "known_hosts")
		first, err := LoadClient(ClientOptions{Endpoint: c.first, KnownHosts: kh}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err, _ := handshake(t, srv.TLS, first); err != nil {
			t.Fatalf("%s: first use: %v", c.first, err)
		}
		later, err := LoadClient(ClientOptions{Endpoint: c.later, KnownHosts: kh}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		if err, _ := handshake(t, other.TLS, later); err == nil || !strings.Contains(err.Error(), "SERVER KEY CHANGED") {
			t.Errorf("%s after %s: another server's key: %v, want SERVER KEY CHANGED", c.later, c.first, err)
		}
		if err, _ := handshake(t, srv.TLS, later); err != nil {
			t.Errorf("%s after %s: the known server: %v", c.later, c.first, err)
		}
		if b, _ := os.ReadFile(kh); strings.Count(string(b), "\n") != 1 {
			t.Errorf("%s after %s: known_hosts has more than the first line:\n%s", c.later, c.first, b)
		}
	}

	// A line written by hand in another case counts too.
	kh := filepath.Join(t.TempDir(), "known_hosts")
	os.WriteFile(kh, []byte("# by hand\nTUNNEL.example.NET:7500 "+srv.Fingerprint+"\n"), 0o600)
	cli, err := LoadClient(ClientOptions{Endpoint: "tunnel.example.net:7500", KnownHosts: kh}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err, _ := handshake(t, other.TLS, cli); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("hand-written line: another server's key: %v, want it refused by line 2", err)
	}
	// A different port is a different server.
	cli, _ = LoadClient(ClientOptions{Endpoint: "tunnel.example.net:7501", KnownHosts: kh}, quiet)
	if err, _ := handshake(t, other.TLS, cli); err != nil {
		t.Errorf("another port: first use refused: %v", err)
	}
}

func TestHostKey(t *testing.T) {
	for in, want := range map[string]string{
		"Example.COM:7500": "example.com:7500", "example.com.:1": "example.com:1", "[0:0::1]:7500": "[::1]:7500",
		"[::FFFF:10.0.0.1]:1": "10.0.0.1:1", "[FE80::1%eth0]:1": "[fe80::1%eth0]:1", "no-port": "no-port",
	} {
		if got := hostKey(in); got != want {
			t.Errorf("hostKey(%q) = %q, want %q", in, got, want)
		}
	}
}
