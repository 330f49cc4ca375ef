//go:build !linux

package netem

import "errors"

// Off Linux, RealtimeScheduler falls back to the Go timer at normal priority.

func newThreadSleeper() (sleeper, error) { return newTimerSleeper(), nil }

func setRealtimePriority(int) error {
	return errors.New("real-time scheduling is implemented for Linux only")
}
