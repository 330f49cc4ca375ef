//go:build !windows

package cli

import (
	"context"
	"errors"
	"log/slog"
)

var errNotWindows = errors.New("--install-service and --remove-service are for Windows; on Linux use the systemd units of the .deb")

func installService(string, string, []string, *slog.Logger) error { return errNotWindows }

func removeService(string, *slog.Logger) error { return errNotWindows }

// runAsService does nothing off Windows.
func runAsService(context.CancelFunc, *slog.Logger) (stop func()) { return func() {} }
