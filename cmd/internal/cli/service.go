package cli

import (
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Service is the flags that make a program a Windows service. The service
// runs the program with the rest of the command line that installed it, and
// stops it as SIGTERM does (SignalContext): tunnels drain, then it exits.
type Service struct {
	InstallService bool   `help:"Windows: install this program as a service (started at boot, restarted on failure) that runs with the other flags of this command line, logging to --log-file (default: the state directory), and exit."`
	RemoveService  bool   `help:"Windows: remove the service that --install-service installed, and exit."`
	ServiceName    string `help:"The Windows service's name (default: the program's name)." placeholder:"NAME"`
	// RunAsService is on the command line --install-service writes: the
	// program answers the service manager even where x/sys cannot tell that
	// the manager started it (Wine: its services run in the user's session).
	RunAsService bool `hidden:""`
	// ServiceDir is the installing command's working directory: the service
	// starts in the system's, and relative paths must mean what they meant.
	ServiceDir string `hidden:""`
}

// asService is --run-as-service, for SignalContext.
var asService bool

// ManageService does what --install-service or --remove-service ask and says
// whether it did (the program then exits). It tells the person at the
// console, on standard error, whatever --log-file says: that is the service's.
func (s Service) ManageService(program string) (handled bool, err error) {
	asService = s.RunAsService
	if !s.InstallService && !s.RemoveService {
		return false, nil
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	name := s.ServiceName
	if name == "" {
		name = program
	}
	if s.RemoveService {
		return true, removeService(name, log)
	}
	dir, err := os.Getwd()
	if err != nil {
		return true, err
	}
	return true, installService(name, program, serviceArgs(os.Args[1:], name, dir), log)
}

// serviceArgs is the command line the service runs with: this one without
// --install-service, with a log file (a service has no standard error), the
// working directory, and --run-as-service.
func serviceArgs(args []string, name, dir string) []string {
	out := slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--install-service" })
	if !slices.ContainsFunc(out, func(a string) bool { return a == "--log-file" || strings.HasPrefix(a, "--log-file=") }) {
		out = append(out, "--log-file", filepath.Join(StateDir(), name+".log"))
	}
	return append(out, "--service-dir="+dir, "--run-as-service")
}

// enterServiceDir changes to the directory --install-service recorded, before
// the flags are parsed: kong resolves relative paths as it reads them.
func enterServiceDir(args []string) error {
	if !slices.Contains(args, "--run-as-service") {
		return nil
	}
	for _, a := range args {
		if dir, ok := strings.CutPrefix(a, "--service-dir="); ok {
			return os.Chdir(dir)
		}
	}
	return nil
}
