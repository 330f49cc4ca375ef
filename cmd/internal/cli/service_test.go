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
	got := serviceArgs([]string{"--listen-on", "0.0.0.0:7500", "--install-service", "--secret-file", `C:\q\secret`}, "quictun-server")
	want := []string{"--listen-on", "0.0.0.0:7500", "--secret-file", `C:\q\secret`,
		"--log-file", filepath.Join(StateDir(), "quictun-server.log"), "--run-as-service"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, given := range [][]string{{"--log-file", "x.log"}, {"--log-file=x.log"}} {
		got := serviceArgs(append([]string{"--install-service"}, given...), "quictun-client")
		if !slices.Equal(got, append(slices.Clone(given), "--run-as-service")) {
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
