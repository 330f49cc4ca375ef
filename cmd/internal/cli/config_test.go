package cli

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/quictun/quictun/endpoints/trust"
)

type testFlags struct {
	Config   kong.ConfigFlag
	ListenOn string        `default:"0.0.0.0:7500"`
	Timeout  time.Duration `default:"5s"`
	Verbose  bool
	Count    int `default:"1"`
	CertFile string
	KeyFile  string
	Logging
	Secret
	HttpdToken string `sensitive:""`
}

// parseTest runs the commands' parsing on a config file (when not empty) and args.
func parseTest(t *testing.T, file string, args ...string) (testFlags, *Config, error) {
	t.Helper()
	var f testFlags
	if file != "" {
		path := filepath.Join(t.TempDir(), "quictun.toml")
		os.WriteFile(path, []byte(file), 0o600)
		args = append([]string{"--config", path}, args...)
	}
	cfg, err := parse(&f, args, kong.Exit(func(int) { t.Fatal("exit") }))
	return f, cfg, err
}

func TestFlagsOverrideFileOverridesDefaults(t *testing.T) {
	file := "# comment\nlisten-on = \"127.0.0.1:9000\"\ntimeout = \"2s\"\nverbose = true\ncount = 3\nlog-level = \"debug\"\n"
	f, cfg, err := parseTest(t, file, "--count", "7")
	if err != nil {
		t.Fatal(err)
	}
	if f.ListenOn != "127.0.0.1:9000" || f.Timeout != 2*time.Second || !f.Verbose || f.Count != 7 || f.LogLevel != "debug" || f.LogFormat != "text" {
		t.Fatalf("got %+v", f)
	}
	if o := cfg.Origin("listen-on"); !strings.Contains(o, "line 2") {
		t.Errorf("origin of listen-on: %q", o)
	}
	if o := cfg.Origin("count"); o != "--count" {
		t.Errorf("origin of an overridden key: %q", o)
	}
	if f, _, err := parseTest(t, ""); err != nil || f.ListenOn != "0.0.0.0:7500" || f.Timeout != 5*time.Second {
		t.Fatalf("defaults: %+v, %v", f, err)
	}
	// Zero is a value like any other here; what it means is each flag's help.
	if f, _, err := parseTest(t, "count = 0\ntimeout = \"0s\"\n"); err != nil || f.Count != 0 || f.Timeout != 0 {
		t.Fatalf("zeros: %+v, %v", f, err)
	}
}

func TestConfigErrorsNameTheLineAndKey(t *testing.T) {
	for file, want := range map[string]string{
		"listen-on = \"a:1\"\nlisten_on = \"b\"\n": `line 2: unknown key "listen_on" (did you mean "listen-on"?)`,
		"\n\nbogus = 1\n":                          `line 3: unknown key "bogus"`,
		"timeout = \"soon\"\n":                     "line 1: timeout = soon",
		"count = \"many\"\n":                       "line 1: count = many",
		"log-level = \"loud\"\n":                   "line 1: log-level = loud: must be one of debug, info, warn, error",
		"listen-on = \n":                           "line 1",
		"config = \"other.toml\"\n":                `unknown key "config"`,
		// kong would take a bare number as nanoseconds and round a fraction.
		"\ntimeout = 5\n":     `line 2: timeout = 5: a duration needs a unit: write timeout = "5s"`,
		"timeout = 1.5\n":     `line 1: timeout = 1.5: a duration needs a unit: write timeout = "1.5s"`,
		"timeout = true\n":    `line 1: timeout = true: a duration is a string with a unit`,
		"count = 1.5\n":       "line 1: count = 1.5: must be a whole number",
		"count = 2.0\n":       "line 1: count = 2: must be a whole number",
		"count = -1\n":        "line 1: count = -1: must not be negative (0 means the default)",
		"timeout = \"-2s\"\n": "line 1: timeout = -2s: must not be negative",
	} {
		_, _, err := parseTest(t, file)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", file, err, want)
		}
	}
	for args, want := range map[string]string{
		"--count=-3":       "--count = -3: must not be negative",
		"--timeout=-1ms":   "--timeout = -1ms: must not be negative",
		"--no-such-flag":   "unknown flag --no-such-flag",
		"--log-format=xml": "--log-format",
	} {
		_, _, err := parseTest(t, "", strings.Fields(args)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", args, err, want)
		}
	}
}

// A bad value gets the error and one line of hint, not the whole help.
func TestExplainIsShort(t *testing.T) {
	_, _, err := parseTest(t, "\ntimeout = 5\n")
	var out bytes.Buffer
	explain(&out, "quictun-server", err)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 || !regexp.MustCompile(`^quictun-server: error: \S+quictun.toml line 2: timeout = 5: `).MatchString(lines[0]) ||
		!strings.Contains(lines[1], `"quictun-server --help"`) {
		t.Fatalf("got:\n%s", out.String())
	}
}

// Errors that the endpoints find in a file's value after parsing name the key
// and line it came from; from a flag, the flag.
func TestLocateNamesTheKeyAndLine(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))

	f, cfg, err := parseTest(t, "# client\ncert-file = \""+missing+"\"\nkey-file = \""+missing+"\"\n")
	if err != nil {
		t.Fatal(err)
	}
	_, err = trust.LoadClient(trust.ClientOptions{Endpoint: "h:1", KnownHosts: "kh", CertFile: f.CertFile, KeyFile: f.KeyFile}, quiet)
	if got := cfg.Locate(err).Error(); !strings.Contains(got, "quictun.toml line 2: cert-file: open "+missing) {
		t.Errorf("from the file: %s", got)
	}
	f, cfg, err = parseTest(t, "cert-file = \"elsewhere\"\n", "--cert-file", missing, "--key-file", missing)
	if err != nil {
		t.Fatal(err)
	}
	_, err = trust.LoadClient(trust.ClientOptions{Endpoint: "h:1", KnownHosts: "kh", CertFile: f.CertFile, KeyFile: f.KeyFile}, quiet)
	if got := cfg.Locate(err).Error(); !strings.HasPrefix(got, "--cert-file: open "+missing) {
		t.Errorf("from a flag: %s", got)
	}
	// Through errors.Join too (RunWithAPI joins), and others pass unchanged.
	joined := errors.Join(&trust.OptionError{Option: "count", Err: errors.New("boom")}, nil)
	if got := cfg.Locate(joined).Error(); got != "--count: boom" {
		t.Errorf("joined: %s", got)
	}
	if plain := errors.New("plain"); cfg.Locate(plain) != plain || cfg.Locate(nil) != nil {
		t.Error("Locate changed an error that names no option")
	}

	// The secret file, too.
	secret := filepath.Join(dir, "secret")
	for body, want := range map[string]string{
		"\n":                             "first line is empty",
		strings.Repeat("s", 2000) + "\n": "longer than 1024 bytes",
	} {
		os.WriteFile(secret, []byte(body), 0o600)
		f, cfg, err = parseTest(t, "\n\nsecret-file = \""+secret+"\"\n")
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Secret.Load(quiet)
		if err == nil || !strings.Contains(cfg.Locate(err).Error(), "line 3: secret-file: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("secret file %q: got %v", body[:min(len(body), 10)], err)
		}
	}
	f, cfg, _ = parseTest(t, "secret-file = \""+filepath.Join(dir, "none")+"\"\n")
	if _, err := f.Secret.Load(quiet); err == nil || !strings.Contains(cfg.Locate(err).Error(), "line 1: secret-file: stat ") {
		t.Errorf("missing secret file: %v", err)
	}
	os.WriteFile(secret, []byte("s3cret\r\nrest\n"), 0o600)
	f, _, _ = parseTest(t, "", "--secret-file", secret)
	if got, err := f.Secret.Load(quiet); err != nil || string(got) != "s3cret" {
		t.Errorf("secret file: %q, %v", got, err)
	}
	f, _, _ = parseTest(t, "", "--secret-file", secret, "--secret", "x")
	if _, err := f.Secret.Load(quiet); err == nil || !strings.Contains(err.Error(), "--secret-file: given together with --secret") {
		t.Errorf("both: %v", err)
	}
}
