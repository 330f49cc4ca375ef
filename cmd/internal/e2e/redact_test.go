package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A mistyped secret in either program's config or command line ends it with
// an error that names the key and line, and holds no piece of the secret.
func TestConfigErrorsNeverShowTheSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "quictun.toml")
	for _, c := range []struct {
		prog, file string
		args       []string
		want       string
	}{
		{"quictun-server", "listen-on = \"127.0.0.1:0\"\nsecret = Hunter2Hunter2\n", nil, "line 2 column 10: secret is not valid TOML"},
		{"quictun-server", "httpd-token = 12e4Hunter\n", nil, "line 1 column"},
		{"quictun-client", "server-endpoint = \"127.0.0.1:1\"\nsecret = [\"Hunter2Hunter2\"]\n", []string{"--token-source", "tcp:10.0.0.5:22"}, "line 2: secret"},
		{"quictun-client", "", []string{"--server-endpoint", "127.0.0.1:1", "--secret", "Hunter2", "Hunter3"}, "unexpected argument"},
	} {
		args := c.args
		if c.file != "" {
			os.WriteFile(path, []byte(c.file), 0o600)
			args = append([]string{"--config", path}, args...)
		}
		out, err := exec.Command(filepath.Join(binDir, c.prog), args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) || strings.Contains(string(out), "unter") || strings.Contains(string(out), "12e4") {
			t.Errorf("%s %q %q: %v, want %q and no piece of the secret:\n%s", c.prog, c.file, c.args, err, c.want, out)
		}
	}
}
