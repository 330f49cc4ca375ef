package trust

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/quictun/quictun/internal/logtap"
)

// A private key that other users can read, and a known-hosts file that they
// can write (or whose directory they can write), are pointed out as ssh
// does; the modes the programs make themselves are quiet.
func TestLoosePermissionsWarned(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix modes")
	}
	dir := t.TempDir()
	_, certFile, keyFile := testCA(t, dir)
	for mode, warn := range map[os.FileMode]bool{0o600: false, 0o400: false, 0o640: true, 0o604: true, 0o644: true, 0o620: true} {
		os.Chmod(keyFile, mode)
		var logs logtap.Tap
		if _, err := LoadServer(ServerOptions{CertFile: certFile, KeyFile: keyFile}, logs.Logger(0)); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadClient(ClientOptions{Endpoint: "h:1", Fingerprint: strings.Repeat("a", 64), CertFile: certFile, KeyFile: keyFile},
			logs.Logger(0)); err != nil {
			t.Fatal(err)
		}
		if got := len(logs.Lines("level=WARN", "UNPROTECTED key-file", "file="+keyFile)); got != map[bool]int{true: 2, false: 0}[warn] {
			t.Errorf("key mode %v: %d warnings (server and client), want warned %v:\n%s", mode, got, warn, logs.String())
		}
	}

	// The generated key in the state directory, once someone loosened it.
	state := filepath.Join(dir, "state")
	var logs logtap.Tap
	if _, err := LoadServer(ServerOptions{StateDir: state}, logs.Logger(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadServer(ServerOptions{StateDir: state}, logs.Logger(0)); err != nil || len(logs.Lines("UNPROTECTED")) != 0 {
		t.Fatalf("the key as generated: %v\n%s", err, logs.String())
	}
	os.Chmod(filepath.Join(state, generatedKey), 0o644)
	if _, err := LoadServer(ServerOptions{StateDir: state}, logs.Logger(0)); err != nil || len(logs.Lines("level=WARN", "UNPROTECTED state-dir")) != 1 {
		t.Fatalf("a readable generated key: %v\n%s", err, logs.String())
	}

	khDir := filepath.Join(dir, "kh")
	os.Mkdir(khDir, 0o700)
	kh := filepath.Join(khDir, "known_hosts")
	os.WriteFile(kh, []byte("h:1 sha256:"+strings.Repeat("a", 64)+"\n"), 0o600)
	for _, c := range []struct {
		file, dir os.FileMode
		warn      string
	}{
		{0o600, 0o700, ""},
		{0o644, 0o755, ""}, // readable is fine: it holds no secret
		{0o664, 0o755, "other users can write it"},
		{0o646, 0o755, "other users can write it"},
		{0o644, 0o775, "other users can write its directory"},
		{0o644, 0o777 | os.ModeSticky, ""}, // like /tmp: no one replaces another's file
	} {
		os.Chmod(kh, c.file)
		os.Chmod(khDir, c.dir)
		var logs logtap.Tap
		if _, err := LoadClient(ClientOptions{Endpoint: "h:1", KnownHosts: kh}, logs.Logger(0)); err != nil {
			t.Fatal(err)
		}
		lines := logs.Lines("level=WARN", "UNPROTECTED known-hosts")
		if c.warn == "" && len(lines) != 0 || c.warn != "" && (len(lines) != 1 || !strings.Contains(lines[0], c.warn)) {
			t.Errorf("known_hosts %v in a directory %v: warnings %q, want %q", c.file, c.dir, lines, c.warn)
		}
	}
	os.Chmod(khDir, 0o700)

	// A file of another user's, who can rewrite it.
	if os.Getuid() != 0 {
		t.Log("not root: the owner check is not tried")
		return
	}
	os.Chmod(kh, 0o644)
	os.Chown(kh, 65534, 65534)
	logs = logtap.Tap{}
	if _, err := LoadClient(ClientOptions{Endpoint: "h:1", KnownHosts: kh}, logs.Logger(0)); err != nil {
		t.Fatal(err)
	}
	if len(logs.Lines("level=WARN", "belongs to another user", "owner=65534")) != 1 {
		t.Errorf("known_hosts of another user: no warning:\n%s", logs.String())
	}
}
