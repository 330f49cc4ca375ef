//go:build unix

package cli

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The first SIGTERM ends the context, is logged, and the watcher goroutine
// ends with it.
func TestSignalContextEndsOnSignal(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreFasthttp)
	var out bytes.Buffer
	ctx, stop := SignalContext(slog.New(slog.NewTextHandler(&out, nil)))
	defer stop()
	if ctx.Err() != nil {
		t.Fatal("ended before any signal")
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not end the context")
	}
	// The log line is written before the context ends.
	if !strings.Contains(out.String(), "signal received") || !strings.Contains(out.String(), "signal=terminated") {
		t.Errorf("log: %q", out.String())
	}
}

// Without a signal, stop ends the watcher goroutine (goleak checks).
func TestSignalContextStopEndsTheWatcher(t *testing.T) {
	defer goleak.VerifyNone(t, ignoreFasthttp)
	ctx, stop := SignalContext(slog.New(slog.NewTextHandler(&bytes.Buffer{}, nil)))
	stop()
	<-ctx.Done()
}
