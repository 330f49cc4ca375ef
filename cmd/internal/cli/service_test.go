package cli

import (
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The service runs with the installing command line, less --install-service,
// plus a log file unless one is given, plus --run-as-service.
func TestServiceArgs(t *testing.T) {
	got := serviceArgs([]string{"--listen-on", "0.0.0.0:7500", "--install-service", "--secret-file", `secret`}, "quictun-server", `C:\q`)
	want := []string{"--listen-on", "0.0.0.0:7500", "--secret-file", `secret`,
		"--log-file", filepath.Join(StateDir(), "quictun-server.log"), `--service-dir=C:\q`, "--run-as-service"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, given := range [][]string{{"--log-file", "x.log"}, {"--log-file=x.log"}} {
		got := serviceArgs(append([]string{"--install-service"}, given...), "quictun-client", "/d")
		if !slices.Equal(got, append(slices.Clone(given), "--service-dir=/d", "--run-as-service")) {
			t.Errorf("with %q: got %q", given, got)
		}
	}
}

func TestServiceFlagsOffWindows(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("Windows installs for real (cmd/internal/wine tests it)")
	}
	if handled, err := (Service{}).ManageService("quictun-server"); handled || err != nil {
		t.Fatalf("no service flag: %v %v", handled, err)
	}
	for _, s := range []Service{{InstallService: true}, {RemoveService: true}} {
		handled, err := s.ManageService("quictun-server")
		if !handled || err == nil || !strings.Contains(err.Error(), "systemd") {
			t.Errorf("%+v: %v %v", s, handled, err)
		}
	}
}

// The service starts in the system's directory: a relative path on the
// installing command line must still mean the file it meant there.
func TestServiceResolvesPathsWhereItWasInstalled(t *testing.T) {
	installed := t.TempDir()
	t.Chdir(t.TempDir())
	var f struct {
		SecretFile string `type:"path"`
		LogFile    string `type:"path"`
		Service
	}
	args := serviceArgs([]string{"--secret-file", "secret", "--install-service"}, "quictun-server", installed)
	if err := enterServiceDir(args); err != nil {
		t.Fatal(err)
	}
	if _, err := parse(&f, args); err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(installed, "secret"); f.SecretFile != want {
		t.Fatalf("--secret-file secret is %s, want %s", f.SecretFile, want)
	}
}
