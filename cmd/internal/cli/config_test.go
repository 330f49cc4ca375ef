package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"
)

type testFlags struct {
	Config   kong.ConfigFlag
	ListenOn string        `default:"0.0.0.0:7500"`
	Timeout  time.Duration `default:"5s"`
	Verbose  bool
	Count    int `default:"1"`
	Logging
}

func parse(t *testing.T, file string, args ...string) (testFlags, *Config, error) {
	t.Helper()
	var f testFlags
	loader, cfg := Loader()
	p, err := kong.New(&f, kong.Configuration(loader), kong.Exit(func(int) { t.Fatal("exit") }))
	if err != nil {
		t.Fatal(err)
	}
	if file != "" {
		path := filepath.Join(t.TempDir(), "quictun.toml")
		os.WriteFile(path, []byte(file), 0o600)
		args = append([]string{"--config", path}, args...)
	}
	_, err = p.Parse(args)
	return f, cfg, err
}

func TestFlagsOverrideFileOverridesDefaults(t *testing.T) {
	file := "# comment\nlisten-on = \"127.0.0.1:9000\"\ntimeout = \"2s\"\nverbose = true\ncount = 3\nlog-level = \"debug\"\n"
	f, cfg, err := parse(t, file, "--count", "7")
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
	if f, _, err := parse(t, ""); err != nil || f.ListenOn != "0.0.0.0:7500" || f.Timeout != 5*time.Second {
		t.Fatalf("defaults: %+v, %v", f, err)
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
	} {
		_, _, err := parse(t, file)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", file, err, want)
		}
	}
}
