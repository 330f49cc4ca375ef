package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/windows"
	"golang.org/x/sys/windows/svc"
	"golang.org/x/sys/windows/svc/mgr"
)

func installService(name, program string, args []string, log *slog.Logger) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("install service: %w", err)
	}
	if exe, err = filepath.Abs(exe); err != nil {
		return fmt.Errorf("install service: %w", err)
	}
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("install service: connect to the service manager (run as Administrator): %w", err)
	}
	defer m.Disconnect()
	if s, err := m.OpenService(name); err == nil {
		s.Close()
		return fmt.Errorf("install service: %s exists already (--remove-service first)", name)
	}
	s, err := m.CreateService(name, exe, mgr.Config{
		DisplayName: name, StartType: mgr.StartAutomatic,
		Description: "quictun " + strings.TrimPrefix(program, "quictun-") + " endpoint: a TCP/UNIX-socket tunnel over QUIC",
	}, args...)
	if err != nil {
		return fmt.Errorf("install service %s: %w", name, err)
	}
	defer s.Close()
	// Restart on failure, as the systemd units do: after 5 s, then 30 s.
	if err := s.SetRecoveryActions([]mgr.RecoveryAction{
		{Type: mgr.ServiceRestart, Delay: 5 * time.Second}, {Type: mgr.ServiceRestart, Delay: 30 * time.Second},
	}, uint32((24 * time.Hour).Seconds())); err != nil {
		log.Warn("service installed, but without restart on failure", "service", name, "err", err)
	}
	log.Info("service installed; start it with: sc start "+name, "service", name, "exe", exe, "args", strings.Join(args, " "))
	return nil
}

func removeService(name string, log *slog.Logger) error {
	m, err := mgr.Connect()
	if err != nil {
		return fmt.Errorf("remove service: connect to the service manager (run as Administrator): %w", err)
	}
	defer m.Disconnect()
	s, err := m.OpenService(name)
	if err != nil {
		return fmt.Errorf("remove service %s: %w", name, err)
	}
	defer s.Close()
	if st, err := s.Query(); err == nil && st.State != svc.Stopped {
		log.Warn("the service is running; it is removed once it stops (sc stop "+name+")", "service", name)
	}
	if err := s.Delete(); err != nil && !errors.Is(err, windows.ERROR_SERVICE_MARKED_FOR_DELETE) {
		return fmt.Errorf("remove service %s: %w", name, err)
	}
	log.Info("service removed", "service", name)
	return nil
}

// runAsService, when the service manager started the program, answers it:
// running at once, and a stop or shutdown cancels the program's context as
// SIGTERM does. stop, called once the program has drained, reports it
// stopped and waits until the manager knows.
func runAsService(cancel context.CancelFunc, log *slog.Logger) (stop func()) {
	if is, err := svc.IsWindowsService(); !asService && (err != nil || !is) {
		return func() {}
	}
	done := make(chan struct{})
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		if err := svc.Run("", &serviceHandler{cancel: cancel, done: done, log: log}); err != nil {
			log.Error("Windows service manager", "err", err)
			cancel()
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); <-ran }) }
}

type serviceHandler struct {
	cancel context.CancelFunc
	done   <-chan struct{}
	log    *slog.Logger
}

func (h *serviceHandler) Execute(_ []string, requests <-chan svc.ChangeRequest, status chan<- svc.Status) (bool, uint32) {
	status <- svc.Status{State: svc.Running, Accepts: svc.AcceptStop | svc.AcceptShutdown}
	for {
		select {
		case r := <-requests:
			switch r.Cmd {
			case svc.Interrogate:
				status <- r.CurrentStatus
			case svc.Stop, svc.Shutdown:
				h.log.Info("service stop requested: shutting down", "request", map[svc.Cmd]string{svc.Stop: "stop", svc.Shutdown: "shutdown"}[r.Cmd])
				status <- svc.Status{State: svc.StopPending, WaitHint: 30000}
				h.cancel()
			}
		case <-h.done:
			return false, 0
		}
	}
}
